//! The node's database: records, the Merkle trie and rating aggregates in one redb
//! file, updated together in one write transaction so they can never disagree.
//!
//! Writes go through [`Store::apply`] (a batch, one commit); the [`writer`] task
//! groups concurrent writers into such batches. Reads open a read transaction, so
//! a proof and the root it is checked against come from the same snapshot.

mod list;
mod migrate;
mod peers;
mod replica;
mod sketch;
mod tables;
#[cfg(test)]
mod tests;
mod trie;
mod usage;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use cirrus_proto::api::{DbHash, PutStatus, RatingResult, RatingTotals};
use cirrus_proto::merkle::{self, Hash, Proof};
use cirrus_proto::record::{Id, Record, Slot, id_of};
use redb::{
    Builder, Database, Durability, ReadableDatabase, ReadableTable, Table, WriteTransaction,
};

use tables::*;
use trie::{SnapshotTrie, TrieReader, TrieWriter};

pub use list::{ListError, ListQuery};
pub use peers::KnownPeer;
pub use replica::Snapshot;
pub use sketch::{CACHED, Symbols};
pub use usage::TableUsage;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] redb::Error),
    #[error("database is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot open the database: {0}")]
    Format(String),
    #[error("the database is being reopened after a failure")]
    Reopening,
}

impl StoreError {
    /// An I/O failure, after which redb refuses writes until the file is reopened.
    pub fn is_io(&self) -> bool {
        match self {
            StoreError::Db(e) => matches!(
                e,
                redb::Error::Io(_)
                    | redb::Error::PreviousIo
                    | redb::Error::TransactionPoisoned
                    | redb::Error::DatabaseClosed
            ),
            _ => false,
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(e.into()) }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// A record as stored: the record and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub record: Record,
    pub id: Id,
}

pub struct Store {
    path: PathBuf,
    cache_bytes: Option<usize>,
    /// `None` only while [`Store::reopen`] runs.
    db: RwLock<Option<Database>>,
    /// Commits so far, and the last [`DbHash`] read with the commit count it was read
    /// at: `getdbhash` is the question clients ask most, and between commits its
    /// answer cannot change.
    commits: AtomicU64,
    hash: Mutex<Option<(u64, DbHash)>>,
    /// The records' first coded symbols, for anti-entropy.
    sketch: sketch::Cache,
}

/// The open database, for one transaction's start.
struct Db<'a>(RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for Db<'_> {
    type Target = Database;
    fn deref(&self) -> &Database {
        self.0.as_ref().expect("checked by Store::db")
    }
}

impl Store {
    /// Open (or create) the database file with redb's default page cache (1 GiB);
    /// for tools and tests. The node uses [`Store::open_cached`].
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::start(path, None)
    }

    /// Open (or create) the database file; redb's page cache (read cache and write
    /// buffer together) holds at most `cache_bytes`.
    pub fn open_cached(path: &Path, cache_bytes: usize) -> Result<Store, StoreError> {
        Self::start(path, Some(cache_bytes))
    }

    fn start(path: &Path, cache_bytes: Option<usize>) -> Result<Store, StoreError> {
        let db = Self::create(path, cache_bytes)?;
        let sketch = sketch::Cache::build(&db)?;
        Ok(Store {
            path: path.to_owned(),
            cache_bytes,
            db: RwLock::new(Some(db)),
            commits: AtomicU64::new(0),
            hash: Mutex::new(None),
            sketch,
        })
    }

