//! The client's opening of a direct TCP path, sans-IO. After the punch request, two
//! kinds of connection may become the path: ours toward each of the target's
//! endpoints, from the port whose mapping the target connects to (a simultaneous
//! open when the SYNs cross; each endpoint on its own [`Tries::client`] schedule),
//! and the target's toward that mapping, taken by our listener on the same port
//! where our NAT lets it in. Each connection must answer a probe as the target
//! before it counts; the first that does is the path and the rest are closed.
//!
//! The driver (`node/src/rendezvous/tcp.rs`) owns the sockets: it runs each
//! [`Action`], reports how it ended, and hands over what its listener accepts.
//! Connections are named by [`ConnId`]; a report on one the machine no longer
//! follows is ignored, so a late connect or probe cannot change the outcome.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Tries;

/// Connections accepted on our listener that are probed at once, by where they
/// come from: an address of one of the target's endpoints (where its connection
/// toward us comes from), or any other. Anyone who learns the port may connect to
/// it, and strangers must not crowd out the target; more are closed unprobed.
pub const MAX_FROM_TARGET: usize = 8;
pub const MAX_FROM_OTHERS: usize = 4;
/// Longest the WebSocket handshake and the probe may take on one connection (two
/// round trips), so that a silent connection gives its place back within the
/// attempt.
pub const PROBE_FOR: Duration = Duration::from_secs(2);

/// A connection the machine follows, ours or accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(u64);

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Connect from our port to `target`, for at most `limit`; report with
    /// [`TcpOpen::connected`] or [`TcpOpen::failed`].
    Connect {
        id: ConnId,
        target: SocketAddr,
        limit: Duration,
    },
    /// The WebSocket handshake and the probe on connection `id`, for at most
    /// `limit`; report with [`TcpOpen::answered`] or [`TcpOpen::failed`].
    Probe { id: ConnId, limit: Duration },
    /// Connection `id` is not wanted: close it, or stop what runs on it.
    Close(ConnId),
}

/// How the opening ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Connection `id`, to or from `at`, answered as the target: it is the path.
    Opened { id: ConnId, at: SocketAddr },
    /// Nothing answered before the end.
    NoAnswer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connecting,
    Probing,
}

#[derive(Debug, Clone)]
struct Ours {
    target: SocketAddr,
    tries: Tries,
    /// The connection under way toward `target`, one at a time.
    running: Option<(ConnId, Stage)>,
}

#[derive(Debug, Clone)]
pub struct TcpOpen {
    until: Instant,
    ours: Vec<Ours>,
    /// Accepted connections being probed, with where each came from.
    accepted: Vec<(ConnId, SocketAddr)>,
    next_id: u64,
    actions: VecDeque<Action>,
    outcome: Option<Outcome>,
}

impl TcpOpen {
    /// An opening toward `targets` from `now` for `lasting`; the first connects
    /// are due at once.
    pub fn new(now: Instant, targets: &[SocketAddr], lasting: Duration) -> TcpOpen {
        TcpOpen {
            until: now + lasting,
            ours: targets
                .iter()
                .map(|t| Ours {
                    target: *t,
                    tries: Tries::client(now, lasting),
                    running: None,
                })
                .collect(),
            accepted: Vec::new(),
            next_id: 0,
            actions: VecDeque::new(),
            outcome: None,
        }
    }

