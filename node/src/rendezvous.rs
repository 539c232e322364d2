//! Reaching a node behind NAT through a rendezvous node (Ford, Srisuresh and Kegel):
//! learn the target's STUN-found endpoints and our own mapping from the rendezvous
//! node, ask it to have the target punch toward us, send to the target directly, and
//! fall back to relaying through the rendezvous node if nothing comes back.
//!
//! Used by `cirrus call --peer X --rendezvous URL`; other Rust programs can call
//! [`call_peer`] the same way.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use cirrus_proto::jsonrpc;
use cirrus_proto::udp::Reassembler;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::client::{Client, ClientError};
use crate::stun::client::connect_from;
use crate::stun::probe;

/// How long the direct path is tried before falling back to the relay.
pub const DIRECT_FOR: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PunchTransport {
    Udp,
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// Straight to the target, at this STUN-found endpoint.
    Direct(SocketAddr),
    /// Through the rendezvous node's `relay`.
    Relay,
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
    transport: PunchTransport,
    request: Value,
    timeout: Duration,
) -> Result<Reached, ClientError> {
    let r = Client::connect(rendezvous, timeout)?;
    let peers = r.call("getpeerinfo", json!({})).await?;
    let entry = peers
        .as_array()
        .and_then(|a| a.iter().find(|p| p["peerId"] == peer))
        .ok_or_else(|| ClientError::BadResponse {
            url: rendezvous.into(),
            why: format!("peer {peer} is not connected to the rendezvous node"),
        })?;
    let key = if transport == PunchTransport::Udp {
        "udp"
    } else {
        "tcp"
    };
    let targets: Vec<SocketAddr> = entry["stun"][key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| {
                    Some(SocketAddr::new(
                        m["address"].as_str()?.parse().ok()?,
                        m["port"].as_u64()? as u16,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    if !targets.is_empty() {
        let info = r.call("getnodeinfo", json!({})).await?;
        let stun_server = rendezvous_stun(rendezvous, &info);
        let direct = match (transport, stun_server) {
            (PunchTransport::Udp, Some(s)) => direct_udp(&r, peer, s, &targets, &request).await,
            (PunchTransport::Tcp, Some(s)) => direct_tcp(&r, peer, s, &targets, &request).await,
            _ => None,
        };
        if let Some(reached) = direct {
            return Ok(reached);
        }
    }
    let response = r
        .call("relay", json!({ "peerId": peer, "request": request }))
        .await?;
    Ok(Reached {
        path: Path::Relay,
        response,
    })
}

/// The rendezvous node's STUN server: its host from the URL, its STUN port from
/// `getnodeinfo`.
fn rendezvous_stun(url: &str, info: &Value) -> Option<SocketAddr> {
    let host = url.split_once("://")?.1.trim_end_matches('/');
    let ip: IpAddr = std::net::ToSocketAddrs::to_socket_addrs(host)
        .ok()?
        .next()?
        .ip();
    Some(SocketAddr::new(ip, info["ports"]["stun"].as_u64()? as u16))
}

async fn direct_udp(
    r: &Client,
    peer: &str,
    stun: SocketAddr,
    targets: &[SocketAddr],
    request: &Value,
) -> Option<Reached> {
    let sock = UdpSocket::bind("0.0.0.0:0").await.ok()?;
    let mine = probe::binding_udp(&sock, stun, Duration::from_secs(2))
        .await
        .ok()?;
    r.call(
        "punch",
        json!({"peerId": peer, "endpoint": mine.to_string(), "transport": "udp"}),
    )
    .await
    .ok()?;
    let mut body = serde_json::to_vec(request).ok()?;
    body.resize(body.len().max(64), b' ');
    let until = tokio::time::Instant::now() + DIRECT_FOR;
    let mut parts = Reassembler::default();
    let mut buf = vec![0u8; 65_536];
    let mut bodies: Vec<(SocketAddr, Vec<u8>)> =
        targets.iter().map(|t| (*t, body.clone())).collect();
    while tokio::time::Instant::now() < until {
        for (t, b) in &bodies {
            let _ = sock.send_to(b, t).await;
        }
        let tick = (tokio::time::Instant::now() + Duration::from_millis(250)).min(until);
        while let Ok(Ok((n, from))) = tokio::time::timeout_at(tick, sock.recv_from(&mut buf)).await
        {
            if !targets.contains(&from) || cirrus_proto::stun::is_stun(&buf[..n]) {
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
                let b = serde_json::to_vec(&with).ok()?;
                bodies = vec![(from, b)];
                break;
            }
            return Some(Reached {
                path: Path::Direct(from),
                response: v,
            });
        }
    }
    None
}

async fn direct_tcp(
    r: &Client,
    peer: &str,
    stun: SocketAddr,
    targets: &[SocketAddr],
    request: &Value,
) -> Option<Reached> {
    let bind: IpAddr = "0.0.0.0".parse().ok()?;
    let mut to_stun = connect_from(bind, 0, stun).await.ok()?;
    let port = to_stun.local_addr().ok()?.port();
    let mine = probe::binding_tcp(&mut to_stun, Duration::from_secs(2))
        .await
        .ok()?;
    drop(to_stun);
    r.call(
        "punch",
        json!({"peerId": peer, "endpoint": mine.to_string(), "transport": "tcp"}),
    )
    .await
    .ok()?;
    let until = tokio::time::Instant::now() + DIRECT_FOR;
    while tokio::time::Instant::now() < until {
        for t in targets {
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_millis(500), connect_from(bind, port, *t))
                    .await
            else {
                continue;
            };
            if let Some(v) = ws_exchange(stream, *t, request).await {
                return Some(Reached {
                    path: Path::Direct(*t),
                    response: v,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn ws_exchange(
    stream: tokio::net::TcpStream,
    target: SocketAddr,
    request: &Value,
) -> Option<Value> {
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{target}/"), stream)
        .await
        .ok()?;
    ws.send(WsMessage::Text(request.to_string().into()))
        .await
        .ok()?;
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = ws.next().await {
            if let WsMessage::Text(t) = m
                && let Ok(v) = serde_json::from_str::<Value>(&t)
                && v.get("id") == request.get("id")
            {
                return Some(v);
            }
        }
        None
    })
    .await
    .ok()??;
    let _ = ws.close(None).await;
    Some(answer)
}
