//! What each table costs on disk, and compaction: for the disk benchmark and for
//! operators who want the file back to its live size.

use redb::{ReadableDatabase, ReadableTableMetadata};

use super::tables::*;
use super::{Store, StoreError};

/// One table's share of the file, as redb counts it.
#[derive(Debug, Clone)]
pub struct TableUsage {
    pub name: &'static str,
    pub entries: u64,
    /// Keys and values as inserted.
    pub stored_bytes: u64,
    /// Keys in branch pages and other metadata.
    pub metadata_bytes: u64,
    /// Unused space inside this table's pages.
    pub fragmented_bytes: u64,
    /// Leaf and branch pages times the page size.
    pub page_bytes: u64,
}

impl Store {
    /// Every table's usage, from one read transaction.
    pub fn usage(&self) -> Result<Vec<TableUsage>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let mut out = Vec::new();
        for (name, def) in [("slots", SLOTS), ("trie", TRIE), ("peers", PEERS)] {
            out.push(usage_of(name, &txn.open_table(def)?)?);
        }
        for (name, def) in [("by_key", BY_KEY), ("by_author", BY_AUTHOR)] {
            out.push(usage_of(name, &txn.open_table(def)?)?);
        }
        out.push(usage_of("ratings", &txn.open_table(RATINGS)?)?);
        out.push(usage_of("meta", &txn.open_table(META)?)?);
        Ok(out)
    }

    /// Rewrite the file so that it holds only live pages; `false` if there was
    /// nothing to gain. Waits for no one: fails while a read transaction is open.
    pub fn compact(&self) -> Result<bool, StoreError> {
        let mut g = self.db.write().unwrap_or_else(|e| e.into_inner());
        let db = g.as_mut().ok_or(StoreError::Reopening)?;
        db.compact()
            .map_err(|e| StoreError::Db(redb::Error::from(e)))
    }
}

fn usage_of(name: &'static str, t: &impl ReadableTableMetadata) -> Result<TableUsage, StoreError> {
    let s = t.stats()?;
    // redb's page size; its own figure is only on a write transaction's stats.
    let page = 4096u64;
    Ok(TableUsage {
        name,
        entries: t.len()?,
        stored_bytes: s.stored_bytes(),
        metadata_bytes: s.metadata_bytes(),
        fragmented_bytes: s.fragmented_bytes(),
        page_bytes: (s.leaf_pages() + s.branch_pages()) * page,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Stored;
    use cirrus_proto::record::{Kind, Record};
    use ed25519_dalek::SigningKey;

    #[test]
    fn usage_counts_every_record_and_compaction_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let key = SigningKey::from_bytes(&[3; 32]);
        for chunk in 0..20 {
            let batch: Vec<Stored> = (0..100)
                .map(|i| {
                    let record = Record::sign(
                        &key,
                        Kind::Doc,
                        format!("k{chunk}-{i}"),
                        1,
                        Some("v".into()),
                    );
                    let id = record.id();
                    Stored { record, id }
                })
                .collect();
            store.apply_with(&batch, false).unwrap();
        }
        let before = store.db_hash().unwrap();
        let usage = store.usage().unwrap();
        let of = |n: &str| usage.iter().find(|u| u.name == n).unwrap().clone();
        for table in ["slots", "by_key", "by_author"] {
            assert_eq!(of(table).entries, 2000, "{table}");
            assert!(of(table).page_bytes >= of(table).stored_bytes);
        }
        // Branches only: fewer than the records.
        assert!((1..2000).contains(&of("trie").entries));
        store.compact().unwrap();
        assert_eq!(store.db_hash().unwrap(), before);
        assert_eq!(store.usage().unwrap()[0].entries, 2000);
    }
}
