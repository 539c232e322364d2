//! The Merkle structure over all slots: a hexary (16-way) trie keyed by slot hash.
//!
//! Construction (the normative description is `docs/merkle.md`):
//! - A slot's position is its 32-byte slot hash, read as 64 nibbles, high nibble first.
//! - An empty subtree hashes to 32 zero bytes.
//! - A subtree holding exactly one slot is that slot's *leaf*:
//!   `SHA-256(0x00 ‖ slot_hash ‖ record_id)`, placed at the shallowest depth where
//!   the slot is alone (no chains of one-child branches down to a lone leaf).
//! - A subtree holding two or more slots is a *branch*:
//!   `SHA-256(0x01 ‖ child_0 ‖ … ‖ child_15)`.
//!
//! The shape depends only on the set of slot hashes, so equal sets give equal roots
//! whatever the order of arrival. An update touches one root-to-leaf path, about
//! log16(N) + 1 nodes.

mod mem;
mod path;
mod proof;
mod trie;

pub use mem::MemTrie;
pub use path::NibblePath;
pub use proof::{Proof, ProofError, ProofLeaf};
pub use trie::{NodeSource, NodeStore, prove, root_hash, upsert};

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];
pub const EMPTY: Hash = [0; 32];

/// A stored trie node. Empty subtrees are not stored.
// Most nodes read during an update are branches, so boxing them would add an
// allocation per read to save memory only on the rarer leaves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Leaf { slot: Hash, id: Hash },
    Branch { children: [Hash; 16] },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed trie node: {0}")]
pub struct NodeDecodeError(&'static str);

impl Node {
    pub fn hash(&self) -> Hash {
        match self {
            Node::Leaf { slot, id } => leaf_hash(slot, id),
            Node::Branch { children } => branch_hash(children),
        }
    }

    /// Compact encoding: a leaf is `0x00 ‖ slot ‖ id`; a branch is
    /// `0x01 ‖ bitmap (u16 BE, bit i = child i non-empty) ‖ non-empty children`.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Node::Leaf { slot, id } => {
                let mut v = Vec::with_capacity(65);
                v.push(0);
                v.extend_from_slice(slot);
                v.extend_from_slice(id);
                v
            }
            Node::Branch { children } => {
                let mut bitmap = 0u16;
                let mut v = vec![1, 0, 0];
                for (i, c) in children.iter().enumerate() {
                    if *c != EMPTY {
                        bitmap |= 1 << i;
                        v.extend_from_slice(c);
                    }
                }
                v[1..3].copy_from_slice(&bitmap.to_be_bytes());
                v
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Node, NodeDecodeError> {
        match bytes.first() {
            Some(0) if bytes.len() == 65 => Ok(Node::Leaf {
                slot: bytes[1..33].try_into().expect("32 bytes"),
                id: bytes[33..65].try_into().expect("32 bytes"),
            }),
            Some(1) if bytes.len() >= 3 => {
                let bitmap = u16::from_be_bytes([bytes[1], bytes[2]]);
                let mut rest = &bytes[3..];
                if rest.len() != 32 * bitmap.count_ones() as usize {
                    return Err(NodeDecodeError("branch length does not match bitmap"));
                }
                let mut children = [EMPTY; 16];
                for (i, c) in children.iter_mut().enumerate() {
                    if bitmap & (1 << i) != 0 {
                        c.copy_from_slice(&rest[..32]);
                        rest = &rest[32..];
                    }
                }
                Ok(Node::Branch { children })
            }
            _ => Err(NodeDecodeError("unknown tag or length")),
        }
    }
}

pub fn leaf_hash(slot: &Hash, id: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(slot);
    h.update(id);
    h.finalize().into()
}

pub fn branch_hash(children: &[Hash; 16]) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    for c in children {
        h.update(c);
    }
    h.finalize().into()
}

/// Nibble `i` (0..64) of a 32-byte hash, high nibble first.
pub fn nibble(hash: &Hash, i: usize) -> usize {
    let b = hash[i / 2];
    (if i % 2 == 0 { b >> 4 } else { b & 0x0f }) as usize
}
