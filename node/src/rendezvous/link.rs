//! A lasting path to one node behind NAT. Requests go over the relay until the
//! punch, running beside them, opens a direct path; then over that path, kept open
//! with keepalives; when a request finds it dead, that request and the next ones
//! go over the relay again while the link punches anew. A failed punch is tried
//! again after a backoff (1 s, doubling to a minute). When and how is
//! `cirrus_proto::punch::PathChoice`'s to say; this module runs the attempts and the
//! requests. Every change is a [`LinkEvent`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cirrus_proto::api::Transport;
use cirrus_proto::punch::race::Outcome as RaceOutcome;
use cirrus_proto::punch::{Change, Miss, Nats, PathChoice, Race};
use cirrus_proto::stun::nat::Nat;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify, mpsc, watch};

use super::tcp::DirectTcp;
use super::udp::{DirectUdp, our_nat};
use super::{DirectError, Plan, RendezvousError, plans};
use crate::client::Client;

/// How a request reached the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Direct(SocketAddr),
    /// Through the rendezvous node's `relay`, and why not directly.
    Relay {
        why: String,
    },
}

/// A change of the link's path.
#[derive(Debug, Clone)]
pub enum LinkEvent {
    /// A direct path opened to this endpoint, this long after the link opened.
    Direct { at: SocketAddr, after: Duration },
    /// A punch did not open one; the relay carries the requests.
    Failed { why: DirectError, after: Duration },
    /// The direct path stopped answering; back to the relay, and punching again.
    Lost { why: DirectError },
    /// A plain punch did not open one, and a port guess starts at once.
    Guessing { why: DirectError, after: Duration },
}

enum Direct {
    Udp(DirectUdp),
    Tcp(Box<DirectTcp>),
}

impl Direct {
    fn at(&self) -> SocketAddr {
        match self {
            Direct::Udp(d) => d.at,
            Direct::Tcp(d) => d.at,
        }
    }

    async fn call(&mut self, request: &Value, timeout: Duration) -> Result<Value, DirectError> {
        match self {
            Direct::Udp(d) => d.call(request, timeout).await,
            Direct::Tcp(d) => d.call(request, timeout).await,
        }
    }

    async fn keepalive(&mut self) -> Result<(), DirectError> {
        match self {
            Direct::Udp(d) => {
                d.keepalive().await;
                Ok(())
            }
            Direct::Tcp(d) => d.keepalive().await,
        }
    }
}

type Outcome = Result<(SocketAddr, Duration), DirectError>;

struct Shared {
    rendezvous: Client,
    url: String,
    peer: String,
    transport: Transport,
    timeout: Duration,
    direct: Mutex<Option<Direct>>,
    /// The outcome of the latest punch (none before the first settles).
    settled: watch::Sender<Option<Outcome>>,
    /// A request found the direct path dead.
    lost: Notify,
    opened: Instant,
    events: mpsc::UnboundedSender<LinkEvent>,
}

pub struct PeerLink {
    shared: Arc<Shared>,
    events: std::sync::Mutex<mpsc::UnboundedReceiver<LinkEvent>>,
    /// Punches and keepalives; ends with the link.
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PeerLink {
    /// A link to `peer` through the rendezvous node at `url`; the punch starts at
    /// once. `timeout` bounds each request.
    pub fn open(
        url: &str,
        peer: &str,
        transport: Transport,
        timeout: Duration,
    ) -> Result<PeerLink, RendezvousError> {
        // What is not a peer id names no peer the rendezvous node can have.
        if peer.parse::<libp2p::PeerId>().is_err() {
            return Err(RendezvousError::NotConnected(peer.to_string()));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            rendezvous: Client::connect(url, timeout)?,
            url: url.to_string(),
            peer: peer.to_string(),
            transport,
            timeout,
            direct: Mutex::new(None),
            settled: watch::channel(None).0,
            lost: Notify::new(),
            opened: Instant::now(),
            events: tx,
        });
        let task = tokio::spawn(manage(shared.clone()));
        Ok(PeerLink {
            shared,
            events: std::sync::Mutex::new(rx),
            task,
        })
    }

