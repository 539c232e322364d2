//! WebSocket transport: JSON-RPC in text frames on port 38082 (and on every per-peer
//! STUN client TCP port). Many requests may be in flight on one connection; answers
//! come back as they are ready, matched by id. `subscribe` / `unsubscribe` (single
//! requests only) switch on `record` and `peer` notifications.
//!
//! Memory per connection is bounded: at most `ws-max-in-flight` requests run at
//! once (the next frame is not read until one finishes, so a fast sender is slowed
//! by TCP itself), and answers and notifications wait to be sent in a queue of at
//! most `ws-queue-bytes`. A client that does not read: an answer that cannot get
//! into the queue within the write timeout, a notification that finds it full, or a
//! write that makes no progress for that long closes the connection. The server
//! pings every 20 s and closes a connection that has sent nothing (not even a pong)
//! for 60 s. A message over the size limit closes the connection with status 1009
//! (message too big).

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
use cirrus_proto::jsonrpc::{Request, Response as RpcResponse};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::limits::ClientAddr;
use super::serve::Evicted;
use super::{Answer, ApiTransport, Dispatcher, Origin};

const PING_EVERY: Duration = Duration::from_secs(20);
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// What one connection may hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WsLimits {
    /// Largest message or frame, in bytes.
    pub max_message: usize,
    /// Requests running at once.
    pub in_flight: usize,
    /// Bytes of answers and notifications waiting to be sent.
    pub queue_bytes: usize,
    /// How long an answer may wait for room in the queue.
    pub send_timeout: Duration,
}

#[derive(Clone)]
struct WsState {
    dispatcher: Dispatcher,
    limits: WsLimits,
    stop: CancellationToken,
}

pub fn router(dispatcher: Dispatcher, limits: WsLimits, stop: CancellationToken) -> Router {
    Router::new().route("/", get(upgrade)).with_state(WsState {
        dispatcher,
        limits,
        stop,
    })
}

async fn upgrade(
    ws: WebSocketUpgrade,
    State(st): State<WsState>,
    ConnectInfo(ClientAddr(from)): ConnectInfo<ClientAddr>,
    evicted: Option<axum::Extension<Evicted>>,
) -> Response {
    let evicted = evicted.map_or_else(CancellationToken::new, |e| e.0.0.clone());
    let max = st.limits.max_message;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| session(socket, st, from.ip(), evicted))
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

/// The outgoing side: a message and the queue bytes it holds until sent.
struct Outbox {
    tx: mpsc::UnboundedSender<(Message, OwnedSemaphorePermit)>,
    room: Arc<Semaphore>,
    limits: WsLimits,
}

impl Outbox {
    fn permits(&self, m: &Message) -> u32 {
        let len = match m {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
            _ => 0,
        };
        len.clamp(1, self.limits.queue_bytes) as u32
    }

    /// Queue an answer, waiting for room up to the send timeout. False: the client
    /// is not reading, close it.
    async fn answer(&self, m: Message) -> bool {
        let n = self.permits(&m);
        let room = self.room.clone().acquire_many_owned(n);
        match tokio::time::timeout(self.limits.send_timeout, room).await {
            Ok(Ok(permit)) => self.tx.send((m, permit)).is_ok(),
            _ => false,
        }
    }

    /// Queue a notification if there is room now. False: the client is too slow.
    fn notify(&self, m: Message) -> bool {
        let n = self.permits(&m);
        match self.room.clone().try_acquire_many_owned(n) {
            Ok(permit) => self.tx.send((m, permit)).is_ok(),
            Err(_) => false,
        }
    }
}