    fn db(&self) -> Result<Db<'_>, StoreError> {
        let g = self.db.read().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            return Err(StoreError::Reopening);
        }
        Ok(Db(g))
    }

    /// Close and open the file again: after an I/O error redb refuses every write
    /// until then. Read transactions still open keep the old file (and its lock)
    /// until they end, so this may fail for a moment; the caller retries.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let mut g = self.db.write().unwrap_or_else(|e| e.into_inner());
        *g = None;
        let db = Self::create(&self.path, self.cache_bytes)?;
        // Commits that were not yet durable are gone with the old handle.
        self.sketch.rebuild(&db)?;
        *g = Some(db);
        self.commits.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Size of the database file, free pages included.
    pub fn file_bytes(&self) -> std::io::Result<u64> {
        Ok(std::fs::metadata(&self.path)?.len())
    }

    /// Bytes free for unprivileged writers on the file system holding the database.
    pub fn free_space(&self) -> std::io::Result<u64> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        free_space(dir)
    }

    fn create(path: &Path, cache_bytes: Option<usize>) -> Result<Database, StoreError> {
        let db = match cache_bytes {
            Some(c) => Builder::new().set_cache_size(c).create(path)?,
            None => Database::create(path)?,
        };
        migrate::to_current(&db)?;
        Ok(db)
    }

    /// Apply verified records in one transaction, in order; returns one status each.
    /// The caller must have checked every signature.
    pub fn apply(&self, records: &[Stored]) -> Result<Vec<PutStatus>, StoreError> {
        self.apply_with(records, true)
    }

    /// [`Store::apply`]; with `fsync` false the commit is visible at once but not
    /// yet on disk (redb `Durability::None`): a crash loses it unless a durable
    /// commit came after it. The state on disk is always some earlier durable
    /// commit, whole.
    pub fn apply_with(
        &self,
        records: &[Stored],
        fsync: bool,
    ) -> Result<Vec<PutStatus>, StoreError> {
        let mut txn = self.db()?.begin_write()?;
        if !fsync {
            txn.set_durability(Durability::None)?;
        }
        let mut changes = Vec::new();
        let statuses = apply_in(&txn, records, &mut changes)?;
        txn.commit()?;
        self.commits.fetch_add(1, Ordering::Release);
        self.sketch.committed(&changes);
        Ok(statuses)
    }

    /// The root, record count and rating totals. Served from memory when no commit
    /// happened since the last read. The count is taken before the snapshot opens:
    /// a commit in between makes the entry look older than it is (a miss), never
    /// newer.
    pub fn db_hash(&self) -> Result<DbHash, StoreError> {
        let commits = self.commits.load(Ordering::Acquire);
        let cached = || self.hash.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, hash)) = cached().as_ref()
            && *at == commits
        {
            return Ok(hash.clone());
        }
        let hash = self.read_db_hash()?;
        *cached() = Some((commits, hash.clone()));
        Ok(hash)
    }

    fn read_db_hash(&self) -> Result<DbHash, StoreError> {
        let txn = self.db()?.begin_read()?;
        let meta = txn.open_table(META)?;
        let counter = |k| -> Result<u64, StoreError> { Ok(meta.get(k)?.map_or(0, |v| v.value())) };
        Ok(DbHash {
            root: merkle::root_hash(&mut trie_reader(&txn)?)?,
            records: counter(META_RECORDS)?,
            ratings: RatingTotals {
                count: counter(META_RATINGS_COUNT)?,
                sum: counter(META_RATINGS_SUM)?,
            },
        })
    }

    pub fn get(&self, slot: &Slot) -> Result<Option<Stored>, StoreError> {
        let txn = self.db()?.begin_read()?;
        read_stored(&txn.open_table(SLOTS)?, &slot.hash())
    }

    /// The records in `slots`, from one snapshot.
    pub fn get_many(&self, slots: &[Slot]) -> Result<Vec<Option<Stored>>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let records = txn.open_table(SLOTS)?;
        slots
            .iter()
            .map(|s| read_stored(&records, &s.hash()))
            .collect()
    }

    /// How many of a session's `writes` this store does not hold (its slot holds
    /// neither that record nor one that supersedes it), from one snapshot.
    pub fn missing(&self, writes: &[cirrus_proto::session::Write]) -> Result<usize, StoreError> {
        let txn = self.db()?.begin_read()?;
        let records = txn.open_table(SLOTS)?;
        let mut missing = 0;
        for w in writes {
            let held =
                read_stored(&records, &w.slot)?.is_some_and(|s| w.held_by(s.record.seq, &s.id));
            missing += usize::from(!held);
        }
        Ok(missing)
    }

    /// The record in `slot` (if any), a proof of presence or absence, and the root
    /// the proof is against, all from one snapshot.
    pub fn get_with_proof(&self, slot: &Slot) -> Result<(Option<Stored>, Proof, Hash), StoreError> {
        let txn = self.db()?.begin_read()?;
        let mut trie = trie_reader(&txn)?;
        let stored = read_stored(&trie.slots, &slot.hash())?;
        let proof = merkle::prove(&mut trie, &slot.hash())?;
        let root = merkle::root_hash(&mut trie)?;
        Ok((stored, proof, root))
    }

    pub fn rating(&self, target: &str) -> Result<RatingResult, StoreError> {
        let txn = self.db()?.begin_read()?;
        let (count, sum) = txn
            .open_table(RATINGS)?
            .get(target)?
            .map_or((0, 0), |v| v.value());
        Ok(RatingResult {
            target: target.to_string(),
            count,
            sum,
            average: (count > 0).then(|| sum as f64 / count as f64),
        })
    }
}

