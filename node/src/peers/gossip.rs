//! Gossip from peers: batches of records (checked before they are sent on or stored) and
//! announcements (at most [`ANNOUNCES_PER_SOURCE`] a second from one peer, only
//! the peer's own, checked, never forwarded).

use std::collections::HashMap;

use cirrus_proto::api::PutStatus;
use cirrus_proto::gossip::{Batch, Seen};
use cirrus_proto::record::{Id, Record, id_of};
use libp2p::PeerId;
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use tokio::sync::mpsc;

use super::Peers;
use super::announce::{self, Announce, AnnounceError};
use crate::metrics::Metrics;
use crate::store::writer::Origin;
use crate::store::{KnownPeer, Store, Stored};
use crate::stun::pairs::PeerEvent;
use crate::sync::schedule::SyncEvent;

/// Announcements one peer may pass us per second; beyond this they are ignored
/// before any signature is checked. An honest peer sends its own at most every
/// 250 ms (peers/mod.rs `ANNOUNCE_CHECK`); one still on an older version may also
/// forward others'.
pub(super) const ANNOUNCES_PER_SOURCE: u32 = 20;

/// What the records topic needs beside [`Peers`]: which records were seen lately,
/// and where the records new to us go to be sent on (the loop's [`Outbox`]).
///
/// [`Outbox`]: cirrus_proto::gossip::Outbox
pub(super) struct Gossiping {
    pub seen: Seen,
    pub forward: mpsc::Sender<Vec<Vec<u8>>>,
}

/// A batch of records from a peer: copies of records seen lately are dropped at
/// once; the rest are checked, the new valid ones handed on to be sent to our
/// own mesh peers, and stored. Gossipsub itself forwards nothing (every verdict
/// is *ignore*), except that a batch with a record that does not decode or verify
/// is *rejected*, which costs its sender score: an honest node sends on only
/// what it verified.
pub(super) fn records(
    p: &Peers,
    g: &mut Gossiping,
    id: MessageId,
    source: PeerId,
    data: Vec<u8>,
) -> Option<MessageAcceptance> {
    p.metrics.gossip_batch("received");
    let parts = match Batch::split(&data) {
        Ok(parts) => parts,
        Err(e) => {
            tracing::warn!(peer = %source, error = %e, "dropping a malformed gossip batch");
            p.metrics.gossip("invalid");
            return Some(MessageAcceptance::Reject);
        }
    };
    // The id is the hash of the whole encoding, so the first copy's verdict holds
    // for every copy (see `Seen`).
    let total = parts.len();
    let fresh: Vec<(Id, Vec<u8>)> = parts
        .into_iter()
        .filter_map(|raw| {
            let rid = id_of(raw);
            g.seen.first(&rid).then(|| (rid, raw.to_vec()))
        })
        .collect();
    p.metrics
        .gossip_n("duplicate", (total - fresh.len()) as u64);
    if fresh.is_empty() {
        return Some(MessageAcceptance::Ignore);
    }
    let (network, writer, store, metrics) = (
        p.network.clone(),
        p.writer.clone(),
        p.store.clone(),
        p.metrics.clone(),
    );
    let forward = g.forward.clone();
    p.tasks.spawn(async move {
        // One trip to a blocking thread for the whole batch: each hand-off costs
        // wakeups.
        let m = metrics.clone();
        let checked = tokio::task::spawn_blocking(move || {
            fresh
                .into_iter()
                .map(|(rid, raw)| check(&store, &m, rid, raw))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut verdict = MessageAcceptance::Ignore;
        let (mut valid, mut onward) = (Vec::new(), Vec::new());
        for c in checked {
            match c {
                Checked::Valid(stored, raw) => {
                    onward.push(raw);
                    valid.push(stored);
                }
                Checked::Duplicate => metrics.gossip("duplicate"),
                Checked::Stale => metrics.gossip("stale"),
                Checked::Invalid(e) => {
                    tracing::warn!(peer = %source, error = %e, "dropping an invalid gossip record");
                    metrics.gossip("invalid");
                    verdict = MessageAcceptance::Reject;
                }
            }
        }
        // Sent on before they are stored, so the commit need not hold up the next
        // hop; in one hand-off, not one per record. Waiting here, when
        // the loop is behind, bounds the batches in flight (the swarm hands out at
        // most MAX_UNVALIDATED before their verdicts).
        if !onward.is_empty() {
            let _ = forward.send(onward).await;
        }
        network.validated(id, source, verdict).await;
        if valid.is_empty() {
            return;
        }
        match writer.apply(valid, Origin::Gossip).await {
            Ok(statuses) => {
                for s in statuses {
                    metrics.gossip(match s {
                        PutStatus::Applied => "applied",
                        PutStatus::Duplicate => "duplicate",
                        PutStatus::Stale => "stale",
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot store gossip records"),
        }
    });
    None
}

/// The store's view of one record and, if it is news, its signature check. A
/// record the store already holds is not verified again: its id is the hash of
/// its signed bytes, and those were verified when it was stored.
fn check(store: &Store, metrics: &Metrics, rid: Id, raw: Vec<u8>) -> Checked {
    let record = match Record::decode(&raw) {
        Ok(r) => r,
        Err(e) => return Checked::Invalid(e),
    };
    match store.get(&record.slot()).ok().flatten() {
        Some(h) if h.id == rid => Checked::Duplicate,
        // We hold a newer version: this one changes nothing here, and whether it
        // is even valid is not worth a signature check.
        Some(h) if !record.supersedes(&rid, &h.record, &h.id) => Checked::Stale,
        _ => {
            metrics.verified("gossip", 1);
            match record.verify() {
                Ok(()) => Checked::Valid(Stored { record, id: rid }, raw),
                Err(e) => Checked::Invalid(e),
            }
        }
    }
}

/// What a blocking thread found of a gossiped record.
enum Checked {
    Duplicate,
    Stale,
    Valid(Stored, Vec<u8>),
    Invalid(cirrus_proto::RecordError),
}

/// A gossiped announcement: taken if it is the sending peer's own, newer than the
/// last, and not too soon after it. Returns the verdict for gossipsub, which is
/// never to forward: a root and STUN data matter only to the announcer's direct
/// peers, and its publish reaches all of them (every peer is in the announcement
/// mesh, p2p/behaviour.rs). Gossiped on, every node would receive and verify every
/// node's announcements, several copies each.
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
