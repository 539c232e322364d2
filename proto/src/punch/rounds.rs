//! When the target of a punch sends: a round of one Binding indication from each of
//! its sockets at 0, 0.2, 0.6 and 1.4 s, then every second, for 5 s. Dense while the
//! client is most likely sending; sparse after, so that several clients behind one
//! address (a carrier-grade NAT, or one client's retries) stay within the per-IP
//! packet rate.

use std::time::{Duration, Instant};

/// How long a punch keeps going: the client is sending meanwhile.
pub const PUNCH_FOR: Duration = Duration::from_secs(5);
const FIRST_GAP: Duration = Duration::from_millis(200);
const MAX_GAP: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Rounds {
    until: Instant,
    next: Option<Instant>,
    gap: Duration,
}

impl Rounds {
    /// Rounds starting at `now` (the first is due at once).
    pub fn new(now: Instant) -> Rounds {
        Rounds {
            until: now + PUNCH_FOR,
            next: Some(now),
            gap: FIRST_GAP,
        }
    }

    /// Whether a round is due at `now`; schedules the next.
    pub fn poll_round(&mut self, now: Instant) -> bool {
        match self.next {
            Some(due) if now >= due => {
                let next = due + self.gap;
                self.gap = (self.gap * 2).min(MAX_GAP);
                self.next = (next < self.until).then_some(next);
                true
            }
            _ => false,
        }
    }

    /// When the next round is due; `None` once the punch is over.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_at_the_documented_times() {
        let t0 = Instant::now();
        let mut r = Rounds::new(t0);
        let mut at = Vec::new();
        while let Some(t) = r.poll_timeout() {
            assert!(!r.poll_round(t - Duration::from_millis(1)));
            assert!(r.poll_round(t));
            at.push((t - t0).as_millis());
        }
        assert_eq!(at, [0, 200, 600, 1400, 2400, 3400, 4400]);
    }
}
