//! The one request dispatcher shared by every transport.
//!
//! A transport passes the bytes of one message and where they came from
//! ([`Origin`]); it gets back what to send ([`Answer`]). Every path goes through the
//! same budgets here: the message is charged to its source's rate at its full size
//! (each request of a batch, and each request a `relay` carries); an unvalidated
//! UDP source may only run a single plain read; the answer to one message is capped
//! in bytes (requests past the cap get an error instead of running). `put`s of one
//! batch are verified here and handed to the writer together, so a batch of 100
//! puts is one commit.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use cirrus_proto::api::{Method, PutResult};
use cirrus_proto::jsonrpc::{Body, ErrorObject, Request, Response, parse_body};
use cirrus_proto::session::{Session, Write};
use serde_json::{Map, Value};

use super::error::{ApiError, outcome};
use super::{Context, methods};
use crate::store::writer::Origin as WriteOrigin;

/// The API transports, as metrics and the rules name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiTransport {
    Http,
    Ws,
    Udp,
}

impl ApiTransport {
    pub fn label(self) -> &'static str {
        match self {
            ApiTransport::Http => "http",
            ApiTransport::Ws => "ws",
            ApiTransport::Udp => "udp",
        }
    }
}

/// Where a message came from.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    /// A client at `ip`. `validated` is false only for a UDP source that has not yet
    /// shown it receives at its address (SPEC "UDP API").
    Client {
        ip: IpAddr,
        transport: ApiTransport,
        validated: bool,
    },
    /// A peer relayed it for one of its clients (the `relay` method). Such a
    /// request may not relay, punch or administer.
    Relayed { peer: libp2p::PeerId },
}

impl Origin {
    pub fn client(ip: IpAddr, transport: ApiTransport) -> Origin {
        Origin::Client {
            ip,
            transport,
            validated: true,
        }
    }

    /// The client's IP; none for a request a peer relayed.
    pub fn client_ip(&self) -> Option<IpAddr> {
        match self {
            Origin::Client { ip, .. } => Some(*ip),
            Origin::Relayed { .. } => None,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Origin::Client { transport, .. } => transport.label(),
            Origin::Relayed { .. } => "relay",
        }
    }
}

/// What to send back for one message.
#[derive(Debug, PartialEq)]
pub enum Answer {
    Reply(Vec<u8>),
    /// Notifications only: nothing to send.
    Nothing,
    /// The source is over its rate; the bytes are the JSON-RPC error (HTTP 429).
    Limited(Vec<u8>),
    /// An unvalidated UDP source asked for more than a plain read: it must come
    /// back with a cookie first. `id` is the request's id, if it had one.
    NeedsCookie {
        id: Value,
    },
}

fn label(method: &str) -> &'static str {
    Method::from_name(method).map_or("unknown", Method::name)
}

/// What one request costs its source's rate: itself, and every request it relays.
fn cost(v: &Value) -> usize {
    if v.get("method").and_then(Value::as_str) != Some("relay") {
        return 1;
    }
    1 + match v.get("params").and_then(|p| p.get("request")) {
        Some(Value::Array(a)) => a.len(),
        _ => 1,
    }
}

/// A put of a message, waiting for the others to be committed with it.
struct Put {
    /// Its place among the message's answers.
    at: usize,
    id: Option<Value>,
    stored: crate::store::Stored,
    session: Option<Session>,
}

#[derive(Clone)]
pub struct Dispatcher {
    ctx: Arc<Context>,
}

