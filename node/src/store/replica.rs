//! Read access for anti-entropy: the trie, records by slot hash, and pages of the
//! whole database, all from one read transaction.

use cirrus_proto::merkle::{Hash, NibblePath, Node, NodeSource};
use cirrus_proto::sync::Replica;
use redb::{ReadTransaction, ReadableDatabase};

use super::tables::SLOTS;
use super::trie::SnapshotTrie;
use super::{Store, StoreError, trie_reader};

/// One page of canonical records and the cursor after it (none: that was the end).
pub type Page = (Vec<Vec<u8>>, Option<Vec<u8>>);

/// A consistent snapshot of the store for one reconciliation step.
pub struct Snapshot {
    /// The trie, and in it the records table.
    trie: SnapshotTrie,
    _txn: ReadTransaction,
}

impl Store {
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let txn = self.db()?.begin_read()?;
        Ok(Snapshot {
            trie: trie_reader(&txn)?,
            _txn: txn,
        })
    }

    /// Canonical records in slot-hash order after `after`, up to about `max_bytes`
    /// (at least one record), and the cursor to continue from.
    pub fn range_page(&self, after: Option<&[u8]>, max_bytes: usize) -> Result<Page, StoreError> {
        use std::ops::Bound;
        let txn = self.db()?.begin_read()?;
        let records = txn.open_table(SLOTS)?;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut last = None;
        for entry in records.range::<&[u8]>((start, Bound::Unbounded))? {
            let (k, v) = entry?;
            if !out.is_empty() && bytes + v.value().len() > max_bytes {
                return Ok((out, last));
            }
            bytes += v.value().len();
            out.push(v.value().to_vec());
            last = Some(k.value().to_vec());
        }
        Ok((out, None))
    }
}

impl Replica for Snapshot {
    type Error = StoreError;

    fn node(&mut self, path: &NibblePath) -> Result<Option<Node>, StoreError> {
        self.trie.get(path)
    }

    fn record(&mut self, slot: &Hash) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .trie
            .slots
            .get(slot.as_slice())?
            .map(|e| e.value().to_vec()))
    }

    fn records_under(
        &mut self,
        path: &NibblePath,
        max_bytes: usize,
    ) -> Result<Option<Vec<(Hash, Vec<u8>)>>, StoreError> {
        let (lo, hi) = path.hash_range();
        let mut out = Vec::new();
        let mut bytes = 0;
        for entry in self
            .trie
            .slots
            .range::<&[u8]>(lo.as_slice()..=hi.as_slice())?
        {
            let (slot, rec) = entry?;
            let rec = rec.value();
            bytes += rec.len();
            if bytes > max_bytes {
                return Ok(None);
            }
            let slot: Hash = slot
                .value()
                .try_into()
                .map_err(|_| StoreError::Corrupt("slot key length".into()))?;
            out.push((slot, rec.to_vec()));
        }
        Ok(Some(out))
    }
}
