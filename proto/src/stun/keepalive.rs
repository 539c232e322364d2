//! One STUN client socket's rounds, sans-IO: every `interval` (counted from the end
//! of the last round) a Binding to its own peer's server, which keeps the NAT
//! mapping open; in every third round also one to another peer's server, so that
//! two answers for one socket tell endpoint-independent mapping from
//! endpoint-dependent ([`super::nat::classify`]; RFC 5780 §4.3 with two servers in
//! place of one server's two addresses). Each Binding is a
//! [`Transaction`](super::transaction::Transaction); the driver reports when the
//! round's asks are done.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Every how many rounds the socket also asks another server.
pub const SECOND_EVERY: u64 = 3;
/// The other servers taken in turn, at most this many of them.
pub const OTHERS_IN_TURN: usize = 8;

/// One Binding of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    pub server: SocketAddr,
    /// The socket's own server (its mapping is the one the node lists), or another
    /// (for the classification only).
    pub primary: bool,
}

#[derive(Debug, Clone)]
pub struct Keepalive {
    primary: SocketAddr,
    interval: Duration,
    round: u64,
    next: Option<Instant>,
}

impl Keepalive {
    /// Rounds toward `primary`, the first due at `now`.
    pub fn new(now: Instant, primary: SocketAddr, interval: Duration) -> Keepalive {
        Keepalive {
            primary,
            interval,
            round: 0,
            next: Some(now),
        }
    }

    /// The asks of the round due at `now` (none if it is not due); `servers` are
    /// every peer's STUN server as known now. The round then runs until
    /// [`done`](Self::done).
    pub fn poll_round(&mut self, now: Instant, servers: &[SocketAddr]) -> Vec<Ask> {
        match self.next {
            Some(at) if now >= at => {}
            _ => return Vec::new(),
        }
        self.next = None;
        let mut asks = vec![Ask {
            server: self.primary,
            primary: true,
        }];
        let others: Vec<SocketAddr> = servers
            .iter()
            .filter(|s| **s != self.primary)
            .take(OTHERS_IN_TURN)
            .copied()
            .collect();
        // Each asking round takes the next of them in turn.
        let turn = (self.round / SECOND_EVERY) as usize;
        if self.round % SECOND_EVERY == 0
            && let Some(other) = others.get(turn % others.len().max(1))
        {
            asks.push(Ask {
                server: *other,
                primary: false,
            });
        }
        self.round += 1;
        asks
    }

    /// The round's asks have ended (answered or not) at `now`.
    pub fn done(&mut self, now: Instant) {
        self.next = Some(now + self.interval);
    }

    /// When the next round is due; `None` while one runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn primary_every_round_another_server_every_third_in_turn() {
        let t0 = Instant::now();
        let primary = a("198.18.1.2:38084");
        let others = [a("198.18.2.2:38084"), a("198.18.3.2:38084")];
        let servers = [primary, others[0], others[1]];
        let mut k = Keepalive::new(t0, primary, Duration::from_secs(20));
        let mut now = t0;
        let mut seen = Vec::new();
        for _ in 0..7 {
            assert_eq!(k.poll_timeout(), Some(now));
            let asks = k.poll_round(now, &servers);
            assert_eq!(
                asks[0],
                Ask {
                    server: primary,
                    primary: true
                }
            );
            seen.push(asks.get(1).map(|x| x.server));
            assert!(
                k.poll_round(now, &servers).is_empty(),
                "one round at a time"
            );
            assert_eq!(k.poll_timeout(), None);
            // The round's asks took 3 s; the next round counts from their end.
            now += Duration::from_secs(3);
            k.done(now);
            assert!(
                k.poll_round(now + Duration::from_secs(19), &servers)
                    .is_empty()
            );
            now += Duration::from_secs(20);
        }
        // Rounds 0, 3 and 6 ask another server, each the next in turn.
        assert_eq!(
            seen,
            [
                Some(others[0]),
                None,
                None,
                Some(others[1]),
                None,
                None,
                Some(others[0])
            ]
        );
        // With no other server known, only the primary.
        let mut alone = Keepalive::new(t0, primary, Duration::from_secs(20));
        assert_eq!(alone.poll_round(t0, &[primary]).len(), 1);
    }
}
