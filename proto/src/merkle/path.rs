//! A position in the trie: the first `len` nibbles of a slot hash.

use super::{Hash, nibble};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NibblePath {
    len: u8,
    bytes: [u8; 32],
}

impl NibblePath {
    pub const ROOT: NibblePath = NibblePath {
        len: 0,
        bytes: [0; 32],
    };

    /// The path of the first `len` nibbles of `hash`.
    pub fn prefix_of(hash: &Hash, len: usize) -> NibblePath {
        assert!(len <= 64, "a path has at most 64 nibbles");
        let mut p = NibblePath::ROOT;
        for i in 0..len {
            p = p.child(nibble(hash, i));
        }
        p
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn child(&self, n: usize) -> NibblePath {
        debug_assert!(n < 16 && self.len < 64);
        let mut p = *self;
        let i = p.len as usize;
        if i % 2 == 0 {
            p.bytes[i / 2] = (n as u8) << 4;
        } else {
            p.bytes[i / 2] |= n as u8;
        }
        p.len += 1;
        p
    }

    /// Storage key: `len` then the packed nibbles (unused low nibble zero). Keys sort
    /// by depth first, so one level of the trie is one contiguous range.
    pub fn to_key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(1 + self.len().div_ceil(2));
        k.push(self.len);
        k.extend_from_slice(&self.bytes[..self.len().div_ceil(2)]);
        k
    }
}
