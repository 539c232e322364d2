//! Anti-entropy: drives the reconciliation of `proto::sync` over the swarm, and
//! answers peers that reconcile with us; [`schedule`] decides with whom and when.
//!
//! A node that holds nothing first streams the peer's whole database in pages of a
//! few megabytes. Then the coded-symbol exchange ([`sketch`]) finds and settles the
//! difference in about two round trips; equal roots end it in one. If the roots
//! still differ afterwards (or the difference is too large to code), the two walk
//! their tries ([`walk`]) until nothing differs. Every record that arrives is
//! verified before it reaches the writer; a peer that sends an invalid record or a
//! malformed message is reported as misbehaving and disconnected.

pub mod schedule;
mod sketch;
mod walk;

use std::collections::HashSet;
use std::sync::Arc;

use cirrus_proto::api::PutStatus;
use cirrus_proto::merkle::Hash;
use cirrus_proto::record::Record;
use cirrus_proto::sync::{self as proto, Request, Response};
use libp2p::PeerId;
use serde_bytes::ByteBuf;

use crate::metrics::Metrics;
use crate::p2p::{Network, P2pError};
use crate::store::writer::{Origin, WriteError, Writer};
use crate::store::{Store, StoreError, Stored};

/// Record bytes per page when streaming a whole database.
const PAGE_BYTES: u32 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    P2p(#[from] P2pError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The peer broke the protocol (invalid record, malformed message, no end).
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("the peer refused: {0}")]
    Refused(String),
    #[error("the reconciliation took longer than {0:?}")]
    TimedOut(std::time::Duration),
}

/// What one reconciliation cost, for logs and benchmarks.
#[derive(Debug, Default, Clone)]
pub struct SyncStats {
    /// Round trips of the symbol exchange and the trie walk (bulk pages not included).
    pub rounds: usize,
    /// Whether the trie walk ran after the symbol exchange.
    pub walked: bool,
    /// All requests sent, bulk pages included.
    pub requests: usize,
    pub bytes_sent: usize,
    pub bytes_received: usize,
    pub records_received: usize,
    /// Canonical bytes of the records received.
    pub record_bytes: usize,
    pub pages: usize,
}

impl SyncStats {
    /// Add another reconciliation's cost to this one.
    pub fn add(&mut self, o: &SyncStats) {
        self.rounds += o.rounds;
        self.walked |= o.walked;
        self.requests += o.requests;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.records_received += o.records_received;
        self.record_bytes += o.record_bytes;
        self.pages += o.pages;
    }
}

/// How a reconciliation finds the difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Coded symbols first, the trie walk if the roots still differ (what nodes do).
    Symbols,
    /// The trie walk alone (for comparison in benchmarks).
    Walk,
}

/// Reconcile our store with `peer`'s until the roots agree, or the trie walk found
/// nothing more to exchange.
pub async fn reconcile(
    p2p: &Network,
    store: &Arc<Store>,
    writer: &Writer,
    metrics: &Metrics,
    peer: PeerId,
) -> Result<SyncStats, SyncError> {
    reconcile_by(p2p, store, writer, metrics, peer, Method::Symbols).await
}

/// [`reconcile`], by the given method.
pub async fn reconcile_by(
    p2p: &Network,
    store: &Arc<Store>,
    writer: &Writer,
    metrics: &Metrics,
    peer: PeerId,
    method: Method,
) -> Result<SyncStats, SyncError> {
    let mut st = SyncStats::default();
    let node = Local {
        store,
        writer,
        metrics,
    };
    if store.db_hash()?.records == 0 {
        stream_all(p2p, &node, peer, &mut st).await?;
    }
    if method == Method::Walk || !sketch::settle(p2p, &node, peer, &mut st).await? {
        st.walked = true;
        walk::run(p2p, &node, peer, &mut st).await?;
    }
    Ok(st)
}

