//! Reaching a node behind NAT through a rendezvous node (Ford, Srisuresh and Kegel):
//! learn the target's STUN-found endpoints and our own mapping from the rendezvous
//! node, ask it to have the target punch toward us, send to the target directly, and
//! fall back to relaying through the rendezvous node if nothing comes back.
//!
//! Used by `cirrus call --peer X --rendezvous URL`; other Rust programs can call
//! [`call_peer`] the same way.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use cirrus_proto::api::{NodeInfo, PeerInfo, Transport};
use cirrus_proto::stun::{self, Class};
use cirrus_proto::udp::{CallError, Progress, Retransmit, UdpCall};
use serde_json::{Value, json};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::client::{Client, ClientError, ws_ask};
use crate::sockets::{connect_from, listen_on, local_ip_towards};
use crate::stun::probe::{self, ProbeError};
use crate::stun::transaction_id;

/// How long the direct path is tried before falling back to the relay.
pub const DIRECT_FOR: Duration = Duration::from_secs(4);

/// TTL of the UDP packets that open our own NAT toward the target before the punch:
/// they pass our NAT (the first router) and expire at the next router. Had the
/// target's punch packets reached our NAT first, its conntrack would hold the very
/// port pair our packets need and map them to another port; had our packets reached
/// the target's NAT first, the same would happen there (docs/nat.md, "Matrix").
/// Sent only when we are behind NAT.
pub const OPENING_TTL: u32 = 2;

/// Most endpoints learned from the target's punch packets (a symmetric NAT sends
/// them from a port that is not in its `stun` list).
const MAX_LEARNED: usize = 8;

#[derive(Debug)]
pub enum Path {
    /// Straight to the target, at this STUN-found endpoint.
    Direct(SocketAddr),
    /// Through the rendezvous node's `relay`; `why` the direct path was not taken.
    Relay { why: DirectError },
}

/// Why a call through a rendezvous node failed.
#[derive(Debug, thiserror::Error)]
pub enum RendezvousError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("peer {0} is not connected to the rendezvous node")]
    NotConnected(String),
}

/// Why the direct path was not taken.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    #[error("the rendezvous node lists no {0} endpoints for the peer")]
    NoEndpoints(Transport),
    #[error("the rendezvous node shows no STUN port")]
    NoStunPort,
    #[error(transparent)]
    Request(#[from] CallError),
    #[error("no local socket: {0}")]
    Socket(std::io::Error),
    #[error("no STUN answer from {server}: {why}")]
    Stun { server: SocketAddr, why: ProbeError },
    #[error("punch failed: {0}")]
    Punch(ClientError),
    #[error("no answer within {DIRECT_FOR:?} from {} (our mapping {mine})", list(.tried))]
    NoAnswer {
        tried: Vec<SocketAddr>,
        mine: SocketAddr,
    },
}

fn list(addrs: &[SocketAddr]) -> String {
    let each: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    each.join(", ")
}

#[derive(Debug)]
pub struct Reached {
    pub path: Path,
    /// The target's whole JSON-RPC response object.
    pub response: Value,
}

/// Send `request` (a JSON-RPC request object) to `peer`, directly if a hole can be
/// punched, else relayed by the rendezvous node.
pub async fn call_peer(
    rendezvous: &str,
    peer: &str,
    transport: Transport,
    request: Value,
    timeout: Duration,
) -> Result<Reached, RendezvousError> {
    let r = Client::connect(rendezvous, timeout)?;
    let peers: Vec<PeerInfo> = r.call_as("getpeerinfo", json!({})).await?;
    let entry = peers
        .iter()
        .find(|p| p.peer_id == peer)
        .ok_or_else(|| RendezvousError::NotConnected(peer.into()))?;
    let targets = entry
        .stun
        .as_ref()
        .map(|s| s.endpoints(transport))
        .unwrap_or_default();
    let why = if targets.is_empty() {
        DirectError::NoEndpoints(transport)
    } else {
        let info: NodeInfo = r.call_as("getnodeinfo", json!({})).await?;
        let direct = match (transport, rendezvous_stun(rendezvous, &info)) {
            (Transport::Udp, Some(s)) => direct_udp(&r, peer, s, &targets, &request).await,
            (Transport::Tcp, Some(s)) => direct_tcp(&r, peer, s, &targets, &request).await,
            (_, None) => Err(DirectError::NoStunPort),
        };
        match direct {
            Ok(reached) => return Ok(reached),
            Err(why) => why,
        }
    };
    let response = r
        .call("relay", json!({ "peerId": peer, "request": request }))
        .await?;
    Ok(Reached {
        path: Path::Relay { why },
        response,
    })
}

