//! Reaching a node behind NAT through a rendezvous node (Ford, Srisuresh and Kegel):
//! learn the target's STUN-found endpoints and our own mapping from the rendezvous
//! node, ask it to have the target punch toward us, send to the target directly, and
//! fall back to relaying through the rendezvous node if nothing comes back.
//!
//! Used by `cirrus call --peer X --rendezvous URL`; other Rust programs can call
//! [`call_peer`] the same way.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use cirrus_proto::api::{NodeInfo, PeerInfo, Transport};
use cirrus_proto::jsonrpc;
use cirrus_proto::stun::{self, Class};
use cirrus_proto::udp::Reassembler;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::api::udp::MAX_DATAGRAM;
use crate::client::{Client, ClientError};
use crate::stun::client::{connect_from, listen_on};
use crate::stun::probe;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// Straight to the target, at this STUN-found endpoint.
    Direct(SocketAddr),
    /// Through the rendezvous node's `relay`; `why` the direct path was not taken.
    Relay { why: String },
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
) -> Result<Reached, ClientError> {
    let r = Client::connect(rendezvous, timeout)?;
    let peers: Vec<PeerInfo> = r.call_as("getpeerinfo", json!({})).await?;
    let entry =
        peers
            .iter()
            .find(|p| p.peer_id == peer)
            .ok_or_else(|| ClientError::BadResponse {
                url: rendezvous.into(),
                why: format!("peer {peer} is not connected to the rendezvous node"),
            })?;
    let targets = entry
        .stun
        .as_ref()
        .map(|s| s.endpoints(transport))
        .unwrap_or_default();
    let why = if targets.is_empty() {
        format!("the rendezvous node lists no {transport} endpoints for the peer")
    } else {
        let info: NodeInfo = r.call_as("getnodeinfo", json!({})).await?;
        let direct = match (transport, rendezvous_stun(rendezvous, &info)) {
            (Transport::Udp, Some(s)) => direct_udp(&r, peer, s, &targets, &request).await,
            (Transport::Tcp, Some(s)) => direct_tcp(&r, peer, s, &targets, &request).await,
            (_, None) => Err("the rendezvous node shows no STUN port".into()),
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
) -> Result<Reached, String> {
    let mut body = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    // Checked before the punch: sending it would only fail, unseen, for DIRECT_FOR.
    if body.len() > MAX_DATAGRAM {
        return Err(format!(
            "the request is {} bytes, more than one UDP datagram carries ({MAX_DATAGRAM})",
            body.len()
        ));
    }
    let sock = UdpSocket::bind("0.0.0.0:0")
        .await
        .map_err(|e| format!("no UDP socket: {e}"))?;
    let mine = probe::binding_udp(&sock, stun, Duration::from_secs(2))
        .await
        .map_err(|e| format!("no STUN answer from {stun}: {e}"))?;
    if behind_nat(stun, mine).await {
        // Open our NAT toward the target before it punches toward us, so its
        // packets find our mapping instead of creating one of their own.
        if let Ok(ttl) = sock.ttl()
            && sock.set_ttl(OPENING_TTL).is_ok()
        {
            for t in targets {
                let _ = sock.send_to(&indication(), t).await;
            }
            let _ = sock.set_ttl(ttl);
        }
    }
    r.call(
        "punch",
        json!({"peerId": peer, "endpoint": mine.to_string(), "transport": "udp"}),
    )
    .await
    .map_err(|e| format!("punch failed: {e}"))?;
    body.resize(body.len().max(64), b' ');
    let until = tokio::time::Instant::now() + DIRECT_FOR;
    let mut parts = Reassembler::default();
    let mut buf = vec![0u8; 65_536];
    let mut targets = targets.to_vec();
    let listed = targets.len();
    let mut bodies: Vec<(SocketAddr, Vec<u8>)> =
        targets.iter().map(|t| (*t, body.clone())).collect();
    while tokio::time::Instant::now() < until {
        for (t, b) in &bodies {
            let _ = sock.send_to(b, t).await;
        }
        let tick = (tokio::time::Instant::now() + Duration::from_millis(250)).min(until);
        while let Ok(Ok((n, from))) = tokio::time::timeout_at(tick, sock.recv_from(&mut buf)).await
        {
            if stun::is_stun(&buf[..n]) {
                // A punch packet from an endpoint we do not know: the target's NAT
                // maps per destination (symmetric), and this is its mapping toward
                // us (a peer-reflexive candidate, RFC 8445 §7.3.1.3).
                if is_indication(&buf[..n])
                    && !targets.contains(&from)
                    && targets.len() < listed + MAX_LEARNED
                {
                    targets.push(from);
                    bodies.push((from, body.clone()));
                    let _ = sock.send_to(&body, from).await;
                }
                continue;
            }
            if !targets.contains(&from) {
                continue;
            }
            let Some(msg) = parts.push(&buf[..n]) else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<Value>(&msg) else {
                continue;
            };
            if v["error"]["code"] == jsonrpc::COOKIE_REQUIRED {
                let mut with = request.clone();
                with["cookie"] = v["error"]["data"]["cookie"].clone();
                let b = serde_json::to_vec(&with).map_err(|e| e.to_string())?;
                bodies = vec![(from, b)];
                break;
            }
            return Ok(Reached {
                path: Path::Direct(from),
                response: v,
            });
        }
    }
    Err(no_answer(&targets, mine))
}

async fn direct_tcp(
    r: &Client,
    peer: &str,
    stun: SocketAddr,
    targets: &[SocketAddr],
    request: &Value,
) -> Result<Reached, String> {
    let bind: IpAddr = Ipv4Addr::UNSPECIFIED.into();
    let mut to_stun = connect_from(bind, 0, stun)
        .await
        .map_err(|e| format!("cannot connect to STUN {stun}: {e}"))?;
    let port = to_stun.local_addr().map_err(|e| e.to_string())?.port();
    let mine = probe::binding_tcp(&mut to_stun, Duration::from_secs(2))
        .await
        .map_err(|e| format!("no STUN answer from {stun}: {e}"))?;
    drop(to_stun);
    // The target's punch connects toward `mine`: when our NAT lets it in (no NAT,
    // or endpoint-independent filtering) this listener takes it, from whatever port
    // the target's NAT gave it. Our own connects go the other way, and cross the
    // target's SYNs when both NATs keep the port (simultaneous open).
    let listener = listen_on(SocketAddr::new(bind, port))
        .map_err(|e| format!("cannot listen on port {port}: {e}"))?;
    r.call(
        "punch",
        json!({"peerId": peer, "endpoint": mine.to_string(), "transport": "tcp"}),
    )
    .await
    .map_err(|e| format!("punch failed: {e}"))?;
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
        .ok_or_else(|| no_answer(targets, mine))?;
    Ok(Reached {
        path: Path::Direct(from),
        response,
    })
}

/// Why the direct path failed when nothing came back in time.
fn no_answer(targets: &[SocketAddr], mine: SocketAddr) -> String {
    let tried: Vec<String> = targets.iter().map(ToString::to_string).collect();
    format!(
        "no answer within {DIRECT_FOR:?} from {} (our mapping {mine})",
        tried.join(", ")
    )
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

/// Whether `mine` (our mapping as the STUN server saw it) is not our own address.
async fn behind_nat(stun: SocketAddr, mine: SocketAddr) -> bool {
    let local = async {
        let s = UdpSocket::bind("0.0.0.0:0").await.ok()?;
        s.connect(stun).await.ok()?;
        Some(s.local_addr().ok()?.ip())
    };
    local.await.is_some_and(|ip| ip != mine.ip())
}

fn indication() -> Vec<u8> {
    let mut txid = [0u8; 12];
    let _ = getrandom::fill(&mut txid);
    stun::binding_indication(txid)
}

fn is_indication(bytes: &[u8]) -> bool {
    stun::Message::decode(bytes)
        .is_ok_and(|m| m.class == Class::Indication && m.method == stun::BINDING)
}

async fn ws_exchange(
    stream: tokio::net::TcpStream,
    target: SocketAddr,
    request: &Value,
) -> Option<Value> {
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{target}/"), stream)
            .await
            .ok()?;
        ws.send(WsMessage::Text(request.to_string().into()))
            .await
            .ok()?;
        while let Some(Ok(m)) = ws.next().await {
            if let WsMessage::Text(t) = m
                && let Ok(v) = serde_json::from_str::<Value>(&t)
                && v.get("id") == request.get("id")
            {
                let _ = ws.close(None).await;
                return Some(v);
            }
        }
        None
    })
    .await
    .ok()??;
    Some(answer)
}
