//! The direct UDP path: our mapping from the rendezvous node's STUN server, a
//! TTL-limited opening of our own NAT, the punch, then the probe sent to every
//! endpoint of the target (and to any endpoint its punch packets come from) until
//! one answers as the target. The socket and that endpoint are then the path.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cirrus_proto::api::{Guess, Transport};
pub use cirrus_proto::punch::Opening;
use cirrus_proto::punch::{OPENING_TTL, PathProbe, ProbeEvent};
use cirrus_proto::stun;
use cirrus_proto::stun::nat::{Nat, Observation, classify};
use cirrus_proto::udp::{Progress, Retransmit, UdpCall};
use serde_json::Value;
use tokio::net::UdpSocket;

use super::{DIRECT_FOR, DirectError, Plan, probe_request, punch, stun_error};
use crate::client::Client;
use crate::sockets::{any_of_family, local_ip_towards};
use crate::stun::{probe, transaction_id};

/// How long a port guess waits for its probes to find a mapping.
const GUESS_FOR: Duration = Duration::from_secs(2);
/// Retransmission while the path is being opened: each send also keeps our NAT's
/// mapping toward the target fresh.
const PUNCH_EVERY: Duration = Duration::from_millis(250);

pub struct DirectUdp {
    sock: Arc<UdpSocket>,
    pub at: SocketAddr,
}