/// The rendezvous node's STUN server: its host from the URL, its STUN port from
/// `getnodeinfo`.
fn rendezvous_stun(url: &str, info: &NodeInfo) -> Option<SocketAddr> {
    let host = url.split_once("://")?.1.trim_end_matches('/');
    // Our punching sockets are IPv4 (bound to 0.0.0.0), so take an IPv4 address
    // even where the name resolves to IPv6 first (`localhost` to ::1).
    let ip: IpAddr = std::net::ToSocketAddrs::to_socket_addrs(host)
        .ok()?
        .find(SocketAddr::is_ipv4)?
        .ip();
    Some(SocketAddr::new(ip, info.ports.stun?))
}

async fn direct_udp(
    r: &Client,
    peer: &str,
    stun: SocketAddr,
    targets: &[SocketAddr],
    request: &Value,
) -> Result<Reached, DirectError> {
    let body = serde_json::to_vec(request).expect("a JSON value serializes");
    // Made before the punch: a request too large to send would fail, unseen, for
    // DIRECT_FOR.
    let mut call = UdpCall::new(
        Instant::now(),
        body,
        DIRECT_FOR,
        Retransmit::Every(Duration::from_millis(250)),
    )?;
    let sock = UdpSocket::bind("0.0.0.0:0")
        .await
        .map_err(DirectError::Socket)?;
    let mine = probe::binding_udp(&sock, stun, Duration::from_secs(2))
        .await
        .map_err(|why| DirectError::Stun { server: stun, why })?;
    if local_ip_towards(Ipv4Addr::UNSPECIFIED.into(), stun).await != mine.ip() {
        // Behind NAT: open ours toward the target before it punches toward us, so
        // its packets find our mapping instead of creating one of their own.
        if let Ok(ttl) = sock.ttl()
            && sock.set_ttl(OPENING_TTL).is_ok()
        {
            for t in targets {
                let _ = sock.send_to(&indication(), t).await;
            }
            let _ = sock.set_ttl(ttl);
        }
    }
    punch(r, peer, mine, Transport::Udp).await?;
    let listed = targets.len();
    let mut targets = targets.to_vec();
    // Where the request goes: every endpoint until one asks for a cookie, then that
    // one alone.
    let mut sending = targets.clone();
    let mut buf = vec![0u8; 65_536];
    loop {
        if let Some(d) = call.poll_transmit(Instant::now()) {
            for t in &sending {
                let _ = sock.send_to(d, t).await;
            }
        }
        let wake = tokio::time::Instant::from_std(call.poll_timeout());
        let Ok(Ok((n, from))) = tokio::time::timeout_at(wake, sock.recv_from(&mut buf)).await
        else {
            if call.handle_timeout(Instant::now()).is_err() {
                return Err(DirectError::NoAnswer {
                    tried: targets,
                    mine,
                });
            }
            continue;
        };
        let bytes = &buf[..n];
        if stun::is_stun(bytes) {
            // A punch packet from an endpoint we do not know: the target's NAT maps
            // per destination (symmetric), and this is its mapping toward us (a
            // peer-reflexive candidate, RFC 8445 §7.3.1.3).
            if is_indication(bytes)
                && !targets.contains(&from)
                && targets.len() < listed + MAX_LEARNED
            {
                targets.push(from);
                sending.push(from);
                let _ = sock.send_to(call.datagram(), from).await;
            }
            continue;
        }
        if !targets.contains(&from) {
            continue;
        }
        match call.on_datagram(Instant::now(), bytes)? {
            Progress::Waiting => {}
            Progress::CookieTaken => sending = vec![from],
            Progress::Answer(msg) => {
                let Ok(response) = serde_json::from_slice::<Value>(&msg) else {
                    continue;
                };
                return Ok(Reached {
                    path: Path::Direct(from),
                    response,
                });
            }
        }
    }
}

/// Ask the rendezvous node to have the target punch toward `mine`.
async fn punch(
    r: &Client,
    peer: &str,
    mine: SocketAddr,
    transport: Transport,
) -> Result<(), DirectError> {
    r.call(
        "punch",
        json!({"peerId": peer, "endpoint": mine.to_string(), "transport": transport}),
    )
    .await
    .map_err(DirectError::Punch)?;
    Ok(())
}

