//! The anti-amplification cookie (SPEC "UDP API"): the server's memory of which
//! sources have shown that they receive at their address, and the JSON edits both
//! sides make: the server takes a `cookie` member out of a request, the client puts
//! the one it was sent into its retry.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::jsonrpc::{COOKIE_REQUIRED, ErrorObject, Response};

/// Server side: which sources have shown that they receive at their address.
///
/// A cookie is `SHA-256(secret ‖ source ‖ epoch)` truncated to 16 bytes (hex),
/// valid in its epoch and the next; a request that carries a valid cookie marks the
/// source as validated for `validity` seconds. Nothing is stored for sources that
/// never return a cookie, so spoofed traffic costs no memory.
pub struct AmplificationGuard {
    secret: [u8; 32],
    epoch_secs: u64,
    validity: u64,
    max_sources: usize,
    validated: HashMap<SocketAddr, u64>,
}

impl AmplificationGuard {
    pub fn new(secret: [u8; 32]) -> Self {
        AmplificationGuard {
            secret,
            epoch_secs: 120,
            validity: 600,
            max_sources: 100_000,
            validated: HashMap::new(),
        }
    }

    /// How long one cookie epoch lasts; a cookie is good in its epoch and the next.
    pub fn epoch_secs(&self) -> u64 {
        self.epoch_secs
    }

    pub fn cookie(&self, from: &SocketAddr, now: u64) -> String {
        self.cookie_in(from, now / self.epoch_secs)
    }

    fn cookie_in(&self, from: &SocketAddr, epoch: u64) -> String {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(from.to_string().as_bytes());
        h.update(epoch.to_be_bytes());
        hex::encode(&h.finalize()[..16])
    }

    /// Whether `from` counts as shown; a valid `cookie` makes it so.
    pub fn validated(&mut self, from: &SocketAddr, cookie: Option<&str>, now: u64) -> bool {
        if let Some(c) = cookie {
            let epoch = now / self.epoch_secs;
            let ok = c == self.cookie_in(from, epoch)
                || (epoch > 0 && c == self.cookie_in(from, epoch - 1));
            if ok {
                if self.validated.len() >= self.max_sources {
                    let validity = self.validity;
                    self.validated
                        .retain(|_, t| now.saturating_sub(*t) < validity);
                }
                if self.validated.len() < self.max_sources {
                    self.validated.insert(*from, now);
                }
                return true;
            }
        }
        self.validated
            .get(from)
            .is_some_and(|t| now.saturating_sub(*t) < self.validity)
    }
}

/// A request with its `cookie` member taken out.
#[derive(Debug, Clone, PartialEq)]
pub struct Stripped {
    /// The request re-encoded without the cookie; `None` when it had none.
    pub body: Option<Vec<u8>>,
    pub cookie: Option<String>,
}

/// Take the `cookie` member out of a request (or out of every element of a batch,
/// keeping the first). Only a request that names `"cookie"` is parsed at all.
pub fn strip_cookie(bytes: &[u8]) -> Stripped {
    let none = Stripped {
        body: None,
        cookie: None,
    };
    if !contains(bytes, b"\"cookie\"") {
        return none;
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(bytes) else {
        return none;
    };
    let objects: Vec<&mut Map<String, Value>> = match &mut v {
        Value::Object(o) => vec![o],
        Value::Array(a) => a.iter_mut().filter_map(Value::as_object_mut).collect(),
        _ => Vec::new(),
    };
    let mut cookie = None;
    for o in objects {
        if let Some(c) = o.remove("cookie") {
            cookie = cookie.or_else(|| c.as_str().map(str::to_string));
        }
    }
    match cookie {
        Some(c) => Stripped {
            body: Some(serde_json::to_vec(&v).expect("a parsed value serializes")),
            cookie: Some(c),
        },
        None => none,
    }
}

/// `body` with `cookie` set on the request (or on a batch's first element); `None`
/// when `body` is neither.
pub fn with_cookie(body: &[u8], cookie: &str) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let target = match &mut v {
        Value::Object(o) => o,
        Value::Array(a) => a.first_mut()?.as_object_mut()?,
        _ => return None,
    };
    target.insert("cookie".into(), Value::from(cookie));
    serde_json::to_vec(&v).ok()
}

/// The cookie a -32010 "cookie required" answer asks for.
pub fn cookie_asked(answer: &[u8]) -> Option<String> {
    if !contains(answer, b"\"cookie\"") {
        return None;
    }
    let v: Value = serde_json::from_slice(answer).ok()?;
    if v["error"]["code"] != COOKIE_REQUIRED {
        return None;
    }
    v["error"]["data"]["cookie"].as_str().map(str::to_string)
}

/// The -32010 answer carrying `cookie`, kept short: it must fit three times a small
/// request.
pub fn cookie_answer(id: Value, cookie: &str) -> Vec<u8> {
    let mut e = ErrorObject::new(COOKIE_REQUIRED, "cookie required");
    e.data = Some(serde_json::json!({ "cookie": cookie }));
    serde_json::to_vec(&Response::err(id, e)).expect("serializes")
}

/// The id of a single request, for an answer made before it was dispatched.
pub fn request_id(bytes: &[u8]) -> Value {
    #[derive(serde::Deserialize)]
    struct Id {
        #[serde(default)]
        id: Value,
    }
    serde_json::from_slice::<Id>(bytes).map_or(Value::Null, |r| r.id)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