    /// Send `request` (a JSON-RPC request object): directly if the path is open,
    /// else through the relay. Returns the target's whole response object.
    pub async fn call(&self, request: &Value) -> Result<(Value, Via), RendezvousError> {
        let s = &self.shared;
        let len = serde_json::to_vec(request).map_or(0, |b| b.len());
        let why = if s.transport == Transport::Udp && len > cirrus_proto::udp::MAX_DATAGRAM {
            cirrus_proto::udp::CallError::TooLarge(len).to_string()
        } else {
            let mut direct = s.direct.lock().await;
            match direct.as_mut() {
                Some(d) => {
                    let at = d.at();
                    match d.call(request, s.timeout).await {
                        Ok(v) => return Ok((v, Via::Direct(at))),
                        // The path is fine; this request does not fit it.
                        Err(e @ DirectError::Request(_)) => e.to_string(),
                        Err(e) => {
                            *direct = None;
                            let _ = s.events.send(LinkEvent::Lost { why: e.clone() });
                            s.lost.notify_one();
                            e.to_string()
                        }
                    }
                }
                None => match s.settled.borrow().as_ref() {
                    Some(Err(e)) => e.to_string(),
                    _ => "the direct path is not open yet".into(),
                },
            }
        };
        let answer = s
            .rendezvous
            .call("relay", json!({ "peerId": s.peer, "request": request }))
            .await
            .map_err(|e| match e {
                crate::client::ClientError::Rpc(ref o)
                    if o.code == cirrus_proto::jsonrpc::PEER_UNAVAILABLE =>
                {
                    RendezvousError::NotConnected(s.peer.clone())
                }
                other => RendezvousError::Client(other),
            })?;
        if !answer.is_object() && !answer.is_array() {
            return Err(RendezvousError::BadAnswer(answer.to_string()));
        }
        Ok((answer, Via::Relay { why }))
    }

    /// Wait until the first punch has settled: the direct path's endpoint and how
    /// long it took to open, or why it did not.
    pub async fn settled(&self) -> Outcome {
        let mut rx = self.shared.settled.subscribe();
        loop {
            if let Some(o) = rx.borrow_and_update().clone() {
                return o;
            }
            if rx.changed().await.is_err() {
                return Err(DirectError::Lost("the link stopped".into()));
            }
        }
    }

    /// The next change of path, if one happened.
    pub fn try_event(&self) -> Option<LinkEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_recv()
            .ok()
    }
}