async fn direct_tcp(
    r: &Client,
    peer: &str,
    stun: SocketAddr,
    targets: &[SocketAddr],
    request: &Value,
) -> Result<Reached, DirectError> {
    let bind: IpAddr = Ipv4Addr::UNSPECIFIED.into();
    let stun_err = |why| DirectError::Stun { server: stun, why };
    let mut to_stun = connect_from(bind, 0, stun)
        .await
        .map_err(|e| stun_err(ProbeError::Io(e)))?;
    let port = to_stun
        .local_addr()
        .map_err(|e| stun_err(ProbeError::Io(e)))?
        .port();
    let mine = probe::binding_tcp(&mut to_stun, Duration::from_secs(2))
        .await
        .map_err(stun_err)?;
    drop(to_stun);
    // The target's punch connects toward `mine`: when our NAT lets it in (no NAT,
    // or endpoint-independent filtering) this listener takes it, from whatever port
    // the target's NAT gave it. Our own connects go the other way, and cross the
    // target's SYNs when both NATs keep the port (simultaneous open).
    let listener = listen_on(SocketAddr::new(bind, port)).map_err(DirectError::Socket)?;
    punch(r, peer, mine, Transport::Tcp).await?;
    let until = tokio::time::Instant::now() + DIRECT_FOR;
    let (tx, mut answers) = mpsc::channel::<(SocketAddr, Value)>(8);
    let mut tasks = JoinSet::new();
    tasks.spawn(accept_until(listener, until, request.clone(), tx.clone()));
    for t in targets {
        tasks.spawn(connect_until(
            bind,
            port,
            *t,
            until,
            request.clone(),
            tx.clone(),
        ));
    }
    drop(tx);
    let (from, response) = tokio::time::timeout_at(until, answers.recv())
        .await
        .ok()
        .flatten()
        .ok_or_else(|| DirectError::NoAnswer {
            tried: targets.to_vec(),
            mine,
        })?;
    Ok(Reached {
        path: Path::Direct(from),
        response,
    })
}

/// Connections the target makes toward us (its punch), each asked `request` on
/// its own, until `until`.
async fn accept_until(
    listener: TcpListener,
    until: tokio::time::Instant,
    request: Value,
    answers: mpsc::Sender<(SocketAddr, Value)>,
) {
    let mut exchanges = JoinSet::new();
    while let Ok(Ok((stream, from))) = tokio::time::timeout_at(until, listener.accept()).await {
        let (request, answers) = (request.clone(), answers.clone());
        exchanges.spawn(async move {
            if let Some(v) = ws_exchange(stream, from, &request).await {
                let _ = answers.send((from, v)).await;
            }
        });
    }
    while exchanges.join_next().await.is_some() {}
}

/// Connects from our port to `target` (a simultaneous open when the target's SYN
/// crosses ours) and asks `request`, again and again until an answer or `until`.
async fn connect_until(
    bind: IpAddr,
    port: u16,
    target: SocketAddr,
    until: tokio::time::Instant,
    request: Value,
    answers: mpsc::Sender<(SocketAddr, Value)>,
) {
    while tokio::time::Instant::now() < until {
        let attempt = tokio::time::timeout_at(
            (tokio::time::Instant::now() + Duration::from_millis(500)).min(until),
            connect_from(bind, port, target),
        );
        if let Ok(Ok(stream)) = attempt.await
            && let Some(v) = ws_exchange(stream, target, &request).await
        {
            let _ = answers.send((target, v)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn indication() -> Vec<u8> {
    stun::binding_indication(transaction_id())
}

fn is_indication(bytes: &[u8]) -> bool {
    stun::Message::decode(bytes)
        .is_ok_and(|m| m.class == Class::Indication && m.method == stun::BINDING)
}

/// One WebSocket exchange on a connection punched through (either way).
async fn ws_exchange(
    stream: tokio::net::TcpStream,
    target: SocketAddr,
    request: &Value,
) -> Option<Value> {
    let body = serde_json::to_vec(request).ok()?;
    tokio::time::timeout(Duration::from_secs(5), async {
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{target}/"), stream)
            .await
            .ok()?;
        let answer = ws_ask(&mut ws, &body).await.ok()?;
        let _ = ws.close(None).await;
        serde_json::from_slice(&answer).ok()
    })
    .await
    .ok()?
}
