//! The client's attempts at a direct path, one per address family, raced as RFC
//! 8305 races connections: the first (IPv6, which needs no NAT traversal where a
//! firewall lets the punch through) starts at once, each next one [`NEXT_AFTER`]
//! after the one before it or as soon as every started one has failed, whichever
//! comes first; the first to open wins. When all fail, the one to report is the
//! last (IPv4's, where a NAT is most often the reason).

use std::time::{Duration, Instant};

/// RFC 8305's "Connection Attempt Delay" (its recommended 250 ms).
pub const NEXT_AFTER: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Waiting,
    Running,
    Failed,
}

/// How a race ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This attempt opened first.
    Won(usize),
    /// Every attempt failed; this one's reason is the one to give.
    AllFailed { report: usize },
}

#[derive(Debug, Clone)]
pub struct Race {
    attempts: Vec<Attempt>,
    /// When the next waiting attempt starts.
    next_at: Instant,
    outcome: Option<Outcome>,
}

impl Race {
    /// `n` attempts in order of preference; the first is due at `now`.
    pub fn new(now: Instant, n: usize) -> Race {
        Race {
            attempts: vec![Attempt::Waiting; n],
            next_at: now,
            // Nothing to try is a race already lost, with nothing to report.
            outcome: (n == 0).then_some(Outcome::AllFailed { report: 0 }),
        }
    }

    /// The attempt to start at `now`, if one is due; call until `None`.
    pub fn poll_start(&mut self, now: Instant) -> Option<usize> {
        if self.outcome.is_some() || now < self.next_at {
            return None;
        }
        let i = self.attempts.iter().position(|a| *a == Attempt::Waiting)?;
        self.attempts[i] = Attempt::Running;
        self.next_at = now + NEXT_AFTER;
        Some(i)
    }

    /// When the next attempt is due, while one waits and the race is on.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.outcome.is_none() && self.attempts.contains(&Attempt::Waiting))
            .then_some(self.next_at)
    }

    /// Attempt `i` opened its path: it wins if it runs and nothing opened before.
    /// The outcome so far.
    pub fn opened(&mut self, i: usize) -> Option<Outcome> {
        if self.outcome.is_none() && self.attempts.get(i) == Some(&Attempt::Running) {
            self.outcome = Some(Outcome::Won(i));
        }
        self.outcome
    }

    /// Attempt `i` failed at `now`. With none left running, the next starts at
    /// once; with none left at all, the race is lost.
    pub fn failed(&mut self, now: Instant, i: usize) -> Option<Outcome> {
        if self.outcome.is_some() || self.attempts.get(i) != Some(&Attempt::Running) {
            return self.outcome;
        }
        self.attempts[i] = Attempt::Failed;
        if self.attempts.iter().all(|a| *a == Attempt::Failed) {
            self.outcome = Some(Outcome::AllFailed {
                report: self.attempts.len() - 1,
            });
        } else if !self.attempts.contains(&Attempt::Running) {
            self.next_at = now;
        }
        self.outcome
    }

    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_second_family_starts_after_the_delay_and_the_first_to_open_wins() {
        let t0 = Instant::now();
        let mut race = Race::new(t0, 2);
        assert_eq!(race.poll_start(t0), Some(0));
        assert_eq!(race.poll_start(t0), None);
        assert_eq!(race.poll_timeout(), Some(t0 + NEXT_AFTER));
        assert_eq!(race.poll_start(t0 + NEXT_AFTER - MS), None);
        assert_eq!(race.poll_start(t0 + NEXT_AFTER), Some(1));
        assert_eq!(race.poll_timeout(), None, "nothing left to start");
        // The later attempt opens first: it wins, and the earlier one's late
        // success changes nothing.
        assert_eq!(race.opened(1), Some(Outcome::Won(1)));
        assert_eq!(race.opened(0), Some(Outcome::Won(1)));
        assert_eq!(race.failed(t0 + 2 * NEXT_AFTER, 0), Some(Outcome::Won(1)));
    }

    #[test]
    fn a_quick_failure_starts_the_next_at_once() {
        let t0 = Instant::now();
        let mut race = Race::new(t0, 3);
        assert_eq!(race.poll_start(t0), Some(0));
        // IPv6 has no route: fails after 10 ms; the next need not wait 250.
        assert_eq!(race.failed(t0 + 10 * MS, 0), None);
        assert_eq!(race.poll_timeout(), Some(t0 + 10 * MS));
        assert_eq!(race.poll_start(t0 + 10 * MS), Some(1));
        // One still runs: the third keeps the delay, counted from the second.
        assert_eq!(race.poll_timeout(), Some(t0 + 10 * MS + NEXT_AFTER));
        assert_eq!(race.poll_start(t0 + 100 * MS), None);
        assert_eq!(race.poll_start(t0 + 10 * MS + NEXT_AFTER), Some(2));
        assert_eq!(race.opened(2), Some(Outcome::Won(2)));
    }

    #[test]
    fn when_all_fail_the_last_is_reported_whatever_the_order() {
        let t0 = Instant::now();
        let mut race = Race::new(t0, 2);
        race.poll_start(t0);
        race.poll_start(t0 + NEXT_AFTER);
        // The later attempt fails first; the race goes on.
        assert_eq!(race.failed(t0 + 300 * MS, 1), None);
        assert_eq!(race.poll_start(t0 + 300 * MS), None, "nothing waits");
        assert_eq!(
            race.failed(t0 + 400 * MS, 0),
            Some(Outcome::AllFailed { report: 1 })
        );
        assert_eq!(race.outcome(), Some(Outcome::AllFailed { report: 1 }));
        assert_eq!(race.poll_timeout(), None);
    }

    #[test]
    fn reports_for_attempts_never_started_or_unknown_are_ignored() {
        let t0 = Instant::now();
        let mut race = Race::new(t0, 2);
        assert_eq!(race.failed(t0, 1), None, "attempt 1 never started");
        assert_eq!(race.failed(t0, 7), None);
        assert_eq!(race.opened(1), None, "a success of no running attempt");
        assert_eq!(race.poll_start(t0), Some(0));
        assert_eq!(race.failed(t0, 0), None);
        assert_eq!(race.poll_start(t0), Some(1));
        assert_eq!(race.failed(t0, 1), Some(Outcome::AllFailed { report: 1 }));
    }

    #[test]
    fn no_attempt_is_a_lost_race() {
        let t0 = Instant::now();
        let mut race = Race::new(t0, 0);
        assert_eq!(race.poll_start(t0), None);
        assert_eq!(race.poll_timeout(), None);
        assert_eq!(race.outcome(), Some(Outcome::AllFailed { report: 0 }));
    }
}
