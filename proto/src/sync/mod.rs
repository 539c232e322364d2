//! Anti-entropy: its messages, set reconciliation over coded symbols, and the trie
//! walk behind it.
//!
//! How two nodes find what differs: the initiator sends its first [`PROBE`] coded
//! symbols ([`riblt`]) over its records, one 64-bit [`item`] per record. The
//! responder subtracts its own. A small difference peels at once; otherwise the
//! count differences [`riblt::estimate`] its size and the responder asks for that
//! many symbols ([`Response::Need`]), which the initiator sends whole (the responder
//! keeps no state between requests). Once it peels, the responder sends the records
//! the initiator lacks and names, by slot-hash prefix, those it lacks itself; one
//! [`Request::Exchange`] settles them. So a difference of `d` records costs about
//! 1.35 to 2 symbols of 13 bytes and two round trips, whatever the database's size.
//!
//! Items are short (48 bits of slot hash, 16 of record id), so the roots may still
//! differ afterwards: two versions of one slot whose ids share 16 bits, a write that
//! landed meanwhile. Then the trie walk ([`walk`]) finds the rest, as it does when
//! a difference is too large for [`MAX_SYMBOLS`].

pub mod riblt;
pub mod walk;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::merkle::{Hash, NibblePath};
pub use walk::{
    Item, MAX_ROUNDS, RECORD_BUDGET, Replica, SHORT, SyncError, answer, carried, opening,
};

/// Symbols the first request carries: a difference this small peels at once.
pub const PROBE: usize = 16;
/// Symbols a request may carry at most (13 bytes each after the probe).
pub const MAX_SYMBOLS: usize = 1 << 19;
/// Bytes of slot hash that name a record in [`Response::Decoded`] and
/// [`Request::Exchange`].
pub const PREFIX: usize = 6;
/// Symbols asked for per estimated item, and a floor for small differences.
pub const NEED_PER_ITEM: f64 = 1.7;
const NEED_FLOOR: usize = 4 * PROBE;

/// Bytes of a symbol on the wire: sum, check, and the count's low byte (peeling
/// needs no more).
pub const SYMBOL_BYTES: usize = 13;

/// An anti-entropy request (`/cirrus/sync/3`). Other node-to-node messages are in
/// [`crate::peer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// My root, my record count, my first coded symbols ([`encode_symbols`]) and,
    /// in the first request, the low bytes of my [`riblt::BUCKETS`] bucket counts
    /// for the size estimate (empty later).
    Sketch {
        root: ByteBuf,
        records: u64,
        symbols: ByteBuf,
        buckets: ByteBuf,
    },
    /// Records you lack (verify and apply them), and prefixes ([`PREFIX`] bytes
    /// each) of slots whose records I want.
    Exchange {
        records: Vec<ByteBuf>,
        want: ByteBuf,
    },
    /// One level of the trie walk.
    Reconcile(Vec<Item>),
    /// Records in primary-key order after a cursor, for a node that starts empty.
    Range {
        after: Option<ByteBuf>,
        max_bytes: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// These symbols did not peel: send me this many.
    Need(u32),
    /// The difference: records you lack (up to [`RECORD_BUDGET`]), prefixes of
    /// those that did not fit (`owed`: ask for them), prefixes of what I lack
    /// (`want`), and my root.
    Decoded {
        root: ByteBuf,
        records: Vec<ByteBuf>,
        owed: ByteBuf,
        want: ByteBuf,
    },
    /// The records asked for, what did not fit, and my root after applying yours.
    Exchanged {
        root: ByteBuf,
        records: Vec<ByteBuf>,
        owed: ByteBuf,
    },
    Reconcile(Vec<Item>),
    Range {
        records: Vec<ByteBuf>,
        next: Option<ByteBuf>,
    },
    /// The request was understood but refused (too large, malformed content, ...).
    Refused(String),
}

