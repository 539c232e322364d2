//! Starting the swarm: build it, listen on TCP and QUIC, dial the bootstrap peers
//! and the ones remembered from the last run, and hand the loop to a task.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::behaviour::{Behaviour, announce_topic, build_swarm, records_topic};
use super::connections::{Known, Reach};
use super::event_loop::EventLoop;
use super::{Event, Network, P2pError};
use crate::config::Config;
use crate::metrics::Metrics;

pub struct Started {
    pub network: Network,
    pub events: mpsc::UnboundedReceiver<Event>,
    pub listen: Vec<Multiaddr>,
    /// The loop and every connection task of the swarm: closed, and done once the
    /// loop has stopped and dropped the swarm.
    pub tasks: TaskTracker,
}

/// Build the swarm, start listening, dial the bootstrap peers and `known` ones,
/// and spawn the event loop. Returns once the swarm listens on TCP and QUIC.
pub async fn start(
    key: Keypair,
    cfg: Arc<Config>,
    known: Vec<(PeerId, Vec<Multiaddr>)>,
    metrics: Metrics,
    stop: CancellationToken,
) -> Result<Started, P2pError> {
    let local = key.public().to_peer_id();
    let tasks = TaskTracker::new();
    let mut swarm = metrics.with_registry(|r| build_swarm(key, &cfg, tasks.clone(), r))?;
    let recorder = metrics.with_registry(libp2p::metrics::Metrics::new);
    for topic in [records_topic(), announce_topic()] {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .map_err(|e| P2pError::Build(e.to_string()))?;
    }
    let binds = cfg.binds();
    // libp2p's IPv6 listeners take IPv6 only: `::` alone means both families.
    let mut ips: Vec<String> = binds
        .all()
        .iter()
        .map(|ip| match ip {
            std::net::IpAddr::V4(ip) => format!("/ip4/{ip}"),
            std::net::IpAddr::V6(ip) => format!("/ip6/{ip}"),
        })
        .collect();
    if binds.dual_stack() {
        ips.push("/ip4/0.0.0.0".into());
    }
    // Every address on the same port; with port 0, each its own (peers dial the
    // whole listen address, so nothing needs them equal).
    let ports = (cfg.p2p_port, cfg.p2p_port);
    let mut listen = Vec::new();
    for ip in &ips {
        listen.extend(wait_listening(&mut swarm, ip, ports).await?);
    }
    let reach = Reach::of(binds.loopback_only(), &listen);

    for addr in &cfg.bootstrap {
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
        }
    }
    let mut remembered = Known::new(cfg.max_known_peers);
    for (peer, addrs) in known {
        if peer != local {
            remembered.learn(peer, addrs);
        }
    }
    for (peer, addrs) in remembered.candidates(cfg.max_peers as usize, |_| false) {
        let _ = swarm.dial(DialOpts::peer_id(peer).addresses(addrs).build());
    }

    let (tx, rx) = mpsc::channel(256);
    let (events, events_rx) = mpsc::unbounded_channel();
    let network = Network {
        commands: tx,
        local_peer_id: local,
    };
    let event_loop = EventLoop {
        swarm,
        commands: rx,
        events,
        connected: HashMap::new(),
        known: remembered,
        reach,
        pending_sync: HashMap::new(),
        pending_peer: HashMap::new(),
        exchanges: HashSet::new(),
        let_go_some: false,
        unvalidated: 0,
        cfg,
        metrics,
        recorder,
        stop,
    };
    tasks.spawn(event_loop.run());
    tasks.close();
    Ok(Started {
        network,
        events: events_rx,
        listen,
        tasks,
    })
}

async fn wait_listening(
    swarm: &mut Swarm<Behaviour>,
    ip: &str,
    (tcp_port, quic_port): (u16, u16),
) -> Result<Vec<Multiaddr>, P2pError> {
    let parse = |s: String| s.parse::<Multiaddr>().map_err(|_| P2pError::Addr(s));
    let tcp = parse(format!("{ip}/tcp/{tcp_port}"))?;
    let quic = parse(format!("{ip}/udp/{quic_port}/quic-v1"))?;
    for addr in [&tcp, &quic] {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| P2pError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
    }
    let mut listen: Vec<Multiaddr> = Vec::new();
    let is_quic = |a: &Multiaddr| a.to_string().contains("/quic-v1");
    let deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(deadline);
    // Addresses of an earlier listener may still arrive: wait for this one's own.
    let family = |a: &&Multiaddr| a.to_string().starts_with(&ip[..4]);
    while !(listen.iter().filter(family).any(is_quic)
        && listen.iter().filter(family).any(|a| !is_quic(a)))
    {
        tokio::select! {
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::NewListenAddr { address, .. } => listen.push(address),
                SwarmEvent::ListenerError { error, .. } | SwarmEvent::ListenerClosed { reason: Err(error), .. } => {
                    let addr = if listen.iter().any(is_quic) { tcp.clone() } else { quic.clone() };
                    return Err(P2pError::Listen { addr, reason: error.to_string() });
                }
                _ => {}
            },
            _ = &mut deadline => {
                return Err(P2pError::Listen { addr: tcp, reason: "no listen address after 10 s".into() });
            }
        }
    }
    Ok(listen)
}
