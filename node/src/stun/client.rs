//! One STUN client socket pair per connected peer: a UDP socket and a TCP
//! connection, each from its own local port, asking that peer's STUN server for our
//! mapping every keepalive interval (which keeps the NAT mapping open). The UDP
//! socket also asks one other peer's server every third round, so the two answers
//! for one socket tell endpoint-independent from endpoint-dependent mapping. The
//! UDP rounds are `cirrus_proto::stun::keepalive::Keepalive`, each Binding a
//! `Transaction`; this module drives them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cirrus_proto::stun;
use cirrus_proto::stun::keepalive::Keepalive;
use cirrus_proto::stun::transaction::{Schedule, Transaction};
use libp2p::PeerId;
use libp2p::identity::Keypair;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::probe::{Inbox, ProbeError, run_udp};
use super::punch::Punchers;
use super::{DynamicApi, SOFTWARE, StunState, Transport, transaction_id};
use crate::sockets::{Binds, connect_from, listen_on, local_ip_towards};

/// Retransmission (RFC 8489 §6.2.1, shortened to fit a keepalive round): sends at
/// 0, 0.5 and 1.5 s, given up at 3.5 s.
const SCHEDULE: Schedule = Schedule {
    rto: Duration::from_millis(500),
    tries: 3,
    give_up_after: Duration::from_millis(3500),
};
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct ClientCtx {
    pub state: Arc<StunState>,
    pub key: Keypair,
    /// The node's bound addresses: each client socket binds the one of its
    /// server's family.
    pub binds: Binds,
    pub keepalive: Duration,
    /// All peers' STUN servers, for the second-server probe.
    pub servers: watch::Receiver<Vec<SocketAddr>>,
    /// Serves the client API on the client sockets' ports.
    pub api: Arc<dyn DynamicApi>,
    /// Where our sockets are registered for punches relayed by a rendezvous node.
    pub punchers: Arc<Punchers>,
    /// The node waits for these on shutdown.
    pub tasks: TaskTracker,
}

/// Start the pair for `peer` whose server is `server`; stops when `stop` fires.
pub fn spawn_pair(ctx: ClientCtx, peer: PeerId, server: SocketAddr, stop: CancellationToken) {
    let tasks = ctx.tasks.clone();
    tasks.spawn(udp_client(ctx.clone(), peer, server, stop.clone()));
    tasks.spawn(tcp_client(ctx, peer, server, stop));
}

/// A signed Binding request: proves to the peer's server that it is us.
fn request(key: &Keypair) -> ([u8; 12], Vec<u8>) {
    let txid = transaction_id();
    let sig = key
        .sign(&stun::peer_signing_message(&txid))
        .expect("ed25519 signing does not fail");
    let id = key.public().to_peer_id().to_bytes();
    (
        txid,
        stun::binding_request(txid, SOFTWARE, Some((&id, &sig))),
    )
}

/// The bound address toward `server`; `None` (logged) when no bound address is of
/// its family.
fn bind_for(ctx: &ClientCtx, peer: &PeerId, server: SocketAddr) -> Option<IpAddr> {
    let bind = ctx.binds.towards(server.ip());
    if bind.is_none() {
        tracing::debug!(%peer, %server, "no bound address of the STUN server's family");
    }
    bind
}

