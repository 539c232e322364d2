//! Wall-clock time, for what leaves the node (announcements, `lastSeen`, cookies):
//! the one place that reads it. Durations and deadlines use `Instant`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds (0 if the clock is before 1970).
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix milliseconds (0 if the clock is before 1970).
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
