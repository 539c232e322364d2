//! The server side of the UDP API, sans-IO (after quinn's `Endpoint`): datagrams and
//! the time come in, datagrams to send and what became of each come out. It holds
//! the rules a socket's source address calls for, since that address proves nothing:
//!
//! - A source that has not returned a cookie may be spoofed. It gets at most
//!   [`AMPLIFICATION`] times the bytes it sent, and all such sources together share
//!   one request budget, so faking many addresses buys no more work than one.
//! - An answer that does not fit goes as the -32010 cookie answer, or not at all.
//! - STUN shares the socket (RFC 7983): requests get a Binding answer (never over
//!   three times the request, by construction), responses belong to whoever asked.
//!
//! What an unvalidated request may *do* (plain reads only) is the dispatcher's
//! business; this only says whether the source is validated.

use std::net::SocketAddr;
use std::time::Instant;

use serde_json::Value;

use super::AMPLIFICATION;
use super::cookie::{AmplificationGuard, cookie_answer, request_id, strip_cookie};
use super::fragment::{datagrams, wire_len};
use crate::stun;

/// What a datagram is, once the endpoint has looked at it.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// A STUN response: for the STUN client that owns the socket.
    StunResponse,
    /// A STUN request (or indication): `reply` is the answer to send back, if any;
    /// `validated` whether the source had shown it receives.
    Stun {
        reply: Option<Vec<u8>>,
        validated: bool,
    },
    /// A JSON-RPC message to dispatch; answer it with [`Endpoint::respond`].
    Rpc(Rpc),
    /// From an unvalidated source while their shared budget is spent.
    Dropped,
}

/// A JSON-RPC message on its way through the dispatcher.
#[derive(Debug, PartialEq)]
pub struct Rpc {
    pub from: SocketAddr,
    pub validated: bool,
    /// The message to dispatch: the request without its cookie.
    pub body: Vec<u8>,
    /// Bytes of the datagram as received (the amplification budget's base).
    received: usize,
}

/// What the dispatcher made of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The JSON answer.
    Json(Vec<u8>),
    /// Nothing to send (notifications only).
    Silent,
    /// The request needs a validated source: send the cookie answer with `id`.
    NeedsCookie { id: Value },
}

/// What went out for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answered,
    /// The -32010 cookie answer (the answer did not fit, or the request needed it).
    Cookie,
    /// Nothing: a notification, or not even the cookie answer fits the budget.
    Silent,
}

#[derive(Debug)]
pub struct Response {
    /// To send to the request's source, in order.
    pub datagrams: Vec<Vec<u8>>,
    pub outcome: Outcome,
    /// Bytes of `datagrams` sent to a source that is not validated.
    pub unvalidated_bytes: usize,
}

/// A token bucket: `rate` per second, a burst of one second's worth.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = self.at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub struct Endpoint {
    guard: AmplificationGuard,
    /// Requests from sources not yet validated, all together.
    unvalidated: Bucket,
    message_no: u32,
    software: &'static str,
    /// The cookie's clock counts from here.
    start: Instant,
}

impl Endpoint {
    /// `secret` keys the cookies (random per process); `unvalidated_rate` is the
    /// requests per second that all unvalidated sources share; `software` names us
    /// in STUN answers.
    pub fn new(
        secret: [u8; 32],
        unvalidated_rate: f64,
        software: &'static str,
        now: Instant,
    ) -> Self {
        Endpoint {
            guard: AmplificationGuard::new(secret),
            unvalidated: Bucket {
                rate: unvalidated_rate,
                tokens: unvalidated_rate,
                at: now,
            },
            message_no: 1,
            software,
            start: now,
        }
    }

    fn secs(&self, now: Instant) -> u64 {
        // Epoch 0 would have no previous epoch; start the count at one.
        now.saturating_duration_since(self.start).as_secs() + self.guard.epoch_secs()
    }

