//! Group commit: one thread owns all writes and folds whatever is queued into one
//! redb transaction, so many small concurrent `put`s cost one commit (and one fsync)
//! together instead of one each.
//!
//! Only commits that hold a client's `put` wait for the disk (fsync). Records from
//! gossip and anti-entropy are committed without it: peers still hold them, and
//! anti-entropy fetches again whatever a crash took. A durable commit follows
//! within [`FLUSH_EVERY`] (or at shutdown), so the file's free pages are reused and
//! the loss is bounded. A client's `put` is answered only after a durable commit,
//! which also makes everything before it durable, so an answer such as `duplicate`
//! never rests on a commit a crash could take back.
//!
//! Every record that a commit applied is then announced on a broadcast channel
//! ([`Writer::subscribe`]) with where it came from, so the swarm can publish what
//! clients wrote and subscribers can follow changes. A subscriber that falls behind
//! misses announcements, never data: anti-entropy repairs what gossip missed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cirrus_proto::api::PutStatus;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{Store, StoreError, Stored};

/// At most this many records per transaction, so one commit stays short.
const MAX_RECORDS_PER_COMMIT: usize = 4096;
/// Longest a commit without fsync waits for a durable one.
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Records from peers are committed at most this often: under gossip they arrive
/// one by one, and a commit writes its pages whether it holds one record or ten.
/// A group that holds a client's put does not linger (a put that arrives during a
/// linger waits out at most its rest).
const PEER_LINGER: std::time::Duration = std::time::Duration::from_millis(5);

type Reply = oneshot::Sender<Result<Vec<PutStatus>, WriteError>>;
enum Job {
    /// Records to apply, where they came from, and who waits for their statuses.
    Write(Vec<Stored>, Origin, Reply),
    /// Make every commit so far durable (from the flush ticker).
    Flush,
}

/// Where a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client's `put` on this node.
    Api,
    /// A gossip message from the swarm.
    Gossip,
    /// Anti-entropy with a peer.
    Sync,
}

/// A record that a commit applied (it now occupies its slot).
#[derive(Debug)]
pub struct Applied {
    pub stored: Stored,
    pub origin: Origin,
    /// Applied records are numbered in commit order, from 0. Numbers are taken
    /// before the writers are answered, so a client that has its answer and then
    /// asks [`Writer::next_seq`] gets a number above its record's.
    pub seq: u64,
}

/// Handle for submitting verified records. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    applied: broadcast::Sender<Arc<Applied>>,
    next_seq: Arc<AtomicU64>,
    client_writes: ClientWrites,
    state: Arc<State>,
    /// Names this run of the writer, whose [`Applied::seq`] numbers start at 0.
    epoch: u32,
}

/// Where the writer hands records from clients to the swarm for publishing, once
/// the swarm asked ([`Writer::client_writes`]). Not the broadcast: one commit from
/// anti-entropy can hold more records than that channel, and a client's record in
/// the same burst would then miss gossip.
type ClientWrites = Arc<std::sync::Mutex<Option<mpsc::Sender<Arc<Applied>>>>>;

/// Client records waiting to be published; beyond this, anti-entropy carries them.
const CLIENT_WRITES_QUEUE: usize = 8192;

/// How often a failed store is reopened, and for how long, before the writer gives
/// up and stops the node.
const REOPEN_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
const REOPEN_TRIES: u32 = 120;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the writer has stopped")]
    Stopped,
    #[error("write failed: {0}")]
    Failed(String),
    /// Writes are refused for now (disk below the floor, or the store is being
    /// reopened); reads still work.
    #[error("cannot write now: {0}")]
    Unavailable(String),
}

/// What the writer shares with its handles.
struct State {
    /// Bumped after every commit that applied something, once its records are
    /// numbered: what a request waiting for a session waits on.
    commits: tokio::sync::watch::Sender<u64>,
    /// Why writes are refused now, if they are.
    unavailable: std::sync::Mutex<Option<String>>,
    /// Fired when the store failed for good: the node must stop.
    fatal: tokio_util::sync::CancellationToken,
}

