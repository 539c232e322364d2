//! The task that owns the swarm: reacts to swarm events and to commands, keeps
//! enough peers, and starts anti-entropy with peers whose root differs. Gossip
//! (publishing, announcing, verifying) is in `gossip.rs`; answering and sending
//! requests, peer exchange and identify are in `requests.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cirrus_proto::merkle::Hash;
use cirrus_proto::{peer, sync};
use futures::StreamExt;
use libp2p::gossipsub;
use libp2p::identity::Keypair;
use libp2p::request_response::OutboundRequestId;
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, Swarm, identify, ping};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::behaviour::{Behaviour, BehaviourEvent, announce_topic, build_swarm, records_topic};
use super::codec::Inbound;
use super::gossip::ip_of;
use super::peers::Connected;
use super::{Command, InboundRelay, P2pError, P2pHandle};
use crate::clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::writer::{Applied, Writer};
use crate::stun::StunState;
use crate::stun::manager::PeerEvent;

/// What the swarm shares with the STUN side: our state to announce, our server's
/// port, and where to report peers coming and going.
pub struct StunLink {
    pub state: Arc<StunState>,
    pub port: u16,
    pub events: mpsc::Sender<PeerEvent>,
    /// Our STUN client sockets, to punch from when a rendezvous asks.
    pub punchers: Arc<crate::stun::punch::Punchers>,
}

/// Keep dialing known peers while fewer than this many are connected.
const TARGET_PEERS: usize = 8;
/// Re-announce an unchanged root this often, so new peers learn it.
pub(super) const ANNOUNCE_EVERY: Duration = Duration::from_secs(30);
/// Reconciliations in flight at once.
const MAX_SYNCS: usize = 2;

pub struct Started {
    pub handle: P2pHandle,
    pub relays: mpsc::Receiver<InboundRelay>,
    pub listen: Vec<Multiaddr>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Build the swarm, start listening, dial bootstrap and remembered peers, and spawn
/// the event loop. Returns once the swarm listens on TCP and QUIC.
pub async fn start(
    key: Keypair,
    cfg: Arc<Config>,
    store: Arc<Store>,
    writer: Writer,
    stun: StunLink,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<Started, P2pError> {
    let local = key.public().to_peer_id();
    let mut swarm = metrics.with_registry(|r| build_swarm(key.clone(), &cfg, r))?;
    let recorder = metrics.with_registry(libp2p::metrics::Metrics::new);
    for topic in [records_topic(), announce_topic()] {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .map_err(|e| P2pError::Build(e.to_string()))?;
    }
    let ip = match cfg.bind {
        std::net::IpAddr::V4(ip) => format!("/ip4/{ip}"),
        std::net::IpAddr::V6(ip) => format!("/ip6/{ip}"),
    };
    let listen = wait_listening(&mut swarm, &ip, cfg.p2p_port).await?;

    // Without redial, only peers met in this run (through the bootstrap list) are
    // dialed; the remembered ones stay in the store for a later start.
    let known = if cfg.redial() {
        load_known(&store)
    } else {
        HashMap::new()
    };
    for addr in &cfg.bootstrap {
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
        }
    }
    for (peer, addrs) in known.iter().take(cfg.max_peers as usize) {
        if *peer != local {
            let _ = swarm.dial(DialOpts::peer_id(*peer).addresses(addrs.clone()).build());
        }
    }

    let (tx, rx) = mpsc::channel(256);
    let (relay_tx, relay_rx) = mpsc::channel(64);
    let handle = P2pHandle {
        commands: tx.clone(),
        local_peer_id: local,
        peer_events: tokio::sync::broadcast::channel(256).0,
    };
    let event_loop = EventLoop {
        swarm,
        key,
        commands: rx,
        handle: handle.clone(),
        client_writes: writer.client_writes(),
        store,
        writer,
        relays: relay_tx,
        peers: HashMap::new(),
        known,
        pending_sync: HashMap::new(),
        pending_peer: HashMap::new(),
        syncing: HashSet::new(),
        announced: None,
        announced_at: Instant::now(),
        stun_version: stun.state.version(),
        stun,
        cfg,
        metrics,
        recorder,
        shutdown,
    };
    let task = tokio::spawn(event_loop.run());
    Ok(Started {
        handle,
        relays: relay_rx,
        listen,
        task,
    })
}

async fn wait_listening(
    swarm: &mut Swarm<Behaviour>,
    ip: &str,
    port: u16,
) -> Result<Vec<Multiaddr>, P2pError> {
    let parse = |s: String| s.parse::<Multiaddr>().map_err(|_| P2pError::Addr(s));
    let tcp = parse(format!("{ip}/tcp/{port}"))?;
    let quic = parse(format!("{ip}/udp/{port}/quic-v1"))?;
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
    while !(listen.iter().any(is_quic) && listen.iter().any(|a| !is_quic(a))) {
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

fn load_known(store: &Store) -> HashMap<PeerId, Vec<Multiaddr>> {
    let peers = store.known_peers().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read known peers");
        Vec::new()
    });
    let mut known = HashMap::new();
    for p in peers {
        let Ok(peer) = PeerId::from_bytes(&p.peer) else {
            continue;
        };
        let addrs: Vec<Multiaddr> = p.addrs.iter().filter_map(|a| a.parse().ok()).collect();
        if !addrs.is_empty() {
            known.insert(peer, addrs);
        }
    }
    known
}

/// Callers waiting for the answers to our requests of one protocol.
pub(super) type Pending<R> = HashMap<OutboundRequestId, oneshot::Sender<Result<R, P2pError>>>;

pub(super) struct EventLoop {
    pub(super) swarm: Swarm<Behaviour>,
    /// Signs our announcements.
    pub(super) key: Keypair,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) handle: P2pHandle,
    /// Records clients wrote on this node, to publish.
    pub(super) client_writes: mpsc::Receiver<Arc<Applied>>,
    pub(super) store: Arc<Store>,
    pub(super) writer: Writer,
    pub(super) relays: mpsc::Sender<InboundRelay>,
    pub(super) peers: HashMap<PeerId, Connected>,
    pub(super) known: HashMap<PeerId, Vec<Multiaddr>>,
    pub(super) pending_sync: Pending<sync::Response>,
    pub(super) pending_peer: Pending<peer::Response>,
    pub(super) syncing: HashSet<PeerId>,
    pub(super) announced: Option<Hash>,
    pub(super) announced_at: Instant,
    pub(super) stun: StunLink,
    /// STUN state version last announced.
    pub(super) stun_version: u64,
    pub(super) cfg: Arc<Config>,
    pub(super) metrics: Metrics,
    /// libp2p's own metrics (swarm, gossipsub, identify, ping).
    pub(super) recorder: libp2p::metrics::Metrics,
    pub(super) shutdown: CancellationToken,
}

