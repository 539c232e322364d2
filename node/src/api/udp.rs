//! UDP transport (SPEC "UDP API"): one JSON-RPC message per datagram, large answers
//! in fragments, the anti-amplification rule, and STUN on the same socket.
//!
//! A datagram's source address proves nothing, so until a source has returned a
//! cookie the node treats it as possibly spoofed: it runs only a single plain read
//! (no write, punch, relay, batch or session wait), sends back at most three times
//! what it got, and all such sources together share one request budget
//! (`udp-unvalidated-rate`), so faking many addresses buys no more work than one.
//!
//! The same code serves port 38083 and every per-peer STUN client socket; on the
//! latter, STUN responses are handed to the STUN client that owns the socket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cirrus_proto::jsonrpc::{COOKIE_REQUIRED, ErrorObject, Response};
use cirrus_proto::stun;
use cirrus_proto::udp::{AMPLIFICATION, AmplificationGuard, FRAGMENT_HEADER, datagrams};
use serde_json::Value;
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Answer, ApiTransport, Dispatcher, Origin};
use crate::metrics::Metrics;

/// Largest datagram read; a JSON request larger than this cannot come by UDP.
pub(crate) const MAX_DATAGRAM: usize = 65_507;
/// Requests answered at once per node; more datagrams are dropped, as UDP may.
const IN_FLIGHT: usize = 256;

/// A STUN datagram for the STUN client that owns a socket.
pub type StunDatagram = (Vec<u8>, SocketAddr);

/// A token bucket (requests per second, burst of one second's worth).
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub struct UdpApi {
    dispatcher: Dispatcher,
    guard: Mutex<AmplificationGuard>,
    /// Requests from sources not yet validated, all together.
    unvalidated: Mutex<Bucket>,
    message_no: AtomicU32,
    slots: Arc<Semaphore>,
    metrics: Metrics,
    tasks: TaskTracker,
}

impl UdpApi {
    pub fn new(dispatcher: Dispatcher, unvalidated_rate: f64, tasks: TaskTracker) -> Arc<UdpApi> {
        let mut secret = [0u8; 32];
        let _ = getrandom::fill(&mut secret);
        let metrics = dispatcher.context().metrics.clone();
        Arc::new(UdpApi {
            dispatcher,
            guard: Mutex::new(AmplificationGuard::new(secret)),
            unvalidated: Mutex::new(Bucket {
                rate: unvalidated_rate,
                tokens: unvalidated_rate,
                at: Instant::now(),
            }),
            message_no: AtomicU32::new(1),
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
            metrics,
            tasks,
        })
    }