    pub fn on_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Incoming {
        let secs = self.secs(now);
        if stun::is_stun(bytes) {
            if bytes[0] & 0x01 == 0x01 {
                return Incoming::StunResponse;
            }
            let reply = stun::handle_binding(bytes, from, self.software).reply;
            return Incoming::Stun {
                reply,
                validated: self.guard.validated(&from, None, secs),
            };
        }
        let stripped = strip_cookie(bytes);
        let validated = self
            .guard
            .validated(&from, stripped.cookie.as_deref(), secs);
        if !validated && !self.unvalidated.take(now) {
            return Incoming::Dropped;
        }
        Incoming::Rpc(Rpc {
            from,
            validated,
            body: stripped.body.unwrap_or_else(|| bytes.to_vec()),
            received: bytes.len(),
        })
    }

    /// The datagrams that answer `rpc` with `reply`, within the source's budget.
    pub fn respond(&mut self, now: Instant, rpc: &Rpc, reply: Reply) -> Response {
        let budget = if rpc.validated {
            usize::MAX
        } else {
            AMPLIFICATION * rpc.received
        };
        let json = match reply {
            Reply::Silent => return self.nothing(),
            Reply::NeedsCookie { id } => return self.cookie(now, rpc, id),
            Reply::Json(json) if wire_len(json.len()) > budget => {
                let id = request_id(&rpc.body);
                return self.cookie(now, rpc, id);
            }
            Reply::Json(json) => json,
        };
        let no = self.message_no;
        self.message_no = self.message_no.wrapping_add(1);
        let datagrams = datagrams(no, &json);
        Response {
            unvalidated_bytes: if rpc.validated {
                0
            } else {
                datagrams.iter().map(Vec::len).sum()
            },
            datagrams,
            outcome: Outcome::Answered,
        }
    }

    fn cookie(&mut self, now: Instant, rpc: &Rpc, id: Value) -> Response {
        let cookie = self.guard.cookie(&rpc.from, self.secs(now));
        let answer = cookie_answer(id, &cookie);
        if answer.len() > AMPLIFICATION * rpc.received {
            return self.nothing();
        }
        Response {
            unvalidated_bytes: answer.len(),
            datagrams: vec![answer],
            outcome: Outcome::Cookie,
        }
    }

