//! The client's choice of path to one target over time, sans-IO: requests take the
//! relay until a punch opens a direct path, and the direct path once it is open. A
//! round of punching is a plain punch, then, where the NATs call for it, up to
//! [`GUESSES`] port guesses at once; where both NATs are known and exactly one maps
//! per destination, the round starts with the guesses (see [`PathChoice::opening`]). A round that fails is tried again after a
//! backoff (1 s, doubling to a minute). The open path gets a keepalive every
//! [`KEEPALIVE`]. When the path is lost, a new round starts at once. The driver
//! (`node/src/rendezvous/link.rs`) runs the attempts and the requests, and reports
//! back.

use std::time::{Duration, Instant};

use crate::stun::nat::Nat;

/// Between requests, how often the direct path is kept alive: under Linux
/// conntrack's 30 s for a UDP flow.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Port guesses in a round (after its plain punch found no answer, or from its
/// start where that punch cannot work) before the round gives up: one finds an
/// open mapping about 98% of the time, two 99.97%.
pub const GUESSES: u32 = 2;

/// What the client knows of both NATs when an attempt starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nats {
    /// The target's, as it announced (`stun.nat`); `None` also where it has a
    /// forwarded port, which lets anyone in.
    pub target: Nat,
    /// Ours, from two of the rendezvous node's ports.
    pub ours: Nat,
}

impl Nats {
    pub const UNKNOWN: Nats = Nats {
        target: Nat::Unknown,
        ours: Nat::Unknown,
    };
}

/// How an attempt opens the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// A plain punch: both sides send to each other's mapping.
    Plain,
    /// We open many sockets toward the target's mapping and it probes random ports
    /// of our address (our NAT maps per destination).
    WeOpen,
    /// The target opens the sockets and we probe random ports of its address (its
    /// NAT maps per destination).
    TargetOpens,
}

/// How an attempt failed, as far as the next one cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// The probes got no answer: a port guess may find what the plain punch did not.
    NoAnswer,
    /// Anything else (no endpoints, the rendezvous node refused, a wrong peer).
    Other,
}

/// What a report changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The direct path is open.
    Direct,
    /// The attempt failed and a port guess follows at once; the round goes on.
    Guessing(Opening),
    /// The round failed; the next starts after this backoff.
    Failed { retry_in: Duration },
    /// The direct path was lost; a new round starts at once.
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// An attempt is due at this time.
    Due(Instant),
    /// An attempt runs.
    Running,
    /// The path is open; the next keepalive is due then.
    Direct { keepalive: Instant },
}

#[derive(Debug, Clone)]
pub struct PathChoice {
    /// Port guessing applies (UDP, not TCP).
    guessing: bool,
    state: State,
    backoff: Duration,
    /// The round's plain punch found no answer.
    plain_missed: bool,
    guesses: u32,
}

impl PathChoice {
    /// A link opened at `now`: its first round starts at once.
    pub fn new(now: Instant, guessing: bool) -> PathChoice {
        PathChoice {
            guessing,
            state: State::Due(now),
            backoff: BACKOFF_MIN,
            plain_missed: false,
            guesses: 0,
        }
    }

    /// Whether requests should take the direct path.
    pub fn is_direct(&self) -> bool {
        matches!(self.state, State::Direct { .. })
    }

    /// Whether an attempt should start at `now` (it is then running).
    pub fn poll_start(&mut self, now: Instant) -> bool {
        match self.state {
            State::Due(at) if now >= at => {
                self.state = State::Running;
                true
            }
            _ => false,
        }
    }

    /// How the running attempt opens the path, given both NATs. Plain, unless the
    /// round's plain punch found no answer: then, if the target's NAT maps per
    /// destination, it opens the sockets and we probe; if it maps independently of
    /// the destination, the plain punch failed because ours does not, so we open
    /// them (docs/nat.md, "Port guessing"). Two NATs that both map per destination
    /// never get a guess: neither side's ports can be aimed at.
    ///
    /// Where we know that exactly one side maps per destination, the plain punch
    /// is skipped. It cannot work there, and its packets reach the other side's NAT
    /// unasked: a router that takes them into its own stack holds their port pair,
    /// and Linux then gives that side's next flows another external port for good,
    /// so the guess aims at a mapping that is gone ("What the lab found").
    pub fn opening(&self, nats: Nats) -> Opening {
        use Nat::{EndpointDependent as Dependent, EndpointIndependent as Independent};
        if !self.guessing {
            return Opening::Plain;
        }
        let (guess, plain_first) = match (nats.target, nats.ours) {
            (Dependent, Dependent) => return Opening::Plain,
            (Dependent, Independent) => (Opening::TargetOpens, false),
            (Dependent, _) => (Opening::TargetOpens, true),
            (Independent, Dependent) => (Opening::WeOpen, false),
            (Independent, _) => (Opening::WeOpen, true),
            _ => return Opening::Plain,
        };
        if self.plain_missed || !plain_first {
            guess
        } else {
            Opening::Plain
        }
    }

