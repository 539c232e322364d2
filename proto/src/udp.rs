//! The UDP API's datagrams (SPEC "UDP API"), sans-IO: fragmenting a large response,
//! reassembling it on the client, and the anti-amplification rule with its cookie.

use std::collections::HashMap;
use std::net::SocketAddr;

use sha2::{Digest, Sha256};

/// A response up to this size goes as one plain JSON datagram.
pub const MAX_PLAIN: usize = 1200;
/// First byte of a fragment.
pub const FRAGMENT_TAG: u8 = 0xCF;
/// Tag, message number (u32), index (u16), count (u16).
pub const FRAGMENT_HEADER: usize = 9;
/// JSON bytes per fragment, so a fragment is at most MAX_PLAIN bytes on the wire.
pub const FRAGMENT_PAYLOAD: usize = MAX_PLAIN - FRAGMENT_HEADER;
/// To an address that has not shown it receives, at most this many times the bytes
/// it sent.
pub const AMPLIFICATION: usize = 3;

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
#[derive(Default)]
pub struct Reassembler {
    parts: HashMap<u32, (u16, HashMap<u16, Vec<u8>>)>,
}

impl Reassembler {
    /// Feed one datagram; returns a complete JSON message when one is in. Garbage and
    /// inconsistent fragments are dropped.
    pub fn push(&mut self, d: &[u8]) -> Option<Vec<u8>> {
        let Some(f) = parse_fragment(d) else {
            return (d.first() != Some(&FRAGMENT_TAG)).then(|| d.to_vec());
        };
        let entry = self
            .parts
            .entry(f.message_no)
            .or_insert_with(|| (f.count, HashMap::new()));
        if entry.0 != f.count {
            return None;
        }
        entry.1.insert(f.index, f.data.to_vec());
        if entry.1.len() < f.count as usize {
            return None;
        }
        let (count, mut parts) = self.parts.remove(&f.message_no)?;
        let mut out = Vec::new();
        for i in 0..count {
            out.extend_from_slice(&parts.remove(&i)?);
        }
        Some(out)
    }
}

/// Server side: which sources have shown that they receive at their address.
///
/// A cookie is `SHA-256(secret ‖ source ‖ epoch)` truncated to 16 bytes (hex),
/// valid in its epoch and the next; a request that carries a valid cookie marks the
/// source as validated for `validity` seconds. Nothing is stored for sources that
/// never return a cookie, so spoofed traffic costs no memory.
pub struct AmplificationGuard {
    secret: [u8; 32],
    epoch_secs: u64,
    validity: u64,
    max_sources: usize,
    validated: HashMap<SocketAddr, u64>,
}

impl AmplificationGuard {
    pub fn new(secret: [u8; 32]) -> Self {
        AmplificationGuard {
            secret,
            epoch_secs: 120,
            validity: 600,
            max_sources: 100_000,
            validated: HashMap::new(),
        }
    }

    pub fn cookie(&self, from: &SocketAddr, now: u64) -> String {
        self.cookie_in(from, now / self.epoch_secs)
    }

    fn cookie_in(&self, from: &SocketAddr, epoch: u64) -> String {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(from.to_string().as_bytes());
        h.update(epoch.to_be_bytes());
        hex::encode(&h.finalize()[..16])
    }

    /// Whether `from` counts as shown; a valid `cookie` makes it so.
    pub fn validated(&mut self, from: &SocketAddr, cookie: Option<&str>, now: u64) -> bool {
        if let Some(c) = cookie {
            let epoch = now / self.epoch_secs;
            let ok = c == self.cookie_in(from, epoch)
                || (epoch > 0 && c == self.cookie_in(from, epoch - 1));
            if ok {
                if self.validated.len() >= self.max_sources {
                    let validity = self.validity;
                    self.validated
                        .retain(|_, t| now.saturating_sub(*t) < validity);
                }
                if self.validated.len() < self.max_sources {
                    self.validated.insert(*from, now);
                }
                return true;
            }
        }
        self.validated
            .get(from)
            .is_some_and(|t| now.saturating_sub(*t) < self.validity)
    }
}
