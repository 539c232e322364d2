//! STUN in the node: one server (UDP and TCP on the STUN port) for peers and stock
//! clients, and one client socket pair (UDP and TCP) per connected peer that keeps
//! asking that peer's server for our mapping, which also keeps the NAT mapping open.
//!
//! [`StunState`] is what both sides learn: our mappings per client socket (and so
//! our external address and NAT behaviour), and the addresses of peers that proved
//! their identity in a request ("seen"). The swarm announces our part to peers; the
//! API shows it in `getnodeinfo.stun`. [`pairs`] starts and stops client pairs as
//! peers come and go; [`punch`] punches from their sockets on a rendezvous node's
//! request.

pub mod client;
mod guess;
pub mod pairs;
pub mod probe;
pub mod punch;
pub mod server;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

pub use cirrus_proto::api::{Mapping, Seen, StunInfo, Transport};
pub use guess::spray;
pub use state::{MAX_SEEN, StunState};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const SOFTWARE: &str = concat!("cirrus/", env!("CARGO_PKG_VERSION"));

/// A fresh STUN transaction id (RFC 8489 §6: uniformly random, 96 bits).
pub fn transaction_id() -> [u8; 12] {
    let mut txid = [0u8; 12];
    // The OS source does not fail on Linux once booted; a zero id still works.
    let _ = getrandom::fill(&mut txid);
    txid
}

/// The client API on a STUN client's ports (implemented by the API module, so this
/// module does not depend on it).
pub trait DynamicApi: Send + Sync {
    /// Serve the UDP API on `sock`; pass STUN responses that arrive on it to `stun`.
    fn serve_udp(
        &self,
        sock: Arc<UdpSocket>,
        stun: mpsc::Sender<(Vec<u8>, SocketAddr)>,
        stop: CancellationToken,
    );
    /// Serve the UDP API on a socket opened for port guessing; `heard` counts the
    /// datagrams that arrive on it (the socket lives while it is used).
    fn serve_guessed_udp(
        &self,
        sock: Arc<UdpSocket>,
        heard: Arc<std::sync::atomic::AtomicU64>,
        stop: CancellationToken,
    );
    /// Serve WebSocket on `listener`, which shares the TCP client's port.
    fn serve_tcp(&self, listener: TcpListener, stop: CancellationToken);
    /// Serve WebSocket on one connection made by simultaneous open.
    fn serve_tcp_stream(&self, stream: TcpStream);
}