/// Answer a peer's sync request.
pub async fn serve(
    store: &Arc<Store>,
    writer: &Writer,
    metrics: &Metrics,
    request: Request,
) -> Result<Response, SyncError> {
    let node = Local {
        store,
        writer,
        metrics,
    };
    match request {
        Request::Sketch {
            root,
            records,
            symbols,
            buckets,
        } => sketch::answer(&node, &root, records, &symbols, &buckets).await,
        Request::Exchange { records, want } => sketch::exchange(&node, records, &want).await,
        Request::Reconcile(items) => walk::answer(&node, items).await,
        Request::Range { after, max_bytes } => {
            let store = store.clone();
            let max = max_bytes.min(PAGE_BYTES) as usize;
            let (records, next) = tokio::task::spawn_blocking(move || {
                store.range_page(after.as_ref().map(|b| b.as_slice()), max)
            })
            .await
            .map_err(|e| SyncError::Protocol(format!("range task failed: {e}")))??;
            Ok(Response::Range {
                records: records.into_iter().map(ByteBuf::from).collect(),
                next: next.map(ByteBuf::from),
            })
        }
    }
}

/// What a reconciliation works on here.
struct Local<'a> {
    store: &'a Arc<Store>,
    writer: &'a Writer,
    metrics: &'a Metrics,
}

async fn ask(
    p2p: &Network,
    peer: PeerId,
    req: Request,
    st: &mut SyncStats,
) -> Result<Response, SyncError> {
    st.requests += 1;
    st.bytes_sent += wire_len(&req);
    let resp = p2p.request(peer, req).await?;
    st.bytes_received += wire_len(&resp);
    if let Response::Refused(why) = resp {
        return Err(SyncError::Refused(why));
    }
    Ok(resp)
}

/// Size of a message as the request-response codec writes it.
pub fn wire_len<T: serde::Serialize>(msg: &T) -> usize {
    cbor4ii::serde::to_vec(Vec::new(), msg).map_or(0, |v| v.len())
}

async fn stream_all(
    p2p: &Network,
    node: &Local<'_>,
    peer: PeerId,
    st: &mut SyncStats,
) -> Result<(), SyncError> {
    // Two stages: while the writer commits one page, the next is fetched and
    // verified, so the signatures (all cores) and the commits (the writer's thread)
    // overlap instead of taking turns.
    let mut after = None;
    let mut verified: Vec<Stored> = Vec::new();
    loop {
        let req = Request::Range {
            after: after.take(),
            max_bytes: PAGE_BYTES,
        };
        let page = std::mem::take(&mut verified);
        let commit = async {
            if page.is_empty() {
                Ok(Vec::new())
            } else {
                node.writer.apply(page, Origin::Sync).await
            }
        };
        let fetch = async {
            let Response::Range { records, next } = ask(p2p, peer, req, st).await? else {
                return Err(SyncError::Protocol("unexpected answer to range".into()));
            };
            st.pages += 1;
            let (stored, _) = checked(node, records, st).await?;
            Ok((stored, next))
        };
        let (committed, fetched) = tokio::join!(commit, fetch);
        committed?;
        let (stored, next) = fetched?;
        verified = stored;
        match next {
            Some(n) => after = Some(n),
            None => {
                if !verified.is_empty() {
                    node.writer.apply(verified, Origin::Sync).await?;
                }
                return Ok(());
            }
        }
    }
}

/// Verify and apply records a peer sent; returns the slots where the version we
/// hold won, so the caller can send ours back.
async fn take(
    node: &Local<'_>,
    records: Vec<ByteBuf>,
    st: &mut SyncStats,
) -> Result<Vec<Hash>, SyncError> {
    let (stored, mut lost) = checked(node, records, st).await?;
    if !stored.is_empty() {
        let slots: Vec<Hash> = stored.iter().map(|s| s.record.slot().hash()).collect();
        let statuses = node.writer.apply(stored, Origin::Sync).await?;
        lost.extend(
            slots
                .into_iter()
                .zip(statuses)
                .filter(|(_, s)| *s == PutStatus::Stale)
                .map(|(h, _)| h),
        );
    }
    Ok(lost)
}