    fn nothing(&self) -> Response {
        Response {
            datagrams: Vec::new(),
            outcome: Outcome::Silent,
            unvalidated_bytes: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::udp::{FRAGMENT_PAYLOAD, cookie_asked, with_cookie};

    const REQ: &[u8] = br#"{"jsonrpc":"2.0","method":"getnodeinfo","params":{},"id":7}"#;

    fn endpoint(now: Instant) -> Endpoint {
        Endpoint::new([9; 32], 2.0, "test", now)
    }

    fn rpc(e: &mut Endpoint, now: Instant, from: SocketAddr, bytes: &[u8]) -> Rpc {
        match e.on_datagram(now, from, bytes) {
            Incoming::Rpc(r) => r,
            other => panic!("expected an RPC, got {other:?}"),
        }
    }

    fn src(i: u8) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, i], 4000))
    }

    #[test]
    fn a_large_answer_to_a_stranger_becomes_a_cookie_then_goes_whole() {
        let t0 = Instant::now();
        let mut e = endpoint(t0);
        let big = vec![b'x'; 5 * FRAGMENT_PAYLOAD];
        let r = rpc(&mut e, t0, src(1), REQ);
        assert!(!r.validated);
        let out = e.respond(t0, &r, Reply::Json(big.clone()));
        assert_eq!(out.outcome, Outcome::Cookie);
        let sent: usize = out.datagrams.iter().map(Vec::len).sum();
        assert!(sent <= AMPLIFICATION * REQ.len(), "{sent} bytes");
        assert_eq!(out.unvalidated_bytes, sent);
        let cookie = cookie_asked(&out.datagrams[0]).expect("a cookie answer");
        assert_eq!(
            request_id(&out.datagrams[0]),
            Value::from(7),
            "answered with the request's id"
        );

        // The retry carries the cookie: validated, answered in full, cookie stripped.
        let t1 = t0 + Duration::from_secs(1);
        let retry = with_cookie(REQ, &cookie).unwrap();
        let r = rpc(&mut e, t1, src(1), &retry);
        assert!(r.validated);
        assert_eq!(
            r.body,
            serde_json::to_vec(&serde_json::from_slice::<Value>(REQ).unwrap()).unwrap()
        );
        let out = e.respond(t1, &r, Reply::Json(big));
        assert_eq!(out.outcome, Outcome::Answered);
        assert_eq!(out.datagrams.len(), 5);
        assert_eq!(out.unvalidated_bytes, 0);

        // The cookie is bound to its source.
        let other = rpc(&mut e, t1, src(2), &retry);
        assert!(!other.validated);
    }

    #[test]
    fn strangers_share_one_budget_and_it_refills_in_time() {
        let t0 = Instant::now();
        let mut e = endpoint(t0);
        let mut admitted = 0;
        for i in 0..50 {
            if matches!(e.on_datagram(t0, src(i), REQ), Incoming::Rpc(_)) {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 2, "a rate of 2/s with a burst of one second");
        assert_eq!(e.on_datagram(t0, src(99), REQ), Incoming::Dropped);
        let later = t0 + Duration::from_millis(500);
        assert!(matches!(
            e.on_datagram(later, src(99), REQ),
            Incoming::Rpc(_)
        ));
        assert_eq!(e.on_datagram(later, src(98), REQ), Incoming::Dropped);
    }

    #[test]
    fn a_cookie_too_large_for_a_tiny_request_is_silence() {
        let t0 = Instant::now();
        let mut e = endpoint(t0);
        let r = rpc(&mut e, t0, src(1), b"{}");
        let out = e.respond(t0, &r, Reply::NeedsCookie { id: Value::Null });
        assert_eq!(out.outcome, Outcome::Silent);
        assert!(out.datagrams.is_empty());
    }

    #[test]
    fn cookies_expire_in_virtual_time() {
        let t0 = Instant::now();
        let mut e = endpoint(t0);
        let r = rpc(&mut e, t0, src(1), REQ);
        let out = e.respond(t0, &r, Reply::NeedsCookie { id: 7.into() });
        let cookie = cookie_asked(&out.datagrams[0]).unwrap();
        let retry = with_cookie(REQ, &cookie).unwrap();
        // Two epochs on, the cookie is stale and the source never validated.
        let late = t0 + Duration::from_secs(2 * 120 + 1);
        assert!(!rpc(&mut e, late, src(1), &retry).validated);
        // A fresh one validates, for a while, then no longer.
        let t1 = late + Duration::from_secs(1);
        let fresh = rpc(&mut e, t1, src(1), REQ);
        let out = e.respond(t1, &fresh, Reply::NeedsCookie { id: 7.into() });
        let retry = with_cookie(REQ, &cookie_asked(&out.datagrams[0]).unwrap()).unwrap();
        assert!(rpc(&mut e, t1, src(1), &retry).validated);
        assert!(rpc(&mut e, t1 + Duration::from_secs(300), src(1), REQ).validated);
        assert!(!rpc(&mut e, t1 + Duration::from_secs(601), src(1), REQ).validated);
    }

    #[test]
    fn stun_requests_are_answered_and_responses_handed_on() {
        let t0 = Instant::now();
        let mut e = endpoint(t0);
        let req = stun::binding_request([1; 12], "client", None);
        match e.on_datagram(t0, src(1), &req) {
            Incoming::Stun {
                reply: Some(reply),
                validated: false,
            } => {
                assert!(reply.len() <= AMPLIFICATION * req.len());
                assert_eq!(stun::parse_binding_response(&reply, &[1; 12]), Ok(src(1)));
            }
            other => panic!("{other:?}"),
        }
        let resp = match e.on_datagram(t0, src(1), &req) {
            Incoming::Stun { reply: Some(r), .. } => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(e.on_datagram(t0, src(2), &resp), Incoming::StunResponse);
    }
}
