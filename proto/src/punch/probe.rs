//! The client's probe for a direct path: one request (a UDP API call, with its
//! cookie retry) sent to every candidate endpoint of the target every so often
//! until one answers as the target. A Binding indication from an endpoint not yet
//! known is the target's punch from a mapping nobody listed (its NAT maps per
//! destination): that endpoint becomes a candidate (peer-reflexive, RFC 8445
//! §7.3.1.3) and gets the probe at once.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Transmit;
use crate::stun::{self, Class};
use crate::udp::{CallError, Progress, Retransmit, UdpCall};

/// Most endpoints learned beyond the listed ones.
pub const MAX_LEARNED: usize = 8;

/// How a probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// This endpoint answered as the target: the direct path.
    Open(SocketAddr),
    /// No candidate answered in time.
    NoAnswer { tried: Vec<SocketAddr> },
    /// A candidate answered as another node (this id, or what it said instead).
    WrongPeer(String),
    /// The call itself failed (the target kept asking for cookies).
    Failed(CallError),
}

/// Whether an answer names `peer` as the node that gave it; what it named if not.
pub fn answers_as(answer: &Value, peer: &str) -> Result<(), String> {
    match answer["result"]["peerId"].as_str() {
        Some(p) if p == peer => Ok(()),
        Some(other) => Err(other.to_string()),
        None => Err(format!("no peer id in {answer}")),
    }
}

#[derive(Debug)]
pub struct PathProbe {
    call: UdpCall,
    peer: String,
    /// Candidates; the first `listed` were given, the rest learned.
    targets: Vec<SocketAddr>,
    listed: usize,
    /// Where the probe goes: every candidate until one asks for a cookie.
    sending: Vec<SocketAddr>,
    /// Any endpoint of this address that answers becomes a candidate (the
    /// client probed its random ports).
    learn_from: Option<IpAddr>,
    out: VecDeque<Transmit>,
    event: Option<ProbeEvent>,
    reported: bool,
}

impl PathProbe {
    /// Probe `targets` with `request` every `every` until one answers as `peer`,
    /// for at most `within`.
    pub fn new(
        now: Instant,
        request: Vec<u8>,
        targets: Vec<SocketAddr>,
        learn_from: Option<IpAddr>,
        peer: &str,
        within: Duration,
        every: Duration,
    ) -> Result<PathProbe, CallError> {
        let call = UdpCall::new(now, request, within, Retransmit::Every(every))?;
        Ok(PathProbe {
            call,
            peer: peer.to_string(),
            listed: targets.len(),
            sending: targets.clone(),
            targets,
            learn_from,
            out: VecDeque::new(),
            event: None,
            reported: false,
        })
    }

    /// The probe datagram as it stands (for a spray to many ports).
    pub fn datagram(&self) -> &[u8] {
        self.call.datagram()
    }

    /// The candidates so far.
    pub fn targets(&self) -> &[SocketAddr] {
        &self.targets
    }

    fn learn(&mut self, from: SocketAddr) -> bool {
        if self.targets.contains(&from) || self.targets.len() >= self.listed + MAX_LEARNED {
            return false;
        }
        self.targets.push(from);
        self.sending.push(from);
        true
    }

    fn end(&mut self, e: ProbeEvent) {
        if self.event.is_none() {
            self.event = Some(e);
            self.out.clear();
        }
    }

    /// The next datagram to send at `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.event.is_some() {
            return None;
        }
        if self.out.is_empty()
            && let Some(d) = self.call.poll_transmit(now)
        {
            let d = d.to_vec();
            for t in &self.sending {
                self.out.push_back(Transmit {
                    destination: *t,
                    contents: d.clone(),
                    ttl: None,
                });
            }
        }
        self.out.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) and
    /// [`poll_transmit`](Self::poll_transmit) next; `None` once ended.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.event.is_some() {
            return None;
        }
        // A driver sends everything `poll_transmit` gives before it waits, so what
        // is queued is never waiting on this.
        Some(self.call.poll_timeout())
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        // The call's time is the probe's.
        if self.event.is_none() && self.call.handle_timeout(now).is_err() {
            let tried = self.targets.clone();
            self.end(ProbeEvent::NoAnswer { tried });
        }
    }

    /// A datagram arrived from `from` on the probing socket.
    pub fn handle_packet(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if self.event.is_some() {
            return;
        }
        if stun::is_stun(bytes) {
            let indication = stun::Message::decode(bytes)
                .is_ok_and(|m| m.class == Class::Indication && m.method == stun::BINDING);
            if indication && self.learn(from) {
                self.out.push_back(Transmit {
                    destination: from,
                    contents: self.call.datagram().to_vec(),
                    ttl: None,
                });
            }
            return;
        }
        if self.learn_from == Some(from.ip()) {
            self.learn(from);
        }
        // Once one endpoint has given us a cookie, only it is talked to: the
        // target's other sockets may each ask for their own.
        if !self.sending.contains(&from) {
            return;
        }
        match self.call.on_datagram(now, bytes) {
            Err(e) => self.end(ProbeEvent::Failed(e)),
            Ok(Progress::Waiting) => {}
            Ok(Progress::CookieTaken) => self.sending = vec![from],
            Ok(Progress::Answer(msg)) => {
                let Ok(v) = serde_json::from_slice::<Value>(&msg) else {
                    return;
                };
                match answers_as(&v, &self.peer) {
                    Ok(()) => self.end(ProbeEvent::Open(from)),
                    Err(other) => self.end(ProbeEvent::WrongPeer(other)),
                }
            }
        }
    }

    /// How the probe ended, once.
    pub fn poll_event(&mut self) -> Option<ProbeEvent> {
        if self.reported {
            return None;
        }
        let e = self.event.clone()?;
        self.reported = true;
        Some(e)
    }
}
