//! Group commit: one thread owns all writes and folds whatever is queued into one
//! redb transaction, so many small concurrent `put`s cost one commit (and one fsync)
//! together instead of one each.

use std::sync::Arc;

use cirrus_proto::api::PutStatus;
use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError, Stored};

/// At most this many records per transaction, so one commit stays short.
const MAX_RECORDS_PER_COMMIT: usize = 4096;

type Reply = oneshot::Sender<Result<Vec<PutStatus>, String>>;

/// Handle for submitting verified records. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<(Vec<Stored>, Reply)>,
}

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
        let handle = std::thread::Builder::new()
            .name("cirrus-writer".into())
            .spawn(move || run(store, rx))
            .expect("spawn writer thread");
        (Writer { jobs: tx }, handle)
    }

    /// Apply records (signatures already verified); resolves once they are committed.
    pub async fn apply(&self, records: Vec<Stored>) -> Result<Vec<PutStatus>, WriteError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send((records, tx))
            .await
            .map_err(|_| WriteError::Stopped)?;
        rx.await
            .map_err(|_| WriteError::Stopped)?
            .map_err(WriteError::Failed)
    }
}

fn run(store: Arc<Store>, mut rx: mpsc::Receiver<(Vec<Stored>, Reply)>) {
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        let mut total = jobs[0].0.len();
        while total < MAX_RECORDS_PER_COMMIT {
            match rx.try_recv() {
                Ok(job) => {
                    total += job.0.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let mut all = Vec::with_capacity(total);
        let mut replies = Vec::with_capacity(jobs.len());
        for (records, reply) in jobs {
            replies.push((records.len(), reply));
            all.extend(records);
        }
        match store.apply(&all) {
            Ok(statuses) => {
                let mut rest = statuses.as_slice();
                for (n, reply) in replies {
                    let (mine, tail) = rest.split_at(n);
                    rest = tail;
                    let _ = reply.send(Ok(mine.to_vec()));
                }
            }
            Err(e) => fail_all(replies, &e),
        }
    }
}

fn fail_all(replies: Vec<(usize, Reply)>, e: &StoreError) {
    tracing::error!(error = %e, "commit failed; nothing from this group was stored");
    for (_, reply) in replies {
        let _ = reply.send(Err(e.to_string()));
    }
}