impl DirectUdp {
    pub async fn open(
        r: &Client,
        peer: &str,
        plan: &Plan,
        how: Opening,
    ) -> Result<DirectUdp, DirectError> {
        let sock = bind(plan.stun).await?;
        let mine = probe::binding_udp(&sock, plan.stun, Duration::from_secs(2))
            .await
            .map_err(stun_error(plan.stun))?;
        let behind_nat = local_ip_towards(any_of_family(plan.stun), plan.stun).await != mine.ip();
        // A guess's probes arrive within a round trip of `punch`'s answer.
        let deadline = Instant::now()
            + match how {
                Opening::Plain => DIRECT_FOR,
                Opening::WeOpen | Opening::TargetOpens => GUESS_FOR,
            };
        match how {
            Opening::Plain => {
                if behind_nat {
                    // Open ours toward the target before it punches toward us, so
                    // its packets find our mapping instead of creating one of their
                    // own.
                    open_toward(&sock, &plan.targets).await;
                }
                punch(r, peer, mine, Transport::Udp, None).await?;
                let probe = Probe::new(plan.targets.clone(), None, mine, peer, deadline)?;
                let at = probe.run(&sock).await?;
                Ok(DirectUdp { sock, at })
            }
            Opening::WeOpen => {
                let (&target, &local_port) = plan
                    .targets
                    .first()
                    .zip(plan.local_ports.first())
                    .ok_or(DirectError::NoEndpoints(Transport::Udp))?;
                let mut socks = Vec::with_capacity(Guess::SOCKETS);
                for _ in 0..Guess::SOCKETS {
                    let s = bind(target).await?;
                    open_toward(&s, &[target]).await;
                    socks.push(s);
                }
                let guess = Guess::Probe { local_port };
                punch(r, peer, mine, Transport::Udp, Some(guess)).await?;
                // The socket the target's probe reached has a mapping it may send to.
                let sock = first_to_hear(socks, target, deadline)
                    .await
                    .ok_or_else(|| DirectError::NoAnswer {
                        tried: vec![target],
                        mine,
                    })?;
                let probe = Probe::new(vec![target], None, mine, peer, deadline)?;
                let at = probe.run(&sock).await?;
                Ok(DirectUdp { sock, at })
            }
            Opening::TargetOpens => {
                let ip = plan
                    .targets
                    .first()
                    .ok_or(DirectError::NoEndpoints(Transport::Udp))?
                    .ip();
                punch(r, peer, mine, Transport::Udp, Some(Guess::Open)).await?;
                let probe = Probe::new(Vec::new(), Some(ip), mine, peer, deadline)?;
                crate::stun::spray(&sock, ip, probe.probe.datagram()).await;
                let at = probe.run(&sock).await?;
                Ok(DirectUdp { sock, at })
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
            let Ok(Ok((n, from))) = tokio::time::timeout_at(wake, self.sock.recv_from(&mut buf))
                .await
                .map(|r| r.map(|(n, from)| (n, crate::sockets::canonical(from))))
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

/// A socket on any port, of `towards`'s family.
async fn bind(towards: SocketAddr) -> Result<Arc<UdpSocket>, DirectError> {
    UdpSocket::bind((any_of_family(towards), 0))
        .await
        .map(Arc::new)
        .map_err(|e| DirectError::Socket(e.to_string()))
}

/// How our NAT maps (`cirrus_proto::stun::nat::classify`): one socket asks two
/// ports of the rendezvous node what they see. A NAT that gives one flow a new
/// port per destination port shows it here; one that keeps the port per
/// destination address only is taken for independent, as before this check.
pub(super) async fn our_nat(plan: &Plan) -> Nat {
    let Some(other) = plan.stun_other else {
        return Nat::Unknown;
    };
    let Ok(sock) = bind(plan.stun).await else {
        return Nat::Unknown;
    };
    let (Ok(local), ip) = (
        sock.local_addr(),
        local_ip_towards(any_of_family(plan.stun), plan.stun).await,
    ) else {
        return Nat::Unknown;
    };
    let local = SocketAddr::new(ip, local.port());
    let ask = Duration::from_secs(1);
    let mut obs = Vec::with_capacity(2);
    // One after the other: the second answer must not be taken for the first's.
    for server in [plan.stun, other] {
        if let Ok(mapped) = probe::binding_udp(&sock, server, ask).await {
            obs.push(Observation {
                local,
                server,
                mapped,
            });
        }
    }
    classify(&obs)
}

/// Open our NAT toward `targets` with packets that expire at the next router, so
/// they never reach the target's NAT (see `cirrus_proto::punch::OPENING_TTL`).
async fn open_toward(sock: &UdpSocket, targets: &[SocketAddr]) {
    if let Ok(ttl) = sock.ttl()
        && sock.set_ttl(OPENING_TTL).is_ok()
    {
        for t in targets {
            let _ = sock.send_to(&indication(), t).await;
        }
        let _ = sock.set_ttl(ttl);
    }
}

/// The first of `socks` to receive a packet from `target` before `deadline`.
async fn first_to_hear(
    socks: Vec<Arc<UdpSocket>>,
    target: SocketAddr,
    deadline: Instant,
) -> Option<Arc<UdpSocket>> {
    let mut waiting = tokio::task::JoinSet::new();
    for s in socks {
        waiting.spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                match s.recv_from(&mut buf).await {
                    Ok((_, from)) if crate::sockets::canonical(from) == target => return Some(s),
                    Ok(_) => continue,
                    Err(_) => return None,
                }
            }
        });
    }
    let until = tokio::time::Instant::from_std(deadline);
    while let Ok(Some(done)) = tokio::time::timeout_at(until, waiting.join_next()).await {
        if let Ok(Some(s)) = done {
            return Some(s);
        }
    }
    None
}

/// The probe that opens a path (`cirrus_proto::punch::PathProbe`), on our socket.
struct Probe {
    probe: PathProbe,
    mine: SocketAddr,
}

impl Probe {
    /// A probe that gives up at `deadline`.
    fn new(
        targets: Vec<SocketAddr>,
        learn_from: Option<IpAddr>,
        mine: SocketAddr,
        peer: &str,
        deadline: Instant,
    ) -> Result<Probe, DirectError> {
        let body = serde_json::to_vec(&probe_request()).expect("a JSON value serializes");
        let now = Instant::now();
        let within = deadline.saturating_duration_since(now);
        let probe = PathProbe::new(now, body, targets, learn_from, peer, within, PUNCH_EVERY)?;
        Ok(Probe { probe, mine })
    }

    /// The endpoint that answered as the peer.
    async fn run(mut self, sock: &UdpSocket) -> Result<SocketAddr, DirectError> {
        let mut buf = vec![0u8; 65_536];
        loop {
            let now = Instant::now();
            self.probe.handle_timeout(now);
            while let Some(t) = self.probe.poll_transmit(now) {
                let _ = sock.send_to(&t.contents, t.destination).await;
            }
            if let Some(e) = self.probe.poll_event() {
                return match e {
                    ProbeEvent::Open(at) => Ok(at),
                    ProbeEvent::NoAnswer { tried } => Err(DirectError::NoAnswer {
                        tried,
                        mine: self.mine,
                    }),
                    ProbeEvent::WrongPeer(other) => Err(DirectError::WrongPeer(other)),
                    ProbeEvent::Failed(e) => Err(DirectError::Request(e)),
                };
            }
            let wake = self.probe.poll_timeout().unwrap_or(now);
            let wake = tokio::time::Instant::from_std(wake);
            if let Ok(Ok((n, from))) = tokio::time::timeout_at(wake, sock.recv_from(&mut buf)).await
            {
                let from = crate::sockets::canonical(from);
                self.probe.handle_packet(Instant::now(), from, &buf[..n]);
            }
        }
    }
}