impl Dispatcher {
    pub fn new(ctx: Arc<Context>) -> Self {
        Dispatcher { ctx }
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Answer one message (a request or a batch).
    pub async fn handle(&self, origin: Origin, bytes: &[u8]) -> Answer {
        let started = Instant::now();
        let answer = self.run(origin, bytes).await;
        self.ctx
            .metrics
            .api_seconds
            .get_or_create(&crate::metrics::ByTransport {
                transport: origin.label(),
            })
            .observe(started.elapsed().as_secs_f64());
        answer
    }

    async fn run(&self, origin: Origin, bytes: &[u8]) -> Answer {
        if let Origin::Client { ip, .. } = origin {
            self.ctx.reach.client_seen(ip);
        }
        let body = parse_body(bytes);
        if let Origin::Client {
            validated: false, ..
        } = origin
        {
            match &body {
                Ok(Body::Single(v)) if plain_read(v) => {}
                Err(_) => {} // the parse error is small
                Ok(Body::Single(v)) => {
                    return Answer::NeedsCookie {
                        id: v.get("id").cloned().unwrap_or(Value::Null),
                    };
                }
                Ok(Body::Batch(_)) => return Answer::NeedsCookie { id: Value::Null },
            }
        }
        let cost = match &body {
            Ok(Body::Batch(items)) => items.iter().map(cost).sum(),
            Ok(Body::Single(v)) => cost(v),
            Err(_) => 1,
        };
        let allowed = match origin {
            Origin::Client { ip, .. } => self.ctx.limiter.allow(ip, cost),
            Origin::Relayed { peer } => self.ctx.limiter.allow_relayed(&peer.to_bytes(), cost),
        };
        if !allowed {
            self.ctx
                .metrics
                .rate_limited
                .get_or_create(&crate::metrics::ByTransport {
                    transport: origin.label(),
                })
                .inc();
            return Answer::Limited(ApiError::RateLimited.response(Value::Null));
        }
        match body {
            Err(e) => {
                self.ctx
                    .metrics
                    .request(origin.label(), "unknown", outcome(e.code));
                Answer::Reply(encode(&Response::err(Value::Null, e)))
            }
            Ok(Body::Single(v)) => match self.handle_all(vec![v], origin).await.pop() {
                Some(r) => Answer::Reply(r),
                None => Answer::Nothing,
            },
            Ok(Body::Batch(items)) if items.len() > self.ctx.max_batch => {
                let e = ApiError::TooLarge(format!(
                    "batch of {} requests is over the limit of {}",
                    items.len(),
                    self.ctx.max_batch
                ));
                self.ctx
                    .metrics
                    .request(origin.label(), "unknown", outcome(e.code()));
                Answer::Reply(e.response(Value::Null))
            }
            Ok(Body::Batch(items)) => {
                let answers = self.handle_all(items, origin).await;
                if answers.is_empty() {
                    return Answer::Nothing;
                }
                let mut out = Vec::with_capacity(answers.iter().map(Vec::len).sum::<usize>() + 2);
                out.push(b'[');
                for (i, a) in answers.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(a);
                }
                out.push(b']');
                Answer::Reply(out)
            }
        }
    }

    /// Run requests; returns encoded responses in request order, notifications left
    /// out. Once the answers pass the budget, later requests are not run.
    async fn handle_all(&self, items: Vec<Value>, origin: Origin) -> Vec<Vec<u8>> {
        let transport = origin.label();
        let budget = self.ctx.max_answer_bytes;
        let mut spent = 0usize;
        let mut out: Vec<Option<Vec<u8>>> = Vec::with_capacity(items.len());
        let mut puts = Vec::new();
        for item in items {
            let req = match Request::from_value(item) {
                Ok(req) => req,
                Err((id, e)) => {
                    self.ctx
                        .metrics
                        .request(transport, "unknown", outcome(e.code));
                    out.push(Some(encode(&Response::err(id, e))));
                    continue;
                }
            };
            let method = label(&req.method);
            if spent > budget {
                let e = ApiError::TooLarge(format!(
                    "not run: the answers before it passed the budget of {budget} bytes for one message"
                ));
                self.ctx
                    .metrics
                    .request(transport, method, outcome(e.code()));
                out.push(req.id.map(|id| e.response(id)));
                continue;
            }
            let mut params = req.params;
            let asked = match self.ctx.sessions.take(&mut params) {
                Ok(asked) => asked,
                Err(e) => {
                    self.ctx
                        .metrics
                        .request(transport, method, outcome(e.code()));
                    out.push(req.id.map(|id| e.response(id)));
                    continue;
                }
            };
            if let Some(s) = &asked.session
                && let Err(e) = self.ctx.sessions.hold(s, asked.wait).await
            {
                self.ctx
                    .metrics
                    .request(transport, method, outcome(e.code()));
                out.push(req.id.map(|id| e.response(id)));
                continue;
            }
            if req.method == "put" {
                self.ctx.metrics.verified("api", 1);
                match methods::prepare_put(params) {
                    Ok(stored) => {
                        puts.push(Put {
                            at: out.len(),
                            id: req.id,
                            stored,
                            session: asked.session,
                        });
                        out.push(None); // filled in once the writer answers
                    }
                    Err(e) => {
                        let e: ErrorObject = e.into();
                        self.ctx.metrics.request(transport, method, outcome(e.code));
                        out.push(req.id.map(|id| encode(&Response::err(id, e))));
                    }
                }
                continue;
            }
            let result = self.call(&req.method, params, origin).await;
            let response = match result {
                Ok(v) => {
                    self.ctx.metrics.request(transport, method, "ok");
                    req.id.map(|id| Response::ok(id, v))
                }
                Err(e) => {
                    let e: ErrorObject = e.into();
                    self.ctx.metrics.request(transport, method, outcome(e.code));
                    req.id.map(|id| Response::err(id, e))
                }
            };
            let bytes = response.map(|r| encode(&r));
            spent += bytes.as_ref().map_or(0, Vec::len);
            out.push(bytes);
        }
        if !puts.is_empty() {
            self.apply_puts(puts, &mut out, transport).await;
        }
        out.into_iter().flatten().collect()
    }

