//! When one side of a TCP punch connects toward the other, one connect at a time.
//! The target: from each STUN client TCP port, a connect every [`TRY_EVERY`] after
//! the last one ended, each given at most [`CONNECT_FOR`], for
//! [`PUNCH_FOR`](super::PUNCH_FOR) ([`Tries::new`]). The client: toward each of the
//! target's endpoints from its one port, a connect every [`CLIENT_TRY_EVERY`],
//! each given at most [`CLIENT_CONNECT_FOR`], for as long as it tries the direct
//! path ([`Tries::client`]). When both connect at the same time, the SYNs cross (a
//! simultaneous open) and one connection forms.

use std::time::{Duration, Instant};

use super::PUNCH_FOR;

pub const TRY_EVERY: Duration = Duration::from_millis(200);
pub const CONNECT_FOR: Duration = Duration::from_secs(1);
/// The client's pause after a connect that failed: its SYNs must be out while the
/// target's cross them.
pub const CLIENT_TRY_EVERY: Duration = Duration::from_millis(100);
pub const CLIENT_CONNECT_FOR: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct Tries {
    until: Instant,
    next: Option<Instant>,
    every: Duration,
    connect_for: Duration,
}

impl Tries {
    /// The target's tries from `now` on; the first is due at once.
    pub fn new(now: Instant) -> Tries {
        Tries {
            until: now + PUNCH_FOR,
            next: Some(now),
            every: TRY_EVERY,
            connect_for: CONNECT_FOR,
        }
    }

    /// The client's tries toward one endpoint from `now` for `lasting`; the first
    /// is due at once.
    pub fn client(now: Instant, lasting: Duration) -> Tries {
        Tries {
            until: now + lasting,
            next: Some(now),
            every: CLIENT_TRY_EVERY,
            connect_for: CLIENT_CONNECT_FOR,
        }
    }

    /// Whether a connect should start at `now`; if so, for how long at most (it
    /// never runs past the punch's end).
    pub fn poll_try(&mut self, now: Instant) -> Option<Duration> {
        match self.next {
            Some(at) if now >= at && now < self.until => {
                self.next = None;
                Some(self.connect_for.min(self.until - now))
            }
            Some(at) if now >= at => {
                self.next = None;
                None
            }
            _ => None,
        }
    }

    /// The connect started by [`poll_try`](Self::poll_try) ended at `now` without
    /// a connection (refused, timed out, or not allowed by the rate).
    pub fn failed(&mut self, now: Instant) {
        let next = now + self.every;
        self.next = (next < self.until).then_some(next);
    }

    /// When the next connect is due; `None` while one runs or once the punch is
    /// over.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_connects_retry_every_200_ms_and_stop_at_5_s() {
        let t0 = Instant::now();
        let mut t = Tries::new(t0);
        let mut starts = Vec::new();
        while let Some(at) = t.poll_timeout() {
            let Some(limit) = t.poll_try(at) else { break };
            starts.push((at - t0).as_millis());
            assert!(limit <= CONNECT_FOR);
            assert!(t.poll_try(at).is_none(), "one connect at a time");
            // Refused at once (a RST from the client's NAT).
            t.failed(at);
        }
        assert_eq!(starts.len(), 25);
        assert_eq!(starts[..3], [0, 200, 400]);
        assert_eq!(*starts.last().unwrap(), 4800);
    }

    #[test]
    fn a_connect_that_times_out_is_cut_at_the_punchs_end() {
        let t0 = Instant::now();
        let mut t = Tries::new(t0);
        let mut now = t0;
        let mut limits = Vec::new();
        while let Some(at) = t.poll_timeout() {
            now = now.max(at);
            let Some(limit) = t.poll_try(now) else { break };
            limits.push(limit.as_millis());
            now += limit;
            t.failed(now);
        }
        // 0-1 s, 1.2-2.2, 2.4-3.4, 3.6-4.6, then 4.8 until 5.0.
        assert_eq!(limits, [1000, 1000, 1000, 1000, 200]);
    }

    #[test]
    fn the_client_connects_for_half_a_second_then_again_after_100_ms_until_its_end() {
        let t0 = Instant::now();
        let mut t = Tries::client(t0, Duration::from_secs(4));
        let (mut now, mut starts, mut limits) = (t0, Vec::new(), Vec::new());
        while let Some(at) = t.poll_timeout() {
            now = now.max(at);
            let Some(limit) = t.poll_try(now) else { break };
            starts.push((now - t0).as_millis());
            limits.push(limit.as_millis());
            now += limit;
            t.failed(now);
        }
        assert_eq!(starts, [0, 600, 1200, 1800, 2400, 3000, 3600]);
        assert_eq!(limits, [500, 500, 500, 500, 500, 500, 400]);
        // Refused at once, it tries every 100 ms: 40 connects in 4 s.
        let mut t = Tries::client(t0, Duration::from_secs(4));
        let mut n = 0;
        while let Some(at) = t.poll_timeout() {
            if t.poll_try(at).is_none() {
                break;
            }
            n += 1;
            t.failed(at);
        }
        assert_eq!(n, 40);
    }
}
