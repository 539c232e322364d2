//! Waiting for a condition, with what was last seen when it does not come.

use std::time::{Duration, Instant};

/// How often [`wait_until`] checks, and how long it waits: far longer than any wait
/// takes on a quiet machine, so a loaded one does not fail a test that is only slow.
pub const POLL: Duration = Duration::from_millis(100);
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Poll `check` every [`POLL`] until it returns `Ok`; after [`TIMEOUT`], fail with
/// what was being waited for and the last state `check` described.
pub fn wait_until<T>(what: &str, check: impl FnMut() -> Result<T, String>) -> T {
    wait_until_every(POLL, what, check)
}

/// [`wait_until`], checking every `poll`: for a wait whose end should be noticed
/// sooner than [`POLL`] allows.
pub fn wait_until_every<T>(
    poll: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match check() {
            Ok(v) => return v,
            Err(state) if Instant::now() > deadline => {
                panic!("timed out after {TIMEOUT:?} waiting until {what}; last state: {state}")
            }
            Err(_) => std::thread::sleep(poll),
        }
    }
}