/// How the writer runs.
#[derive(Clone)]
pub struct WriterConfig {
    /// Free bytes below which writes are refused.
    pub min_free: u64,
    pub metrics: crate::metrics::Metrics,
}

impl Writer {
    /// Start the writer thread. It ends when every `Writer` handle is dropped, after
    /// committing what was queued.
    pub fn spawn(store: Arc<Store>, cfg: WriterConfig) -> (Writer, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(1024);
        let (applied, _) = broadcast::channel(4096);
        let next_seq = Arc::new(AtomicU64::new(0));
        let client_writes = ClientWrites::default();
        let state = Arc::new(State {
            commits: tokio::sync::watch::channel(0).0,
            unavailable: Default::default(),
            fatal: Default::default(),
        });
        let committer = Committer {
            store,
            cfg,
            announce: applied.clone(),
            next_seq: next_seq.clone(),
            client_writes: client_writes.clone(),
            state: state.clone(),
            dirty: false,
            last_commit: std::time::Instant::now(),
        };
        let flush = tx.downgrade();
        std::thread::Builder::new()
            .name("cirrus-flush".into())
            .spawn(move || flush_ticker(flush))
            .expect("spawn flush thread");
        let handle = std::thread::Builder::new()
            .name("cirrus-writer".into())
            .spawn(move || committer.run(rx))
            .expect("spawn writer thread");
        let mut epoch = [0u8; 4];
        // Without randomness two runs may share an epoch; sessions then only wait
        // longer, since a floor of the old run is not taken as this run's.
        let _ = getrandom::fill(&mut epoch);
        let writer = Writer {
            jobs: tx,
            applied,
            next_seq,
            client_writes,
            state,
            epoch: u32::from_be_bytes(epoch),
        };
        (writer, handle)
    }

    /// Apply records (signatures already verified); resolves once they are committed.
    pub async fn apply(
        &self,
        records: Vec<Stored>,
        origin: Origin,
    ) -> Result<Vec<PutStatus>, WriteError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Write(records, origin, tx))
            .await
            .map_err(|_| WriteError::Stopped)?;
        rx.await.map_err(|_| WriteError::Stopped)?
    }

    /// Follow every record applied from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Applied>> {
        self.applied.subscribe()
    }

    /// Every record a client's `put` applies from now on, for publishing. One
    /// consumer: a second call takes the feed from the first.
    pub fn client_writes(&self) -> mpsc::Receiver<Arc<Applied>> {
        let (tx, rx) = mpsc::channel(CLIENT_WRITES_QUEUE);
        *self.client_writes.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    /// This run's epoch: [`Writer::next_seq`] counts from 0 in it.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Wakes after every commit that applied records (the value counts them).
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state.commits.subscribe()
    }

    /// The [`Applied::seq`] the next applied record will get: the number of records
    /// applied so far in this run. Read it before the root, and the root holds at
    /// least those records.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Acquire)
    }

    /// Why writes are refused now, if they are.
    pub fn unavailable(&self) -> Option<String> {
        if self.jobs.is_closed() {
            return Some("the writer has stopped".into());
        }
        self.state
            .unavailable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Fires when the store failed and could not be reopened: the node must stop.
    pub fn fatal(&self) -> tokio_util::sync::CancellationToken {
        self.state.fatal.clone()
    }
}

/// Every [`FLUSH_EVERY`], a [`Job::Flush`]. Ends when the writer has.
fn flush_ticker(jobs: mpsc::WeakSender<Job>) {
    loop {
        std::thread::sleep(FLUSH_EVERY);
        let Some(jobs) = jobs.upgrade() else { return };
        // A full queue means the writer is busy, and the next tick will do.
        let _ = jobs.try_send(Job::Flush);
    }
}

/// The writer thread's state.
struct Committer {
    store: Arc<Store>,
    cfg: WriterConfig,
    announce: broadcast::Sender<Arc<Applied>>,
    next_seq: Arc<AtomicU64>,
    client_writes: ClientWrites,
    state: Arc<State>,
    /// A commit without fsync happened since the last durable one.
    dirty: bool,
    last_commit: std::time::Instant,
}

