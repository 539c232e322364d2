//! Cirrus protocol crate: everything that is bytes and rules, nothing that is a socket.
//!
//! - [`record`]: the author-signed record, its canonical signed bytes, id, validation
//!   and the conflict rule that makes every node converge to the same state.
//! - [`merkle`]: the hexary Merkle trie over all slots, its hashing, the update
//!   algorithm (over any [`merkle::NodeStore`]) and proofs of presence and absence.
//! - [`jsonrpc`]: the JSON-RPC 2.0 envelope and error codes.
//! - [`api`]: parameters and results of every API method.
//! - [`stun`]: the STUN codec (RFC 8489), Binding server and client logic.
//! - [`udp`]: the UDP API's datagram framing (fragments) and anti-amplification.
//! - [`sync`]: anti-entropy messages and the reconciliation over the trie.
//! - [`punch`]: hole punching over UDP: the target's rounds, the client's opening
//!   and its probe for the direct path.
//! - [`gossip`]: records as the gossip topic carries them, in batches, and which
//!   records go into which batch.
//! - [`peer`]: the other node-to-node messages (hello, peer exchange, relay, punch).
//! - [`session`]: session tokens, which name what a client wrote so far.

pub mod api;
pub mod gossip;
pub mod hexser;
pub mod jsonrpc;
mod keys;
pub mod merkle;
pub mod peer;
pub mod punch;
pub mod record;
pub mod session;
pub mod stun;
pub mod sync;
pub mod udp;

pub use record::{Kind, Record, RecordError};
