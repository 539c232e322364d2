//! The task that owns the swarm: turns swarm events into [`Event`]s for the node and
//! carries out the node's [`Command`]s. Staying connected is in `exchange`, start-up
//! in `start`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cirrus_proto::{peer, sync};
use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, identify, ping};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::behaviour::{Behaviour, BehaviourEvent, announce_topic, records_topic};
use super::codec::{CborCodec, Inbound};
use super::connections::{ADDRS_PER_PEER, Connected, Known, Reach, usable};
use super::{Command, Event, P2pError, Topic};
use crate::clock;
use crate::config::Config;
use crate::metrics::Metrics;

/// Gossip messages handed to the node and not yet validated; beyond this, new
/// ones are ignored (neither forwarded nor held against their sender).
const MAX_UNVALIDATED: usize = 4096;
/// Callers waiting for the answers to our requests of one protocol.
pub(super) type Pending<R> = HashMap<OutboundRequestId, oneshot::Sender<Result<R, P2pError>>>;

/// How often to check the number of peers and ask one for more.
const MAINTAIN_EVERY: Duration = Duration::from_secs(10);

pub(super) struct EventLoop {
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) events: mpsc::UnboundedSender<Event>,
    pub(super) connected: HashMap<PeerId, Connected>,
    pub(super) known: Known,
    pub(super) reach: Reach,
    pub(super) pending_sync: Pending<sync::Response>,
    pub(super) pending_peer: Pending<peer::Response>,
    /// Our own peer-exchange requests in flight.
    pub(super) exchanges: HashSet<OutboundRequestId>,
    /// Peers were let go since the last maintenance round (their memory is freed
    /// once their connection tasks end).
    pub(super) let_go_some: bool,
    /// Gossip messages handed out and not yet validated.
    pub(super) unvalidated: usize,
    pub(super) cfg: Arc<Config>,
    pub(super) metrics: Metrics,
    /// libp2p's own metrics (swarm, gossipsub, identify, ping).
    pub(super) recorder: libp2p::metrics::Metrics,
    pub(super) stop: CancellationToken,
}

impl EventLoop {
    pub(super) async fn run(mut self) {
        // Not at once: start-up has just dialed the bootstrap and remembered peers.
        let mut maintain =
            tokio::time::interval_at(tokio::time::Instant::now() + MAINTAIN_EVERY, MAINTAIN_EVERY);
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

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Sync {
                peer,
                request,
                reply,
            } => {
                let sync = &mut self.swarm.behaviour_mut().sync;
                send(sync, &mut self.pending_sync, peer, request, reply);
            }
            Command::Ask {
                peer,
                request,
                reply,
            } => {
                let ask = &mut self.swarm.behaviour_mut().peer;
                send(ask, &mut self.pending_peer, peer, request, reply);
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
                    self.released();
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
            return self.answer_exchange(peer, channel);
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

/// Send `request` on one protocol, its answer to go to `reply`; at once an error
/// when the peer is not connected (libp2p would dial it).
fn send<Req, Resp>(
    rr: &mut request_response::Behaviour<CborCodec<Req, Resp>>,
    pending: &mut Pending<Resp>,
    peer: PeerId,
    request: Req,
    reply: oneshot::Sender<Result<Resp, P2pError>>,
) where
    Req: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
    Resp: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    if !rr.is_connected(&peer) {
        let _ = reply.send(Err(P2pError::NotConnected(peer)));
        return;
    }
    let id = rr.send_request(&peer, Inbound::Valid(request));
    pending.insert(id, reply);
}