    /// Start what is due at `now`; at the end, give up.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.outcome.is_some() {
            return;
        }
        if now >= self.until {
            self.end(Outcome::NoAnswer);
            return;
        }
        for i in 0..self.ours.len() {
            if self.ours[i].running.is_some() {
                continue;
            }
            let Some(limit) = self.ours[i].tries.poll_try(now) else {
                continue;
            };
            let id = self.new_id();
            self.ours[i].running = Some((id, Stage::Connecting));
            let target = self.ours[i].target;
            self.actions
                .push_back(Action::Connect { id, target, limit });
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run next; `None` once the
    /// opening has ended.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.outcome.is_some() {
            return None;
        }
        let next = self
            .ours
            .iter()
            .filter_map(|o| o.tries.poll_timeout())
            .min();
        Some(next.map_or(self.until, |n| n.min(self.until)))
    }

    /// Our listener accepted a connection from `from` at `now`: its id if it is
    /// to be probed (an [`Action::Probe`] follows), `None` if the driver must
    /// close it.
    pub fn accepted(&mut self, now: Instant, from: SocketAddr) -> Option<ConnId> {
        let from_target = |a: &SocketAddr| self.ours.iter().any(|o| o.target.ip() == a.ip());
        let class = from_target(&from);
        let cap = if class {
            MAX_FROM_TARGET
        } else {
            MAX_FROM_OTHERS
        };
        let same = self
            .accepted
            .iter()
            .filter(|(_, a)| from_target(a) == class)
            .count();
        if self.outcome.is_some() || now >= self.until || same >= cap {
            return None;
        }
        let id = self.new_id();
        self.accepted.push((id, from));
        self.actions.push_back(Action::Probe {
            id,
            limit: self.probe_limit(now),
        });
        Some(id)
    }

    /// Our connect `id` connected at `now`.
    pub fn connected(&mut self, now: Instant, id: ConnId) {
        let limit = self.probe_limit(now);
        let on = self.outcome.is_none();
        let action = match self.ours_running(id) {
            Some(o) if on => {
                o.running = Some((id, Stage::Probing));
                Action::Probe { id, limit }
            }
            _ => Action::Close(id),
        };
        self.actions.push_back(action);
    }

    /// Connection `id`'s connect or probe ended at `now` without a path (refused,
    /// timed out, or the probe answered as someone else). Our connect toward that
    /// endpoint is tried again on its schedule.
    pub fn failed(&mut self, now: Instant, id: ConnId) {
        if let Some(o) = self.ours_running(id) {
            o.running = None;
            o.tries.failed(now);
        }
        self.accepted.retain(|(a, _)| *a != id);
    }

    /// Connection `id` answered the probe as the target: the path, if the opening
    /// is still on.
    pub fn answered(&mut self, id: ConnId) {
        if self.outcome.is_some() {
            return;
        }
        let ours = self
            .ours
            .iter()
            .find(|o| o.running == Some((id, Stage::Probing)))
            .map(|o| o.target);
        let theirs = self
            .accepted
            .iter()
            .find(|(a, _)| *a == id)
            .map(|(_, from)| *from);
        if let Some(at) = ours.or(theirs) {
            self.end(Outcome::Opened { id, at });
        }
    }

    /// The next thing for the driver to do; call until `None`.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// How the opening ended, once it has.
    pub fn poll_outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    fn end(&mut self, outcome: Outcome) {
        let winner = match outcome {
            Outcome::Opened { id, .. } => Some(id),
            Outcome::NoAnswer => None,
        };
        let live: Vec<ConnId> = self
            .ours
            .iter_mut()
            .filter_map(|o| o.running.take().map(|(id, _)| id))
            .chain(self.accepted.drain(..).map(|(id, _)| id))
            .filter(|id| Some(*id) != winner)
            .collect();
        self.actions.extend(live.into_iter().map(Action::Close));
        self.outcome = Some(outcome);
    }

    fn ours_running(&mut self, id: ConnId) -> Option<&mut Ours> {
        self.ours
            .iter_mut()
            .find(|o| o.running.is_some_and(|(r, _)| r == id))
    }

    fn probe_limit(&self, now: Instant) -> Duration {
        PROBE_FOR.min(self.until.saturating_duration_since(now))
    }

    fn new_id(&mut self) -> ConnId {
        self.next_id += 1;
        ConnId(self.next_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOR: Duration = Duration::from_secs(4);

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, 1], port))
    }

    fn actions(open: &mut TcpOpen) -> Vec<Action> {
        std::iter::from_fn(|| open.poll_action()).collect()
    }

    /// Every connect refused at once, until the end: each endpoint on the client
    /// schedule, then no answer.
    #[test]
    fn refused_everywhere_it_tries_each_endpoint_on_schedule_then_gives_up() {
        let t0 = Instant::now();
        let mut open = TcpOpen::new(t0, &[addr(1), addr(2)], FOR);
        let mut connects = [0, 0];
        while let Some(at) = open.poll_timeout() {
            open.handle_timeout(at);
            for a in actions(&mut open) {
                match a {
                    Action::Connect { id, target, limit } => {
                        assert!(limit <= Duration::from_millis(500));
                        connects[usize::from(target.port() - 1)] += 1;
                        open.failed(at, id);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        // Refused at once, a connect every 100 ms for 4 s (as `Tries::client`).
        assert_eq!(connects, [40, 40]);
        assert_eq!(open.poll_outcome(), Some(Outcome::NoAnswer));
        assert!(open.poll_action().is_none());
    }

    #[test]
    fn the_first_connection_to_answer_wins_and_the_rest_are_closed() {
        let t0 = Instant::now();
        let mut open = TcpOpen::new(t0, &[addr(1), addr(2)], FOR);
        open.handle_timeout(t0);
        let ids: Vec<ConnId> = actions(&mut open)
            .into_iter()
            .map(|a| match a {
                Action::Connect { id, .. } => id,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        // The target's connection comes in while ours are under way.
        let t1 = t0 + Duration::from_millis(30);
        let theirs = open.accepted(t1, addr(9)).expect("probed");
        assert_eq!(
            actions(&mut open),
            [Action::Probe {
                id: theirs,
                limit: PROBE_FOR
            }]
        );
        open.connected(t1, ids[0]);
        assert_eq!(
            actions(&mut open),
            [Action::Probe {
                id: ids[0],
                limit: PROBE_FOR
            }]
        );
        open.answered(theirs);
        assert_eq!(
            open.poll_outcome(),
            Some(Outcome::Opened {
                id: theirs,
                at: addr(9)
            })
        );
        let mut closed: Vec<ConnId> = actions(&mut open)
            .into_iter()
            .map(|a| match a {
                Action::Close(id) => id,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        closed.sort_by_key(|c| c.0);
        assert_eq!(closed, ids);
        // Late reports change nothing.
        open.answered(ids[0]);
        open.connected(t1, ids[1]);
        assert_eq!(actions(&mut open), [Action::Close(ids[1])]);
        assert!(matches!(open.poll_outcome(), Some(Outcome::Opened { id, .. }) if id == theirs));
        assert_eq!(open.poll_timeout(), None);
        assert_eq!(open.accepted(t1, addr(10)), None);
    }

    #[test]
    fn a_connection_that_answers_as_someone_else_is_a_failed_try() {
        let t0 = Instant::now();
        let mut open = TcpOpen::new(t0, &[addr(1)], FOR);
        open.handle_timeout(t0);
        let [Action::Connect { id, .. }] = actions(&mut open)[..] else {
            panic!("one connect")
        };
        open.connected(t0, id);
        actions(&mut open);
        let t1 = t0 + Duration::from_millis(20);
        open.failed(t1, id);
        // A wrong peer's answer does not open the path, even if reported late.
        open.answered(id);
        assert_eq!(open.poll_outcome(), None);
        assert_eq!(open.poll_timeout(), Some(t1 + Duration::from_millis(100)));
        open.handle_timeout(t1 + Duration::from_millis(100));
        assert!(matches!(actions(&mut open)[..], [Action::Connect { id: next, .. }] if next != id));
    }

    /// A flood of connections on our listener: a bounded number are probed, the
    /// rest closed at once; a slot frees when a probe fails; strangers cannot take
    /// the target's places.
    #[test]
    fn accepted_connections_are_probed_a_bounded_number_at_a_time() {
        let t0 = Instant::now();
        let stranger = |port| SocketAddr::from(([203, 0, 113, 9], port));
        let mut open = TcpOpen::new(t0, &[addr(1)], FOR);
        let taken: Vec<ConnId> = (0..100)
            .filter_map(|p| open.accepted(t0, stranger(1000 + p)))
            .collect();
        assert_eq!(taken.len(), MAX_FROM_OTHERS);
        open.failed(t0, taken[3]);
        assert!(open.accepted(t0, stranger(5000)).is_some());
        assert!(open.accepted(t0, stranger(5001)).is_none());
        // The target's address (its NAT's, from any port) still has all its places.
        let theirs: Vec<ConnId> = (0..100)
            .filter_map(|p| open.accepted(t0, addr(2000 + p)))
            .collect();
        assert_eq!(theirs.len(), MAX_FROM_TARGET);
        assert!(open.accepted(t0, stranger(5002)).is_none());
        // Nothing is accepted at or after the end.
        let mut open = TcpOpen::new(t0, &[addr(1)], FOR);
        assert!(open.accepted(t0 + FOR, addr(1000)).is_none());
    }

    #[test]
    fn no_connect_or_probe_runs_past_the_end() {
        let t0 = Instant::now();
        let mut open = TcpOpen::new(t0, &[addr(1)], FOR);
        let late = t0 + FOR - Duration::from_millis(150);
        let id = open.accepted(late, addr(7)).unwrap();
        assert_eq!(
            actions(&mut open),
            [Action::Probe {
                id,
                limit: Duration::from_millis(150)
            }]
        );
        // Nor one of ours that connects late.
        open.handle_timeout(late);
        let Some(Action::Connect { id: ours, .. }) = open.poll_action() else {
            panic!("a connect is due")
        };
        open.connected(late, ours);
        assert_eq!(
            actions(&mut open),
            [Action::Probe {
                id: ours,
                limit: Duration::from_millis(150)
            }]
        );
        // Connects that time out: each given 500 ms, the last cut at the end.
        let mut open = TcpOpen::new(t0, &[addr(1)], FOR);
        let mut now = t0;
        let mut limits = Vec::new();
        while let Some(at) = open.poll_timeout() {
            now = now.max(at);
            open.handle_timeout(now);
            for a in actions(&mut open) {
                if let Action::Connect { id, limit, .. } = a {
                    limits.push(limit.as_millis());
                    now += limit;
                    open.failed(now, id);
                }
            }
        }
        assert_eq!(limits, [500, 500, 500, 500, 500, 500, 400]);
        assert_eq!(open.poll_outcome(), Some(Outcome::NoAnswer));
    }

    #[test]
    fn with_no_endpoints_only_the_targets_connection_can_open_the_path() {
        let t0 = Instant::now();
        let mut open = TcpOpen::new(t0, &[], FOR);
        assert_eq!(open.poll_timeout(), Some(t0 + FOR));
        let id = open.accepted(t0, addr(3)).unwrap();
        open.answered(id);
        assert_eq!(
            open.poll_outcome(),
            Some(Outcome::Opened { id, at: addr(3) })
        );
    }
}
