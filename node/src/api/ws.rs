//! WebSocket transport: JSON-RPC in text frames on port 38082 (and on every per-peer
//! STUN client TCP port). Many requests may be in flight on one connection; answers
//! come back as they are ready, matched by id. `subscribe` / `unsubscribe` (single
//! requests only) switch on `record` and `peer` notifications.
//!
//! Each connection has a bounded outgoing queue. A client that does not read its
//! notifications fast enough fills it and is disconnected, so it cannot slow the
//! node or other clients. The server pings every 20 s and closes a connection that
//! has sent nothing (not even a pong) for 60 s. A message over the size limit
//! closes the connection with status 1009 (message too big).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use axum::routing::get;
use cirrus_proto::api::RecordView;
use cirrus_proto::jsonrpc::{ErrorObject, INVALID_PARAMS, Request, Response as RpcResponse};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};

use super::limits::{ClientAddr, LimitedListener};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::Dispatcher;

const QUEUE: usize = 256;
const PING_EVERY: Duration = Duration::from_secs(20);
const IDLE_LIMIT: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct WsState {
    dispatcher: Dispatcher,
    max_message: usize,
}

pub fn router(dispatcher: Dispatcher, max_message: usize) -> Router {
    Router::new().route("/", get(upgrade)).with_state(WsState {
        dispatcher,
        max_message,
    })
}

pub async fn serve(
    listener: LimitedListener,
    router: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<ClientAddr>(),
    )
    .with_graceful_shutdown(stop.cancelled_owned())
    .await
}

async fn upgrade(
    ws: WebSocketUpgrade,
    State(st): State<WsState>,
    ConnectInfo(ClientAddr(from)): ConnectInfo<ClientAddr>,
) -> Response {
    ws.max_message_size(st.max_message)
        .max_frame_size(st.max_message)
        .on_upgrade(move |socket| session(socket, st.dispatcher, from.ip()))
}

/// What this connection is subscribed to. Records are delivered from the
/// [`crate::store::writer::Applied::seq`] the node was at when `subscribe` was handled, so a record
/// applied before the subscription (or while unsubscribed) is never sent, however
/// late the notification task sees it.
struct Subscriptions {
    /// The first seq to deliver; `OFF` when not subscribed.
    records_from: AtomicU64,
    peers: AtomicBool,
}

const OFF: u64 = u64::MAX;

impl Default for Subscriptions {
    fn default() -> Self {
        Subscriptions {
            records_from: AtomicU64::new(OFF),
            peers: AtomicBool::new(false),
        }
    }
}

async fn session(socket: WebSocket, dispatcher: Dispatcher, from: std::net::IpAddr) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(QUEUE);
    let done = CancellationToken::new();
    let subs = Arc::new(Subscriptions::default());

    let writer_done = done.clone();
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            let msg = tokio::select! {
                _ = writer_done.cancelled() => break,
                m = out_rx.recv() => match m { Some(m) => m, None => break },
                _ = ping.tick() => Message::Ping(Vec::new().into()),
            };
            // Whatever else is queued goes out with it, in one flush.
            let mut batch = Some(msg);
            let mut sent = Ok(());
            while let Some(m) = batch.take().or_else(|| out_rx.try_recv().ok()) {
                sent = sink.feed(m).await;
                if sent.is_err() {
                    break;
                }
            }
            if sent.is_err() || sink.flush().await.is_err() {
                break;
            }
        }
        writer_done.cancel();
        sink
    });
    tokio::spawn(notifications(
        dispatcher.clone(),
        subs.clone(),
        out.clone(),
        done.clone(),
    ));

    let mut close = None;
    loop {
        let next = tokio::select! {
            _ = done.cancelled() => break,
            n = tokio::time::timeout(IDLE_LIMIT, stream.next()) => n,
        };
        let text = match next {
            Ok(Some(Err(e))) => {
                close = too_big(e);
                break;
            }
            Err(_) | Ok(None) | Ok(Some(Ok(Message::Close(_)))) => break,
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(Message::Binary(_)))) => {
                let e = ErrorObject::new(
                    cirrus_proto::jsonrpc::PARSE_ERROR,
                    "parse error: send JSON-RPC in text frames",
                );
                let reply =
                    serde_json::to_string(&RpcResponse::err(Value::Null, e)).expect("serializes");
                if out.send(Message::Text(reply.into())).await.is_err() {
                    break;
                }
                continue;
            }
            Ok(Some(Ok(_))) => continue, // ping / pong: the connection is alive
        };
        let (dispatcher, subs, out) = (dispatcher.clone(), subs.clone(), out.clone());
        tokio::spawn(async move {
            let next_seq = dispatcher.context().writer.next_seq();
            let reply = match subscription(&subs, next_seq, &text) {
                Some(r) => Some(r),
                None => dispatcher
                    .handle_from(from, text.as_bytes())
                    .await
                    .unwrap_or_else(Some),
            };
            if let Some(r) = reply {
                // The dispatcher writes JSON, which is UTF-8.
                let text = String::from_utf8(r)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                let _ = out.send(Message::Text(text.into())).await;
            }
        });
    }
    done.cancel();
    if let Ok(mut sink) = writer.await {
        if let Some(frame) = close {
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
        let _ = sink.close().await;
    }
}

