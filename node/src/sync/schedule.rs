//! Whom to reconcile with, and when: the dialing side of every new connection
//! starts a reconciliation (so a pair does not do it twice), and every
//! `sync-interval-secs` the node picks one peer whose announced root differs from
//! its own and that is not reconciling with us already (at most [`MAX_WALKS`] at
//! once, each bounded by `sync-timeout-secs`). Peers' sync requests are answered
//! here too, at most [`SERVING_PER_PEER`] at a time per peer. A sketch longer than
//! the symbols the store keeps in memory costs a scan of every record, so each peer
//! gets [`LONG_SKETCH_BURST`] of those at once and then one per
//! [`LONG_SKETCH_EVERY`]; the rest are refused, and the asking side then walks the
//! trie instead.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cirrus_proto::merkle::Hash;
use cirrus_proto::sync;
use libp2p::PeerId;
use libp2p::request_response::ResponseChannel;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::SyncError;
use crate::metrics::{ByResult, Metrics};
use crate::p2p::{Network, random_index};
use crate::rate::{RateLimiter, Rates};
use crate::store::writer::Writer;
use crate::store::{CACHED, Store};

/// Reconciliations this node runs at once.
const MAX_WALKS: usize = 2;
/// Sync requests of one peer answered at once; more are refused.
const SERVING_PER_PEER: usize = 2;
/// Long sketches one peer may ask at once: an honest reconciliation asks at most
/// three beyond the kept symbols before it walks.
pub const LONG_SKETCH_BURST: f64 = 4.0;
/// Then one per this long.
pub const LONG_SKETCH_EVERY: Duration = Duration::from_secs(15);

/// What the scheduler hears of peers.
#[derive(Debug)]
pub enum SyncEvent {
    Up {
        peer: PeerId,
        dialer: bool,
    },
    Down {
        peer: PeerId,
    },
    /// The root a peer announced.
    Root {
        peer: PeerId,
        root: Hash,
    },
    Inbound {
        peer: PeerId,
        request: sync::Request,
        channel: ResponseChannel<sync::Response>,
    },
}

pub struct Scheduler {
    pub network: Network,
    pub store: Arc<Store>,
    pub writer: Writer,
    pub metrics: Metrics,
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Default)]
struct PeerSync {
    root: Option<Hash>,
    /// When the peer last sent us a sync request (it is reconciling with us).
    inbound: Option<Instant>,
    serving: usize,
}

/// Run until `stop`; reconciliations and answers in progress end with it.
pub async fn run(
    s: Scheduler,
    mut events: mpsc::UnboundedReceiver<SyncEvent>,
    stop: CancellationToken,
) {
    let mut peers: HashMap<PeerId, PeerSync> = HashMap::new();
    let mut syncing: HashSet<PeerId> = HashSet::new();
    let mut walks: JoinSet<PeerId> = JoinSet::new();
    let mut serving: JoinSet<PeerId> = JoinSet::new();
    let mut tick = tokio::time::interval(s.interval);
    // Keyed by peer id, so that reconnecting does not refill it.
    let long_sketches = RateLimiter::new(Rates::per_second(
        1.0 / LONG_SKETCH_EVERY.as_secs_f64(),
        LONG_SKETCH_BURST,
        true,
    ));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            ev = events.recv() => match ev {
                None => break,
                Some(SyncEvent::Up { peer, dialer }) => {
                    peers.insert(peer, PeerSync::default());
                    if dialer && syncing.len() < MAX_WALKS && syncing.insert(peer) {
                        walks.spawn(s.walk(peer));
                    }
                }
                Some(SyncEvent::Down { peer }) => {
                    peers.remove(&peer);
                }
                Some(SyncEvent::Root { peer, root }) => {
                    if let Some(p) = peers.get_mut(&peer) {
                        p.root = Some(root);
                    }
                }
                Some(SyncEvent::Inbound { peer, request, channel }) => {
                    let p = peers.entry(peer).or_default();
                    p.inbound = Some(Instant::now());
                    if p.serving >= SERVING_PER_PEER {
                        let busy = sync::Response::Refused("too many sync requests at once".into());
                        s.network.respond_sync(channel, busy).await;
                        continue;
                    }
                    if is_long_sketch(&request) {
                        let served = long_sketches.allow_peer(&peer.to_bytes(), 1);
                        let result = if served { "served" } else { "refused" };
                        s.metrics.sync_long_sketches.get_or_create(&ByResult { result }).inc();
                        if !served {
                            let why = format!(
                                "sketches over {CACHED} symbols: {LONG_SKETCH_BURST} at once, then one per {} s",
                                LONG_SKETCH_EVERY.as_secs()
                            );
                            s.network.respond_sync(channel, sync::Response::Refused(why)).await;
                            continue;
                        }
                    }
                    p.serving += 1;
                    serving.spawn(s.serve(peer, request, channel));
                }
            },
            Some(done) = walks.join_next() => {
                if let Ok(peer) = done {
                    syncing.remove(&peer);
                }
            }
            Some(done) = serving.join_next() => {
                if let Ok(peer) = done
                    && let Some(p) = peers.get_mut(&peer)
                {
                    p.serving = p.serving.saturating_sub(1);
                }
            }
            _ = tick.tick() => {
                if syncing.len() >= MAX_WALKS {
                    continue;
                }
                let Ok(db) = s.store.db_hash() else { continue };
                let differing: Vec<PeerId> = peers
                    .iter()
                    .filter(|(peer, p)| {
                        // A peer that is reconciling with us now does the work for both.
                        let busy = p.inbound.is_some_and(|t| t.elapsed() < s.interval);
                        !busy && !syncing.contains(peer) && p.root != Some(db.root)
                    })
                    .map(|(peer, _)| *peer)
                    .collect();
                if !differing.is_empty() {
                    let pick = differing[random_index(differing.len())];
                    syncing.insert(pick);
                    walks.spawn(s.walk(pick));
                }
            }
        }
    }
    walks.shutdown().await;
    serving.shutdown().await;
}

