//! The task that owns the swarm: turns swarm events into [`Event`]s for the node,
//! carries out the node's [`Command`]s, and keeps the node connected (redials known
//! peers while it has too few, exchanges peers, answers peer exchange).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cirrus_proto::peer::{self, PeerEntry};
use cirrus_proto::sync;
use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, Swarm, identify, ping};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::behaviour::{Behaviour, BehaviourEvent, announce_topic, build_swarm, records_topic};
use super::codec::Inbound;
use super::connections::{ADDRS_PER_PEER, Connected, EXCHANGE_ENTRIES, Known, Reach, usable};
use super::{Command, Event, Network, P2pError, Topic, random_index};
use crate::clock;
use crate::config::Config;
use crate::metrics::Metrics;

/// Keep dialing known peers while fewer than this many are connected.
const TARGET_PEERS: usize = 8;
/// Gossip messages handed to the node and not yet validated; beyond this, new
/// ones are ignored (neither forwarded nor held against their sender).
const MAX_UNVALIDATED: usize = 4096;
/// How often to check the number of peers and ask one for more.
const MAINTAIN_EVERY: Duration = Duration::from_secs(10);

pub struct Started {
    pub network: Network,
    pub events: mpsc::UnboundedReceiver<Event>,
    pub listen: Vec<Multiaddr>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Callers waiting for the answers to our requests of one protocol.
type Pending<R> = HashMap<OutboundRequestId, oneshot::Sender<Result<R, P2pError>>>;

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
    let mut swarm = metrics.with_registry(|r| build_swarm(key, &cfg, r))?;
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
    let reach = Reach::of(cfg.bind, &listen);

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
        unvalidated: 0,
        cfg,
        metrics,
        recorder,
        stop,
    };
    let task = tokio::spawn(event_loop.run());
    Ok(Started {
        network,
        events: events_rx,
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

struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    connected: HashMap<PeerId, Connected>,
    known: Known,
    reach: Reach,
    pending_sync: Pending<sync::Response>,
    pending_peer: Pending<peer::Response>,
    /// Our own peer-exchange requests in flight.
    exchanges: HashSet<OutboundRequestId>,
    /// Gossip messages handed out and not yet validated.
    unvalidated: usize,
    cfg: Arc<Config>,
    metrics: Metrics,
    /// libp2p's own metrics (swarm, gossipsub, identify, ping).
    recorder: libp2p::metrics::Metrics,
    stop: CancellationToken,
}

impl EventLoop {
    async fn run(mut self) {
        let mut maintain = tokio::time::interval(MAINTAIN_EVERY);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                Some(cmd) = self.commands.recv() => self.on_command(cmd),
                _ = maintain.tick() => self.maintain(),
            }
        }
        tracing::debug!("swarm stopped");
    }

    fn emit(&self, ev: Event) {
        // The node stops after the swarm; until then it takes every event.
        let _ = self.events.send(ev);
    }

    /// Keep enough peers: dial known ones, and ask a connected one whom it knows.
    fn maintain(&mut self) {
        self.metrics.peers.set(self.connected.len() as i64);
        if self.connected.len() >= TARGET_PEERS.min(self.cfg.max_peers as usize) {
            return;
        }
        let local = *self.swarm.local_peer_id();
        let connected = &self.connected;
        for (peer, addrs) in self
            .known
            .candidates(2, |p| *p == local || connected.contains_key(p))
        {
            let _ = self
                .swarm
                .dial(DialOpts::peer_id(peer).addresses(addrs).build());
        }
        let peers: Vec<PeerId> = self.connected.keys().copied().collect();
        if !peers.is_empty() {
            self.exchange_peers(peers[random_index(peers.len())]);
        }
    }

    fn exchange_peers(&mut self, peer: PeerId) {
        let id = self
            .swarm
            .behaviour_mut()
            .peer
            .send_request(&peer, Inbound::Valid(peer::Request::Peers));
        self.exchanges.insert(id);
    }

    /// Take a peer-exchange answer: a bounded number of entries, usable addresses
    /// only, and a bounded number of new dials.
    fn learn(&mut self, entries: Vec<PeerEntry>) {
        let local = *self.swarm.local_peer_id();
        let mut dials = 0;
        let over = entries.len().saturating_sub(EXCHANGE_ENTRIES);
        self.metrics.exchange("dropped", over as u64);
        for e in entries.into_iter().take(EXCHANGE_ENTRIES) {
            let Ok(peer) = PeerId::from_bytes(&e.peer) else {
                continue;
            };
            let addrs: Vec<Multiaddr> = e
                .addrs
                .iter()
                .filter_map(|a| Multiaddr::try_from(a.to_vec()).ok())
                .filter(|a| usable(self.reach, a))
                .take(ADDRS_PER_PEER)
                .collect();
            if peer == local || addrs.is_empty() {
                self.metrics.exchange("dropped", 1);
                continue;
            }
            self.metrics.exchange("taken", 1);
            let new = self.known.learn(peer, addrs.clone());
            if new
                && dials < self.cfg.exchange_dials
                && !self.connected.contains_key(&peer)
                && self.connected.len() < self.cfg.max_peers as usize
            {
                dials += 1;
                self.metrics.exchange("dialed", 1);
                let _ = self
                    .swarm
                    .dial(DialOpts::peer_id(peer).addresses(addrs).build());
            }
        }
        self.metrics.known_peers.set(self.known.len() as i64);
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
            Command::Publish { topic, data } => {
                let t = match topic {
                    Topic::Records => records_topic(),
                    Topic::Announce => announce_topic(),
                };
                if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(t, data) {
                    tracing::trace!(error = %e, ?topic, "not published; anti-entropy will carry it");
                }
            }
            Command::Validated {
                id,
                source,
                acceptance,
            } => {
                self.unvalidated = self.unvalidated.saturating_sub(1);
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &source, acceptance);
            }
            Command::Connections { reply } => {
                let gs = &self.swarm.behaviour().gossipsub;
                let mut list: Vec<_> = self
                    .connected
                    .values()
                    .map(|c| {
                        let mut facts = c.facts.clone();
                        facts.score = gs.peer_score(&facts.peer);
                        facts
                    })
                    .collect();
                list.sort_by_key(|c| c.peer.to_string());
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
            Command::Misbehaved { peer, why } => {
                tracing::warn!(%peer, %why, "peer broke a protocol; disconnecting");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::External { addr } => {
                tracing::info!(%addr, "external address candidate from STUN");
                self.swarm.add_external_address(addr);
            }
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
                if let Some(c) = self.connected.get_mut(&peer) {
                    c.facts.ping = Some(rtt);
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                if num_established.get() > 1 {
                    if let Some(c) = self.connected.get_mut(&peer_id) {
                        c.connections += 1;
                    }
                    return;
                }
                let remote = endpoint.get_remote_address().clone();
                tracing::info!(peer = %peer_id, addr = %remote, "peer connected");
                self.connected.insert(
                    peer_id,
                    Connected::new(peer_id, &endpoint, clock::unix_secs()),
                );
                self.metrics.peers.set(self.connected.len() as i64);
                self.exchange_peers(peer_id);
                self.emit(Event::PeerUp {
                    peer: peer_id,
                    remote,
                    dialer: endpoint.is_dialer(),
                });
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0 {
                    self.connected.remove(&peer_id);
                    self.metrics.peers.set(self.connected.len() as i64);
                    tracing::info!(peer = %peer_id, "peer disconnected");
                    self.emit(Event::PeerDown { peer: peer_id });
                } else if let Some(c) = self.connected.get_mut(&peer_id) {
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

    fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, message: gossipsub::Message) {
        let topic = if message.topic == records_topic().hash() {
            Some(Topic::Records)
        } else if message.topic == announce_topic().hash() {
            Some(Topic::Announce)
        } else {
            None
        };
        let Some(topic) = topic.filter(|_| self.unvalidated < MAX_UNVALIDATED) else {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&id, &source, MessageAcceptance::Ignore);
            return;
        };
        self.unvalidated += 1;
        self.emit(Event::Gossip {
            topic,
            id,
            source,
            data: message.data,
        });
    }

    fn on_identify(&mut self, peer: PeerId, info: identify::Info) {
        let listen: Vec<Multiaddr> = info
            .listen_addrs
            .into_iter()
            .filter(|a| usable(self.reach, a))
            .take(ADDRS_PER_PEER)
            .collect();
        if let Some(c) = self.connected.get_mut(&peer) {
            c.facts.agent = Some(info.agent_version);
            c.facts.listen = listen.clone();
        }
        for a in &listen {
            self.swarm.add_peer_address(peer, a.clone());
        }
        if !listen.is_empty() {
            self.known.learn(peer, listen.clone());
            self.metrics.known_peers.set(self.known.len() as i64);
        }
        self.emit(Event::Identified { peer, listen });
    }

    fn on_sync(&mut self, ev: request_response::Event<Inbound<sync::Request>, sync::Response>) {
        if let Some((peer, request, channel)) = self.triage(ev, Self::sync_reply) {
            self.emit(Event::InboundSync {
                peer,
                request,
                channel,
            });
        }
    }

    fn on_peer(&mut self, ev: request_response::Event<Inbound<peer::Request>, peer::Response>) {
        let Some((peer, request, channel)) = self.triage(ev, Self::peer_reply) else {
            return;
        };
        if let peer::Request::Peers = request {
            let entries = self
                .connected
                .values()
                .filter(|c| c.facts.peer != peer && !c.facts.listen.is_empty())
                .take(EXCHANGE_ENTRIES)
                .map(|c| PeerEntry {
                    peer: c.facts.peer.to_bytes().into(),
                    addrs: c.facts.listen.iter().map(|a| a.to_vec().into()).collect(),
                })
                .collect();
            let _ = self
                .swarm
                .behaviour_mut()
                .peer
                .send_response(channel, peer::Response::Peers(entries));
            return;
        }
        self.emit(Event::InboundPeer {
            peer,
            request,
            channel,
        });
    }

    fn sync_reply(&mut self, id: OutboundRequestId, r: Result<sync::Response, P2pError>) {
        if let Some(reply) = self.pending_sync.remove(&id) {
            let _ = reply.send(r);
        }
    }

    fn peer_reply(&mut self, id: OutboundRequestId, r: Result<peer::Response, P2pError>) {
        if self.exchanges.remove(&id) {
            if let Ok(peer::Response::Peers(entries)) = r {
                self.learn(entries);
            }
            return;
        }
        if let Some(reply) = self.pending_peer.remove(&id) {
            let _ = reply.send(r);
        }
    }

    /// Answers and failures go to `reply`; a malformed request or an unreadable
    /// answer disconnects the peer; a valid request comes back.
    fn triage<Req, Resp>(
        &mut self,
        ev: request_response::Event<Inbound<Req>, Resp>,
        reply: fn(&mut Self, OutboundRequestId, Result<Resp, P2pError>),
    ) -> Option<(PeerId, Req, ResponseChannel<Resp>)> {
        use request_response::{Event, InboundFailure, Message, OutboundFailure};
        match ev {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => match request {
                Inbound::Valid(request) => return Some((peer, request, channel)),
                Inbound::Malformed(why) => {
                    tracing::warn!(%peer, %why, "peer sent a malformed request; disconnecting");
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
            },
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => reply(self, request_id, Ok(response)),
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                // An unreadable answer is a protocol violation; a peer that went
                // away meanwhile shows up here too, and is gone already.
                if let OutboundFailure::Io(e) = &error
                    && e.kind() == std::io::ErrorKind::InvalidData
                {
                    tracing::warn!(%peer, error = %e, "peer sent an unreadable response; disconnecting");
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                let failed = P2pError::Request {
                    peer,
                    reason: error.to_string(),
                };
                reply(self, request_id, Err(failed));
            }
            Event::InboundFailure {
                peer,
                error: InboundFailure::Io(e),
                ..
            } => {
                tracing::warn!(%peer, error = %e, "peer sent an unreadable request; disconnecting");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            _ => {}
        }
        None
    }
}