/// Punch, keep the path alive, punch again when it is lost or the punch failed:
/// `cirrus_proto::punch::PathChoice` decides when and how; this runs it.
async fn manage(s: Arc<Shared>) {
    let mut choice = PathChoice::new(Instant::now(), s.transport == Transport::Udp);
    loop {
        if choice.poll_start(Instant::now()) {
            match open_direct(&s, &choice).await {
                Ok(d) => {
                    choice.opened(Instant::now());
                    let (at, after) = (d.at(), s.opened.elapsed());
                    *s.direct.lock().await = Some(d);
                    // The event before the outcome: whoever waits for the outcome
                    // then finds the event queued.
                    let _ = s.events.send(LinkEvent::Direct { at, after });
                    s.settled.send_replace(Some(Ok((at, after))));
                }
                Err((why, nats)) => {
                    let miss = match why {
                        DirectError::NoAnswer { .. } => Miss::NoAnswer,
                        _ => Miss::Other,
                    };
                    let after = s.opened.elapsed();
                    if let Change::Guessing(_) = choice.failed(Instant::now(), miss, nats) {
                        // A guess follows at once: the round has not settled yet.
                        let _ = s.events.send(LinkEvent::Guessing { why, after });
                    } else {
                        let failed = LinkEvent::Failed {
                            why: why.clone(),
                            after,
                        };
                        let _ = s.events.send(failed);
                        s.settled.send_replace(Some(Err(why)));
                    }
                }
            }
            continue;
        }
        if choice.poll_keepalive(Instant::now()) {
            let mut direct = s.direct.lock().await;
            match direct.as_mut() {
                Some(d) => {
                    if let Err(why) = d.keepalive().await {
                        *direct = None;
                        choice.lost(Instant::now());
                        let _ = s.events.send(LinkEvent::Lost { why });
                    }
                }
                // A request found it dead meanwhile, and said so.
                None => {
                    choice.lost(Instant::now());
                }
            }
            continue;
        }
        let wake = choice.poll_timeout().unwrap_or_else(Instant::now);
        tokio::select! {
            // A request found the direct path dead (it sent the event). The
            // signal may be stale (the keepalive saw the loss first, and a new
            // path may be open since): only a path that is gone counts.
            _ = s.lost.notified() => {
                if s.direct.lock().await.is_none() {
                    choice.lost(Instant::now());
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

/// One attempt: a punch per address family both sides have, IPv6 first and the
/// next as `cirrus_proto::punch::Race` says (RFC 8305: 250 ms later, or at once
/// when the earlier one failed), each opened as `choice` says for both NATs; the
/// first path to open wins. On failure, why (the IPv4 attempt's reason where there
/// was one), and the NATs as that attempt saw them (unknown when the plan failed).
async fn open_direct(s: &Shared, choice: &PathChoice) -> Result<Direct, (DirectError, Nats)> {
    let plans = plans(&s.rendezvous, &s.url, &s.peer, s.transport)
        .await
        .map_err(|e| (e, Nats::UNKNOWN))?;
    let mut race = Race::new(Instant::now(), plans.len());
    let mut plans: Vec<Option<Plan>> = plans.into_iter().map(Some).collect();
    let mut errors: Vec<Option<(DirectError, Nats)>> = plans.iter().map(|_| None).collect();
    let mut running = FuturesUnordered::new();
    loop {
        while let Some(i) = race.poll_start(Instant::now()) {
            if let Some(p) = plans.get_mut(i).and_then(Option::take) {
                running.push(async move { (i, attempt(s, choice, p).await) });
            }
        }
        if race.outcome().is_some() {
            break;
        }
        let wake = race.poll_timeout();
        tokio::select! {
            Some((i, result)) = running.next() => match result {
                Ok(d) => {
                    if race.opened(i) == Some(RaceOutcome::Won(i)) {
                        return Ok(d);
                    }
                }
                Err(e) => {
                    errors[i] = Some(e);
                    race.failed(Instant::now(), i);
                }
            },
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now).into()), if wake.is_some() => {}
            // Nothing runs and nothing is due (the race keeps this from happening
            // while it is on): no path.
            else => break,
        }
    }
    let report = match race.outcome() {
        Some(RaceOutcome::AllFailed { report }) => report,
        _ => errors.len().saturating_sub(1),
    };
    Err(errors
        .get_mut(report)
        .and_then(Option::take)
        .unwrap_or_else(|| {
            (
                DirectError::Lost("no attempt was made".into()),
                Nats::UNKNOWN,
            )
        }))
}

/// One family's attempt.
async fn attempt(s: &Shared, choice: &PathChoice, p: Plan) -> Result<Direct, (DirectError, Nats)> {
    Ok(match s.transport {
        Transport::Udp => {
            // Ours matters only toward a NAT a guess could go through (an IPv6
            // plan's target counts as unknown: no port guessing there).
            let ours = match p.nat {
                Nat::EndpointDependent | Nat::EndpointIndependent => our_nat(&p).await,
                _ => Nat::Unknown,
            };
            let nats = Nats {
                target: p.nat,
                ours,
            };
            let d = DirectUdp::open(&p.via, &s.peer, &p, choice.opening(nats)).await;
            Direct::Udp(d.map_err(|e| (e, nats))?)
        }
        Transport::Tcp => Direct::Tcp(Box::new(
            DirectTcp::open(&p.via, &s.peer, &p)
                .await
                .map_err(|e| (e, Nats::UNKNOWN))?,
        )),
    })
}
