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

    /// Inverse of [`NibblePath::to_key`]; `None` for bytes no path encodes to.
    pub fn from_key(k: &[u8]) -> Option<NibblePath> {
        let (&len, packed) = k.split_first()?;
        let len = len as usize;
        if len > 64 || packed.len() != len.div_ceil(2) {
            return None;
        }
        if len % 2 == 1 && packed[len / 2] & 0x0f != 0 {
            return None;
        }
        let mut p = NibblePath::ROOT;
        p.len = len as u8;
        p.bytes[..packed.len()].copy_from_slice(packed);
        Some(p)
    }

    /// The first `len` nibbles of this path.
    pub fn prefix(&self, len: usize) -> NibblePath {
        let mut p = NibblePath::ROOT;
        for i in 0..len.min(self.len()) {
            p = p.child(self.nibble(i));
        }
        p
    }

    /// Nibble `i` of the path (`i < len`).
    pub fn nibble(&self, i: usize) -> usize {
        nibble(&self.bytes, i)
    }

    /// Whether `hash` lies under this path (its first `len` nibbles are the path).
    pub fn covers(&self, hash: &Hash) -> bool {
        NibblePath::prefix_of(hash, self.len()) == *self
    }

    /// The range of 32-byte hashes under this path, as inclusive bounds.
    pub fn hash_range(&self) -> (Hash, Hash) {
        let (mut lo, mut hi) = (self.bytes, [0xff; 32]);
        let full = self.len() / 2;
        hi[..full].copy_from_slice(&self.bytes[..full]);
        if self.len() % 2 == 1 {
            hi[full] = self.bytes[full] | 0x0f;
        }
        lo[self.len().div_ceil(2)..].fill(0);
        (lo, hi)
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
