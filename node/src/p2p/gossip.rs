//! Gossip: publishing what clients wrote, announcing our root and STUN data, and
//! checking what peers publish (records are verified before they are forwarded).

use std::time::Instant;

use cirrus_proto::api::PutStatus;
use cirrus_proto::record::Record;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::{Multiaddr, PeerId};

use super::Command;
use super::announce::{self, Announce};
use super::behaviour::{announce_topic, records_topic};
use super::event_loop::{ANNOUNCE_EVERY, EventLoop};
use crate::clock;
use crate::store::writer::{Applied, Origin};
use crate::store::{KnownPeer, Stored};
use crate::stun::manager::PeerEvent;

impl EventLoop {
    /// Publish a record a client wrote here. (Records from gossip are forwarded by
    /// gossipsub itself; records from sync reached us because a peer held them, so
    /// the network has them already: the writer hands us neither.)
    pub(super) fn on_applied(&mut self, a: &Applied) {
        debug_assert_eq!(a.origin, Origin::Api);
        let data = a.stored.record.encode();
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(records_topic(), data)
        {
            tracing::debug!(error = %e, "record not published; anti-entropy will spread it");
        }
    }

    /// Our announcement as of now: signed, as gossip carries it and hello answers.
    pub(super) fn announcement(&self) -> Option<(Vec<u8>, announce::Body)> {
        let db = self.store.db_hash().ok()?;
        let body = announce::Body {
            root: db.root,
            records: db.records,
            at: clock::unix_millis(),
            stun_port: self.stun.port,
            stun: self.stun.state.info(false),
        };
        Some((announce::seal(&self.key, body.clone()), body))
    }

    pub(super) fn announce(&mut self) {
        let Ok(db) = self.store.db_hash() else { return };
        let stun_version = self.stun.state.version();
        if self.announced == Some(db.root)
            && stun_version == self.stun_version
            && self.announced_at.elapsed() < ANNOUNCE_EVERY
        {
            return;
        }
        let Some((sealed, body)) = self.announcement() else {
            return;
        };
        if stun_version != self.stun_version {
            self.offer_external_address(body.stun.address);
        }
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(announce_topic(), sealed)
        {
            Ok(_) => {
                self.announced = Some(db.root);
                self.announced_at = Instant::now();
                self.stun_version = stun_version;
            }
            Err(e) => tracing::trace!(error = %e, "announcement not published"),
        }
    }

    /// Behind NAT, peers reach our swarm (if at all) at the external address STUN
    /// found: offer it, with our swarm ports, as an external address candidate
    /// (identify then tells peers about it).
    pub(super) fn offer_external_address(&mut self, external: Option<std::net::IpAddr>) {
        let Some(ip) = external else {
            return;
        };
        let listening: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
        if listening.iter().any(|a| ip_of(a) == Some(ip)) {
            return; // not behind NAT: our listen address is what peers see
        }
        for a in listening {
            let rewritten: Multiaddr =
                a.iter()
                    .map(|p| match p {
                        libp2p::multiaddr::Protocol::Ip4(_)
                        | libp2p::multiaddr::Protocol::Ip6(_) => match ip {
                            std::net::IpAddr::V4(v4) => libp2p::multiaddr::Protocol::Ip4(v4),
                            std::net::IpAddr::V6(v6) => libp2p::multiaddr::Protocol::Ip6(v6),
                        },
                        other => other,
                    })
                    .collect();
            tracing::info!(addr = %rewritten, "external address candidate from STUN");
            self.swarm.add_external_address(rewritten);
        }
    }

    pub(super) fn on_gossip(
        &mut self,
        source: PeerId,
        id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        if message.topic == announce_topic().hash() {
            let acceptance = match announce::open(&message.data) {
                Ok(a) => {
                    self.on_announce(a);
                    MessageAcceptance::Accept
                }
                Err(e) => {
                    tracing::warn!(peer = %source, error = %e, "dropping invalid announcement");
                    MessageAcceptance::Reject
                }
            };
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&id, &source, acceptance);
            return;
        }
        if message.topic != records_topic().hash() {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&id, &source, MessageAcceptance::Ignore);
            return;
        }
        let (handle, writer, metrics) = (
            self.handle.clone(),
            self.writer.clone(),
            self.metrics.clone(),
        );
        tokio::spawn(async move {
            let checked = Record::decode(&message.data).and_then(|r| r.verify().map(|()| r));
            let acceptance = match &checked {
                Ok(_) => MessageAcceptance::Accept,
                Err(e) => {
                    tracing::warn!(peer = %source, error = %e, "dropping invalid gossip record");
                    metrics.gossip("invalid");
                    MessageAcceptance::Reject
                }
            };
            let _ = handle
                .commands
                .send(Command::Validated {
                    id,
                    source,
                    acceptance,
                })
                .await;
            if let Ok(record) = checked {
                let id = record.id();
                match writer
                    .apply(vec![Stored { record, id }], Origin::Gossip)
                    .await
                {
                    Ok(statuses) => {
                        for s in statuses {
                            metrics.gossip(match s {
                                PutStatus::Applied => "applied",
                                PutStatus::Duplicate => "duplicate",
                                PutStatus::Stale => "stale",
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot store gossip record"),
                }
            }
        });
    }

    /// Only directly connected peers' announcements are kept: `getpeerinfo` lists
    /// those, and their STUN servers are the ones our clients ask. They come by
    /// gossip and as the answer to our hello.
    pub(super) fn on_announce(&mut self, a: Announce) {
        let (from, body) = (a.from, a.body);
        let Some(c) = self.peers.get_mut(&from) else {
            return;
        };
        if c.announced_at.is_some_and(|at| at >= body.at) {
            return;
        }
        c.announced_at = Some(body.at);
        c.db_root = Some(body.root);
        if c.stun_port != Some(body.stun_port) {
            c.stun_port = Some(body.stun_port);
            let _ = self.stun.events.try_send(PeerEvent::StunPort {
                peer: from,
                port: body.stun_port,
            });
        }
        if c.stun.as_ref() != Some(&body.stun) {
            c.stun = Some(body.stun);
            if !c.listen.is_empty() {
                let known = KnownPeer {
                    peer: from.to_bytes(),
                    addrs: c.listen.iter().map(|a| a.to_string()).collect(),
                    last_seen: clock::unix_secs(),
                    stun: c.stun.clone(),
                };
                self.save_known(known);
            }
        }
    }
}

pub(super) fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => Some(ip.into()),
        libp2p::multiaddr::Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}