    /// The running attempt opened the path.
    pub fn opened(&mut self, now: Instant) -> Change {
        self.state = State::Direct {
            keepalive: now + KEEPALIVE,
        };
        self.backoff = BACKOFF_MIN;
        (self.plain_missed, self.guesses) = (false, 0);
        Change::Direct
    }

    /// The running attempt failed (`nats`: as the attempt saw them).
    pub fn failed(&mut self, now: Instant, miss: Miss, nats: Nats) -> Change {
        if miss == Miss::NoAnswer && self.guesses == 0 {
            // A round that skipped the plain punch began with its first guess.
            if !self.plain_missed && self.opening(nats) != Opening::Plain {
                self.guesses = 1;
            }
            self.plain_missed = true;
        }
        let next = self.opening(nats);
        // A guess refused or broken (not "no answer") ends the round: the next one
        // would meet the same refusal.
        if miss == Miss::NoAnswer
            && self.plain_missed
            && next != Opening::Plain
            && self.guesses < GUESSES
        {
            self.guesses += 1;
            self.state = State::Due(now);
            return Change::Guessing(next);
        }
        let retry_in = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        (self.plain_missed, self.guesses) = (false, 0);
        self.state = State::Due(now + retry_in);
        Change::Failed { retry_in }
    }

    /// Whether a keepalive is due at `now` on the open path (the next is then
    /// scheduled).
    pub fn poll_keepalive(&mut self, now: Instant) -> bool {
        match self.state {
            State::Direct { keepalive } if now >= keepalive => {
                // From now, not from when it was due: after a stall the missed ones
                // do not all go out at once.
                self.state = State::Direct {
                    keepalive: now.max(keepalive) + KEEPALIVE,
                };
                true
            }
            _ => false,
        }
    }

    /// The open path died (a request or a keepalive found it dead).
    pub fn lost(&mut self, now: Instant) -> Option<Change> {
        if !self.is_direct() {
            return None;
        }
        self.state = State::Due(now);
        Some(Change::Lost)
    }

    /// When [`poll_start`](Self::poll_start) or
    /// [`poll_keepalive`](Self::poll_keepalive) next has something; `None` while an
    /// attempt runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Due(at) => Some(at),
            State::Running => None,
            State::Direct { keepalive } => Some(keepalive),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// The target's NAT, ours not known.
    fn target(nat: Nat) -> Nats {
        Nats {
            target: nat,
            ours: Nat::Unknown,
        }
    }

