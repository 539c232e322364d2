//! The record ids a node saw lately, so that the second and later copies of a
//! record (each of a node's mesh peers sends it one) are dropped before they are
//! decoded, looked up or verified.
//!
//! Two generations of at most `cap` ids each: when the current one is full it
//! becomes the previous and the oldest is forgotten, so memory is bounded
//! (16 bytes an id, a prefix of its SHA-256) and a copy is recognised for at least
//! `cap` records after the first. A copy that comes later than that is caught by
//! the store instead, at the cost of a lookup.
//!
//! An id is marked seen when its first copy arrives, before that copy is
//! verified. That is safe because the id is the hash of the record's whole
//! encoding, signature included: a later copy with the same id is the same bytes
//! and gets the same verdict.

use std::collections::HashSet;

use crate::record::Id;

/// Ids one generation holds by default: at 500 records a second, half a minute.
pub const SEEN_PER_GENERATION: usize = 16_384;

#[derive(Debug)]
pub struct Seen {
    cap: usize,
    current: HashSet<u128>,
    previous: HashSet<u128>,
}

impl Default for Seen {
    fn default() -> Self {
        Seen::new(SEEN_PER_GENERATION)
    }
}

impl Seen {
    pub fn new(cap: usize) -> Self {
        Seen {
            cap: cap.max(1),
            current: HashSet::new(),
            previous: HashSet::new(),
        }
    }

    /// Mark `id` seen; true if it was not seen before (within memory).
    pub fn first(&mut self, id: &Id) -> bool {
        let short = u128::from_be_bytes(id[..16].try_into().expect("16 of 32 bytes"));
        if self.previous.contains(&short) || !self.current.insert(short) {
            return false;
        }
        if self.current.len() >= self.cap {
            self.previous = std::mem::take(&mut self.current);
        }
        true
    }

    /// Ids held now (at most twice `cap`).
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u32) -> Id {
        crate::record::id_of(&i.to_be_bytes())
    }

    #[test]
    fn a_second_copy_is_recognised() {
        let mut s = Seen::new(8);
        assert!(s.first(&id(1)));
        assert!(!s.first(&id(1)));
        assert!(s.first(&id(2)));
    }

    #[test]
    fn memory_is_bounded_and_recent_ids_are_kept() {
        let cap = 100;
        let mut s = Seen::new(cap);
        for i in 0..10 * cap as u32 {
            assert!(s.first(&id(i)), "id {i} is new");
            assert!(s.len() <= 2 * cap, "{} ids held", s.len());
            // Each of the last `cap` ids is still known.
            let back = i.saturating_sub(cap as u32 - 1);
            assert!(!s.first(&id(back)), "id {back} forgotten at {i}");
        }
        // The oldest are forgotten (and so would be looked up in the store).
        assert!(s.first(&id(0)));
    }
}