    /// Commit a message's puts together, then answer each with its status and the
    /// session token after it. Puts that came with the same session (or none) get
    /// one token, which names them all: they were committed at once.
    async fn apply_puts(
        &self,
        puts: Vec<Put>,
        out: &mut [Option<Vec<u8>>],
        transport: &'static str,
    ) {
        let records: Vec<_> = puts.iter().map(|p| p.stored.clone()).collect();
        let statuses = match self.ctx.writer.apply(records, WriteOrigin::Api).await {
            Ok(statuses) => statuses,
            Err(e) => {
                let err: ErrorObject = ApiError::from(e).into();
                for p in puts {
                    self.ctx
                        .metrics
                        .request(transport, "put", outcome(err.code));
                    out[p.at] = p.id.map(|rid| encode(&Response::err(rid, err.clone())));
                }
                return;
            }
        };
        let mut tokens: Vec<(Option<&Session>, Vec<Write>)> = Vec::new();
        for p in &puts {
            let w = Write::new(
                p.stored.record.slot().hash(),
                p.stored.record.seq,
                &p.stored.id,
            );
            match tokens.iter_mut().find(|(s, _)| *s == p.session.as_ref()) {
                Some((_, ws)) => ws.push(w),
                None => tokens.push((p.session.as_ref(), vec![w])),
            }
        }
        let tokens: Vec<(Option<&Session>, Option<String>)> = tokens
            .into_iter()
            .map(|(s, ws)| (s, self.ctx.sessions.issue(s, &ws)))
            .collect();
        for (p, status) in puts.iter().zip(statuses) {
            self.ctx.metrics.request(transport, "put", "ok");
            let session = tokens
                .iter()
                .find(|(s, _)| *s == p.session.as_ref())
                .and_then(|(_, t)| t.clone())
                .unwrap_or_default();
            out[p.at] = p.id.clone().map(|rid| {
                let result = PutResult {
                    id: p.stored.id,
                    status,
                    session,
                };
                encode(&Response::ok(
                    rid,
                    serde_json::to_value(result).expect("serializes"),
                ))
            });
        }
    }

    async fn call(
        &self,
        method: &str,
        params: Map<String, Value>,
        origin: Origin,
    ) -> Result<Value, ApiError> {
        let ctx = &*self.ctx;
        let Some(m) = Method::from_name(method) else {
            return Err(ApiError::MethodNotFound(method.to_string()));
        };
        if matches!(origin, Origin::Relayed { .. }) && !m.may_be_relayed() {
            return Err(ApiError::MethodNotFound(format!(
                "{method} (not available through relay)"
            )));
        }
        match m {
            Method::GetNodeInfo => methods::getnodeinfo(ctx).await,
            Method::GetPeerInfo => methods::getpeerinfo(ctx).await,
            Method::Relay => methods::relay(ctx, params, origin.client_ip()).await,
            Method::Punch => match origin {
                Origin::Client { ip, .. } => methods::punch(ctx, params, ip).await,
                Origin::Relayed { .. } => Err(ApiError::MethodNotFound(method.into())),
            },
            Method::AddPeer => methods::addpeer(ctx, params).await,
            Method::Shutdown => methods::shutdown(ctx, params),
            Method::GetDbHash => methods::getdbhash(ctx),
            // Puts never come this way: handle_all commits a message's puts together.
            Method::Put => Err(ApiError::MethodNotFound(
                "put (only as a request of its own, not from inside the node)".into(),
            )),
            Method::Get => methods::get(ctx, params),
            Method::List => methods::list(ctx, params),
            Method::GetRating => methods::getrating(ctx, params),
            Method::GetReachability => methods::getreachability(ctx),
            Method::Discover => Ok(cirrus_proto::api::openrpc::document(env!(
                "CARGO_PKG_VERSION"
            ))),
            Method::Subscribe | Method::Unsubscribe => Err(ApiError::MethodNotFound(format!(
                "{method} (only over WebSocket, as a single request)"
            ))),
        }
    }
}

/// A single request for a plain read, without a session to wait for.
fn plain_read(v: &Value) -> bool {
    let read = v
        .get("method")
        .and_then(Value::as_str)
        .and_then(Method::from_name)
        .is_some_and(Method::is_plain_read);
    let waits = v
        .get("params")
        .and_then(|p| p.get("session"))
        .is_some_and(|s| !s.is_null());
    read && !waits
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("responses serialize")
}
