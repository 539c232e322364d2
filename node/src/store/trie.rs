//! The Merkle trie's nodes in redb, behind the `proto` trie traits.
//!
//! Only branches are stored. A leaf is the one record under its path: where no
//! branch is stored at a path whose parent is a branch (or at the root), the first
//! entry of `slots` in the path's hash range is that leaf, and its id is the hash of
//! the record's bytes. A leaf stored apart would repeat 65 bytes per record.
//!
//! [`TrieWriter`] keeps a write-back cache for one write transaction: a batch of
//! updates walks the same upper branches many times, and each node is read from redb
//! at most once and written at most once per commit.

use std::collections::HashMap;

use cirrus_proto::merkle::{Hash, NibblePath, Node, NodeSource, NodeStore};
use cirrus_proto::record::id_of;
use redb::{ReadableTable, Table};

use super::StoreError;

type Bytes = &'static [u8];

pub struct TrieWriter<'txn> {
    trie: Table<'txn, Bytes, Bytes>,
    slots: Table<'txn, Bytes, Bytes>,
    /// Node and whether it changed since it was read.
    cache: HashMap<NibblePath, (Node, bool)>,
}

impl<'txn> TrieWriter<'txn> {
    pub fn new(trie: Table<'txn, Bytes, Bytes>, slots: Table<'txn, Bytes, Bytes>) -> Self {
        TrieWriter {
            trie,
            slots,
            cache: HashMap::new(),
        }
    }

    /// The records table. A record must be inserted only after its slot's
    /// [`cirrus_proto::merkle::upsert`]: until then its leaf is read from here.
    pub fn slots(&mut self) -> &mut Table<'txn, Bytes, Bytes> {
        &mut self.slots
    }

    /// Write every changed branch to the table.
    pub fn flush(mut self) -> Result<(), StoreError> {
        for (path, (node, dirty)) in self.cache {
            if dirty && matches!(node, Node::Branch { .. }) {
                self.trie
                    .insert(path.to_key().as_slice(), node.encode().as_slice())?;
            }
        }
        Ok(())
    }

    fn branch(&self, path: &NibblePath) -> Result<Option<Node>, StoreError> {
        if let Some((n, _)) = self.cache.get(path) {
            return Ok(matches!(n, Node::Branch { .. }).then(|| n.clone()));
        }
        read_branch(&self.trie, path)
    }
}

impl NodeSource for TrieWriter<'_> {
    type Error = StoreError;
    fn get(&mut self, path: &NibblePath) -> Result<Option<Node>, StoreError> {
        if let Some((n, _)) = self.cache.get(path) {
            return Ok(Some(n.clone()));
        }
        let node = match read_branch(&self.trie, path)? {
            Some(b) => Some(b),
            None if leaf_may_sit(path, |p| self.branch(p))? => leaf_under(&self.slots, path)?,
            None => None,
        };
        if let Some(n) = &node {
            self.cache.insert(*path, (n.clone(), false));
        }
        Ok(node)
    }
}

impl NodeStore for TrieWriter<'_> {
    fn put(&mut self, path: &NibblePath, node: Node) -> Result<(), StoreError> {
        self.cache.insert(*path, (node, true));
        Ok(())
    }
}

/// Read access to the trie inside a read transaction (a consistent snapshot):
/// the trie table and the records table of the same transaction.
pub struct TrieReader<T> {
    pub trie: T,
    pub slots: T,
}

/// The trie of a read transaction.
pub type SnapshotTrie = TrieReader<redb::ReadOnlyTable<Bytes, Bytes>>;

impl<T: ReadableTable<Bytes, Bytes>> NodeSource for TrieReader<T> {
    type Error = StoreError;
    fn get(&mut self, path: &NibblePath) -> Result<Option<Node>, StoreError> {
        if let Some(b) = read_branch(&self.trie, path)? {
            return Ok(Some(b));
        }
        if leaf_may_sit(path, |p| read_branch(&self.trie, p))? {
            return leaf_under(&self.slots, path);
        }
        Ok(None)
    }
}

/// Whether a leaf can sit at `path` (which holds no branch): at the root, or under
/// a branch. Below a leaf, or below nothing, a path is empty.
fn leaf_may_sit(
    path: &NibblePath,
    mut branch: impl FnMut(&NibblePath) -> Result<Option<Node>, StoreError>,
) -> Result<bool, StoreError> {
    Ok(path.is_empty() || branch(&path.prefix(path.len() - 1))?.is_some())
}

/// The leaf of the first record whose slot hash lies under `path`.
fn leaf_under(
    slots: &impl ReadableTable<Bytes, Bytes>,
    path: &NibblePath,
) -> Result<Option<Node>, StoreError> {
    let (lo, hi) = path.hash_range();
    let Some(entry) = slots.range::<&[u8]>(lo.as_slice()..=hi.as_slice())?.next() else {
        return Ok(None);
    };
    let (slot, record) = entry?;
    let slot: Hash = slot
        .value()
        .try_into()
        .map_err(|_| StoreError::Corrupt("slot key length".into()))?;
    Ok(Some(Node::Leaf {
        slot,
        id: id_of(record.value()),
    }))
}

fn read_branch(
    table: &impl ReadableTable<Bytes, Bytes>,
    path: &NibblePath,
) -> Result<Option<Node>, StoreError> {
    let Some(v) = table.get(path.to_key().as_slice())? else {
        return Ok(None);
    };
    match Node::decode(v.value()) {
        Ok(b @ Node::Branch { .. }) => Ok(Some(b)),
        Ok(Node::Leaf { .. }) => Err(StoreError::Corrupt(format!(
            "a leaf stored in the trie at depth {}",
            path.len()
        ))),
        Err(e) => Err(StoreError::Corrupt(format!(
            "trie node at depth {}: {e}",
            path.len()
        ))),
    }
}
