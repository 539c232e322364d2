//! UDP transport (SPEC "UDP API"): the socket side of [`cirrus_proto::udp::Endpoint`],
//! which holds the rules for a source address that proves nothing (the shared
//! budget of unvalidated sources, three times the bytes received, the cookie).
//! Until a source has returned a cookie the dispatcher runs only a single plain
//! read for it (no write, punch, relay, batch or session wait).
//!
//! The same code serves port 38083 and every per-peer STUN client socket; on the
//! latter, STUN responses are handed to the STUN client that owns the socket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cirrus_proto::udp::{Endpoint, Incoming, MAX_DATAGRAM, Outcome, Reply, Rpc};
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Answer, ApiTransport, Dispatcher, Origin};
use crate::metrics::Metrics;

/// Requests answered at once per node; more datagrams are dropped, as UDP may.
const IN_FLIGHT: usize = 256;

/// A STUN datagram for the STUN client that owns a socket.
pub type StunDatagram = (Vec<u8>, SocketAddr);

pub struct UdpApi {
    dispatcher: Dispatcher,
    endpoint: Mutex<Endpoint>,
    slots: Arc<Semaphore>,
    metrics: Metrics,
    tasks: TaskTracker,
}

impl UdpApi {
    pub fn new(dispatcher: Dispatcher, unvalidated_rate: f64, tasks: TaskTracker) -> Arc<UdpApi> {
        let mut secret = [0u8; 32];
        // Without randomness the cookies are still per-source; only guessable.
        let _ = getrandom::fill(&mut secret);
        let metrics = dispatcher.context().metrics.clone();
        let endpoint = Endpoint::new(
            secret,
            unvalidated_rate,
            crate::stun::SOFTWARE,
            Instant::now(),
        );
        Arc::new(UdpApi {
            dispatcher,
            endpoint: Mutex::new(endpoint),
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
            metrics,
            tasks,
        })
    }

    fn endpoint(&self) -> std::sync::MutexGuard<'_, Endpoint> {
        self.endpoint.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serve `sock` until `stop`. STUN responses go to `stun_responses` if given;
    /// `heard`, if given, counts every datagram that arrives.
    pub async fn serve(
        self: Arc<Self>,
        sock: Arc<UdpSocket>,
        stun_responses: Option<mpsc::Sender<StunDatagram>>,
        heard: Option<Arc<AtomicU64>>,
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
            if let Some(heard) = &heard {
                heard.fetch_add(1, Ordering::Relaxed);
            }
            let from = crate::sockets::canonical(from);
            let bytes = &buf[..n];
            let incoming = self.endpoint().on_datagram(Instant::now(), from, bytes);
            match incoming {
                Incoming::StunResponse => {
                    if let Some(tx) = &stun_responses {
                        let _ = tx.try_send((bytes.to_vec(), from));
                    }
                    self.metrics.udp("stun_response");
                }
                Incoming::Stun {
                    reply: Some(reply),
                    validated,
                } => {
                    if !validated {
                        self.metrics
                            .udp_unvalidated_bytes
                            .inc_by(reply.len() as u64);
                    }
                    let _ = sock.send_to(&reply, from).await;
                    self.metrics.udp("stun");
                }
                // Indications are hole punching; other STUN gets silence.
                Incoming::Stun { reply: None, .. } => self.metrics.udp("stun_silent"),
                Incoming::Dropped => self.metrics.udp("dropped"),
                Incoming::Rpc(rpc) => {
                    let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                        self.metrics.udp("dropped");
                        continue;
                    };
                    let (api, sock) = (self.clone(), sock.clone());
                    self.tasks.spawn(async move {
                        api.answer(&sock, rpc).await;
                        drop(permit);
                    });
                }
            }
        }
    }

    async fn answer(&self, sock: &UdpSocket, rpc: Rpc) {
        let origin = Origin::Client {
            ip: rpc.from.ip(),
            transport: ApiTransport::Udp,
            validated: rpc.validated,
        };
        let reply = match self.dispatcher.handle(origin, &rpc.body).await {
            Answer::Reply(out) | Answer::Limited(out) => Reply::Json(out),
            Answer::Nothing => Reply::Silent,
            Answer::NeedsCookie { id } => Reply::NeedsCookie { id },
        };
        let out = self.endpoint().respond(Instant::now(), &rpc, reply);
        self.metrics
            .udp_unvalidated_bytes
            .inc_by(out.unvalidated_bytes as u64);
        for d in &out.datagrams {
            let _ = sock.send_to(d, rpc.from).await;
        }
        // Counted once sent, so whoever reads the count knows the answer is out.
        self.metrics.udp(match out.outcome {
            Outcome::Answered => "answered",
            Outcome::Cookie => "cookie",
            Outcome::Silent => "silent",
        });
    }
}
