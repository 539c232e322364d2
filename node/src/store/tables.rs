//! redb table definitions and the byte layout of their keys (file format 2; format 1
//! is read only to migrate it, see `migrate`).
//!
//! - `slots`: slot hash → canonical record bytes. The record's id is the SHA-256 of
//!   those bytes, so it is not stored. Anti-entropy and the trie name slots by hash,
//!   so they read this table directly.
//! - `by_key`: `kind ‖ key ‖ 0x00 ‖ author` → `()`. Keys hold no control characters,
//!   so the 0x00 separator keeps the order "by key, then author" and makes `list` by
//!   kind and key prefix one range.
//! - `by_author`: the author's first [`AUTHOR_PREFIX`] bytes `‖ kind ‖ key` → `()`,
//!   for `list` by author. The short prefix keeps the index small; the query names the
//!   whole author, so a record of another author with the same prefix is skipped.
//! - `trie`: trie node path (see `NibblePath::to_key`) → encoded branch. Leaves are
//!   not stored: a leaf is the one record under its path, read from `slots`.
//! - `peers`: peer id bytes → JSON of a known peer (addresses, last seen).
//! - `ratings`: rating target → (count, sum) of live ratings.
//! - `meta`: counters `records`, `ratings_count`, `ratings_sum`, and `format`.

use cirrus_proto::record::{Author, Kind, Slot};
use redb::TableDefinition;

pub const SLOTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("slots");
pub const BY_KEY: TableDefinition<&[u8], ()> = TableDefinition::new("by_key");
pub const BY_AUTHOR: TableDefinition<&[u8], ()> = TableDefinition::new("by_author");
pub const PEERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("peers");
pub const TRIE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("trie");
pub const RATINGS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("ratings");
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub const META_RECORDS: &str = "records";
pub const META_RATINGS_COUNT: &str = "ratings_count";
pub const META_RATINGS_SUM: &str = "ratings_sum";
pub const META_FORMAT: &str = "format";

/// The file format this code writes.
pub const FORMAT: u64 = 2;

/// Bytes of the author kept in a `by_author` key. Another author shares them only
/// by grinding keys for about 2^64 tries; a shared prefix costs a skipped entry.
pub const AUTHOR_PREFIX: usize = 8;

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

/// The `by_author` key of `slot`; its first part is [`author_prefix`].
pub fn author_key(slot: &Slot) -> Vec<u8> {
    let mut k = author_prefix(&slot.author, slot.kind);
    k.extend_from_slice(slot.key.as_bytes());
    k
}

pub fn author_prefix(author: &Author, kind: Kind) -> Vec<u8> {
    let mut k = Vec::with_capacity(AUTHOR_PREFIX + 1 + 64);
    k.extend_from_slice(&author[..AUTHOR_PREFIX]);
    k.push(kind.byte());
    k
}

/// The slot of a `by_author` key, given the whole author the query names.
pub fn slot_from_author_key(author: &Author, k: &[u8]) -> Option<Slot> {
    let (&kind, key) = k.get(AUTHOR_PREFIX..)?.split_first()?;
    Some(Slot {
        author: *author,
        kind: Kind::from_byte(kind)?,
        key: std::str::from_utf8(key).ok()?.to_string(),
    })
}