async fn session(
    socket: WebSocket,
    st: WsState,
    from: std::net::IpAddr,
    evicted: CancellationToken,
) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut out_rx) = mpsc::unbounded_channel::<(Message, OwnedSemaphorePermit)>();
    let outbox = Arc::new(Outbox {
        tx,
        room: Arc::new(Semaphore::new(st.limits.queue_bytes)),
        limits: st.limits,
    });
    let done = st.stop.child_token();
    let subs = Arc::new(Subscriptions::default());
    let mut tasks = JoinSet::new();

    // The writer ends when every sender is gone (after sending what was queued),
    // on a write error, or at once when the connection is evicted; ending, it ends
    // the session.
    let (writer_done, kill) = (done.clone(), evicted.clone());
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            let first = tokio::select! {
                _ = kill.cancelled() => break,
                m = out_rx.recv() => match m { Some((m, room)) => (m, Some(room)), None => break },
                _ = ping.tick() => (Message::Ping(Vec::new().into()), None),
            };
            // Whatever else is queued goes out with it, in one flush; the queue
            // bytes are given back once it is out.
            let mut held = Vec::new();
            let mut next = Some(first);
            let mut sent = Ok(());
            while let Some((m, room)) = next
                .take()
                .or_else(|| out_rx.try_recv().ok().map(|(m, r)| (m, Some(r))))
            {
                held.extend(room);
                sent = sink.feed(m).await;
                if sent.is_err() {
                    break;
                }
            }
            if sent.is_err() || sink.flush().await.is_err() {
                break;
            }
            drop(held);
        }
        writer_done.cancel();
        sink
    });
    tasks.spawn(notifications(
        st.dispatcher.clone(),
        subs.clone(),
        outbox.clone(),
        done.clone(),
    ));

    let in_flight = Arc::new(Semaphore::new(st.limits.in_flight));
    let mut close = None;
    loop {
        // Reap finished requests, so the set holds only running ones.
        while tasks.try_join_next().is_some() {}
        // The next frame is read only when a request may run.
        let permit = tokio::select! {
            _ = done.cancelled() => break,
            _ = evicted.cancelled() => break,
            p = in_flight.clone().acquire_owned() => p.expect("never closed"),
        };
        let next = tokio::select! {
            _ = done.cancelled() => break,
            _ = evicted.cancelled() => break,
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
                let reply = ApiError::Parse("send JSON-RPC in text frames").response(Value::Null);
                let reply = String::from_utf8(reply).expect("JSON is UTF-8");
                if !outbox.answer(Message::Text(reply.into())).await {
                    break;
                }
                continue;
            }
            Ok(Some(Ok(_))) => continue, // ping / pong: the connection is alive
        };
        let (dispatcher, subs, outbox, done) = (
            st.dispatcher.clone(),
            subs.clone(),
            outbox.clone(),
            done.clone(),
        );
        tasks.spawn(async move {
            let _permit = permit;
            let next_seq = dispatcher.context().writer.next_seq();
            let reply = match subscription(&subs, next_seq, &text) {
                Some(r) => Some(r),
                None => match dispatcher
                    .handle(Origin::client(from, ApiTransport::Ws), text.as_bytes())
                    .await
                {
                    Answer::Reply(r) | Answer::Limited(r) => Some(r),
                    Answer::Nothing | Answer::NeedsCookie { .. } => None,
                },
            };
            if let Some(r) = reply {
                // The dispatcher writes JSON, which is UTF-8.
                let text = String::from_utf8(r)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                if !outbox.answer(Message::Text(text.into())).await {
                    tracing::debug!("WebSocket client does not read its answers; closing");
                    done.cancel();
                }
            }
        });
    }
    // Stop reading and notifying; requests in flight may finish (for as long as an
    // answer may wait), then the writer sends what is queued and closes.
    done.cancel();
    let finish = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(st.limits.send_timeout, finish).await;
    tasks.shutdown().await;
    drop(outbox);
    if let Ok(mut sink) = writer.await
        && !evicted.is_cancelled()
    {
        if let Some(frame) = close {
            let _ = tokio::time::timeout(
                st.limits.send_timeout,
                sink.send(Message::Close(Some(frame))),
            )
            .await;
        }
        let _ = tokio::time::timeout(st.limits.send_timeout, sink.close()).await;
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
            let e = ApiError::Params("`topics` must be a list of \"records\", \"peers\"".into());
            return req.id.map(|id| e.response(id));
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
                let e = ApiError::Params(format!("unknown topic {other:?}"));
                return req.id.map(|id| e.response(id));
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
    out: Arc<Outbox>,
    done: CancellationToken,
) {
    let ctx = dispatcher.context();
    let mut records = ctx.writer.subscribe();
    let mut peers = ctx.peers.notices();
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
        if !out.notify(Message::Text(note.to_string().into())) {
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
