//! The client API: one [`Dispatcher`] that maps JSON-RPC requests to methods, and
//! transports that only move bytes to and from it (HTTP in [`http`]).
//!
//! Request flow: transport bytes → [`Dispatcher::handle`] → `proto::jsonrpc` parsing
//! → [`methods`] → response bytes. Errors become JSON-RPC errors in one place,
//! [`error`].

pub mod dashboard;
pub mod dispatch;
pub mod error;
pub mod http;
pub mod limits;
pub mod methods;
pub mod serve;
pub mod session;
pub mod udp;
pub mod ws;

use std::sync::Arc;
use std::time::Instant;

use cirrus_proto::api::Ports;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::p2p::Network;
use crate::peers::PeerTable;
use crate::store::Store;
use crate::store::writer::Writer;

pub use dispatch::{Answer, ApiTransport, Dispatcher, Origin};

/// The API transports that also run on the per-peer STUN client ports: the UDP API
/// on each client's UDP socket, WebSocket on a listener sharing each client's TCP
/// port and on connections a TCP punch made. Same slots and timeouts as the fixed
/// ports.
pub struct DynamicPorts {
    pub udp: Arc<udp::UdpApi>,
    pub ws: axum::Router,
    pub connections: limits::ConnectionCounter,
    pub timeouts: serve::Timeouts,
    pub write_stall: std::time::Duration,
    pub stop: CancellationToken,
    pub tasks: TaskTracker,
}

impl crate::stun::DynamicApi for DynamicPorts {
    fn serve_udp(
        &self,
        sock: Arc<tokio::net::UdpSocket>,
        stun: tokio::sync::mpsc::Sender<udp::StunDatagram>,
        stop: CancellationToken,
    ) {
        self.tasks
            .spawn(self.udp.clone().serve(sock, Some(stun), None, stop));
    }

    fn serve_guessed_udp(
        &self,
        sock: Arc<tokio::net::UdpSocket>,
        heard: Arc<std::sync::atomic::AtomicU64>,
        stop: CancellationToken,
    ) {
        self.tasks
            .spawn(self.udp.clone().serve(sock, None, Some(heard), stop));
    }

    fn serve_tcp_stream(&self, stream: tokio::net::TcpStream) {
        // A connection made by TCP simultaneous open belongs to no listener: admit it
        // like one, then serve the WebSocket endpoint on it.
        let Ok(remote) = stream.peer_addr().map(crate::sockets::canonical) else {
            return;
        };
        let admitted = limits::LimitedStream::admit(
            stream,
            remote,
            &self.connections,
            "punched",
            self.write_stall,
        );
        match admitted {
            Ok(stream) => {
                self.tasks.spawn(serve::serve_connection(
                    stream,
                    remote,
                    self.ws.clone(),
                    self.timeouts,
                    self.stop.clone(),
                ));
            }
            Err(why) => tracing::debug!(%remote, ?why, "punched connection refused"),
        }
    }

    fn serve_tcp(&self, listener: tokio::net::TcpListener, stop: CancellationToken) {
        let listener = limits::LimitedListener::new(
            listener,
            self.connections.clone(),
            "ws",
            self.write_stall,
        );
        let (router, timeouts, tasks) = (self.ws.clone(), self.timeouts, self.tasks.clone());
        self.tasks.spawn(async move {
            if let Err(e) = serve::serve(listener, router, timeouts, stop, tasks).await {
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
    /// Bytes the answer to one message may take; requests past it are not run.
    pub max_answer_bytes: usize,
    pub network: Network,
    pub peers: Arc<PeerTable>,
    pub stun: std::sync::Arc<crate::stun::StunState>,
    /// Issues session tokens and holds requests for them.
    pub sessions: Arc<session::Sessions>,
    /// Punches and relays on clients' behalf (`getreachability`).
    pub reach: Arc<crate::reachability::Reachability>,
    pub limiter: Arc<crate::rate::RateLimiter>,
    /// Admin methods need this as their `token` param.
    pub admin_token: String,
    /// Fired by the `shutdown` method.
    pub shutdown: CancellationToken,
    pub metrics: Metrics,
}

/// `GET /health`.
#[derive(Debug, Serialize)]
pub struct Health {
    /// False: the node cannot serve reads and writes; `reasons` says why.
    pub ok: bool,
    pub status: &'static str,
    pub reasons: Vec<String>,
    pub peers: usize,
    pub records: Option<u64>,
}

impl Context {
    /// Set the gauges that are read rather than counted.
    pub async fn refresh_gauges(&self) {
        let m = &self.metrics;
        if let Ok(db) = self.store.db_hash() {
            m.records.set(db.records as i64);
            m.ratings_count.set(db.ratings.count as i64);
            m.ratings_sum.set(db.ratings.sum as i64);
        }
        if let Ok(n) = self.store.file_bytes() {
            m.store_file.set(n as i64);
        }
        if let Ok(n) = self.store.free_space() {
            m.disk_free.set(n as i64);
        }
        if let Ok(peers) = self.network.connections().await {
            m.peers.set(peers.len() as i64);
        }
        let stun = self.stun.info(false);
        for (t, list) in [("udp", &stun.udp), ("tcp", &stun.tcp)] {
            let label = crate::metrics::ByTransport { transport: t };
            let forwarded = list.iter().filter(|m| m.via == crate::portmap::VIA).count();
            m.stun_mappings
                .get_or_create(&label)
                .set((list.len() - forwarded) as i64);
            m.port_mapped.get_or_create(&label).set(forwarded as i64);
        }
        let nat = serde_json::to_value(stun.nat).expect("serializes");
        let nat = match nat.as_str() {
            Some("none") => "none",
            Some("endpoint-independent") => "endpoint-independent",
            Some("endpoint-dependent") => "endpoint-dependent",
            _ => "unknown",
        };
        m.set_nat(nat);
    }

    pub async fn health(&self) -> Health {
        let mut reasons = Vec::new();
        let records = match self.store.db_hash() {
            Ok(db) => Some(db.records),
            Err(e) => {
                reasons.push(format!("the store cannot be read: {e}"));
                None
            }
        };
        if let Some(why) = self.writer.unavailable() {
            reasons.push(why);
        }
        let peers = match self.network.connections().await {
            Ok(p) => p.len(),
            Err(e) => {
                reasons.push(format!("the swarm: {e}"));
                0
            }
        };
        Health {
            ok: reasons.is_empty(),
            status: if reasons.is_empty() {
                "ok"
            } else {
                "unavailable"
            },
            reasons,
            peers,
            records,
        }
    }
}
