//! The client API: one [`Dispatcher`] that maps JSON-RPC requests to methods, and
//! transports that only move bytes to and from it (HTTP in [`http`]).
//!
//! Request flow: transport bytes → [`Dispatcher::handle`] → `proto::jsonrpc` parsing
//! → [`methods`] → response bytes. Errors become JSON-RPC errors in one place,
//! [`error`].

pub mod dispatch;
pub mod error;
pub mod http;
pub mod limits;
pub mod methods;
pub mod udp;
pub mod ws;

use std::sync::Arc;
use std::time::Instant;

use cirrus_proto::api::Ports;

use crate::p2p::P2pHandle;
use crate::store::Store;
use crate::store::writer::Writer;

pub use dispatch::Dispatcher;

/// The API transports that also run on the per-peer STUN client ports: the UDP API
/// on each client's UDP socket, WebSocket on a listener sharing each client's TCP port.
pub struct DynamicPorts {
    pub udp: Arc<udp::UdpApi>,
    pub ws: axum::Router,
    pub connections: limits::ConnectionCounter,
}

impl crate::stun::client::DynamicApi for DynamicPorts {
    fn serve_udp(
        &self,
        sock: Arc<tokio::net::UdpSocket>,
        stun: tokio::sync::mpsc::Sender<udp::StunDatagram>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        tokio::spawn(self.udp.clone().serve(sock, Some(stun), stop));
    }

    fn serve_tcp_stream(&self, stream: tokio::net::TcpStream) {
        // A connection made by TCP simultaneous open belongs to no listener: serve
        // the WebSocket endpoint on it directly.
        let Ok(remote) = stream.peer_addr() else {
            return;
        };
        let service = hyper_util::service::TowerToHyperService::new(self.ws.clone().layer(
            axum::Extension(axum::extract::ConnectInfo(limits::ClientAddr(remote))),
        ));
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "WebSocket over a punched connection ended");
            }
        });
    }

    fn serve_tcp(
        &self,
        listener: tokio::net::TcpListener,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let router = self.ws.clone();
        let listener = limits::LimitedListener::new(listener, self.connections.clone());
        tokio::spawn(async move {
            if let Err(e) = ws::serve(listener, router, stop).await {
                tracing::debug!(error = %e, "WebSocket on a STUN client port stopped");
            }
        });
    }
}

/// What the methods need from the rest of the node.
pub struct Context {
    pub store: Arc<Store>,
    pub writer: Writer,
    pub peer_id: String,
    pub started: Instant,
    pub ports: Ports,
    pub max_batch: usize,
    pub p2p: P2pHandle,
    pub stun: std::sync::Arc<crate::stun::StunState>,
    pub limiter: Arc<limits::RateLimiter>,
    /// Admin methods accept this in place of a loopback source.
    pub admin_token: String,
    /// Fired by the `shutdown` method.
    pub shutdown: tokio_util::sync::CancellationToken,
}
