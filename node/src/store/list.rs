//! `list`: range scans with an opaque cursor.
//!
//! With an author, the scan runs over the `by_author` index (order: kind, key);
//! without, over the `by_key` index (order: kind, key, author). Each (kind, prefix)
//! pair is one contiguous range. The cursor is hex of a table tag and the last key returned, so a
//! page starts strictly after it and pages never repeat or skip a record, even when
//! records are written between pages. A page also ends early once its keys and
//! values pass [`PAGE_BYTES`], so one request never builds a huge answer.

use std::ops::Bound;

use cirrus_proto::record::{Author, Kind};
use redb::ReadableDatabase;

use super::tables::{
    BY_AUTHOR, BY_KEY, SLOTS, author_prefix, slot_from_author_key, slot_from_index_key,
};
use super::{Store, StoreError, Stored, read_stored};

const TAG_AUTHOR: u8 = b'a';
const TAG_INDEX: u8 = b'k';

#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub author: Option<Author>,
    pub kind: Option<Kind>,
    pub prefix: String,
    pub after: Option<String>,
    pub limit: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("invalid cursor: {0}")]
    Cursor(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<redb::StorageError> for ListError {
    fn from(e: redb::StorageError) -> Self {
        ListError::Store(e.into())
    }
}

impl Store {
    /// One page of records matching `q`, and the cursor of the next page if any.
    pub fn list(&self, q: &ListQuery) -> Result<(Vec<Stored>, Option<String>), ListError> {
        let kinds = match q.kind {
            Some(k) => vec![k],
            None => vec![Kind::Doc, Kind::Rating],
        };
        let (tag, prefixes): (u8, Vec<Vec<u8>>) = match &q.author {
            Some(author) => (
                TAG_AUTHOR,
                kinds
                    .iter()
                    .map(|k| [author_prefix(author, *k), q.prefix.as_bytes().to_vec()].concat())
                    .collect(),
            ),
            None => (
                TAG_INDEX,
                kinds
                    .iter()
                    .map(|k| [&[k.byte()][..], q.prefix.as_bytes()].concat())
                    .collect(),
            ),
        };
        let after = q
            .after
            .as_deref()
            .map(|c| decode_cursor(c, tag))
            .transpose()?;

        let txn = self.db()?.begin_read().map_err(StoreError::from)?;
        let records = txn.open_table(SLOTS).map_err(StoreError::from)?;
        let index = match tag {
            TAG_AUTHOR => txn.open_table(BY_AUTHOR),
            _ => txn.open_table(BY_KEY),
        }
        .map_err(StoreError::from)?;
        let mut page: Vec<(Vec<u8>, Stored)> = Vec::with_capacity(q.limit + 1);
        let (mut bytes, mut more) = (0usize, false);
        'scan: for p in &prefixes {
            let start = match &after {
                Some(k) if k.as_slice() >= p.as_slice() => Bound::Excluded(k.as_slice()),
                _ => Bound::Included(p.as_slice()),
            };
            for entry in index.range::<&[u8]>((start, Bound::Unbounded))? {
                let (k, _) = entry?;
                let k = k.value();
                if !k.starts_with(p) {
                    break;
                }
                let slot = match &q.author {
                    Some(author) => slot_from_author_key(author, k),
                    None => slot_from_index_key(k),
                }
                .ok_or_else(|| StoreError::Corrupt("bad index key".into()))?;
                let Some(stored) = read_stored(&records, &slot.hash())? else {
                    // Under an author prefix, another author's entry names a slot
                    // that does not exist; under `by_key` every entry has its record.
                    if q.author.is_some() {
                        continue;
                    }
                    return Err(StoreError::Corrupt("index entry without record".into()).into());
                };
                bytes += size(&stored);
                page.push((k.to_vec(), stored));
                // One record past what the page may hold: it starts the next page.
                if page.len() > q.limit || (page.len() > 1 && bytes > PAGE_BYTES) {
                    more = true;
                    break 'scan;
                }
            }
        }
        let next = if more {
            page.pop();
            page.last().map(|(k, _)| encode_cursor(tag, k))
        } else {
            None
        };
        Ok((page.into_iter().map(|(_, s)| s).collect(), next))
    }
}

/// Key and value bytes in one page at most, as JSON writes them: a page of 1000
/// records of 64 KiB would otherwise be hundreds of megabytes built in memory for
/// one request, and escaping can make a value six times its size.
pub const PAGE_BYTES: usize = 1 << 20;

fn size(s: &Stored) -> usize {
    json_len(&s.record.key) + s.record.value.as_deref().map_or(0, json_len)
}

/// Bytes of `s` as a JSON string body: `"` and `\` take two, control characters
/// up to six (`\u00XX`).
fn json_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

fn encode_cursor(tag: u8, key: &[u8]) -> String {
    let mut c = vec![tag];
    c.extend_from_slice(key);
    hex::encode(c)
}

fn decode_cursor(c: &str, tag: u8) -> Result<Vec<u8>, ListError> {
    let bytes = hex::decode(c).map_err(|_| ListError::Cursor("not hex"))?;
    match bytes.split_first() {
        Some((t, key)) if *t == tag => Ok(key.to_vec()),
        Some(_) => Err(ListError::Cursor(
            "it belongs to a query with a different author filter",
        )),
        None => Err(ListError::Cursor("empty")),
    }
}
