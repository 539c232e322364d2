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

type Reply = oneshot::Sender<Result<Vec<PutStatus>, String>>;
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
}

/// Where the writer hands records from clients to the swarm for publishing, once
/// the swarm asked ([`Writer::client_writes`]). Not the broadcast: one commit from
/// anti-entropy can hold more records than that channel, and a client's record in
/// the same burst would then miss gossip.
type ClientWrites = Arc<std::sync::Mutex<Option<mpsc::Sender<Arc<Applied>>>>>;

/// Client records waiting to be published; beyond this, anti-entropy carries them.
const CLIENT_WRITES_QUEUE: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the writer has stopped")]
    Stopped,
    #[error("write failed: {0}")]
    Failed(String),
}

impl Writer {
    /// Start the writer thread. It ends when every `Writer` handle is dropped, after
    /// committing what was queued.
    pub fn spawn(store: Arc<Store>) -> (Writer, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(1024);
        let (applied, _) = broadcast::channel(4096);
        let next_seq = Arc::new(AtomicU64::new(0));
        let client_writes = ClientWrites::default();
        let (announce, seq, clients) = (applied.clone(), next_seq.clone(), client_writes.clone());
        let flush = tx.downgrade();
        std::thread::Builder::new()
            .name("cirrus-flush".into())
            .spawn(move || flush_ticker(flush))
            .expect("spawn flush thread");
        let handle = std::thread::Builder::new()
            .name("cirrus-writer".into())
            .spawn(move || run(store, rx, announce, seq, clients))
            .expect("spawn writer thread");
        let writer = Writer {
            jobs: tx,
            applied,
            next_seq,
            client_writes,
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
        rx.await
            .map_err(|_| WriteError::Stopped)?
            .map_err(WriteError::Failed)
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

    /// The [`Applied::seq`] the next applied record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Acquire)
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

fn run(
    store: Arc<Store>,
    mut rx: mpsc::Receiver<Job>,
    announce: broadcast::Sender<Arc<Applied>>,
    next_seq: Arc<AtomicU64>,
    client_writes: ClientWrites,
) {
    // A commit without fsync happened since the last durable one.
    let mut dirty = false;
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
        }
        if writes.is_empty() && !dirty {
            continue; // a flush with nothing to flush
        }
        let fsync = flush || writes.iter().any(|(_, origin, _)| *origin == Origin::Api);
        let mut all = Vec::with_capacity(total);
        let mut origins = Vec::with_capacity(total);
        let mut replies = Vec::with_capacity(writes.len());
        for (records, origin, reply) in writes {
            replies.push((records.len(), reply));
            origins.extend(std::iter::repeat_n(origin, records.len()));
            all.extend(records);
        }
        match store.apply_with(&all, fsync) {
            Ok(statuses) => {
                dirty = !fsync;
                let applied: Vec<Applied> = all
                    .into_iter()
                    .zip(origins)
                    .zip(&statuses)
                    .filter(|(_, status)| **status == PutStatus::Applied)
                    .map(|((stored, origin), _)| Applied {
                        stored,
                        origin,
                        seq: next_seq.fetch_add(1, Ordering::AcqRel),
                    })
                    .collect();
                let mut rest = statuses.as_slice();
                for (n, reply) in replies {
                    let (mine, tail) = rest.split_at(n);
                    rest = tail;
                    let _ = reply.send(Ok(mine.to_vec()));
                }
                let clients = client_writes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                for a in applied {
                    let a = Arc::new(a);
                    if a.origin == Origin::Api
                        && let Some(c) = &clients
                        && c.try_send(a.clone()).is_err()
                    {
                        tracing::debug!(
                            "publish queue full or closed; anti-entropy will carry the record"
                        );
                    }
                    // No subscribers is fine: nothing to tell.
                    let _ = announce.send(a);
                }
            }
            Err(e) => fail_all(replies, &e),
        }
    }
    // redb also makes a pending commit durable when the database closes, but the
    // store may be held open longer than the writer runs.
    if dirty && let Err(e) = store.apply_with(&[], true) {
        tracing::error!(error = %e, "final flush failed; the last gossip records may need anti-entropy again");
    }
}

fn fail_all(replies: Vec<(usize, Reply)>, e: &StoreError) {
    tracing::error!(error = %e, "commit failed; nothing from this group was stored");
    for (_, reply) in replies {
        let _ = reply.send(Err(e.to_string()));
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
        let (writer, thread) = Writer::spawn(store.clone());
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