async fn udp_client(ctx: ClientCtx, peer: PeerId, server: SocketAddr, stop: CancellationToken) {
    let Some(bind) = bind_for(&ctx, &peer, server) else {
        return;
    };
    let sock = match UdpSocket::bind(SocketAddr::new(bind, 0)).await {
        Ok(s) => Arc::new(s),
        Err(e) => return tracing::warn!(%peer, error = %e, "cannot open STUN UDP client socket"),
    };
    // The API owns the receive side of the socket and hands us the STUN responses.
    let (stun_tx, mut responses) = mpsc::channel(64);
    ctx.api.serve_udp(sock.clone(), stun_tx, stop.clone());
    let port = sock.local_addr().map_or(0, |a| a.port());
    let local = SocketAddr::new(local_ip_towards(bind, server).await, port);
    tracing::debug!(%peer, %local, %server, "STUN UDP client up");
    let _punchable = ctx.punchers.register_udp(sock.clone(), ctx.api.clone());
    let mut rounds = Keepalive::new(std::time::Instant::now(), server, ctx.keepalive);
    loop {
        let servers = ctx.servers.borrow().clone();
        for ask in rounds.poll_round(std::time::Instant::now(), &servers) {
            match udp_ask(&sock, &mut responses, &ctx.key, ask.server).await {
                Ok(mapped) => {
                    ctx.state
                        .record(peer, Transport::Udp, local, ask.server, mapped, ask.primary)
                }
                Err(e) if ask.primary => {
                    tracing::debug!(%peer, %server, error = %e, "STUN over UDP got no answer")
                }
                Err(_) => {}
            }
        }
        rounds.done(std::time::Instant::now());
        let next = rounds
            .poll_timeout()
            .expect("a round is due after one is done");
        tokio::select! {
            _ = stop.cancelled() => {
                ctx.state.forget(&peer, Transport::Udp, Some(local));
                return;
            }
            _ = tokio::time::sleep_until(next.into()) => {}
        }
    }
}

async fn udp_ask(
    sock: &UdpSocket,
    responses: &mut mpsc::Receiver<(Vec<u8>, SocketAddr)>,
    key: &Keypair,
    server: SocketAddr,
) -> Result<SocketAddr, ProbeError> {
    let (txid, req) = request(key);
    let tx = Transaction::new(std::time::Instant::now(), server, txid, req, SCHEDULE);
    run_udp(sock, Inbox::Channel(responses), tx).await
}

async fn tcp_client(ctx: ClientCtx, peer: PeerId, server: SocketAddr, stop: CancellationToken) {
    let Some(bind) = bind_for(&ctx, &peer, server) else {
        return;
    };
    let mut local_port = 0u16;
    let mut local: Option<SocketAddr> = None;
    // Held while the port is ours, so punches can use it.
    let mut _punchable = None;
    loop {
        let conn = tokio::select! {
            _ = stop.cancelled() => break,
            c = tokio::time::timeout(TCP_TIMEOUT, connect_from(bind, local_port, server)) => c,
        };
        match conn {
            Ok(Ok(mut stream)) => {
                let me = stream.local_addr().ok();
                if local_port == 0
                    && let Some(me) = me
                {
                    // First connection: a listener on the same port serves WebSocket,
                    // and punches connect out from it.
                    match listen_on(me) {
                        Ok(l) => ctx.api.serve_tcp(l, stop.clone()),
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "no WebSocket on the STUN TCP port")
                        }
                    }
                    _punchable = Some(ctx.punchers.register_tcp(bind, me.port(), ctx.api.clone()));
                }
                local_port = me.map_or(0, |a| a.port());
                local = me;
                tracing::debug!(%peer, local = ?me, %server, "STUN TCP client up");
                // Ask on this connection every keepalive until it breaks or we stop.
                loop {
                    match tcp_ask(&mut stream, &ctx.key).await {
                        Ok(mapped) => {
                            if let Some(me) = me {
                                ctx.state
                                    .record(peer, Transport::Tcp, me, server, mapped, true);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(%peer, %server, error = %e, "STUN over TCP failed; reconnecting");
                            break;
                        }
                    }
                    tokio::select! {
                        _ = stop.cancelled() => {
                            ctx.state.forget(&peer, Transport::Tcp, local);
                            return;
                        }
                        _ = tokio::time::sleep(ctx.keepalive) => {}
                    }
                }
            }
            Ok(Err(e)) => tracing::debug!(%peer, %server, error = %e, "STUN TCP connect failed"),
            Err(_) => tracing::debug!(%peer, %server, "STUN TCP connect timed out"),
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(ctx.keepalive.min(Duration::from_secs(5))) => {}
        }
    }
    ctx.state.forget(&peer, Transport::Tcp, local);
}

async fn tcp_ask(stream: &mut TcpStream, key: &Keypair) -> Result<SocketAddr, ProbeError> {
    let (txid, req) = request(key);
    super::probe::exchange_tcp(stream, &txid, &req, TCP_TIMEOUT).await
}
