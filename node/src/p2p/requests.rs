//! The request-response side of the swarm: answering peers (sync, peer exchange,
//! relay, punch), collecting answers to our requests, and learning peers.

use cirrus_proto::sync::{PeerEntry, Request, Response};
use libp2p::request_response::{self, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, identify};
use std::time::Instant;

use tokio::sync::oneshot;

use super::codec::SyncRequest;
use super::event_loop::EventLoop;
use super::{Command, InboundRelay, P2pError, unix_now};
use crate::store::KnownPeer;

impl EventLoop {
    pub(super) fn on_sync(&mut self, ev: request_response::Event<SyncRequest, Response>) {
        use request_response::{Event, InboundFailure, Message, OutboundFailure};
        match ev {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request: SyncRequest::Valid(request),
                        channel,
                        ..
                    },
                ..
            } => self.on_request(peer, request, channel),
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request: SyncRequest::Malformed(why),
                        ..
                    },
                ..
            } => {
                tracing::warn!(%peer, %why, "peer sent a malformed sync request; disconnecting");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
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
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(P2pError::Request {
                        peer,
                        reason: error.to_string(),
                    }));
                }
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
    }

    pub(super) fn on_request(
        &mut self,
        peer: PeerId,
        request: Request,
        channel: ResponseChannel<Response>,
    ) {
        match request {
            Request::Peers => {
                let entries = self
                    .peers
                    .iter()
                    .filter(|(p, c)| **p != peer && !c.listen.is_empty())
                    .take(64)
                    .map(|(p, c)| PeerEntry {
                        peer: p.to_bytes().into(),
                        addrs: c.listen.iter().map(|a| a.to_vec().into()).collect(),
                    })
                    .collect();
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, Response::Peers(entries));
            }
            Request::Punch {
                endpoint,
                transport,
            } => {
                let udp = match transport.as_str() {
                    "udp" => Some(true),
                    "tcp" => Some(false),
                    _ => None,
                };
                let (Ok(endpoint), Some(udp)) = (endpoint.parse(), udp) else {
                    let usage = "punch needs endpoint ip:port and transport udp or tcp";
                    let refused = Response::Refused(usage.into());
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .sync
                        .send_response(channel, refused);
                    return;
                };
                tracing::info!(%peer, %endpoint, %transport, "punching toward a client");
                let (handle, punchers) = (self.handle.clone(), self.stun.punchers.clone());
                // Answer only once our first packets are out: the client starts
                // sending when it has the answer (see stun::punch).
                tokio::spawn(async move {
                    let sockets = punchers.punch(endpoint, udp).await;
                    tracing::debug!(%endpoint, sockets, "punch under way");
                    let response = Response::Punching;
                    let _ = handle
                        .commands
                        .send(Command::Respond { channel, response })
                        .await;
                });
            }
            Request::Relay(bytes) => {
                let (tx, rx) = oneshot::channel();
                let relay = InboundRelay {
                    from: peer,
                    request: bytes.into_vec(),
                    reply: tx,
                };
                if self.relays.try_send(relay).is_err() {
                    let busy = Response::Refused("relay queue is full".into());
                    let _ = self.swarm.behaviour_mut().sync.send_response(channel, busy);
                    return;
                }
                let handle = self.handle.clone();
                tokio::spawn(async move {
                    let response = match rx.await {
                        Ok(bytes) => Response::Relay(bytes.into()),
                        Err(_) => Response::Refused("the node is shutting down".into()),
                    };
                    let _ = handle
                        .commands
                        .send(Command::Respond { channel, response })
                        .await;
                });
            }
            request => {
                if let Some(c) = self.peers.get_mut(&peer) {
                    c.inbound_sync = Some(Instant::now());
                }
                let (handle, store, writer) =
                    (self.handle.clone(), self.store.clone(), self.writer.clone());
                tokio::spawn(async move {
                    let response = match crate::sync::serve(&store, &writer, request).await {
                        Ok(r) => r,
                        Err(crate::sync::SyncError::Protocol(why)) => {
                            let _ = handle
                                .commands
                                .send(Command::Misbehaved {
                                    peer,
                                    why: why.clone(),
                                })
                                .await;
                            Response::Refused(why)
                        }
                        Err(e) => Response::Refused(e.to_string()),
                    };
                    let _ = handle
                        .commands
                        .send(Command::Respond { channel, response })
                        .await;
                });
            }
        }
    }

    pub(super) fn exchange_peers(&mut self, peer: PeerId) {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            if let Ok(Response::Peers(entries)) = handle.request(peer, Request::Peers).await {
                let _ = handle.commands.send(Command::Learned { entries }).await;
            }
        });
    }

    pub(super) fn learn(&mut self, entries: Vec<PeerEntry>) {
        let local = *self.swarm.local_peer_id();
        for e in entries {
            let Ok(peer) = PeerId::from_bytes(&e.peer) else {
                continue;
            };
            let addrs: Vec<Multiaddr> = e
                .addrs
                .iter()
                .filter_map(|a| Multiaddr::try_from(a.to_vec()).ok())
                .take(16)
                .collect();
            if peer == local || addrs.is_empty() {
                continue;
            }
            let new = !self.known.contains_key(&peer);
            self.known.insert(peer, addrs.clone());
            if new
                && !self.peers.contains_key(&peer)
                && self.peers.len() < self.cfg.max_peers as usize
            {
                let _ = self
                    .swarm
                    .dial(DialOpts::peer_id(peer).addresses(addrs).build());
            }
        }
    }

    pub(super) fn on_identify(&mut self, peer: PeerId, info: identify::Info) {
        let addrs: Vec<Multiaddr> = info.listen_addrs.into_iter().take(16).collect();
        if let Some(c) = self.peers.get_mut(&peer) {
            c.agent = Some(info.agent_version);
            c.listen = addrs.clone();
        }
        for a in &addrs {
            self.swarm.add_peer_address(peer, a.clone());
        }
        if addrs.is_empty() {
            return;
        }
        self.known.insert(peer, addrs.clone());
        let known = KnownPeer {
            peer: peer.to_bytes(),
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
            last_seen: unix_now(),
            stun: self.peers.get(&peer).and_then(|c| c.stun.clone()),
        };
        self.save_known(known);
    }

    pub(super) fn save_known(&self, known: KnownPeer) {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.save_peer(&known) {
                tracing::warn!(error = %e, "cannot save known peer");
            }
        });
    }
}
