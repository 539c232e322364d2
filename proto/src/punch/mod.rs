//! Hole punching, sans-IO (after Ford, Srisuresh and Kegel): the target's UDP punch
//! rounds ([`Rounds`]) and TCP connects ([`Tries`]), a port guess's probes
//! ([`Spray`]) and the lifetime of its guessed sockets ([`Kept`]), the client's
//! opening of its own NAT ([`opening`]), the client's probe that finds the direct
//! UDP path ([`PathProbe`]) and its race of TCP connections both ways
//! ([`TcpOpen`]), and its choice of path over time: relay, punch, guess, direct,
//! keepalive, backoff ([`PathChoice`]), with one attempt per address family raced
//! ([`Race`]). Time and datagrams (or what became of a connection) go in;
//! datagrams to send (with a TTL where one matters) or connections to make, when to
//! wake and what happened come out. `node/src/stun/punch.rs` and
//! `node/src/rendezvous/` drive them on sockets; `proto/tests/punch.rs` runs the
//! UDP ones against each other through simulated NATs in virtual time, and each
//! has unit tests of its own.

mod kept;
pub mod link;
mod probe;
pub mod race;
mod rounds;
pub mod spray;
pub mod tcp_open;
mod tries;

use std::net::SocketAddr;

pub use kept::Kept;
pub use link::{Change, Miss, Nats, Opening, PathChoice};
pub use probe::{PathProbe, ProbeEvent, answers_as};
pub use race::Race;
pub use rounds::{PUNCH_FOR, Rounds};
pub use spray::Spray;
pub use tcp_open::TcpOpen;
pub use tries::{CONNECT_FOR, TRY_EVERY, Tries};

/// TTL of the packets that open the client's own NAT toward the target before the
/// punch: they pass that NAT (the first router) and expire at the next router.
/// Had the target's punch packets reached the client's NAT first, its conntrack
/// would hold the very port pair the client's packets need and map them to another
/// port; had the client's packets reached the target's NAT first, the same would
/// happen there (docs/nat.md, "Matrix"). It needs a router between the two NATs.
pub const OPENING_TTL: u32 = 2;

/// A datagram to send; `ttl` when it must differ from the socket's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
    pub ttl: Option<u32>,
}

/// The opening: one Binding indication (`indication`) to each target with
/// [`OPENING_TTL`]. Sent by a client behind NAT, before it asks for the punch.
pub fn opening(targets: &[SocketAddr], indication: &[u8]) -> Vec<Transmit> {
    targets
        .iter()
        .map(|t| Transmit {
            destination: *t,
            contents: indication.to_vec(),
            ttl: Some(OPENING_TTL),
        })
        .collect()
}
