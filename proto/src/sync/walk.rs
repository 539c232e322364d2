//! The trie walk: reconciliation as a stateless exchange over the Merkle trie, for
//! when the coded symbols of [`super::riblt`] cannot find the difference (too large,
//! or a peer's answer left the roots apart).
//!
//! The initiator sends [`opening`] (its root described as an
//! [`Item`]); each side answers every message with [`answer`], after applying the
//! records the message carried. An item says what the sender holds under a trie path:
//! a branch (its 16 child hashes, truncated to [`SHORT`] bytes: they are only
//! compared, never trusted), a single record, or nothing. The receiver compares with
//! its own view of that path and answers only for children that differ, one level
//! deeper, so each half round trip descends one level and a difference deep in a
//! million-slot trie is found in about three round trips. Where one side holds
//! nothing, the other sends the records themselves. Every item is about a strictly
//! deeper path than the one that caused it (or carries records), so it terminates.
//!
//! The responder keeps no state between messages: any message can be answered from
//! the current trie alone.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::merkle::{EMPTY, Hash, NibblePath, Node};
use crate::record::Record;

/// Bytes of a child hash in a [`Item::Branch`].
pub const SHORT: usize = 16;
/// Record bytes one answer carries at most; beyond it, subtrees are described instead.
pub const RECORD_BUDGET: usize = 4 << 20;
/// A reconciliation that has not ended after this many rounds is abandoned.
pub const MAX_ROUNDS: usize = 160;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    /// "My subtree at `path` holds two or more slots; here are its children."
    /// `bitmap` bit i: child i is non-empty; `hashes`: the non-empty ones, SHORT bytes each.
    Branch {
        path: ByteBuf,
        bitmap: u16,
        hashes: ByteBuf,
    },
    /// "Under `path` I hold exactly this record."
    Leaf { path: ByteBuf, record: ByteBuf },
    /// "I hold nothing under `path`."
    Empty { path: ByteBuf },
    /// Records the receiver lacks or holds an older version of.
    Records(Vec<ByteBuf>),
}

