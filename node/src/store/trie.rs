//! The Merkle trie's nodes in redb, behind the `proto` trie traits.
//!
//! [`TrieWriter`] keeps a write-back cache for one write transaction: a batch of
//! updates walks the same upper branches many times, and each node is read from redb
//! at most once and written at most once per commit.

use std::collections::HashMap;

use cirrus_proto::merkle::{NibblePath, Node, NodeSource, NodeStore};
use redb::{ReadableTable, Table};

use super::StoreError;

pub struct TrieWriter<'t, 'txn> {
    table: &'t mut Table<'txn, &'static [u8], &'static [u8]>,
    /// Node and whether it changed since it was read.
    cache: HashMap<NibblePath, (Node, bool)>,
}

impl<'t, 'txn> TrieWriter<'t, 'txn> {
    pub fn new(table: &'t mut Table<'txn, &'static [u8], &'static [u8]>) -> Self {
        TrieWriter {
            table,
            cache: HashMap::new(),
        }
    }

    /// Write every changed node to the table.
    pub fn flush(self) -> Result<(), StoreError> {
        for (path, (node, dirty)) in self.cache {
            if dirty {
                self.table
                    .insert(path.to_key().as_slice(), node.encode().as_slice())?;
            }
        }
        Ok(())
    }
}

impl NodeSource for TrieWriter<'_, '_> {
    type Error = StoreError;
    fn get(&mut self, path: &NibblePath) -> Result<Option<Node>, StoreError> {
        if let Some((n, _)) = self.cache.get(path) {
            return Ok(Some(n.clone()));
        }
        let node = read_node(self.table, path)?;
        if let Some(n) = &node {
            self.cache.insert(*path, (n.clone(), false));
        }
        Ok(node)
    }
}

impl NodeStore for TrieWriter<'_, '_> {
    fn put(&mut self, path: &NibblePath, node: Node) -> Result<(), StoreError> {
        self.cache.insert(*path, (node, true));
        Ok(())
    }
}

/// Read access to the trie inside a read transaction (a consistent snapshot).
pub struct TrieReader<T>(pub T);

impl<T: ReadableTable<&'static [u8], &'static [u8]>> NodeSource for TrieReader<T> {
    type Error = StoreError;
    fn get(&mut self, path: &NibblePath) -> Result<Option<Node>, StoreError> {
        read_node(&self.0, path)
    }
}

fn read_node(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    path: &NibblePath,
) -> Result<Option<Node>, StoreError> {
    match table.get(path.to_key().as_slice())? {
        None => Ok(None),
        Some(v) => Node::decode(v.value())
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("trie node at depth {}: {e}", path.len()))),
    }
}
