//! A trie held in a map: for a client that computes the root of records it holds,
//! and for tests and benchmarks that need the definition without a database.

use std::collections::HashMap;
use std::convert::Infallible;

use super::{NibblePath, Node, NodeSource, NodeStore};

#[derive(Debug, Default, Clone)]
pub struct MemTrie {
    nodes: HashMap<NibblePath, Node>,
}

impl MemTrie {
    /// Every node, leaves included, by path.
    pub fn nodes(&self) -> &HashMap<NibblePath, Node> {
        &self.nodes
    }
}

impl NodeSource for MemTrie {
    type Error = Infallible;
    fn get(&mut self, path: &NibblePath) -> Result<Option<Node>, Infallible> {
        Ok(self.nodes.get(path).cloned())
    }
}

impl NodeStore for MemTrie {
    fn put(&mut self, path: &NibblePath, node: Node) -> Result<(), Infallible> {
        self.nodes.insert(*path, node);
        Ok(())
    }
}
