//! redb table definitions and the byte layout of their keys.
//!
//! - `records`: primary key `author ‖ kind ‖ key` → `id ‖ canonical record bytes`.
//!   Sorted by author, so `list` by author is one range.
//! - `by_key`: `kind ‖ key ‖ 0x00 ‖ author` → `()`. Keys hold no control characters,
//!   so the 0x00 separator keeps the order "by key, then author" and makes `list` by
//!   kind and key prefix one range.
//! - `by_slot`: slot hash → primary key, for anti-entropy, which names slots by hash
//!   and walks them in trie order.
//! - `peers`: peer id bytes → JSON of a known peer (addresses, last seen).
//! - `trie`: trie node path (see `NibblePath::to_key`) → encoded node.
//! - `ratings`: rating target → (count, sum) of live ratings.
//! - `meta`: counters: `records`, `ratings_count`, `ratings_sum`.

use cirrus_proto::record::{Author, Kind, Slot};
use redb::TableDefinition;

pub const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
pub const BY_KEY: TableDefinition<&[u8], ()> = TableDefinition::new("by_key");
pub const BY_SLOT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("by_slot");
pub const PEERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("peers");
pub const TRIE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("trie");
pub const RATINGS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("ratings");
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub const META_RECORDS: &str = "records";
pub const META_RATINGS_COUNT: &str = "ratings_count";
pub const META_RATINGS_SUM: &str = "ratings_sum";

pub fn primary_key(slot: &Slot) -> Vec<u8> {
    let mut k = Vec::with_capacity(33 + slot.key.len());
    k.extend_from_slice(&slot.author);
    k.push(slot.kind.byte());
    k.extend_from_slice(slot.key.as_bytes());
    k
}

pub fn index_key(slot: &Slot) -> Vec<u8> {
    let mut k = Vec::with_capacity(34 + slot.key.len());
    k.push(slot.kind.byte());
    k.extend_from_slice(slot.key.as_bytes());
    k.push(0);
    k.extend_from_slice(&slot.author);
    k
}

/// Inverse of [`index_key`]; `None` for bytes that no index entry can hold.
pub fn slot_from_index_key(k: &[u8]) -> Option<Slot> {
    if k.len() < 1 + 1 + 32 {
        return None;
    }
    let kind = Kind::from_byte(k[0])?;
    let (rest, author) = k[1..].split_at(k.len() - 1 - 32);
    let key = rest.strip_suffix(&[0])?;
    let author: Author = author.try_into().ok()?;
    Some(Slot {
        author,
        kind,
        key: std::str::from_utf8(key).ok()?.to_string(),
    })
}