    /// Serve `sock` until `stop`. STUN responses go to `stun_responses` if given.
    pub async fn serve(
        self: Arc<Self>,
        sock: Arc<UdpSocket>,
        stun_responses: Option<mpsc::Sender<StunDatagram>>,
        stop: CancellationToken,
    ) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (n, from) = tokio::select! {
                _ = stop.cancelled() => return,
                r = sock.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(e) => { tracing::trace!(error = %e, "UDP receive error"); continue; }
                },
            };
            let bytes = &buf[..n];
            if stun::is_stun(bytes) {
                self.on_stun(&sock, bytes, from, stun_responses.as_ref())
                    .await;
                continue;
            }
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                self.metrics.udp("dropped");
                continue;
            };
            let (api, sock, bytes) = (self.clone(), sock.clone(), bytes.to_vec());
            self.tasks.spawn(async move {
                api.answer(&sock, &bytes, from).await;
                drop(permit);
            });
        }
    }

    async fn on_stun(
        &self,
        sock: &UdpSocket,
        bytes: &[u8],
        from: SocketAddr,
        stun_responses: Option<&mpsc::Sender<StunDatagram>>,
    ) {
        // Responses belong to our own STUN client; requests get a Binding answer
        // (never over 3x the request, by construction); indications are hole
        // punching: nothing to do.
        if bytes[0] & 0x01 == 0x01 {
            if let Some(tx) = stun_responses {
                let _ = tx.try_send((bytes.to_vec(), from));
            }
            return self.metrics.udp("stun_response");
        }
        let a = stun::handle_binding(bytes, from, crate::stun::SOFTWARE);
        match a.reply {
            Some(reply) => {
                if !self.is_validated(&from, None) {
                    self.metrics
                        .udp_unvalidated_bytes
                        .inc_by(reply.len() as u64);
                }
                let _ = sock.send_to(&reply, from).await;
                self.metrics.udp("stun");
            }
            None => self.metrics.udp("stun_silent"),
        }
    }

    fn is_validated(&self, from: &SocketAddr, cookie: Option<&str>) -> bool {
        let now = crate::clock::unix_secs();
        self.guard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .validated(from, cookie, now)
    }

    async fn answer(&self, sock: &UdpSocket, bytes: &[u8], from: SocketAddr) {
        let (body, cookie, id) = strip_cookie(bytes);
        let validated = self.is_validated(&from, cookie.as_deref());
        if !validated
            && !self
                .unvalidated
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
        {
            self.metrics.udp("dropped");
            return;
        }
        let origin = Origin::Client {
            ip: from.ip(),
            transport: ApiTransport::Udp,
            validated,
        };
        let out = match self
            .dispatcher
            .handle(origin, body.as_deref().unwrap_or(bytes))
            .await
        {
            Answer::Reply(out) | Answer::Limited(out) => out,
            Answer::Nothing => {
                self.metrics.udp("silent");
                return;
            }
            Answer::NeedsCookie { id } => {
                return self.send_cookie(sock, bytes.len(), from, id).await;
            }
        };
        let budget = if validated {
            usize::MAX
        } else {
            AMPLIFICATION * bytes.len()
        };
        let fragments = out.len().div_ceil(cirrus_proto::udp::FRAGMENT_PAYLOAD);
        let on_wire = if out.len() <= cirrus_proto::udp::MAX_PLAIN {
            out.len()
        } else {
            out.len() + fragments * FRAGMENT_HEADER
        };
        if on_wire > budget {
            return self.send_cookie(sock, bytes.len(), from, id).await;
        }
        if !validated {
            self.metrics.udp_unvalidated_bytes.inc_by(on_wire as u64);
        }
        let no = self.message_no.fetch_add(1, Ordering::Relaxed);
        for d in datagrams(no, &out) {
            let _ = sock.send_to(&d, from).await;
        }
        // Counted once sent, so whoever reads the count knows the answer is out.
        self.metrics.udp("answered");
    }

    /// The -32010 answer with a cookie for `from`, if even that fits the budget of a
    /// `request_len`-byte request; otherwise silence.
    async fn send_cookie(&self, sock: &UdpSocket, request_len: usize, from: SocketAddr, id: Value) {
        let now = crate::clock::unix_secs();
        let cookie = self
            .guard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cookie(&from, now);
        // Kept short: it must fit three times a small request.
        let mut e = ErrorObject::new(COOKIE_REQUIRED, "cookie required");
        e.data = Some(serde_json::json!({ "cookie": cookie }));
        let reply = serde_json::to_vec(&Response::err(id, e)).expect("serializes");
        if reply.len() <= AMPLIFICATION * request_len {
            self.metrics.udp("cookie");
            self.metrics
                .udp_unvalidated_bytes
                .inc_by(reply.len() as u64);
            let _ = sock.send_to(&reply, from).await;
        } else {
            self.metrics.udp("silent");
        }
    }
}

/// Take the `cookie` member out of the request (or the first batch element that has
/// one). Returns the re-encoded body if anything was removed, the cookie, and the id
/// to answer an error with.
fn strip_cookie(bytes: &[u8]) -> (Option<Vec<u8>>, Option<String>, Value) {
    let Ok(mut v) = serde_json::from_slice::<Value>(bytes) else {
        return (None, None, Value::Null);
    };
    let mut cookie = None;
    let mut id = Value::Null;
    let objects: Vec<&mut serde_json::Map<String, Value>> = match &mut v {
        Value::Object(o) => vec![o],
        Value::Array(a) => a.iter_mut().filter_map(Value::as_object_mut).collect(),
        _ => Vec::new(),
    };
    let single = objects.len() == 1 && !bytes.trim_ascii_start().starts_with(b"[");
    for o in objects {
        if single {
            id = o.get("id").cloned().unwrap_or(Value::Null);
        }
        if let Some(c) = o.remove("cookie") {
            cookie = cookie.or_else(|| c.as_str().map(str::to_string));
        }
    }
    if cookie.is_none() {
        return (None, None, id);
    }
    (
        Some(serde_json::to_vec(&v).expect("serializes")),
        cookie,
        id,
    )
}