fn apply_in(
    txn: &WriteTransaction,
    batch: &[Stored],
    changes: &mut Vec<sketch::Change>,
) -> Result<Vec<PutStatus>, StoreError> {
    let mut by_key = txn.open_table(BY_KEY)?;
    let mut by_author = txn.open_table(BY_AUTHOR)?;
    let mut ratings = txn.open_table(RATINGS)?;
    let mut meta = txn.open_table(META)?;
    let mut trie = TrieWriter::new(txn.open_table(TRIE)?, txn.open_table(SLOTS)?);

    let mut count = read_counter(&meta, META_RECORDS)?;
    let mut totals = RatingTotals {
        count: read_counter(&meta, META_RATINGS_COUNT)?,
        sum: read_counter(&meta, META_RATINGS_SUM)?,
    };
    let mut statuses = Vec::with_capacity(batch.len());
    for new in batch {
        let slot = new.record.slot();
        let slot_hash = slot.hash();
        let old = read_stored(trie.slots(), &slot_hash)?;
        let status = match &old {
            None => PutStatus::Applied,
            Some(old) if old.id == new.id => PutStatus::Duplicate,
            Some(old) if new.record.supersedes(&new.id, &old.record, &old.id) => PutStatus::Applied,
            Some(_) => PutStatus::Stale,
        };
        statuses.push(status);
        if status != PutStatus::Applied {
            continue;
        }
        if old.is_none() {
            count += 1;
            by_key.insert(index_key(&slot).as_slice(), ())?;
            by_author.insert(author_key(&slot).as_slice(), ())?;
        }
        let old_score = old.as_ref().and_then(|o| o.record.rating());
        if old_score.is_some() || new.record.rating().is_some() {
            adjust_rating(
                &mut ratings,
                &mut totals,
                &slot.key,
                old_score,
                new.record.rating(),
            )?;
        }
        merkle::upsert(&mut trie, &slot_hash, &new.id)?;
        trie.slots()
            .insert(slot_hash.as_slice(), new.record.encode().as_slice())?;
        changes.push((slot_hash, old.map(|o| o.id), new.id));
    }
    trie.flush()?;
    meta.insert(META_RECORDS, count)?;
    meta.insert(META_RATINGS_COUNT, totals.count)?;
    meta.insert(META_RATINGS_SUM, totals.sum)?;
    Ok(statuses)
}

/// The trie of a read transaction.
fn trie_reader(txn: &redb::ReadTransaction) -> Result<SnapshotTrie, StoreError> {
    Ok(TrieReader {
        trie: txn.open_table(TRIE)?,
        slots: txn.open_table(SLOTS)?,
    })
}

/// Move one rating of `target` from `old` to `new` score (either may be absent).
fn adjust_rating(
    ratings: &mut Table<&str, (u64, u64)>,
    totals: &mut RatingTotals,
    target: &str,
    old: Option<u8>,
    new: Option<u8>,
) -> Result<(), StoreError> {
    let (mut count, mut sum) = ratings.get(target)?.map_or((0, 0), |v| v.value());
    for (score, sign) in [(old, -1i64), (new, 1)] {
        if let Some(s) = score {
            count = count.wrapping_add_signed(sign);
            sum = sum.wrapping_add_signed(sign * s as i64);
            totals.count = totals.count.wrapping_add_signed(sign);
            totals.sum = totals.sum.wrapping_add_signed(sign * s as i64);
        }
    }
    if count == 0 {
        ratings.remove(target)?;
    } else {
        ratings.insert(target, (count, sum))?;
    }
    Ok(())
}

fn read_counter(meta: &impl ReadableTable<&'static str, u64>, k: &str) -> Result<u64, StoreError> {
    Ok(meta.get(k)?.map_or(0, |v| v.value()))
}

fn read_stored(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    slot_hash: &[u8],
) -> Result<Option<Stored>, StoreError> {
    let Some(v) = table.get(slot_hash)? else {
        return Ok(None);
    };
    decode_stored(v.value()).map(Some)
}

fn decode_stored(bytes: &[u8]) -> Result<Stored, StoreError> {
    let record = Record::decode(bytes).map_err(|e| StoreError::Corrupt(format!("record: {e}")))?;
    Ok(Stored {
        record,
        id: id_of(bytes),
    })
}

/// `statvfs(2)`: blocks available to unprivileged users, times the fragment size.
fn free_space(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path holds a NUL byte"))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}