impl Committer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let (mut writes, mut flush, mut total) = (Vec::new(), false, 0);
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Write(records, origin, reply) => {
                        total += records.len();
                        writes.push((records, origin, reply));
                    }
                    Job::Flush => flush = true,
                }
                if total < MAX_RECORDS_PER_COMMIT {
                    next = rx.try_recv().ok();
                }
                if next.is_none() && self.may_linger(&writes, flush, total) {
                    std::thread::sleep(PEER_LINGER.saturating_sub(self.last_commit.elapsed()));
                    next = rx.try_recv().ok();
                }
            }
            if writes.is_empty() && !self.dirty {
                continue; // a flush with nothing to flush
            }
            if !writes.is_empty()
                && let Some(why) = self.refuse()
            {
                for (_, _, reply) in writes {
                    let _ = reply.send(Err(WriteError::Unavailable(why.clone())));
                }
                continue;
            }
            self.commit(writes, flush);
            if self.state.fatal.is_cancelled() {
                break;
            }
        }
        // redb also makes a pending commit durable when the database closes, but the
        // store may be held open longer than the writer runs.
        if self.dirty
            && let Err(e) = self.store.apply_with(&[], true)
        {
            tracing::error!(error = %e, "final flush failed; the last gossip records may need anti-entropy again");
        }
    }

    /// Whether to wait a moment for more records before committing these: only
    /// peers' records, nothing waiting for the disk, and a commit happened just now.
    fn may_linger(
        &self,
        writes: &[(Vec<Stored>, Origin, Reply)],
        flush: bool,
        total: usize,
    ) -> bool {
        !flush
            && total < MAX_RECORDS_PER_COMMIT
            && !writes.is_empty()
            && writes.iter().all(|(_, origin, _)| *origin != Origin::Api)
            && self.last_commit.elapsed() < PEER_LINGER
    }

    /// Why this commit may not happen: the disk is below the floor. Checked before
    /// every commit (one `statvfs`), so the node stops writing before the disk is
    /// full, and starts again as soon as space is back.
    fn refuse(&self) -> Option<String> {
        let why = match self.store.free_space() {
            Ok(free) if free < self.cfg.min_free => Some(format!(
                "the disk holding the database has {} MiB free, under the floor of {} MiB (min-free-disk)",
                free >> 20,
                self.cfg.min_free >> 20
            )),
            _ => None,
        };
        let mut g = self
            .state
            .unavailable
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if why.is_some() != g.is_some() {
            match &why {
                Some(w) => tracing::warn!("refusing writes: {w}"),
                None => tracing::info!("disk space is back above the floor; writing again"),
            }
        }
        g.clone_from(&why);
        why
    }

    fn commit(&mut self, writes: Vec<(Vec<Stored>, Origin, Reply)>, flush: bool) {
        let total = writes.iter().map(|(r, _, _)| r.len()).sum();
        let fsync = flush || writes.iter().any(|(_, origin, _)| *origin == Origin::Api);
        let mut all = Vec::with_capacity(total);
        let mut origins = Vec::with_capacity(total);
        let mut replies = Vec::with_capacity(writes.len());
        for (records, origin, reply) in writes {
            replies.push((records.len(), reply));
            origins.extend(std::iter::repeat_n(origin, records.len()));
            all.extend(records);
        }
        let started = std::time::Instant::now();
        self.last_commit = started;
        let result = self.store.apply_with(&all, fsync);
        self.cfg
            .metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        self.cfg.metrics.commit_records.observe(all.len() as f64);
        let statuses = match result {
            Ok(statuses) => statuses,
            Err(e) => {
                tracing::error!(error = %e, "commit failed; nothing from this group was stored");
                let why = if e.is_io() {
                    self.recover(&e)
                } else {
                    e.to_string()
                };
                for (_, reply) in replies {
                    let _ = reply.send(Err(WriteError::Failed(why.clone())));
                }
                return;
            }
        };
        self.dirty = !fsync;
        let applied: Vec<Applied> = all
            .into_iter()
            .zip(origins)
            .zip(&statuses)
            .filter(|(_, s)| **s == PutStatus::Applied)
            .map(|((stored, origin), _)| Applied {
                stored,
                origin,
                seq: self.next_seq.fetch_add(1, Ordering::AcqRel),
            })
            .collect();
        if !applied.is_empty() {
            self.state.commits.send_modify(|n| *n += 1);
        }
        let mut rest = statuses.as_slice();
        for (n, reply) in replies {
            let (mine, tail) = rest.split_at(n);
            rest = tail;
            let _ = reply.send(Ok(mine.to_vec()));
        }
        let clients = self
            .client_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for a in applied {
            let a = Arc::new(a);
            if a.origin == Origin::Api
                && let Some(c) = &clients
                && c.try_send(a.clone()).is_err()
            {
                tracing::debug!("publish queue full or closed; anti-entropy will carry the record");
            }
            // No subscribers is fine: nothing to tell.
            let _ = self.announce.send(a);
        }
    }

    /// After an I/O failure redb takes no more writes until the file is reopened:
    /// reopen it (read transactions still open hold the old one, so retry), or stop
    /// the node loudly. Returns what to tell the writers of the failed commit.
    fn recover(&mut self, e: &StoreError) -> String {
        let why = format!("the database failed ({e}) and is being reopened");
        *self
            .state
            .unavailable
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
        // A commit that failed took nothing with it, but anything committed without
        // fsync before it is no longer sure to be on disk: peers hold it, and
        // anti-entropy fetches again whatever the reopened file lacks.
        self.dirty = false;
        for attempt in 1..=REOPEN_TRIES {
            match self.store.reopen() {
                Ok(()) => {
                    tracing::warn!(attempt, "database reopened after a failure; writing again");
                    *self
                        .state
                        .unavailable
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = None;
                    return format!("the database failed ({e}); nothing of this write was stored");
                }
                Err(err) => {
                    tracing::warn!(attempt, error = %err, "cannot reopen the database yet");
                    std::thread::sleep(REOPEN_EVERY);
                }
            }
        }
        tracing::error!("the database cannot be reopened; stopping the node");
        self.state.fatal.cancel();
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cirrus_proto::record::{Kind, Record};
    use ed25519_dalek::SigningKey;

    fn stored(n: u8) -> Stored {
        let author = SigningKey::from_bytes(&[n; 32]);
        let record = Record::sign(&author, Kind::Doc, "k", 1, Some("v".into()));
        Stored {
            id: record.id(),
            record,
        }
    }

    /// Gossip and sync records are committed without fsync, a client's put with it;
    /// after a clean stop all of them are in the file. (A crash is crash.rs's.)
    #[tokio::test]
    async fn records_committed_without_fsync_are_on_disk_after_a_clean_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let store = Arc::new(Store::open(&path).unwrap());
        let cfg = WriterConfig {
            min_free: 0,
            metrics: crate::metrics::Metrics::new(),
        };
        let (writer, thread) = Writer::spawn(store.clone(), cfg);
        let (g, s, a) = (stored(1), stored(2), stored(3));
        for (r, origin) in [(&g, Origin::Gossip), (&s, Origin::Sync)] {
            let got = writer.apply(vec![r.clone()], origin).await.unwrap();
            assert_eq!(got, vec![PutStatus::Applied]);
        }
        // A client's put alongside: answered only after a durable commit.
        let got = writer.apply(vec![a.clone()], Origin::Api).await.unwrap();
        assert_eq!(got, vec![PutStatus::Applied]);
        let later = stored(4);
        writer
            .apply(vec![later.clone()], Origin::Gossip)
            .await
            .unwrap();
        drop(writer);
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
        drop(store);

        let store = Store::open(&path).unwrap();
        for r in [&g, &s, &a, &later] {
            assert_eq!(store.get(&r.record.slot()).unwrap().as_ref(), Some(r));
        }
        assert_eq!(store.db_hash().unwrap().records, 4);
    }
}
