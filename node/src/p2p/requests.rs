//! The request-response side of the swarm: answering peers (sync on one protocol;
//! hello, peer exchange, relay and punch on the other), collecting answers to our
//! requests, and learning peers.

use cirrus_proto::api::Transport;
use cirrus_proto::peer::{self, PeerEntry};
use cirrus_proto::sync;
use libp2p::request_response::{self, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, identify};
use std::time::Instant;

use tokio::sync::oneshot;

use super::announce;
use super::codec::Inbound;
use super::event_loop::{EventLoop, Pending};
use super::{Command, InboundRelay, P2pError};
use crate::clock;
use crate::store::KnownPeer;

/// What the two protocols' events have in common.
enum Handled<Req, Resp> {
    Request(PeerId, Req, ResponseChannel<Resp>),
    Done,
}

impl EventLoop {
    /// Sort out answers, failures and malformed requests; hand valid requests back.
    fn triage<Req, Resp>(
        &mut self,
        ev: request_response::Event<Inbound<Req>, Resp>,
        pending: fn(&mut EventLoop) -> &mut Pending<Resp>,
    ) -> Handled<Req, Resp> {
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
                Inbound::Valid(request) => return Handled::Request(peer, request, channel),
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
            } => {
                if let Some(reply) = pending(self).remove(&request_id) {
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
                if let Some(reply) = pending(self).remove(&request_id) {
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
        Handled::Done
    }

    pub(super) fn on_sync(
        &mut self,
        ev: request_response::Event<Inbound<sync::Request>, sync::Response>,
    ) {
        if let Handled::Request(peer, request, channel) = self.triage(ev, |l| &mut l.pending_sync) {
            self.on_sync_request(peer, request, channel);
        }
    }

    pub(super) fn on_peer(
        &mut self,
        ev: request_response::Event<Inbound<peer::Request>, peer::Response>,
    ) {
        if let Handled::Request(peer, request, channel) = self.triage(ev, |l| &mut l.pending_peer) {
            self.on_peer_request(peer, request, channel);
        }
    }

    fn on_sync_request(
        &mut self,
        peer: PeerId,
        request: sync::Request,
        channel: ResponseChannel<sync::Response>,
    ) {
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
                    sync::Response::Refused(why)
                }
                Err(e) => sync::Response::Refused(e.to_string()),
            };
            let _ = handle
                .commands
                .send(Command::RespondSync { channel, response })
                .await;
        });
    }

    fn respond(&mut self, channel: ResponseChannel<peer::Response>, response: peer::Response) {
        let _ = self
            .swarm
            .behaviour_mut()
            .peer
            .send_response(channel, response);
    }

    fn on_peer_request(
        &mut self,
        peer: PeerId,
        request: peer::Request,
        channel: ResponseChannel<peer::Response>,
    ) {
        match request {
            peer::Request::Hello => {
                let response = match self.announcement() {
                    Some((sealed, _)) => peer::Response::Hello(sealed.into()),
                    None => peer::Response::Refused("the store cannot be read".into()),
                };
                self.respond(channel, response);
            }
            peer::Request::Peers => {
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
                self.respond(channel, peer::Response::Peers(entries));
            }
            peer::Request::Punch {
                endpoint,
                transport,
            } => {
                tracing::info!(%peer, %endpoint, %transport, "punching toward a client");
                let (handle, punchers) = (self.handle.clone(), self.stun.punchers.clone());
                // Answer only once our first packets are out: the client starts
                // sending when it has the answer (see stun::punch).
                tokio::spawn(async move {
                    let sockets = punchers.punch(endpoint, transport == Transport::Udp).await;
                    tracing::debug!(%endpoint, sockets, "punch under way");
                    let response = peer::Response::Punching;
                    let _ = handle
                        .commands
                        .send(Command::RespondPeer { channel, response })
                        .await;
                });
            }
            peer::Request::Relay(bytes) => {
                let (tx, rx) = oneshot::channel();
                let relay = InboundRelay {
                    from: peer,
                    request: bytes.into_vec(),
                    reply: tx,
                };
                if self.relays.try_send(relay).is_err() {
                    let busy = peer::Response::Refused("relay queue is full".into());
                    self.respond(channel, busy);
                    return;
                }
                let handle = self.handle.clone();
                tokio::spawn(async move {
                    let response = match rx.await {
                        Ok(bytes) => peer::Response::Relay(bytes.into()),
                        Err(_) => peer::Response::Refused("the node is shutting down".into()),
                    };
                    let _ = handle
                        .commands
                        .send(Command::RespondPeer { channel, response })
                        .await;
                });
            }
        }
    }

    /// Ask a peer that just connected for its announcement.
    pub(super) fn hello(&mut self, peer: PeerId) {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            match handle.ask_peer(peer, peer::Request::Hello).await {
                Ok(peer::Response::Hello(sealed)) => {
                    let _ = handle
                        .commands
                        .send(Command::Hello {
                            peer,
                            sealed: sealed.into_vec(),
                        })
                        .await;
                }
                Ok(other) => tracing::debug!(%peer, ?other, "peer did not answer hello"),
                Err(e) => tracing::debug!(%peer, error = %e, "hello failed"),
            }
        });
    }

    /// A peer's answer to our hello: its announcement, signed by itself.
    pub(super) fn on_hello(&mut self, peer: PeerId, sealed: &[u8]) {
        match announce::open(sealed) {
            Ok(a) if a.from == peer => self.on_announce(a),
            Ok(a) => {
                tracing::warn!(%peer, signer = %a.from, "hello signed by another node; disconnecting");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "invalid hello; disconnecting");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
    }

    pub(super) fn exchange_peers(&mut self, peer: PeerId) {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            if let Ok(peer::Response::Peers(entries)) =
                handle.ask_peer(peer, peer::Request::Peers).await
            {
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
        let ips: Vec<std::net::IpAddr> = addrs.iter().filter_map(super::gossip::ip_of).collect();
        let _ = self
            .stun
            .events
            .try_send(crate::stun::manager::PeerEvent::Listen { peer, ips });
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
            last_seen: clock::unix_secs(),
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
