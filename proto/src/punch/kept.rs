//! How long the sockets of one `open` port guess live, sans-IO (docs/nat.md, "Port
//! guessing"). The target opens [`Guess::SOCKETS`](crate::api::Guess::SOCKETS)
//! sockets and the requester's probes reach one or two of them; the rest must
//! close soon, and the used ones once the requester stops using them, or a node
//! that guesses for many requesters runs out of descriptors.
//!
//! The driver reports what each socket heard, as a count that only grows
//! ([`Kept::look`]), at [`Kept::poll_timeout`]; the machine says which to close
//! ([`Kept::poll_close`]):
//! - until [`WAIT`] has passed, nothing closes; if none heard anything by then,
//!   all close;
//! - at the first look that finds a socket heard, the first [`KEEP`] that heard
//!   stay and the others close;
//! - from then on, every [`IDLE`] each kept socket that heard nothing since the
//!   last look closes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long the sockets wait for the requester's probe (it sends them as soon as
/// `punch` answers, and gives up after 2 s).
pub const WAIT: Duration = Duration::from_millis(2500);
/// How often the driver looks while the sockets wait.
pub const LOOK_EVERY: Duration = Duration::from_millis(100);
/// Used sockets a guess keeps: its path, and one spare.
pub const KEEP: usize = 2;
/// A kept socket lives while it hears something this often (the client's
/// keepalives come every 15 s).
pub const IDLE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first probe, until then.
    Waiting { until: Instant },
    /// Some were used; the next idle look is then.
    Kept { next: Instant },
    /// Every socket is closed.
    Done,
}

#[derive(Debug, Clone)]
pub struct Kept {
    phase: Phase,
    /// Per socket: open, and its count at the last look.
    sockets: Vec<(bool, u64)>,
    next_look: Instant,
    to_close: VecDeque<usize>,
}

impl Kept {
    /// `n` sockets opened at `now`, none heard yet.
    pub fn new(now: Instant, n: usize) -> Kept {
        Kept {
            phase: if n == 0 {
                Phase::Done
            } else {
                Phase::Waiting { until: now + WAIT }
            },
            sockets: vec![(true, 0); n],
            next_look: now + LOOK_EVERY,
            to_close: VecDeque::new(),
        }
    }

    /// A look at `now`: `heard[i]` is how many datagrams socket `i` has heard
    /// since it opened (extra or missing entries are ignored).
    pub fn look(&mut self, now: Instant, heard: &[u64]) {
        let changed: Vec<bool> = self
            .sockets
            .iter_mut()
            .zip(heard.iter().copied().chain(std::iter::repeat(0)))
            .map(|((_, seen), count)| {
                let new = count > *seen;
                *seen = (*seen).max(count);
                new
            })
            .collect();
        match self.phase {
            Phase::Waiting { until } => {
                if changed.iter().any(|c| *c) {
                    self.keep_first(&changed);
                    self.phase = Phase::Kept { next: now + IDLE };
                } else if now >= until {
                    self.close_where(|_| true);
                } else {
                    self.next_look = now + LOOK_EVERY;
                }
            }
            Phase::Kept { next } if now >= next => {
                self.close_where(|i| !changed[i]);
                self.phase = Phase::Kept { next: now + IDLE };
            }
            Phase::Kept { .. } | Phase::Done => {}
        }
        if self.sockets.iter().all(|(open, _)| !open) {
            self.phase = Phase::Done;
        }
    }

    /// Keep the first [`KEEP`] sockets that heard something; close the rest.
    fn keep_first(&mut self, changed: &[bool]) {
        let mut kept = 0;
        let keep: Vec<bool> = changed
            .iter()
            .map(|c| {
                let k = *c && kept < KEEP;
                kept += usize::from(k);
                k
            })
            .collect();
        self.close_where(|i| !keep[i]);
    }

    fn close_where(&mut self, close: impl Fn(usize) -> bool) {
        for (i, (open, _)) in self.sockets.iter_mut().enumerate() {
            if *open && close(i) {
                *open = false;
                self.to_close.push_back(i);
            }
        }
    }