/// Carried records decoded, those that change nothing here set aside, the rest
/// verified: what to store, and the slots whose record here is newer.
async fn checked(
    node: &Local<'_>,
    records: Vec<ByteBuf>,
    st: &mut SyncStats,
) -> Result<(Vec<Stored>, Vec<Hash>), SyncError> {
    let raw: Vec<Vec<u8>> = records.into_iter().map(ByteBuf::into_vec).collect();
    st.record_bytes += raw.iter().map(Vec::len).sum::<usize>();
    let (fresh, lost) = sort_out(node.store, raw).await?;
    let stored = verify_all(fresh, node.metrics).await?;
    st.records_received += stored.len();
    Ok((stored, lost))
}

/// Decode carried records and set aside, before any signature is checked, those
/// that change nothing here: copies of one record (a peer may repeat them), records
/// we hold already, and older versions of what we hold (their slots are returned,
/// so ours are sent back). What is left needs verifying.
async fn sort_out(
    store: &Arc<Store>,
    raw: Vec<Vec<u8>>,
) -> Result<(Vec<Record>, Vec<Hash>), SyncError> {
    if raw.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut seen = HashSet::new();
        let mut records = Vec::with_capacity(raw.len());
        for bytes in raw {
            let r = Record::decode(&bytes)
                .map_err(|e| SyncError::Protocol(format!("invalid record: {e}")))?;
            if seen.insert(r.id()) {
                records.push(r);
            }
        }
        let slots: Vec<_> = records.iter().map(Record::slot).collect();
        let held = store.get_many(&slots)?;
        let (mut fresh, mut lost) = (Vec::new(), Vec::new());
        for (r, h) in records.into_iter().zip(held) {
            match h {
                Some(h) if h.id == r.id() => {}
                Some(h) if !r.supersedes(&r.id(), &h.record, &h.id) => lost.push(r.slot().hash()),
                _ => fresh.push(r),
            }
        }
        Ok((fresh, lost))
    })
    .await
    .map_err(|e| SyncError::Protocol(format!("sync task failed: {e}")))?
}

/// Run a read-only step on a fresh snapshot, off the async threads.
async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&mut crate::store::Snapshot) -> Result<T, proto::SyncError<StoreError>>
    + Send
    + 'static,
) -> Result<T, SyncError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut snap = store.snapshot()?;
        f(&mut snap).map_err(|e| match e {
            proto::SyncError::Malformed(why) => SyncError::Protocol(why.into()),
            proto::SyncError::Replica(e) => SyncError::Store(e),
        })
    })
    .await
    .map_err(|e| SyncError::Protocol(format!("sync task failed: {e}")))?
}

/// Verify records on all cores; any invalid record is a protocol violation.
async fn verify_all(records: Vec<Record>, metrics: &Metrics) -> Result<Vec<Stored>, SyncError> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    metrics.verified("sync", records.len() as u64);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = records.len().div_ceil(workers).max(64);
    let mut tasks = Vec::new();
    let mut rest = records;
    while !rest.is_empty() {
        let tail = rest.split_off(chunk.min(rest.len()));
        let part = std::mem::replace(&mut rest, tail);
        tasks.push(tokio::task::spawn_blocking(move || {
            part.into_iter()
                .map(|record| {
                    record.verify().map_err(|e| e.to_string())?;
                    let id = record.id();
                    Ok(Stored { record, id })
                })
                .collect::<Result<Vec<_>, String>>()
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        let part = t
            .await
            .map_err(|e| SyncError::Protocol(format!("verify task failed: {e}")))?;
        out.extend(part.map_err(|e| SyncError::Protocol(format!("invalid record: {e}")))?);
    }
    Ok(out)
}
