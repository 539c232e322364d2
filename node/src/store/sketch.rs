//! The coded symbols of every record (`proto::sync::riblt`), which is how peers
//! find what differs between two stores.
//!
//! The first [`CACHED`] symbols and the bucket counts live in memory, built from
//! the records table when the file opens and updated after every commit (about 17
//! symbol updates per record written), so the common question, a difference of up
//! to a few thousand records, is answered without reading the database. Longer
//! prefixes are computed from a scan of the records, one scan at a time.

use std::sync::Mutex;

use cirrus_proto::merkle::Hash;
use cirrus_proto::record::id_of;
use cirrus_proto::sync::{self, riblt};
use redb::{Database, ReadableDatabase, ReadableTable};

use super::tables::SLOTS;
use super::{Store, StoreError};

/// Symbols kept in memory: a difference of about 2,400 records is found from them.
pub const CACHED: usize = 4096;

/// The first symbols of the store's records, the bucket counts and the record count,
/// all from one state of the store.
#[derive(Debug, Clone)]
pub struct Symbols {
    pub symbols: Vec<riblt::Symbol>,
    pub buckets: Vec<u64>,
    pub records: u64,
}

impl Symbols {
    fn of(sk: &riblt::Sketch, n: usize) -> Symbols {
        Symbols {
            symbols: sk.prefix(n).to_vec(),
            buckets: sk.buckets().to_vec(),
            records: sk.buckets().iter().fold(0u64, |a, b| a.wrapping_add(*b)),
        }
    }
}

/// A record written: its slot, the id it replaced (if any) and its id.
pub(super) type Change = (Hash, Option<Hash>, Hash);

pub(super) struct Cache {
    sketch: Mutex<riblt::Sketch>,
    /// Held by the one scan that may run.
    scan: Mutex<()>,
}

impl Cache {
    pub(super) fn build(db: &Database) -> Result<Cache, StoreError> {
        Ok(Cache {
            sketch: Mutex::new(riblt::Sketch::new(items(db)?, CACHED)),
            scan: Mutex::new(()),
        })
    }

    pub(super) fn rebuild(&self, db: &Database) -> Result<(), StoreError> {
        let fresh = riblt::Sketch::new(items(db)?, CACHED);
        *self.lock() = fresh;
        Ok(())
    }

    /// Apply a commit's changes; called only once the commit succeeded.
    pub(super) fn committed(&self, changes: &[Change]) {
        let mut sk = self.lock();
        for (slot, old, new) in changes {
            if let Some(old) = old {
                sk.remove(sync::item(slot, old));
            }
            sk.insert(sync::item(slot, new));
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, riblt::Sketch> {
        self.sketch.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every record's item, from the records table in one read transaction.
fn items(db: &Database) -> Result<Vec<riblt::Item>, StoreError> {
    let txn = db.begin_read()?;
    let slots = txn.open_table(SLOTS)?;
    let mut out = Vec::new();
    for entry in slots.iter()? {
        let (slot, record) = entry?;
        let slot: Hash = slot
            .value()
            .try_into()
            .map_err(|_| StoreError::Corrupt("slot key length".into()))?;
        out.push(sync::item(&slot, &id_of(record.value())));
    }
    Ok(out)
}

impl Store {
    /// The first `n` coded symbols over all records (at most
    /// [`sync::MAX_SYMBOLS`]). Blocking: beyond [`CACHED`] it reads every record.
    pub fn symbols(&self, n: usize) -> Result<Symbols, StoreError> {
        let n = n.min(sync::MAX_SYMBOLS);
        if n <= CACHED {
            return Ok(Symbols::of(&self.sketch.lock(), n));
        }
        let _one = self.sketch.scan.lock().unwrap_or_else(|e| e.into_inner());
        let db = self.db()?;
        Ok(Symbols::of(&riblt::Sketch::new(items(&db)?, n), n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Stored;
    use cirrus_proto::record::{Kind, Record};
    use ed25519_dalek::SigningKey;

    fn stored(author: u8, key: &str, seq: u64) -> Stored {
        let record = Record::sign(
            &SigningKey::from_bytes(&[author; 32]),
            Kind::Doc,
            key.to_string(),
            seq,
            Some(format!("v{seq}")),
        );
        let id = record.id();
        Stored { record, id }
    }

    /// What the store keeps in memory equals what a scan of its records gives, after
    /// new records, replacements, stale writes and a reopen.
    #[test]
    fn the_kept_symbols_follow_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let store = Store::open(&path).unwrap();
        let first: Vec<_> = (0..300).map(|i| stored(1, &format!("k{i}"), 1)).collect();
        store.apply(&first).unwrap();
        let newer: Vec<_> = (0..50).map(|i| stored(1, &format!("k{i}"), 2)).collect();
        store.apply_with(&newer, false).unwrap();
        // Stale and duplicate writes change nothing.
        store.apply(&first[..10]).unwrap();
        store.apply(&newer[..10]).unwrap();

        let scanned = |s: &Store| {
            let db = s.db().unwrap();
            riblt::Sketch::new(items(&db).unwrap(), CACHED)
        };
        let kept = store.symbols(CACHED).unwrap();
        let fresh = scanned(&store);
        assert_eq!(kept.symbols, fresh.prefix(CACHED));
        assert_eq!(kept.buckets, fresh.buckets());
        assert_eq!(kept.records, 300);
        // Longer prefixes come from a scan, and agree on the common part.
        let long = store.symbols(CACHED + 100).unwrap();
        assert_eq!(&long.symbols[..CACHED], kept.symbols.as_slice());

        drop(store);
        let again = Store::open(&path).unwrap();
        assert_eq!(again.symbols(CACHED).unwrap().symbols, kept.symbols);
    }
}
