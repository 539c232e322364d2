//! Node-to-node messages that are not anti-entropy (`/cirrus/peer/1`): the hello a
//! node asks for as soon as a connection is up, peer exchange, API requests relayed
//! for a client, and punches a rendezvous node forwards.
//!
//! Anti-entropy has its own protocol ([`crate::sync`]), so a long reconciliation
//! never shares limits or stream slots with a client's relayed request.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::api::{Guess, Transport};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// "Tell me what you hold and where your STUN server is": answered with the
    /// peer's current signed announcement, so a new connection does not wait for
    /// gossip to learn it.
    Hello,
    /// Peers the node knows, with addresses (peer exchange).
    Peers,
    /// A JSON-RPC request (or batch) to run on the peer (the `relay` method).
    Relay(ByteBuf),
    /// Open your NAT toward `endpoint` over `transport`: a client is about to send
    /// there (the `punch` method, docs/nat.md).
    Punch {
        endpoint: SocketAddr,
        transport: Transport,
        guess: Option<Guess>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The node's signed announcement, as it gossips it.
    Hello(ByteBuf),
    Peers(Vec<PeerEntry>),
    /// The JSON-RPC answer to a relayed request.
    Relay(ByteBuf),
    /// The punch has started.
    Punching,
    /// Understood but refused; why, for the caller.
    Refused(String),
}

/// A peer id and multiaddrs, as bytes (this crate does not depend on libp2p).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    pub peer: ByteBuf,
    pub addrs: Vec<ByteBuf>,
}