impl EventLoop {
    async fn run(mut self) {
        let mut announce_tick = tokio::time::interval(Duration::from_secs(1));
        let mut sync_tick = tokio::time::interval(self.cfg.sync_interval());
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                Some(cmd) = self.commands.recv() => self.on_command(cmd),
                Some(a) = self.client_writes.recv() => self.on_applied(&a),
                _ = announce_tick.tick() => self.announce(),
                _ = sync_tick.tick() => self.maintain(),
            }
        }
        tracing::debug!("swarm stopped");
    }

    /// Periodic upkeep: keep enough peers, and reconcile with one whose root differs.
    fn maintain(&mut self) {
        if self.peers.len() < TARGET_PEERS.min(self.cfg.max_peers as usize) {
            let local = *self.swarm.local_peer_id();
            let candidates: Vec<(PeerId, Vec<Multiaddr>)> = self
                .known
                .iter()
                .filter(|(p, _)| **p != local && !self.peers.contains_key(p))
                .take(2)
                .map(|(p, a)| (*p, a.clone()))
                .collect();
            for (peer, addrs) in candidates {
                let _ = self
                    .swarm
                    .dial(DialOpts::peer_id(peer).addresses(addrs).build());
            }
            // Ask a connected peer whom it knows: the network grows past the bootstrap node.
            let connected: Vec<PeerId> = self.peers.keys().copied().collect();
            if !connected.is_empty() {
                self.exchange_peers(connected[random_index(connected.len())]);
            }
        }
        if self.syncing.len() >= MAX_SYNCS {
            return;
        }
        let Ok(db) = self.store.db_hash() else { return };
        let differing: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(p, c)| {
                // A peer that is reconciling with us now does the work for both.
                let busy = c
                    .inbound_sync
                    .is_some_and(|t| t.elapsed() < self.cfg.sync_interval());
                !busy && !self.syncing.contains(p) && c.db_root != Some(db.root)
            })
            .map(|(p, _)| *p)
            .collect();
        if !differing.is_empty() {
            let pick = differing[random_index(differing.len())];
            self.start_sync(pick);
        }
    }

    fn start_sync(&mut self, peer: PeerId) {
        if !self.syncing.insert(peer) {
            return;
        }
        let (handle, store, writer) =
            (self.handle.clone(), self.store.clone(), self.writer.clone());
        let (metrics, timeout) = (self.metrics.clone(), self.cfg.sync_timeout());
        tokio::spawn(async move {
            let result = tokio::time::timeout(
                timeout,
                crate::sync::reconcile(&handle, &store, &writer, peer),
            )
            .await
            .unwrap_or(Err(crate::sync::SyncError::TimedOut(timeout)));
            metrics
                .syncs
                .get_or_create(&crate::metrics::ByResult {
                    result: if result.is_ok() { "done" } else { "failed" },
                })
                .inc();
            match result {
                Ok(stats) => {
                    metrics.sync_rounds.inc_by(stats.rounds as u64);
                    metrics.sync_records.inc_by(stats.records_received as u64);
                    if stats.records_received > 0 || stats.rounds > 1 {
                        tracing::info!(%peer, ?stats, "reconciled");
                    }
                }
                Err(crate::sync::SyncError::Protocol(why)) => {
                    let _ = handle
                        .commands
                        .send(Command::Misbehaved { peer, why })
                        .await;
                }
                Err(e) => tracing::debug!(%peer, error = %e, "reconciliation stopped"),
            }
            let _ = handle.commands.send(Command::SyncDone { peer }).await;
        });
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Sync {
                peer,
                request,
                reply,
            } => {
                if !self.swarm.is_connected(&peer) {
                    let _ = reply.send(Err(P2pError::NotConnected(peer)));
                    return;
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_request(&peer, Inbound::Valid(request));
                self.pending_sync.insert(id, reply);
            }
            Command::Ask {
                peer,
                request,
                reply,
            } => {
                if !self.swarm.is_connected(&peer) {
                    let _ = reply.send(Err(P2pError::NotConnected(peer)));
                    return;
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .peer
                    .send_request(&peer, Inbound::Valid(request));
                self.pending_peer.insert(id, reply);
            }
            Command::Peers { reply } => {
                let gs = &self.swarm.behaviour().gossipsub;
                let mut list: Vec<_> = self
                    .peers
                    .iter()
                    .map(|(p, c)| c.info(p, gs.peer_score(p)))
                    .collect();
                list.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
                let _ = reply.send(list);
            }
            Command::Listen { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Dial { addr } => {
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    tracing::warn!(%addr, error = %e, "dial failed");
                }
            }
            Command::Validated {
                id,
                source,
                acceptance,
            } => {
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &source, acceptance);
            }
            // The peer may have gone meanwhile; nothing to do then.
            Command::RespondSync { channel, response } => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response);
            }
            Command::RespondPeer { channel, response } => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .peer
                    .send_response(channel, response);
            }
            Command::Misbehaved { peer, why } => {
                tracing::warn!(%peer, %why, "peer broke the sync protocol; disconnecting");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Learned { entries } => self.learn(entries),
            Command::SyncDone { peer } => {
                self.syncing.remove(&peer);
            }
            Command::Hello { peer, sealed } => self.on_hello(peer, &sealed),
        }
    }

    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        use libp2p::metrics::Recorder;
        self.recorder.record(&ev);
        match &ev {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => self.recorder.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => self.recorder.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => self.recorder.record(e),
            _ => {}
        }
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_gossip(propagation_source, message_id, message),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(ev)) => self.on_sync(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Peer(ev)) => self.on_peer(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.on_identify(peer_id, info),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            })) => {
                if let Some(c) = self.peers.get_mut(&peer) {
                    c.ping = Some(rtt);
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                if num_established.get() > 1 {
                    if let Some(c) = self.peers.get_mut(&peer_id) {
                        c.connections += 1;
                    }
                    return;
                }
                tracing::info!(peer = %peer_id, addr = %endpoint.get_remote_address(), "peer connected");
                let dialer = endpoint.is_dialer();
                if let Some(remote) = ip_of(endpoint.get_remote_address()) {
                    let _ = self.stun.events.try_send(PeerEvent::Up {
                        peer: peer_id,
                        remote,
                    });
                }
                // Its root and STUN port now, rather than whenever gossip brings them.
                self.hello(peer_id);
                let _ = self.handle.peer_events.send(serde_json::json!({
                    "peerId": peer_id.to_string(),
                    "event": "connected",
                    "addr": endpoint.get_remote_address().to_string(),
                }));
                self.peers
                    .insert(peer_id, Connected::new(&endpoint, clock::unix_secs()));
                self.exchange_peers(peer_id);
                // The dialing side starts anti-entropy, so a pair does not do it twice.
                if dialer && self.syncing.len() < MAX_SYNCS {
                    self.start_sync(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0 {
                    self.peers.remove(&peer_id);
                    let _ = self.stun.events.try_send(PeerEvent::Down { peer: peer_id });
                    let _ = self.handle.peer_events.send(serde_json::json!({
                        "peerId": peer_id.to_string(),
                        "event": "disconnected",
                    }));
                    tracing::info!(peer = %peer_id, "peer disconnected");
                } else if let Some(c) = self.peers.get_mut(&peer_id) {
                    c.connections = c.connections.saturating_sub(1);
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => tracing::info!(%address, "listening"),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, %error, "dial failed");
            }
            _ => {}
        }
    }
}

fn random_index(n: usize) -> usize {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    (u64::from_le_bytes(b) % n as u64) as usize
}
