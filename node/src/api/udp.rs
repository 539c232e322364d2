//! UDP transport (SPEC "UDP API"): one JSON-RPC message per datagram, large answers
//! in fragments, the anti-amplification rule, and STUN on the same socket.
//!
//! The same code serves port 38083 and every per-peer STUN client socket; on the
//! latter, STUN responses are handed to the STUN client that owns the socket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use cirrus_proto::jsonrpc::{COOKIE_REQUIRED, ErrorObject, Response};
use cirrus_proto::stun;
use cirrus_proto::udp::{AMPLIFICATION, AmplificationGuard, FRAGMENT_HEADER, datagrams};
use serde_json::Value;
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::Dispatcher;

/// Largest datagram read; a JSON request larger than this cannot come by UDP.
pub(crate) const MAX_DATAGRAM: usize = 65_507;
/// Requests answered at once per node; more datagrams are dropped, as UDP may.
const IN_FLIGHT: usize = 256;

/// A STUN datagram for the STUN client that owns a socket.
pub type StunDatagram = (Vec<u8>, SocketAddr);

pub struct UdpApi {
    dispatcher: Dispatcher,
    guard: Mutex<AmplificationGuard>,
    message_no: AtomicU32,
    slots: Arc<Semaphore>,
}

impl UdpApi {
    pub fn new(dispatcher: Dispatcher) -> Arc<UdpApi> {
        let mut secret = [0u8; 32];
        let _ = getrandom::fill(&mut secret);
        Arc::new(UdpApi {
            dispatcher,
            guard: Mutex::new(AmplificationGuard::new(secret)),
            message_no: AtomicU32::new(1),
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
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
                continue;
            };
            let (api, sock, bytes) = (self.clone(), sock.clone(), bytes.to_vec());
            tokio::spawn(async move {
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
        // (within the amplification budget); indications are hole punching: nothing to do.
        if bytes[0] & 0x01 == 0x01 {
            if let Some(tx) = stun_responses {
                let _ = tx.try_send((bytes.to_vec(), from));
            }
            return;
        }
        let a = stun::handle_binding(bytes, from, crate::stun::SOFTWARE);
        if let Some(reply) = a.reply
            && (reply.len() <= AMPLIFICATION * bytes.len() || self.is_validated(&from, None))
        {
            let _ = sock.send_to(&reply, from).await;
        }
    }

    fn is_validated(&self, from: &SocketAddr, cookie: Option<&str>) -> bool {
        let now = crate::p2p::unix_now();
        self.guard
            .lock()
            .expect("guard lock")
            .validated(from, cookie, now)
    }

    async fn answer(&self, sock: &UdpSocket, bytes: &[u8], from: SocketAddr) {
        let (body, cookie, id) = strip_cookie(bytes);
        // Over its rate, a source gets the error (within the budget below) or nothing.
        let answer = self
            .dispatcher
            .handle_from(from.ip(), body.as_deref().unwrap_or(bytes))
            .await;
        let Some(out) = answer.unwrap_or_else(Some) else {
            return;
        };
        let budget = if self.is_validated(&from, cookie.as_deref()) {
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
        if on_wire <= budget {
            let no = self.message_no.fetch_add(1, Ordering::Relaxed);
            for d in datagrams(no, &out) {
                let _ = sock.send_to(&d, from).await;
            }
            return;
        }
        let now = crate::p2p::unix_now();
        let cookie = self.guard.lock().expect("guard lock").cookie(&from, now);
        // Kept short: it must fit three times a small request.
        let mut e = ErrorObject::new(COOKIE_REQUIRED, "cookie required");
        e.data = Some(serde_json::json!({ "cookie": cookie }));
        let reply = serde_json::to_vec(&Response::err(id, e)).expect("serializes");
        // Even the cookie error must fit the budget; otherwise stay silent.
        if reply.len() <= budget {
            let _ = sock.send_to(&reply, from).await;
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
