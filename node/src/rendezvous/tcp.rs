//! The direct TCP path: our mapping from the rendezvous node's STUN server over TCP
//! from a port we then listen on too, the punch, then connections both ways: the
//! target's toward our mapping (taken by the listener when our NAT lets it in) and
//! ours toward each of its endpoints from the same port (a simultaneous open when
//! the SYNs cross). The first connection whose WebSocket probe answers as the target
//! is the path.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use cirrus_proto::api::Transport;
use cirrus_proto::punch::Tries;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;

use super::{DIRECT_FOR, DirectError, Plan, answers_as, probe_request, punch, stun_error};
use crate::client::{Client, WsAskError, ws_ask};
use crate::sockets::{any_of_family, connect_from, listen_on};
use crate::stun::probe::{self, ProbeError};

type Ws = WebSocketStream<TcpStream>;

pub struct DirectTcp {
    ws: Ws,
    pub at: SocketAddr,
}

impl DirectTcp {
    pub async fn open(r: &Client, peer: &str, plan: &Plan) -> Result<DirectTcp, DirectError> {
        let bind = any_of_family(plan.stun);
        let err = stun_error(plan.stun);
        let mut to_stun = connect_from(bind, 0, plan.stun)
            .await
            .map_err(|e| err(ProbeError::Io(e)))?;
        let port = to_stun
            .local_addr()
            .map_err(|e| err(ProbeError::Io(e)))?
            .port();
        let mine = probe::binding_tcp(&mut to_stun, Duration::from_secs(2))
            .await
            .map_err(&err)?;
        drop(to_stun);
        let listener = listen_on(SocketAddr::new(bind, port))
            .map_err(|e| DirectError::Socket(e.to_string()))?;
        punch(r, peer, mine, Transport::Tcp, None).await?;
        let until = tokio::time::Instant::now() + DIRECT_FOR;
        let (tx, mut opened) = mpsc::channel::<(SocketAddr, Ws)>(8);
        let mut tries = JoinSet::new();
        tries.spawn(accept_until(listener, until, peer.to_string(), tx.clone()));
        for t in &plan.targets {
            tries.spawn(connect_until(
                bind,
                port,
                *t,
                until,
                peer.to_string(),
                tx.clone(),
            ));
        }
        drop(tx);
        let (at, ws) = tokio::time::timeout_at(until, opened.recv())
            .await
            .ok()
            .flatten()
            .ok_or_else(|| DirectError::NoAnswer {
                tried: plan.targets.clone(),
                mine,
            })?;
        // The other tries end with the set.
        drop(tries);
        Ok(DirectTcp { ws, at })
    }

    pub async fn call(&mut self, request: &Value, timeout: Duration) -> Result<Value, DirectError> {
        let body = serde_json::to_vec(request).expect("a JSON value serializes");
        let answer = tokio::time::timeout(timeout, ws_ask(&mut self.ws, &body))
            .await
            .map_err(|_| DirectError::Lost(format!("no answer within {timeout:?}")))?
            .map_err(|e: WsAskError| DirectError::Lost(e.to_string()))?;
        serde_json::from_slice(&answer).map_err(|e| DirectError::Lost(e.to_string()))
    }

    /// A WebSocket ping keeps both NATs' entries for the connection.
    pub async fn keepalive(&mut self) -> Result<(), DirectError> {
        use futures::SinkExt;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::Ping(
                Vec::new().into(),
            ))
            .await
            .map_err(|e| DirectError::Lost(e.to_string()))
    }
}

/// The WebSocket handshake and the probe on a connection; the stream if it answers
/// as `peer`.
async fn probe_on(stream: TcpStream, at: SocketAddr, peer: &str) -> Option<Ws> {
    tokio::time::timeout(Duration::from_secs(5), async {
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{at}/"), stream)
            .await
            .ok()?;
        let body = serde_json::to_vec(&probe_request()).ok()?;
        let answer: Value = serde_json::from_slice(&ws_ask(&mut ws, &body).await.ok()?).ok()?;
        answers_as(&answer, peer).ok()?;
        Some(ws)
    })
    .await
    .ok()?
}

/// Connections the target makes toward us (its punch), each probed, until `until`.
async fn accept_until(
    listener: TcpListener,
    until: tokio::time::Instant,
    peer: String,
    opened: mpsc::Sender<(SocketAddr, Ws)>,
) {
    let mut probes = JoinSet::new();
    while let Ok(Ok((stream, from))) = tokio::time::timeout_at(until, listener.accept()).await {
        let from = crate::sockets::canonical(from);
        let (peer, opened) = (peer.clone(), opened.clone());
        probes.spawn(async move {
            if let Some(ws) = probe_on(stream, from, &peer).await {
                let _ = opened.send((from, ws)).await;
            }
        });
    }
    while probes.join_next().await.is_some() {}
}

/// Connects from our port to `target` (a simultaneous open when the target's SYN
/// crosses ours) and probes, on `cirrus_proto::punch::Tries`'s client schedule,
/// until it answers or `until`.
async fn connect_until(
    bind: IpAddr,
    port: u16,
    target: SocketAddr,
    until: tokio::time::Instant,
    peer: String,
    opened: mpsc::Sender<(SocketAddr, Ws)>,
) {
    let now = std::time::Instant::now();
    let lasting = until.into_std().saturating_duration_since(now);
    let mut tries = Tries::client(now, lasting);
    while let Some(at) = tries.poll_timeout() {
        tokio::time::sleep_until(at.into()).await;
        let Some(limit) = tries.poll_try(std::time::Instant::now()) else {
            return;
        };
        let attempt = tokio::time::timeout(limit, connect_from(bind, port, target));
        if let Ok(Ok(stream)) = attempt.await
            && let Some(ws) = probe_on(stream, target, &peer).await
        {
            let _ = opened.send((target, ws)).await;
            return;
        }
        tries.failed(std::time::Instant::now());
    }
}