/// What reconciliation needs from a node's store (one consistent snapshot).
pub trait Replica {
    type Error;
    fn node(&mut self, path: &NibblePath) -> Result<Option<Node>, Self::Error>;
    /// Canonical bytes of the record in a slot.
    fn record(&mut self, slot: &Hash) -> Result<Option<Vec<u8>>, Self::Error>;
    /// All records whose slot hash lies under `path` (slot hash, canonical bytes), or
    /// `None` if together they are over `max_bytes`.
    #[allow(clippy::type_complexity)]
    fn records_under(
        &mut self,
        path: &NibblePath,
        max_bytes: usize,
    ) -> Result<Option<Vec<(Hash, Vec<u8>)>>, Self::Error>;
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError<E> {
    #[error("malformed sync message: {0}")]
    Malformed(&'static str),
    #[error("store: {0}")]
    Replica(E),
}

/// The first message of a reconciliation: my root, described.
pub fn opening<R: Replica>(r: &mut R) -> Result<Vec<Item>, SyncError<R::Error>> {
    Ok(vec![describe(r, &NibblePath::ROOT)?])
}

/// Records carried by a message, to verify and apply before calling [`answer`].
pub fn carried(items: &[Item]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    for item in items {
        match item {
            Item::Leaf { record, .. } => out.push(record.as_slice()),
            Item::Records(rs) => out.extend(rs.iter().map(|r| r.as_slice())),
            _ => {}
        }
    }
    out
}

/// Answer a message. `lost`: slots of carried records that lost to the version we
/// hold; ours are sent back so the sender converges too.
pub fn answer<R: Replica>(
    r: &mut R,
    items: &[Item],
    lost: &[Hash],
) -> Result<Vec<Item>, SyncError<R::Error>> {
    let mut out = Out {
        items: Vec::new(),
        records: Vec::new(),
        bytes: 0,
    };
    for slot in lost {
        if let Some(rec) = r.record(slot).map_err(SyncError::Replica)? {
            out.record(rec);
        }
    }
    for item in items {
        // Every item kind's records count against the budget; what is left
        // unanswered is found again by the next reconciliation.
        if out.bytes >= RECORD_BUDGET {
            break;
        }
        match item {
            Item::Records(_) => {}
            Item::Branch {
                path,
                bitmap,
                hashes,
            } => {
                let path = parse_path(path)?;
                let theirs = parse_children(*bitmap, hashes)?;
                compare_branch(r, &mut out, &path, &theirs)?;
            }
            Item::Leaf { path, record } => {
                let path = parse_path(path)?;
                let rec = Record::decode(record).map_err(|_| SyncError::Malformed("bad record"))?;
                let slot = rec.slot().hash();
                if !path.covers(&slot) {
                    return Err(SyncError::Malformed("leaf record is not under its path"));
                }
                send_all(r, &mut out, &path, Some(slot))?;
            }
            Item::Empty { path } => send_all(r, &mut out, &parse_path(path)?, None)?,
        }
    }
    if !out.records.is_empty() {
        out.items.push(Item::Records(out.records));
    }
    Ok(out.items)
}

struct Out {
    items: Vec<Item>,
    records: Vec<ByteBuf>,
    bytes: usize,
}

impl Out {
    fn record(&mut self, rec: Vec<u8>) {
        self.bytes += rec.len();
        self.records.push(ByteBuf::from(rec));
    }

    fn item(&mut self, item: Item) {
        if let Item::Leaf { record, .. } = &item {
            self.bytes += record.len();
        }
        self.items.push(item);
    }
}

/// My subtree at `path`, as the trie has it (a leaf may sit above `path`).
#[allow(clippy::large_enum_variant)] // short-lived, on the stack
enum View {
    Branch([Hash; 16]),
    Leaf(Hash),
    Empty,
}

fn view<R: Replica>(r: &mut R, path: &NibblePath) -> Result<View, SyncError<R::Error>> {
    match r.node(path).map_err(SyncError::Replica)? {
        Some(Node::Branch { children }) => return Ok(View::Branch(children)),
        Some(Node::Leaf { slot, .. }) => return Ok(View::Leaf(slot)),
        None => {}
    }
    for depth in (0..path.len()).rev() {
        match r.node(&path.prefix(depth)).map_err(SyncError::Replica)? {
            Some(Node::Leaf { slot, .. }) if path.covers(&slot) => return Ok(View::Leaf(slot)),
            Some(_) => return Ok(View::Empty),
            None => {}
        }
    }
    Ok(View::Empty)
}

fn describe<R: Replica>(r: &mut R, path: &NibblePath) -> Result<Item, SyncError<R::Error>> {
    let key = ByteBuf::from(path.to_key());
    Ok(match view(r, path)? {
        View::Branch(children) => {
            let mut bitmap = 0u16;
            let mut hashes = Vec::new();
            for (i, c) in children.iter().enumerate() {
                if *c != EMPTY {
                    bitmap |= 1 << i;
                    hashes.extend_from_slice(&c[..SHORT]);
                }
            }
            Item::Branch {
                path: key,
                bitmap,
                hashes: ByteBuf::from(hashes),
            }
        }
        View::Leaf(slot) => Item::Leaf {
            path: key,
            record: ByteBuf::from(must_record(r, &slot)?),
        },
        View::Empty => Item::Empty { path: key },
    })
}

fn compare_branch<R: Replica>(
    r: &mut R,
    out: &mut Out,
    path: &NibblePath,
    theirs: &[Option<[u8; SHORT]>; 16],
) -> Result<(), SyncError<R::Error>> {
    if path.len() >= 64 {
        return Err(SyncError::Malformed("branch below the deepest level"));
    }
    match view(r, path)? {
        View::Branch(mine) => {
            for (i, their) in theirs.iter().enumerate() {
                let my = (mine[i] != EMPTY).then(|| short(&mine[i]));
                if my == *their {
                    continue;
                }
                let child = path.child(i);
                match (their, my) {
                    (_, None) => out.items.push(Item::Empty {
                        path: ByteBuf::from(child.to_key()),
                    }),
                    (None, Some(_)) => send_all(r, out, &child, None)?,
                    (Some(_), Some(_)) => {
                        let d = describe(r, &child)?;
                        out.item(d);
                    }
                }
            }
        }
        View::Leaf(slot) => {
            let mine = crate::merkle::nibble(&slot, path.len());
            for (i, their) in theirs.iter().enumerate() {
                let child = path.child(i);
                if their.is_none() {
                    if i == mine {
                        out.record(must_record(r, &slot)?);
                    }
                } else if i == mine {
                    let record = ByteBuf::from(must_record(r, &slot)?);
                    out.item(Item::Leaf {
                        path: ByteBuf::from(child.to_key()),
                        record,
                    });
                } else {
                    out.items.push(Item::Empty {
                        path: ByteBuf::from(child.to_key()),
                    });
                }
            }
        }
        View::Empty => {
            for (i, their) in theirs.iter().enumerate() {
                if their.is_some() {
                    out.items.push(Item::Empty {
                        path: ByteBuf::from(path.child(i).to_key()),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Send every record under `path` (but `except`), or describe the subtree when the
/// records would not fit in this answer.
fn send_all<R: Replica>(
    r: &mut R,
    out: &mut Out,
    path: &NibblePath,
    except: Option<Hash>,
) -> Result<(), SyncError<R::Error>> {
    let room = RECORD_BUDGET.saturating_sub(out.bytes);
    match r.records_under(path, room).map_err(SyncError::Replica)? {
        Some(records) => {
            for (slot, rec) in records {
                if Some(slot) != except {
                    out.record(rec);
                }
            }
        }
        None => {
            let d = describe(r, path)?;
            out.item(d);
        }
    }
    Ok(())
}

fn must_record<R: Replica>(r: &mut R, slot: &Hash) -> Result<Vec<u8>, SyncError<R::Error>> {
    // The trie and the records are written in one transaction, so a leaf without its
    // record means the snapshot is broken; answer nothing rather than guess.
    r.record(slot)
        .map_err(SyncError::Replica)?
        .ok_or(SyncError::Malformed(
            "trie leaf without a record in the local store",
        ))
}

fn short(h: &Hash) -> [u8; SHORT] {
    h[..SHORT].try_into().expect("SHORT <= 32")
}

fn parse_path<E>(bytes: &[u8]) -> Result<NibblePath, SyncError<E>> {
    NibblePath::from_key(bytes).ok_or(SyncError::Malformed("bad path"))
}

fn parse_children<E>(
    bitmap: u16,
    hashes: &[u8],
) -> Result<[Option<[u8; SHORT]>; 16], SyncError<E>> {
    if hashes.len() != SHORT * bitmap.count_ones() as usize {
        return Err(SyncError::Malformed(
            "branch hashes do not match the bitmap",
        ));
    }
    let mut out = [None; 16];
    let mut chunks = hashes.chunks_exact(SHORT);
    for (i, slot) in out.iter_mut().enumerate() {
        if bitmap & (1 << i) != 0 {
            *slot = Some(
                chunks
                    .next()
                    .expect("length checked")
                    .try_into()
                    .expect("SHORT bytes"),
            );
        }
    }
    Ok(out)
}