    #[test]
    fn a_symmetric_target_gets_two_guesses_then_backoff_doubles_to_a_minute() {
        let t0 = Instant::now();
        let mut p = PathChoice::new(t0, true);
        let mut now = t0;
        let mut retries = Vec::new();
        for _round in 0..9 {
            assert_eq!(p.poll_timeout(), Some(now));
            assert!(p.poll_start(now));
            assert_eq!(p.opening(target(Nat::EndpointDependent)), Opening::Plain);
            for _ in 0..GUESSES {
                let c = p.failed(now, Miss::NoAnswer, target(Nat::EndpointDependent));
                assert_eq!(c, Change::Guessing(Opening::TargetOpens));
                assert!(p.poll_start(now), "a guess starts at once");
                assert_eq!(
                    p.opening(target(Nat::EndpointDependent)),
                    Opening::TargetOpens
                );
            }
            match p.failed(now, Miss::NoAnswer, target(Nat::EndpointDependent)) {
                Change::Failed { retry_in } => {
                    retries.push(retry_in.as_secs());
                    assert!(!p.poll_start(now + retry_in - Duration::from_millis(1)));
                    now += retry_in;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(retries, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn an_independent_target_means_we_open_and_tcp_never_guesses() {
        let t0 = Instant::now();
        let mut p = PathChoice::new(t0, true);
        p.poll_start(t0);
        let c = p.failed(t0, Miss::NoAnswer, target(Nat::EndpointIndependent));
        assert_eq!(c, Change::Guessing(Opening::WeOpen));
        let mut tcp = PathChoice::new(t0, false);
        tcp.poll_start(t0);
        assert!(matches!(
            tcp.failed(t0, Miss::NoAnswer, target(Nat::EndpointDependent)),
            Change::Failed { .. }
        ));
        // An unknown NAT, or a failure that is not "no answer", is no reason to guess.
        for (miss, nat) in [
            (Miss::NoAnswer, Nat::Unknown),
            (Miss::Other, Nat::EndpointDependent),
        ] {
            let mut p = PathChoice::new(t0, true);
            p.poll_start(t0);
            assert!(matches!(
                p.failed(t0, miss, target(nat)),
                Change::Failed { .. }
            ));
        }
    }

    #[test]
    fn where_exactly_one_side_maps_per_destination_the_round_starts_with_two_guesses() {
        use Nat::{EndpointDependent as Dependent, EndpointIndependent as Independent};
        let t0 = Instant::now();
        for (target, ours, guess) in [
            (Independent, Dependent, Opening::WeOpen),
            (Dependent, Independent, Opening::TargetOpens),
        ] {
            let nats = Nats { target, ours };
            let mut p = PathChoice::new(t0, true);
            assert!(p.poll_start(t0));
            assert_eq!(p.opening(nats), guess, "no plain punch first");
            assert_eq!(p.failed(t0, Miss::NoAnswer, nats), Change::Guessing(guess));
            assert!(p.poll_start(t0));
            assert_eq!(p.opening(nats), guess);
            assert!(
                matches!(p.failed(t0, Miss::NoAnswer, nats), Change::Failed { .. }),
                "two guesses in the round, as after a plain punch"
            );
            // A refused guess (not "no answer") ends the round without another,
            // whether the round began with it or with a plain punch.
            let mut p = PathChoice::new(t0, true);
            p.poll_start(t0);
            let unknown = Nats {
                target,
                ours: Nat::Unknown,
            };
            assert_eq!(p.opening(unknown), Opening::Plain);
            assert!(matches!(
                p.failed(t0, Miss::NoAnswer, unknown),
                Change::Guessing(_)
            ));
            p.poll_start(t0);
            assert!(matches!(
                p.failed(t0, Miss::Other, unknown),
                Change::Failed { .. }
            ));
            let mut p = PathChoice::new(t0, true);
            p.poll_start(t0);
            assert!(matches!(
                p.failed(t0, Miss::Other, nats),
                Change::Failed { .. }
            ));
        }
        // Both per destination: a plain punch and no guess, round after round.
        let both = Nats {
            target: Dependent,
            ours: Dependent,
        };
        let mut p = PathChoice::new(t0, true);
        for _ in 0..3 {
            let at = p.poll_timeout().expect("a round is due");
            assert!(p.poll_start(at));
            assert_eq!(p.opening(both), Opening::Plain);
            assert!(matches!(
                p.failed(at, Miss::NoAnswer, both),
                Change::Failed { .. }
            ));
        }
        // Ours public or independent, or the target public: the plain punch first.
        for (target, ours) in [
            (Dependent, Nat::None),
            (Dependent, Nat::Unknown),
            (Independent, Independent),
            (Nat::None, Dependent),
        ] {
            let p = PathChoice::new(t0, true);
            assert_eq!(p.opening(Nats { target, ours }), Opening::Plain);
        }
    }

    #[test]
    fn the_open_path_is_kept_alive_and_a_loss_punches_at_once_with_a_fresh_backoff() {
        let t0 = Instant::now();
        let mut p = PathChoice::new(t0, true);
        p.poll_start(t0);
        let _ = p.failed(t0, Miss::Other, target(Nat::Unknown)); // backoff now 2 s
        let t1 = t0 + secs(1);
        assert!(p.poll_start(t1));
        assert_eq!(p.opened(t1), Change::Direct);
        assert!(p.is_direct());
        assert_eq!(p.poll_timeout(), Some(t1 + KEEPALIVE));
        assert!(!p.poll_keepalive(t1 + secs(14)));
        assert!(p.poll_keepalive(t1 + secs(15)));
        assert!(p.poll_keepalive(t1 + secs(31)));
        assert_eq!(
            p.poll_timeout(),
            Some(t1 + secs(46)),
            "counted from when it went"
        );
        assert!(!p.poll_keepalive(t1 + secs(45)));
        let t2 = t1 + secs(40);
        assert_eq!(p.lost(t2), Some(Change::Lost));
        assert_eq!(p.lost(t2), None, "lost once");
        assert!(p.poll_start(t2), "a new round at once");
        assert_eq!(p.poll_timeout(), None, "nothing to wake for while it runs");
        // The success reset the backoff: the next failure waits 1 s again.
        assert_eq!(
            p.failed(t2, Miss::Other, target(Nat::Unknown)),
            Change::Failed {
                retry_in: BACKOFF_MIN
            }
        );
    }
}
