//! The Cirrus node: storage, API transports and the client, driven by tokio.
//!
//! One module per concern: [`store`] (redb), [`p2p`] (the libp2p swarm), [`sync`]
//! (anti-entropy), [`api`] (dispatcher and transports),
//! [`client`] (calling a node), [`config`], [`identity`], and [`node`], which wires
//! them together and owns shutdown.

pub mod api;
pub mod client;
pub mod clock;
pub mod cloud;
pub mod config;
pub mod identity;
pub mod metrics;
pub mod node;
pub mod p2p;
pub mod peers;
pub mod portmap;
pub mod rate;
pub mod reachability;
pub mod rendezvous;
pub mod sockets;
pub mod store;
pub mod stun;
pub mod sync;