/// The close frame for a read error that is a message over the size limit.
fn too_big(e: axum::Error) -> Option<CloseFrame> {
    use tokio_tungstenite::tungstenite::Error;
    match e.into_inner().downcast_ref::<Error>() {
        Some(Error::Capacity(c)) => Some(CloseFrame {
            code: close_code::SIZE,
            reason: c.to_string().into(),
        }),
        _ => None,
    }
}

/// `subscribe` / `unsubscribe` as a single request: handled here, because the
/// subscription belongs to this connection. `None`: not one of those.
fn subscription(subs: &Subscriptions, next_seq: u64, text: &str) -> Option<Vec<u8>> {
    // Most messages are other methods: parse only text that could name one of
    // these (a JSON string may also spell it with escapes).
    if !text.contains("subscribe") && !text.contains('\\') {
        return None;
    }
    let v: Value = serde_json::from_str(text).ok()?;
    let method = v.get("method")?.as_str()?;
    let on = match method {
        "subscribe" => true,
        "unsubscribe" => false,
        _ => return None,
    };
    let req = match Request::from_value(v) {
        Ok(r) => r,
        Err((id, e)) => return Some(encode(&RpcResponse::err(id, e))),
    };
    let topics: Vec<String> = match req
        .params
        .get("topics")
        .map(|t| serde_json::from_value(t.clone()))
    {
        Some(Ok(t)) => t,
        _ => {
            let e = ErrorObject::new(
                INVALID_PARAMS,
                "invalid params: `topics` must be a list of \"records\", \"peers\"",
            );
            return req.id.map(|id| encode(&RpcResponse::err(id, e)));
        }
    };
    for t in &topics {
        match t.as_str() {
            // Subscribing again keeps the earlier start, so nothing queued is lost.
            "records" if on => {
                let _ = subs.records_from.compare_exchange(
                    OFF,
                    next_seq,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            "records" => subs.records_from.store(OFF, Ordering::Release),
            "peers" => subs.peers.store(on, Ordering::Relaxed),
            other => {
                let e = ErrorObject::new(
                    INVALID_PARAMS,
                    format!("invalid params: unknown topic {other:?}"),
                );
                return req.id.map(|id| encode(&RpcResponse::err(id, e)));
            }
        }
    }
    let now: Vec<&str> = [
        ("records", subs.records_from.load(Ordering::Acquire) != OFF),
        ("peers", subs.peers.load(Ordering::Relaxed)),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(n, _)| n)
    .collect();
    req.id
        .map(|id| encode(&RpcResponse::ok(id, json!({ "topics": now }))))
}

/// Forward records and peer events to this connection while it is subscribed.
async fn notifications(
    dispatcher: Dispatcher,
    subs: Arc<Subscriptions>,
    out: mpsc::Sender<Message>,
    done: CancellationToken,
) {
    let ctx = dispatcher.context();
    let mut records = ctx.writer.subscribe();
    let mut peers = ctx.p2p.peer_events();
    loop {
        let note = tokio::select! {
            _ = done.cancelled() => return,
            r = records.recv() => match r {
                Ok(a) if a.seq >= subs.records_from.load(Ordering::Acquire) => {
                    let view = RecordView { record: a.stored.record.clone(), id: a.stored.id };
                    json!({"jsonrpc": "2.0", "method": "record", "params": view})
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            p = peers.recv() => match p {
                Ok(p) if subs.peers.load(Ordering::Relaxed) => json!({"jsonrpc": "2.0", "method": "peer", "params": p}),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if out
            .try_send(Message::Text(note.to_string().into()))
            .is_err()
        {
            tracing::debug!("WebSocket client too slow for its notifications; closing");
            done.cancel();
            return;
        }
    }
}

fn encode(r: &RpcResponse) -> Vec<u8> {
    serde_json::to_vec(r).expect("serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_is_found_however_its_name_is_spelled() {
        let subs = Subscriptions::default();
        let escaped =
            r#"{"jsonrpc":"2.0","id":1,"method":"\u0073ubscribe","params":{"topics":["records"]}}"#;
        let answer = subscription(&subs, 7, escaped).expect("an answer");
        let v: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(v["result"]["topics"], json!(["records"]), "{v}");
        assert_eq!(subs.records_from.load(Ordering::Acquire), 7);

        let plain =
            r#"{"jsonrpc":"2.0","id":2,"method":"unsubscribe","params":{"topics":["records"]}}"#;
        assert!(subscription(&subs, 9, plain).is_some());
        assert_eq!(subs.records_from.load(Ordering::Acquire), OFF);

        // Other methods are the dispatcher's, even when a value mentions the word.
        for other in [
            r#"{"jsonrpc":"2.0","id":3,"method":"getdbhash"}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"get","params":{"key":"subscribe"}}"#,
        ] {
            assert!(subscription(&subs, 9, other).is_none(), "{other}");
        }
    }
}
