//! The one request dispatcher shared by every transport.
//!
//! A transport passes the bytes of one message and sends back the bytes returned
//! (nothing for a notification-only message). `put`s of one batch are verified here
//! and handed to the writer together, so a batch of 100 puts is one commit.

use std::net::IpAddr;
use std::sync::Arc;

use cirrus_proto::api::PutResult;
use cirrus_proto::jsonrpc::{
    Body, ErrorObject, RATE_LIMITED, Request, Response, TOO_LARGE, parse_body,
};
use serde_json::{Map, Value};

use super::error::ApiError;
use super::{Context, methods};
use crate::store::writer::Origin;

#[derive(Clone)]
pub struct Dispatcher {
    ctx: Arc<Context>,
    /// False for requests that a peer relayed to us: those may not relay again.
    relay: bool,
}

impl Dispatcher {
    pub fn new(ctx: Arc<Context>) -> Self {
        Dispatcher { ctx, relay: true }
    }

    /// The same dispatcher, for requests that arrived through `relay`.
    pub fn without_relay(&self) -> Self {
        Dispatcher {
            ctx: self.ctx.clone(),
            relay: false,
        }
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Answer one message (a request or a batch) that came from inside: relayed by a
    /// peer. No rate limit; admin methods need the token. `None`: nothing to send.
    pub async fn handle(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        self.run(bytes, None).await.unwrap_or_else(Some)
    }

    /// Answer one message from a client at `ip`. `Err`: the client is over its rate;
    /// the bytes are the JSON-RPC error to send (HTTP sends it with status 429).
    pub async fn handle_from(&self, ip: IpAddr, bytes: &[u8]) -> Result<Option<Vec<u8>>, Vec<u8>> {
        self.run(bytes, Some(ip)).await
    }

    async fn run(&self, bytes: &[u8], ip: Option<IpAddr>) -> Result<Option<Vec<u8>>, Vec<u8>> {
        let body = parse_body(bytes);
        if let Some(ip) = ip {
            let cost = match &body {
                Ok(Body::Batch(items)) => items.len(),
                _ => 1,
            };
            if !self.ctx.limiter.allow(ip, cost) {
                let e = ErrorObject::new(
                    RATE_LIMITED,
                    "rate limited: too many requests from this address",
                );
                return Err(encode(&Response::err(Value::Null, e)));
            }
        }
        // Admin methods answer loopback callers; others need the token.
        let admin = ip.is_some_and(|ip| ip.is_loopback());
        Ok(match body {
            Err(e) => Some(encode(&Response::err(Value::Null, e))),
            Ok(Body::Single(v)) => self
                .handle_all(vec![v], admin)
                .await
                .pop()
                .map(|r| encode(&r)),
            Ok(Body::Batch(items)) if items.len() > self.ctx.max_batch => {
                let e = ErrorObject::new(
                    TOO_LARGE,
                    format!(
                        "batch of {} requests is over the limit of {}",
                        items.len(),
                        self.ctx.max_batch
                    ),
                );
                Some(encode(&Response::err(Value::Null, e)))
            }
            Ok(Body::Batch(items)) => {
                let responses = self.handle_all(items, admin).await;
                (!responses.is_empty()).then(|| encode(&responses))
            }
        })
    }

    /// Run requests; returns responses in request order, notifications left out.
    async fn handle_all(&self, items: Vec<Value>, admin: bool) -> Vec<Response> {
        let mut out: Vec<Option<Response>> = Vec::with_capacity(items.len());
        let mut puts = Vec::new();
        for item in items {
            let req = match Request::from_value(item) {
                Ok(req) => req,
                Err((id, e)) => {
                    out.push(Some(Response::err(id, e)));
                    continue;
                }
            };
            if req.method == "put" {
                match methods::prepare_put(req.params) {
                    Ok(stored) => {
                        puts.push((out.len(), req.id, stored));
                        out.push(None); // filled in once the writer answers
                    }
                    Err(e) => out.push(req.id.map(|id| Response::err(id, e.into()))),
                }
                continue;
            }
            let result = self.call(&req.method, req.params, admin).await;
            out.push(req.id.map(|id| respond(id, result)));
        }
        if !puts.is_empty() {
            self.apply_puts(puts, &mut out).await;
        }
        out.into_iter().flatten().collect()
    }

    async fn apply_puts(
        &self,
        puts: Vec<(usize, Option<Value>, crate::store::Stored)>,
        out: &mut [Option<Response>],
    ) {
        let ids: Vec<_> = puts.iter().map(|(_, _, s)| s.id).collect();
        let (slots, records): (Vec<_>, Vec<_>) =
            puts.into_iter().map(|(i, id, s)| ((i, id), s)).unzip();
        match self.ctx.writer.apply(records, Origin::Api).await {
            Ok(statuses) => {
                for (((i, req_id), status), id) in slots.into_iter().zip(statuses).zip(ids) {
                    out[i] = req_id.map(|rid| {
                        Response::ok(
                            rid,
                            serde_json::to_value(PutResult { id, status }).expect("serializes"),
                        )
                    });
                }
            }
            Err(e) => {
                let err: ErrorObject = ApiError::from(e).into();
                for (i, req_id) in slots {
                    out[i] = req_id.map(|rid| Response::err(rid, err.clone()));
                }
            }
        }
    }

    async fn call(
        &self,
        method: &str,
        params: Map<String, Value>,
        admin: bool,
    ) -> Result<Value, ApiError> {
        let ctx = &*self.ctx;
        match method {
            "getnodeinfo" => methods::getnodeinfo(ctx).await,
            "getpeerinfo" => methods::getpeerinfo(ctx).await,
            "relay" if self.relay => methods::relay(ctx, params).await,
            "punch" => methods::punch(ctx, params).await,
            "addpeer" => methods::addpeer(ctx, params, admin).await,
            "shutdown" => methods::shutdown(ctx, params, admin),
            "getdbhash" => methods::getdbhash(ctx),
            "get" => methods::get(ctx, params),
            "list" => methods::list(ctx, params),
            "getrating" => methods::getrating(ctx, params),
            "subscribe" | "unsubscribe" => Err(ApiError::MethodNotFound(format!(
                "{method} (only over WebSocket, as a single request)"
            ))),
            other => Err(ApiError::MethodNotFound(other.to_string())),
        }
    }
}

fn respond(id: Value, result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(v) => Response::ok(id, v),
        Err(e) => Response::err(id, e.into()),
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("responses serialize")
}