/// A sketch that the kept symbols cannot answer (`Store::symbols` scans then).
fn is_long_sketch(request: &sync::Request) -> bool {
    matches!(request, sync::Request::Sketch { symbols, .. }
        if symbols.len() / sync::SYMBOL_BYTES > CACHED)
}

impl Scheduler {
    /// Reconcile with `peer`, within the timeout; a peer that broke the protocol
    /// is disconnected.
    fn walk(&self, peer: PeerId) -> impl std::future::Future<Output = PeerId> + use<> {
        let (network, store, writer) = (
            self.network.clone(),
            self.store.clone(),
            self.writer.clone(),
        );
        let (metrics, timeout) = (self.metrics.clone(), self.timeout);
        async move {
            let result = tokio::time::timeout(
                timeout,
                super::reconcile(&network, &store, &writer, &metrics, peer),
            )
            .await
            .unwrap_or(Err(SyncError::TimedOut(timeout)));
            let label = if result.is_ok() { "done" } else { "failed" };
            metrics
                .syncs
                .get_or_create(&ByResult { result: label })
                .inc();
            match result {
                Ok(stats) => {
                    metrics.sync_rounds.inc_by(stats.rounds as u64);
                    if stats.walked {
                        metrics.sync_walks.inc();
                    }
                    metrics.sync_records.inc_by(stats.records_received as u64);
                    if stats.records_received > 0 || stats.rounds > 1 {
                        tracing::info!(%peer, ?stats, "reconciled");
                    }
                }
                Err(SyncError::Protocol(why)) => network.misbehaved(peer, why).await,
                Err(e) => tracing::debug!(%peer, error = %e, "reconciliation stopped"),
            }
            peer
        }
    }

    fn serve(
        &self,
        peer: PeerId,
        request: sync::Request,
        channel: ResponseChannel<sync::Response>,
    ) -> impl std::future::Future<Output = PeerId> + use<> {
        let (network, store, writer) = (
            self.network.clone(),
            self.store.clone(),
            self.writer.clone(),
        );
        let metrics = self.metrics.clone();
        async move {
            let response = match super::serve(&store, &writer, &metrics, request).await {
                Ok(r) => r,
                Err(SyncError::Protocol(why)) => {
                    network.misbehaved(peer, why.clone()).await;
                    sync::Response::Refused(why)
                }
                Err(e) => sync::Response::Refused(e.to_string()),
            };
            network.respond_sync(channel, response).await;
            peer
        }
    }
}
