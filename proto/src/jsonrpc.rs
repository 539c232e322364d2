//! JSON-RPC 2.0 envelope: request parsing with precise errors, responses, error codes.
//!
//! Every transport hands raw bytes to [`parse_body`] and gets back either one request
//! or a batch; each element is then checked with [`Request::from_value`]. Errors are
//! data ([`ErrorObject`]), so a transport never has to invent its own.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// The record's signature does not verify against its author.
pub const INVALID_SIGNATURE: i64 = -32001;
/// The record breaks a SPEC rule: key or value size, control characters, rating value.
pub const INVALID_RECORD: i64 = -32002;
/// The request (body, batch or message) is larger than the node accepts.
pub const TOO_LARGE: i64 = -32004;
/// The peer named in the request is not connected, or did not answer.
pub const PEER_UNAVAILABLE: i64 = -32005;
/// The source address is over its request rate (HTTP status 429).
pub const RATE_LIMITED: i64 = -32006;
/// An admin method called without the admin token (from loopback too).
pub const FORBIDDEN: i64 = -32007;
/// UDP anti-amplification: repeat the request with the cookie in `data`.
pub const COOKIE_REQUIRED: i64 = -32010;
/// `behind`: the node does not hold every write the request's session names, and
/// did not get them within `wait` (SPEC "Sessions"); `data: {"missing": N}`.
pub const BEHIND: i64 = -32011;
/// `punch` toward an address other than the requester's own.
pub const PUNCH_TARGET: i64 = -32012;
/// The node cannot write now (its disk is below the free-space floor, or its store
/// failed); reads still work. Try another node, or later.
pub const STORAGE_UNAVAILABLE: i64 = -32013;

/// Every error code the API answers with, and what it means (for the OpenRPC
/// document and docs/api.md).
pub const ERRORS: &[(i64, &str)] = &[
    (PARSE_ERROR, "parse error: the message is not JSON"),
    (
        INVALID_REQUEST,
        "invalid request: not a JSON-RPC 2.0 request object",
    ),
    (METHOD_NOT_FOUND, "method not found"),
    (INVALID_PARAMS, "invalid params"),
    (INTERNAL_ERROR, "internal error"),
    (
        INVALID_SIGNATURE,
        "invalid record: the signature does not verify against its author",
    ),
    (
        INVALID_RECORD,
        "invalid record: it breaks a rule of the record format",
    ),
    (
        TOO_LARGE,
        "too large: the body, batch, request or answer is over the node's limit",
    ),
    (
        PEER_UNAVAILABLE,
        "peer unavailable: not connected, did not answer, or refused",
    ),
    (
        RATE_LIMITED,
        "rate limited: too many requests from this source",
    ),
    (FORBIDDEN, "admin only: pass the admin token"),
    (
        COOKIE_REQUIRED,
        "cookie required: repeat the UDP request with the cookie in data",
    ),
    (
        BEHIND,
        "behind: the node does not hold every write the session names",
    ),
    (
        PUNCH_TARGET,
        "punch only toward the requester's own address",
    ),
    (
        STORAGE_UNAVAILABLE,
        "storage unavailable: the node cannot write now",
    ),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl ErrorObject {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        ErrorObject {
            code,
            message: message.into(),
            data: None,
        }
    }
    pub fn invalid_params(message: impl std::fmt::Display) -> Self {
        Self::new(INVALID_PARAMS, format!("invalid params: {message}"))
    }
}

/// One checked request. `id == None` marks a notification (no response is sent).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Option<Value>,
    pub method: String,
    /// Always an object: absent params become `{}`.
    pub params: Map<String, Value>,
}

/// A request body: one request or a batch (each element still unchecked).
#[derive(Debug)]
pub enum Body {
    Single(Value),
    Batch(Vec<Value>),
}

/// Parse a body. Invalid JSON is -32700; an empty batch is -32600.
pub fn parse_body(bytes: &[u8]) -> Result<Body, ErrorObject> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ErrorObject::new(PARSE_ERROR, format!("parse error: {e}")))?;
    match v {
        Value::Array(items) if items.is_empty() => Err(ErrorObject::new(
            INVALID_REQUEST,
            "invalid request: empty batch",
        )),
        Value::Array(items) => Ok(Body::Batch(items)),
        other => Ok(Body::Single(other)),
    }
}

impl Request {
    /// Check one request object. On error, returns the id to answer with (null when
    /// the id itself is unusable) and the error.
    pub fn from_value(v: Value) -> Result<Request, (Value, ErrorObject)> {
        let invalid = |id: Value, why: &str| {
            Err((
                id,
                ErrorObject::new(INVALID_REQUEST, format!("invalid request: {why}")),
            ))
        };
        let Value::Object(mut obj) = v else {
            return invalid(Value::Null, "expected a JSON object");
        };
        let id = match obj.remove("id") {
            None => None,
            Some(id @ (Value::Null | Value::Number(_) | Value::String(_))) => Some(id),
            Some(_) => return invalid(Value::Null, "id must be a string, a number or null"),
        };
        let reply_id = id.clone().unwrap_or(Value::Null);
        if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return invalid(reply_id, "jsonrpc must be \"2.0\"");
        }
        let method = match obj.remove("method") {
            Some(Value::String(m)) => m,
            _ => return invalid(reply_id, "method must be a string"),
        };
        let params = match obj.remove("params") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(p)) => p,
            Some(Value::Array(a)) if a.is_empty() => Map::new(),
            Some(_) => {
                return Err((
                    reply_id,
                    ErrorObject::invalid_params("params must be an object (params are by name)"),
                ));
            }
        };
        Ok(Request { id, method, params })
    }
}

/// A response object, as sent and as parsed by clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub jsonrpc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorObject>,
    pub id: Value,
}

impl Response {
    pub fn ok(id: Value, result: Value) -> Self {
        Response {
            jsonrpc: "2.0".into(),
            result: Some(result),
            error: None,
            id,
        }
    }
    pub fn err(id: Value, error: ErrorObject) -> Self {
        Response {
            jsonrpc: "2.0".into(),
            result: None,
            error: Some(error),
            id,
        }
    }
}

/// Build a request object (for clients).
pub fn request(id: u64, method: &str, params: Value) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}
