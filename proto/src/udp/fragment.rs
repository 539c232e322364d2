//! Fragments (SPEC "UDP API"): a response larger than one plain datagram goes as
//! numbered fragments, which the client puts back together in any order.

use std::collections::HashMap;

use super::{FRAGMENT_HEADER, FRAGMENT_PAYLOAD, FRAGMENT_TAG, MAX_PLAIN};

/// Messages a [`Reassembler`] holds unfinished at once. A further one pushes out
/// the one with the fewest fragments in (the newest of those), so a sender that
/// never finishes its messages costs bounded memory, and a message well under way
/// survives noise.
pub const MAX_PARTIAL: usize = 8;

/// Bytes on the wire of `json` once framed: itself when it fits one datagram, else
/// its fragments with their headers.
pub fn wire_len(json: usize) -> usize {
    if json <= MAX_PLAIN {
        json
    } else {
        json + json.div_ceil(FRAGMENT_PAYLOAD) * FRAGMENT_HEADER
    }
}

/// Split a response into datagrams: one plain datagram, or fragments.
pub fn datagrams(message_no: u32, json: &[u8]) -> Vec<Vec<u8>> {
    if json.len() <= MAX_PLAIN {
        return vec![json.to_vec()];
    }
    let chunks: Vec<&[u8]> = json.chunks(FRAGMENT_PAYLOAD).collect();
    let count = chunks.len().min(u16::MAX as usize) as u16;
    chunks
        .into_iter()
        .take(count as usize)
        .enumerate()
        .map(|(i, c)| {
            let mut d = Vec::with_capacity(FRAGMENT_HEADER + c.len());
            d.push(FRAGMENT_TAG);
            d.extend_from_slice(&message_no.to_be_bytes());
            d.extend_from_slice(&(i as u16).to_be_bytes());
            d.extend_from_slice(&count.to_be_bytes());
            d.extend_from_slice(c);
            d
        })
        .collect()
}

/// A parsed fragment header and its slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment<'a> {
    pub message_no: u32,
    pub index: u16,
    pub count: u16,
    pub data: &'a [u8],
}

pub fn parse_fragment(d: &[u8]) -> Option<Fragment<'_>> {
    if d.len() < FRAGMENT_HEADER || d[0] != FRAGMENT_TAG {
        return None;
    }
    let message_no = u32::from_be_bytes(d[1..5].try_into().ok()?);
    let index = u16::from_be_bytes([d[5], d[6]]);
    let count = u16::from_be_bytes([d[7], d[8]]);
    (count > 0 && index < count).then_some(Fragment {
        message_no,
        index,
        count,
        data: &d[FRAGMENT_HEADER..],
    })
}

/// Client side: collects datagrams until a whole response is in.
/// Fragment count, order begun, fragments in by index.
type Partial = (u16, u64, HashMap<u16, Vec<u8>>);

#[derive(Debug, Default)]
pub struct Reassembler {
    /// By message number.
    parts: HashMap<u32, Partial>,
    started: u64,
}

impl Reassembler {
    /// Messages begun and not yet whole.
    pub fn unfinished(&self) -> usize {
        self.parts.len()
    }

    /// Feed one datagram; returns a complete JSON message when one is in. Garbage and
    /// inconsistent fragments are dropped.
    pub fn push(&mut self, d: &[u8]) -> Option<Vec<u8>> {
        let Some(f) = parse_fragment(d) else {
            return (d.first() != Some(&FRAGMENT_TAG)).then(|| d.to_vec());
        };
        if !self.parts.contains_key(&f.message_no) && self.parts.len() >= MAX_PARTIAL {
            let least = self
                .parts
                .iter()
                .min_by_key(|(_, (_, started, got))| (got.len(), std::cmp::Reverse(*started)))
                .map(|(no, _)| *no);
            if let Some(no) = least {
                self.parts.remove(&no);
            }
        }
        self.started += 1;
        let started = self.started;
        let entry = self
            .parts
            .entry(f.message_no)
            .or_insert_with(|| (f.count, started, HashMap::new()));
        if entry.0 != f.count {
            return None;
        }
        entry.2.insert(f.index, f.data.to_vec());
        if entry.2.len() < f.count as usize {
            return None;
        }
        let (count, _, mut parts) = self.parts.remove(&f.message_no)?;
        let mut out = Vec::new();
        for i in 0..count {
            out.extend_from_slice(&parts.remove(&i)?);
        }
        Some(out)
    }
}
