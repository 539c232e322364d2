//! The direct TCP path: our mapping from the rendezvous node's STUN server over TCP
//! from a port we then listen on too, the punch, then connections both ways: the
//! target's toward our mapping (taken by the listener when our NAT lets it in) and
//! ours toward each of its endpoints from the same port (a simultaneous open when
//! the SYNs cross). The first connection whose WebSocket probe answers as the target
//! is the path.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use cirrus_proto::api::Transport;
use cirrus_proto::punch::TcpOpen;
use cirrus_proto::punch::tcp_open::{Action, ConnId, Outcome};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{self, AbortHandle, JoinSet};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

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
        let open = TcpOpen::new(Instant::now(), &plan.targets, DIRECT_FOR);
        let (at, ws) = drive(open, listener, (bind, port), peer)
            .await
            .ok_or_else(|| DirectError::NoAnswer {
                tried: plan.targets.clone(),
                mine,
            })?;
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

/// Largest WebSocket message or frame on the direct path: four times a node's
/// default cap on one answer (`--max-answer-bytes`, 4 MiB), so that a stranger's
/// connection on our listener cannot make us buffer more.
const MAX_MESSAGE: usize = 16 << 20;

/// The WebSocket handshake and the probe on a connection; the stream if it answers
/// as `peer`. The caller bounds its time.
async fn probe_on(stream: TcpStream, at: SocketAddr, peer: &str) -> Option<Ws> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(format!("ws://{at}/"), stream, Some(config))
            .await
            .ok()?;
    let body = serde_json::to_vec(&probe_request()).ok()?;
    let answer: Value = serde_json::from_slice(&ws_ask(&mut ws, &body).await.ok()?).ok()?;
    answers_as(&answer, peer).ok()?;
    Some(ws)
}

/// How one of `cirrus_proto::punch::TcpOpen`'s connections ended its step.
enum Step {
    Connected(TcpStream, SocketAddr),
    Answered(Box<Ws>),
    Failed,
}

/// The connects and probes under way, each under the machine's name for its
/// connection.
#[derive(Default)]
struct Steps {
    set: JoinSet<(ConnId, Step)>,
    by_task: HashMap<task::Id, ConnId>,
    by_conn: HashMap<ConnId, AbortHandle>,
}

impl Steps {
    fn spawn(&mut self, id: ConnId, step: impl Future<Output = (ConnId, Step)> + Send + 'static) {
        let handle = self.set.spawn(step);
        self.by_task.insert(handle.id(), id);
        self.by_conn.insert(id, handle);
    }

    fn abort(&mut self, id: ConnId) {
        if let Some(handle) = self.by_conn.remove(&id) {
            self.by_task.remove(&handle.id());
            handle.abort();
        }
    }

    /// The next step to end, and how; one whose task panicked ended in failure, one
    /// aborted is not reported. `None` while none runs.
    async fn next(&mut self) -> Option<(ConnId, Step)> {
        loop {
            let (task, id, step) = match self.set.join_next_with_id().await? {
                Ok((task, (id, step))) => (task, id, step),
                Err(e) => match self.by_task.get(&e.id()) {
                    Some(id) => (e.id(), *id, Step::Failed),
                    None => continue,
                },
            };
            self.by_task.remove(&task);
            self.by_conn.remove(&id);
            return Some((id, step));
        }
    }
}

/// Run `open` on real sockets: connects from `from` (our port, whose mapping the
/// target connects to), `listener` on the same port for the target's connections,
/// a probe on each. The path and where it leads, once one answers as `peer`.
async fn drive(
    mut open: TcpOpen,
    listener: TcpListener,
    from: (IpAddr, u16),
    peer: &str,
) -> Option<(SocketAddr, Ws)> {
    let mut steps = Steps::default();
    // Connected or accepted, until its probe starts; answered, until the outcome.
    let mut waiting: HashMap<ConnId, (TcpStream, SocketAddr)> = HashMap::new();
    let mut answered: HashMap<ConnId, Box<Ws>> = HashMap::new();
    let mut listening = true;
    loop {
        while let Some(action) = open.poll_action() {
            match action {
                Action::Connect { id, target, limit } => steps.spawn(id, async move {
                    match tokio::time::timeout(limit, connect_from(from.0, from.1, target)).await {
                        Ok(Ok(stream)) => (id, Step::Connected(stream, target)),
                        _ => (id, Step::Failed),
                    }
                }),
                Action::Probe { id, limit } => {
                    let Some((stream, at)) = waiting.remove(&id) else {
                        open.failed(Instant::now(), id);
                        continue;
                    };
                    let peer = peer.to_string();
                    steps.spawn(id, async move {
                        match tokio::time::timeout(limit, probe_on(stream, at, &peer)).await {
                            Ok(Some(ws)) => (id, Step::Answered(Box::new(ws))),
                            _ => (id, Step::Failed),
                        }
                    });
                }
                Action::Close(id) => {
                    waiting.remove(&id);
                    answered.remove(&id);
                    steps.abort(id);
                }
            }
        }
        match open.poll_outcome() {
            Some(Outcome::Opened { id, at }) => return answered.remove(&id).map(|ws| (at, *ws)),
            Some(Outcome::NoAnswer) => return None,
            None => {}
        }
        let wake = open.poll_timeout()?;
        tokio::select! {
            () = tokio::time::sleep_until(wake.into()) => open.handle_timeout(Instant::now()),
            accepted = listener.accept(), if listening => match accepted {
                Ok((stream, from)) => {
                    let from = crate::sockets::canonical(from);
                    if let Some(id) = open.accepted(Instant::now(), from) {
                        waiting.insert(id, (stream, from));
                    }
                }
                // Out of descriptors, say: our own connects may still find the path.
                Err(_) => listening = false,
            },
            Some((id, step)) = steps.next() => {
                let now = Instant::now();
                match step {
                    Step::Connected(stream, at) => {
                        waiting.insert(id, (stream, at));
                        open.connected(now, id);
                    }
                    Step::Answered(ws) => {
                        answered.insert(id, ws);
                        open.answered(id);
                    }
                    Step::Failed => open.failed(now, id),
                }
            }
        }
    }
}