    /// The next socket to close.
    pub fn poll_close(&mut self) -> Option<usize> {
        self.to_close.pop_front()
    }

    /// When to look next; `None` once every socket is closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting { .. } => Some(self.next_look),
            Phase::Kept { next } => Some(next),
            Phase::Done => None,
        }
    }

    /// Sockets still open.
    pub fn open(&self) -> usize {
        self.sockets.iter().filter(|(open, _)| *open).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closes(k: &mut Kept) -> Vec<usize> {
        std::iter::from_fn(|| k.poll_close()).collect()
    }

    /// Run looks at every `poll_timeout` with the counts `heard_at(now)` gives,
    /// until `end`; the times at which sockets closed, and which.
    fn run(
        k: &mut Kept,
        end: Instant,
        heard_at: impl Fn(Instant) -> Vec<u64>,
    ) -> Vec<(Instant, Vec<usize>)> {
        let mut out = Vec::new();
        while let Some(at) = k.poll_timeout() {
            if at > end {
                break;
            }
            k.look(at, &heard_at(at));
            let c = closes(k);
            if !c.is_empty() {
                out.push((at, c));
            }
        }
        out
    }

    #[test]
    fn unused_sockets_all_close_after_the_wait() {
        let t0 = Instant::now();
        let mut k = Kept::new(t0, 256);
        let closed = run(&mut k, t0 + Duration::from_secs(10), |_| vec![0; 256]);
        assert_eq!(closed.len(), 1);
        let (at, which) = &closed[0];
        assert!(*at >= t0 + WAIT && *at < t0 + WAIT + LOOK_EVERY);
        assert_eq!(which.len(), 256);
        assert_eq!(k.open(), 0);
        assert_eq!(k.poll_timeout(), None);
    }

    #[test]
    fn the_first_two_used_stay_the_rest_close_at_once_and_an_idle_one_after_a_minute() {
        let t0 = Instant::now();
        let mut k = Kept::new(t0, 256);
        let hit = t0 + Duration::from_millis(330);
        // Sockets 7, 9 and 200 hear the spray; 9 then keeps hearing keepalives every
        // 15 s, 7 falls silent.
        let heard = |now: Instant| {
            let mut h = vec![0u64; 256];
            if now >= hit {
                h[7] = 1;
                h[200] = 1;
                let since = now.duration_since(hit).as_secs();
                h[9] = 1 + since / 15;
            }
            h
        };
        let closed = run(&mut k, t0 + Duration::from_secs(200), heard);
        let (first_at, first) = &closed[0];
        assert!(*first_at >= hit && *first_at < hit + LOOK_EVERY);
        assert_eq!(first.len(), 254, "all but two close at the first look");
        assert!(!first.contains(&7) && !first.contains(&9) && first.contains(&200));
        // The silent one goes at the first idle look; the talking one stays.
        let (idle_at, idle) = &closed[1];
        assert_eq!(idle, &[7]);
        assert_eq!(*idle_at, *first_at + IDLE);
        assert_eq!(closed.len(), 2);
        assert_eq!(k.open(), 1);
        // Once 9 falls silent too, it goes.
        let last = heard(t0 + Duration::from_secs(200));
        let mut at = k.poll_timeout().unwrap();
        for _ in 0..3 {
            k.look(at, &last);
            at = k.poll_timeout().unwrap_or(at);
        }
        assert_eq!(closes(&mut k), [9]);
        assert_eq!(k.poll_timeout(), None);
    }

    #[test]
    fn counts_that_go_down_or_are_missing_change_nothing() {
        let t0 = Instant::now();
        let mut k = Kept::new(t0, 4);
        k.look(t0 + LOOK_EVERY, &[0, 5]);
        assert_eq!(closes(&mut k), [0, 2, 3]);
        // A count that shrinks is no news: socket 1 heard nothing new, so it goes.
        k.look(t0 + LOOK_EVERY + IDLE, &[0, 2, 0, 0, 9, 9]);
        assert_eq!(closes(&mut k), [1]);
        assert_eq!(k.poll_timeout(), None);
        assert_eq!(Kept::new(t0, 0).poll_timeout(), None);
    }
}