/// The set element naming a record: 48 bits of its slot hash (which find it again,
/// [`prefix_path`]) and 16 of its id (so a newer version is a different item).
pub fn item(slot: &Hash, id: &Hash) -> riblt::Item {
    let mut b = [0u8; 8];
    b[..PREFIX].copy_from_slice(&slot[..PREFIX]);
    b[PREFIX..].copy_from_slice(&id[..8 - PREFIX]);
    u64::from_be_bytes(b)
}

/// The slot-hash prefix of an item, as sent on the wire.
pub fn prefix(item: riblt::Item) -> [u8; PREFIX] {
    item.to_be_bytes()[..PREFIX].try_into().expect("PREFIX < 8")
}

/// The trie path that holds every slot with this prefix.
pub fn prefix_path(prefix: &[u8; PREFIX]) -> NibblePath {
    let mut h = [0u8; 32];
    h[..PREFIX].copy_from_slice(prefix);
    NibblePath::prefix_of(&h, 2 * PREFIX)
}

/// Split a list of prefixes; `None` unless it is whole prefixes.
pub fn prefixes(bytes: &[u8]) -> Option<Vec<[u8; PREFIX]>> {
    if bytes.len() % PREFIX != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(PREFIX)
            .map(|c| c.try_into().expect("chunk of PREFIX"))
            .collect(),
    )
}

pub fn encode_symbols(symbols: &[riblt::Symbol]) -> Vec<u8> {
    let mut out = Vec::with_capacity(symbols.len() * SYMBOL_BYTES);
    for s in symbols {
        out.extend_from_slice(&s.sum.to_le_bytes());
        out.extend_from_slice(&s.check.to_le_bytes());
        out.push(s.count as u8);
    }
    out
}

/// Symbols as received: sum, check, low byte of the count. `None` unless whole
/// symbols, at most [`MAX_SYMBOLS`].
pub fn decode_symbols(bytes: &[u8]) -> Option<Vec<(u64, u32, u8)>> {
    if bytes.len() % SYMBOL_BYTES != 0 || bytes.len() / SYMBOL_BYTES > MAX_SYMBOLS {
        return None;
    }
    Some(
        bytes
            .chunks_exact(SYMBOL_BYTES)
            .map(|s| {
                (
                    u64::from_le_bytes(s[..8].try_into().expect("8 bytes")),
                    u32::from_le_bytes(s[8..12].try_into().expect("4 bytes")),
                    s[12],
                )
            })
            .collect(),
    )
}

/// The low bytes of bucket counts, as the first request carries them.
pub fn encode_buckets(buckets: &[u64]) -> Vec<u8> {
    buckets.iter().map(|&c| c as u8).collect()
}

/// What the responder makes of an initiator's symbols.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send me this many symbols.
    Need(usize),
    /// `theirs`: items only the initiator holds; `ours`: only the responder.
    Decoded(riblt::Difference),
}

/// Peel the initiator's symbols against ours (`mine`: at least as many). `buckets`:
/// theirs as sent (empty after the first request) and ours; `records`: set sizes,
/// theirs and ours.
pub fn respond(
    theirs: &[(u64, u32, u8)],
    mine: &[riblt::Symbol],
    buckets: (&[u8], &[u64]),
    records: (u64, u64),
) -> Outcome {
    let diffs = theirs
        .iter()
        .zip(mine)
        .map(|(t, m)| riblt::Diff::between(*t, m))
        .collect();
    let n = theirs.len();
    // No symbols say nothing (and the roots differ, or we would not be here).
    if n > 0
        && let Some(d) = riblt::peel(diffs)
    {
        return Outcome::Decoded(d);
    }
    let need = if buckets.0.len() == riblt::BUCKETS || n == 0 {
        // A hostile peer may claim any size.
        let delta = (records.0 as i128 - records.1 as i128).clamp(-(1 << 40), 1 << 40) as i64;
        let d = riblt::estimate(buckets.0, buckets.1, delta);
        ((d * NEED_PER_ITEM).ceil() as usize).max(NEED_FLOOR)
    } else {
        // The estimate was low (it is within ±20% nineteen times in twenty).
        n + n / 2
    };
    // Always more than was sent, so the initiator never sends the same again.
    Outcome::Need(need.max(n + 1).min(MAX_SYMBOLS))
}
