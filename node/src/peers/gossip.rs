//! Gossip from peers: records (checked before they are forwarded or stored) and
//! announcements (at most [`ANNOUNCES_PER_SOURCE`] a second from one peer, only
//! the peer's own, checked, never forwarded).

use std::collections::HashMap;

use cirrus_proto::api::PutStatus;
use cirrus_proto::record::Record;
use libp2p::PeerId;
use libp2p::gossipsub::{MessageAcceptance, MessageId};

use super::Peers;
use super::announce::{self, Announce, AnnounceError};
use crate::store::writer::Origin;
use crate::store::{KnownPeer, Stored};
use crate::stun::pairs::PeerEvent;
use crate::sync::schedule::SyncEvent;

/// Announcements one peer may pass us per second; beyond this they are ignored
/// before any signature is checked. An honest peer sends its own at most every
/// 250 ms (peers/mod.rs `ANNOUNCE_CHECK`); one still on an older version may also
/// forward others'.
pub(super) const ANNOUNCES_PER_SOURCE: u32 = 20;

/// Check a gossiped record and store it; report the verdict to gossipsub. A record
/// the store already holds (a duplicate copy) is not verified again: its id is the
/// hash of its signed bytes, and those were verified when it was stored.
pub(super) fn record(p: &Peers, id: MessageId, source: PeerId, data: Vec<u8>) {
    let (network, writer, store, metrics) = (
        p.network.clone(),
        p.writer.clone(),
        p.store.clone(),
        p.metrics.clone(),
    );
    p.tasks.spawn(async move {
        let record = match Record::decode(&data) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(peer = %source, error = %e, "dropping an undecodable gossip record");
                metrics.gossip("invalid");
                return network
                    .validated(id, source, MessageAcceptance::Reject)
                    .await;
            }
        };
        let rid = record.id();
        // One trip to a blocking thread for both the lookup and the signature:
        // each hand-off costs wakeups, and both are per record per node.
        let checked = tokio::task::spawn_blocking(move || {
            let held = store.get(&record.slot()).ok().flatten();
            match held {
                Some(h) if h.id == rid => Checked::Duplicate,
                // We hold a newer version: this one changes nothing here, and
                // whether it is even valid is not worth a signature check.
                Some(h) if !record.supersedes(&rid, &h.record, &h.id) => Checked::Stale,
                _ => match record.verify() {
                    Ok(()) => Checked::Valid(record),
                    Err(e) => Checked::Invalid(e),
                },
            }
        })
        .await;
        let record = match checked {
            Ok(Checked::Valid(r)) => r,
            Ok(Checked::Duplicate) => {
                metrics.gossip("duplicate");
                return network
                    .validated(id, source, MessageAcceptance::Accept)
                    .await;
            }
            Ok(Checked::Stale) => {
                metrics.gossip("stale");
                return network
                    .validated(id, source, MessageAcceptance::Ignore)
                    .await;
            }
            Ok(Checked::Invalid(e)) => {
                tracing::warn!(peer = %source, error = %e, "dropping an invalid gossip record");
                metrics.gossip("invalid");
                return network
                    .validated(id, source, MessageAcceptance::Reject)
                    .await;
            }
            Err(_) => {
                return network
                    .validated(id, source, MessageAcceptance::Ignore)
                    .await;
            }
        };
        network
            .validated(id, source, MessageAcceptance::Accept)
            .await;
        match writer
            .apply(vec![Stored { record, id: rid }], Origin::Gossip)
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
            Err(e) => tracing::warn!(error = %e, "cannot store a gossip record"),
        }
    });
}

/// What a blocking thread found of a gossiped record.
enum Checked {
    Duplicate,
    Stale,
    Valid(Record),
    Invalid(cirrus_proto::RecordError),
}

/// A gossiped announcement: taken if it is the sending peer's own, newer than the
/// last, and not too soon after it. Returns the verdict for gossipsub, which is
/// never to forward: a root and STUN data matter only to the announcer's direct
/// peers, and its publish reaches all of them (flood publish). Gossiped on, every
/// node would receive and verify every node's announcements, several copies each.
pub(super) fn announcement(
    p: &Peers,
    source: PeerId,
    data: &[u8],
    dirty: &mut HashMap<PeerId, KnownPeer>,
) -> MessageAcceptance {
    match announce::open_from(data, &source) {
        Ok(a) => {
            let result = if take(p, a, dirty) {
                "taken"
            } else {
                "ignored"
            };
            p.metrics.announcement(result);
            MessageAcceptance::Ignore
        }
        // Forwarded by a peer that still gossips announcements on: not an offence.
        Err(AnnounceError::Relayed) => {
            p.metrics.announcement("ignored");
            MessageAcceptance::Ignore
        }
        Err(e) => {
            tracing::warn!(peer = %source, error = %e, "dropping an invalid announcement");
            p.metrics.announcement("invalid");
            MessageAcceptance::Reject
        }
    }
}

/// Keep what a connected peer announced (by gossip or in its hello), and tell the
/// STUN clients and anti-entropy what changed. False: nothing was taken (not a
/// connected peer's, or not newer than the last).
pub(super) fn take(p: &Peers, a: Announce, dirty: &mut HashMap<PeerId, KnownPeer>) -> bool {
    let (from, b) = (a.from, a.body);
    let Some(before) = p.table.take(&from, &b) else {
        return false;
    };
    if before.stun_port != Some(b.stun_port) {
        let _ = p.stun.events.try_send(PeerEvent::StunPort {
            peer: from,
            port: b.stun_port,
        });
    }
    let _ = p.sync.send(SyncEvent::Root {
        peer: from,
        root: b.root,
    });
    // Saved with the peer's addresses, which identify brings.
    if before.stun.as_ref() != Some(&b.stun)
        && let Some(k) = dirty.get_mut(&from)
    {
        k.stun = Some(b.stun);
    }
    true
}
