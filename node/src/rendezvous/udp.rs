//! The direct UDP path: our mapping from the rendezvous node's STUN server, a
//! TTL-limited opening of our own NAT, the punch, then the probe sent to every
//! endpoint of the target (and to any endpoint its punch packets come from) until
//! one answers as the target. The socket and that endpoint are then the path.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cirrus_proto::api::Transport;
use cirrus_proto::stun::{self, Class};
use cirrus_proto::udp::{Progress, Retransmit, UdpCall};
use serde_json::Value;
use tokio::net::UdpSocket;

use super::{
    DIRECT_FOR, DirectError, OPENING_TTL, Plan, answers_as, probe_request, punch, stun_error,
};
use crate::client::Client;
use crate::sockets::local_ip_towards;
use crate::stun::{probe, transaction_id};

/// Most endpoints learned from the target's punch packets (a symmetric NAT sends
/// them from a port that is not in its `stun` list).
const MAX_LEARNED: usize = 8;
/// Retransmission while the path is being opened: each send also keeps our NAT's
/// mapping toward the target fresh.
const PUNCH_EVERY: Duration = Duration::from_millis(250);

pub struct DirectUdp {
    sock: Arc<UdpSocket>,
    pub at: SocketAddr,
}

impl DirectUdp {
    pub async fn open(r: &Client, peer: &str, plan: &Plan) -> Result<DirectUdp, DirectError> {
        let body = serde_json::to_vec(&probe_request()).expect("a JSON value serializes");
        let mut call = UdpCall::new(
            Instant::now(),
            body,
            DIRECT_FOR,
            Retransmit::Every(PUNCH_EVERY),
        )?;
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .await
            .map_err(|e| DirectError::Socket(e.to_string()))?;
        let mine = probe::binding_udp(&sock, plan.stun, Duration::from_secs(2))
            .await
            .map_err(stun_error(plan.stun))?;
        if local_ip_towards(Ipv4Addr::UNSPECIFIED.into(), plan.stun).await != mine.ip() {
            // Behind NAT: open ours toward the target before it punches toward us,
            // so its packets find our mapping instead of creating one of their own.
            if let Ok(ttl) = sock.ttl()
                && sock.set_ttl(OPENING_TTL).is_ok()
            {
                for t in &plan.targets {
                    let _ = sock.send_to(&indication(), t).await;
                }
                let _ = sock.set_ttl(ttl);
            }
        }
        punch(r, peer, mine, Transport::Udp).await?;
        let mut targets = plan.targets.clone();
        let listed = targets.len();
        // Every endpoint until one asks for a cookie, then that one alone.
        let mut sending = targets.clone();
        let mut buf = vec![0u8; 65_536];
        loop {
            if let Some(d) = call.poll_transmit(Instant::now()) {
                for t in &sending {
                    let _ = sock.send_to(d, t).await;
                }
            }
            let wake = tokio::time::Instant::from_std(call.poll_timeout());
            let Ok(Ok((n, from))) = tokio::time::timeout_at(wake, sock.recv_from(&mut buf)).await
            else {
                if call.handle_timeout(Instant::now()).is_err() {
                    return Err(DirectError::NoAnswer {
                        tried: targets,
                        mine,
                    });
                }
                continue;
            };
            let bytes = &buf[..n];
            if stun::is_stun(bytes) {
                // A punch packet from an endpoint we do not know: the target's NAT
                // maps per destination (symmetric), and this is its mapping toward
                // us (a peer-reflexive candidate, RFC 8445 §7.3.1.3).
                if is_indication(bytes)
                    && !targets.contains(&from)
                    && targets.len() < listed + MAX_LEARNED
                {
                    targets.push(from);
                    sending.push(from);
                    let _ = sock.send_to(call.datagram(), from).await;
                }
                continue;
            }
            // Once one endpoint has given us a cookie, only it is talked to: the
            // target's other sockets may each ask for their own.
            if !sending.contains(&from) {
                continue;
            }
            match call.on_datagram(Instant::now(), bytes)? {
                Progress::Waiting => {}
                Progress::CookieTaken => sending = vec![from],
                Progress::Answer(msg) => {
                    let Ok(v) = serde_json::from_slice::<Value>(&msg) else {
                        continue;
                    };
                    answers_as(&v, peer)?;
                    return Ok(DirectUdp {
                        sock: Arc::new(sock),
                        at: from,
                    });
                }
            }
        }
    }

    /// One request over the path; the whole response object.
    pub async fn call(&self, request: &Value, timeout: Duration) -> Result<Value, DirectError> {
        let body = serde_json::to_vec(request).expect("a JSON value serializes");
        let retransmit = Retransmit::Doubling(Duration::from_millis(250));
        let mut call = UdpCall::new(Instant::now(), body, timeout, retransmit)?;
        let want = request.get("id").cloned();
        let mut buf = vec![0u8; 65_536];
        loop {
            if let Some(d) = call.poll_transmit(Instant::now()) {
                let _ = self.sock.send_to(d, self.at).await;
            }
            let wake = tokio::time::Instant::from_std(call.poll_timeout());
            let Ok(Ok((n, from))) =
                tokio::time::timeout_at(wake, self.sock.recv_from(&mut buf)).await
            else {
                if let Err(e) = call.handle_timeout(Instant::now()) {
                    return Err(DirectError::Lost(e.to_string()));
                }
                continue;
            };
            if from != self.at || stun::is_stun(&buf[..n]) {
                continue;
            }
            if let Progress::Answer(msg) = call.on_datagram(Instant::now(), &buf[..n])? {
                let Ok(v) = serde_json::from_slice::<Value>(&msg) else {
                    continue;
                };
                // A late answer to an earlier request on this socket is not ours.
                if v.get("id").cloned() == want || v.is_array() {
                    return Ok(v);
                }
            }
        }
    }

    /// Keep both NATs' mappings for the path open between requests.
    pub async fn keepalive(&self) {
        let _ = self.sock.send_to(&indication(), self.at).await;
    }
}

fn indication() -> Vec<u8> {
    stun::binding_indication(transaction_id())
}

fn is_indication(bytes: &[u8]) -> bool {
    stun::Message::decode(bytes)
        .is_ok_and(|m| m.class == Class::Indication && m.method == stun::BINDING)
}
