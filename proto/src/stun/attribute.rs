//! STUN attributes (RFC 8489 §14) and the project's own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::MAGIC_COOKIE;
use super::error::StunError;

/// Attribute types.
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000a;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
    /// Cirrus: the requesting node's libp2p peer id (bytes). Comprehension-optional
    /// (0xC000-0xFFFF), so stock servers ignore it.
    pub const CIRRUS_PEER_ID: u16 = 0xc1a0;
    /// Cirrus: ed25519 signature by that peer's key over
    /// `"cirrus-stun-v1" ‖ transaction id`.
    pub const CIRRUS_PEER_SIGNATURE: u16 = 0xc1a1;

    /// Comprehension-required attributes (type < 0x8000) must be understood or the
    /// request is refused with 420 (§7.3.1).
    pub fn comprehension_required(t: u16) -> bool {
        t < 0x8000
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    MappedAddress(SocketAddr),
    XorMappedAddress(SocketAddr),
    Software(String),
    ErrorCode {
        code: u16,
        reason: String,
    },
    UnknownAttributes(Vec<u16>),
    PeerId(Vec<u8>),
    PeerSignature(Vec<u8>),
    /// Anything else, kept as it came.
    Other {
        typ: u16,
        value: Vec<u8>,
    },
}

impl Attribute {
    pub fn typ(&self) -> u16 {
        match self {
            Attribute::MappedAddress(_) => attr::MAPPED_ADDRESS,
            Attribute::XorMappedAddress(_) => attr::XOR_MAPPED_ADDRESS,
            Attribute::Software(_) => attr::SOFTWARE,
            Attribute::ErrorCode { .. } => attr::ERROR_CODE,
            Attribute::UnknownAttributes(_) => attr::UNKNOWN_ATTRIBUTES,
            Attribute::PeerId(_) => attr::CIRRUS_PEER_ID,
            Attribute::PeerSignature(_) => attr::CIRRUS_PEER_SIGNATURE,
            Attribute::Other { typ, .. } => *typ,
        }
    }
}

/// Text attributes are at most 763 bytes (SOFTWARE, reason phrases: 128 characters).
const MAX_TEXT: usize = 763;

pub(super) fn encode_attribute(a: &Attribute, txid: &[u8; 12], out: &mut Vec<u8>) {
    let mut v = Vec::new();
    match a {
        Attribute::MappedAddress(addr) => address(*addr, None, &mut v),
        Attribute::XorMappedAddress(addr) => address(*addr, Some(txid), &mut v),
        Attribute::Software(s) => v.extend_from_slice(truncate_utf8(s, MAX_TEXT).as_bytes()),
        Attribute::ErrorCode { code, reason } => {
            v.extend_from_slice(&[0, 0, ((code / 100) & 0x7) as u8, (code % 100) as u8]);
            v.extend_from_slice(truncate_utf8(reason, MAX_TEXT).as_bytes());
        }
        Attribute::UnknownAttributes(list) => {
            for t in list {
                v.extend_from_slice(&t.to_be_bytes());
            }
        }
        Attribute::PeerId(b) | Attribute::PeerSignature(b) | Attribute::Other { value: b, .. } => {
            v.extend_from_slice(&b[..b.len().min(u16::MAX as usize)])
        }
    }
    out.extend_from_slice(&a.typ().to_be_bytes());
    out.extend_from_slice(&(v.len() as u16).to_be_bytes());
    out.extend_from_slice(&v);
    out.resize(out.len() + (4 - v.len() % 4) % 4, 0);
}

pub(super) fn decode_attribute(
    typ: u16,
    v: &[u8],
    txid: &[u8; 12],
) -> Result<Attribute, StunError> {
    Ok(match typ {
        attr::MAPPED_ADDRESS => Attribute::MappedAddress(read_address(v, None)?),
        attr::XOR_MAPPED_ADDRESS => Attribute::XorMappedAddress(read_address(v, Some(txid))?),
        attr::SOFTWARE => Attribute::Software(text(v)?),
        attr::ERROR_CODE => {
            if v.len() < 4 {
                return Err(StunError::Malformed("ERROR-CODE too short"));
            }
            let class = (v[2] & 0x7) as u16;
            let number = v[3] as u16;
            if !(3..=6).contains(&class) || number > 99 {
                return Err(StunError::Malformed("ERROR-CODE out of range"));
            }
            Attribute::ErrorCode {
                code: class * 100 + number,
                reason: text(&v[4..])?,
            }
        }
        attr::UNKNOWN_ATTRIBUTES => {
            if v.len() % 2 != 0 {
                return Err(StunError::Malformed("UNKNOWN-ATTRIBUTES of odd length"));
            }
            Attribute::UnknownAttributes(
                v.chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect(),
            )
        }
        attr::CIRRUS_PEER_ID => Attribute::PeerId(v.to_vec()),
        attr::CIRRUS_PEER_SIGNATURE => Attribute::PeerSignature(v.to_vec()),
        typ => Attribute::Other {
            typ,
            value: v.to_vec(),
        },
    })
}

fn text(v: &[u8]) -> Result<String, StunError> {
    if v.len() > MAX_TEXT {
        return Err(StunError::Malformed("text attribute too long"));
    }
    String::from_utf8(v.to_vec()).map_err(|_| StunError::Malformed("text attribute is not UTF-8"))
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// MAPPED-ADDRESS / XOR-MAPPED-ADDRESS value (§14.1, §14.2).
fn address(addr: SocketAddr, xor: Option<&[u8; 12]>, v: &mut Vec<u8>) {
    let key = xor_key(xor);
    let port = addr.port()
        ^ if xor.is_some() {
            (MAGIC_COOKIE >> 16) as u16
        } else {
            0
        };
    match addr.ip() {
        IpAddr::V4(ip) => {
            v.extend_from_slice(&[0, 1]);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend(ip.octets().iter().zip(&key).map(|(a, k)| a ^ k));
        }
        IpAddr::V6(ip) => {
            v.extend_from_slice(&[0, 2]);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend(ip.octets().iter().zip(&key).map(|(a, k)| a ^ k));
        }
    }
}

fn read_address(v: &[u8], xor: Option<&[u8; 12]>) -> Result<SocketAddr, StunError> {
    if v.len() < 4 {
        return Err(StunError::Malformed("address attribute too short"));
    }
    let key = xor_key(xor);
    let port = u16::from_be_bytes([v[2], v[3]])
        ^ if xor.is_some() {
            (MAGIC_COOKIE >> 16) as u16
        } else {
            0
        };
    let raw = &v[4..];
    let ip = match (v[1], raw.len()) {
        (1, 4) => {
            let o: [u8; 4] = std::array::from_fn(|i| raw[i] ^ key[i]);
            IpAddr::V4(Ipv4Addr::from(o))
        }
        (2, 16) => {
            let o: [u8; 16] = std::array::from_fn(|i| raw[i] ^ key[i]);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return Err(StunError::Malformed("bad address family or length")),
    };
    Ok(SocketAddr::new(ip, port))
}

/// The XOR key: magic cookie, then the transaction id (IPv6 uses all 16 bytes).
fn xor_key(xor: Option<&[u8; 12]>) -> [u8; 16] {
    let mut k = [0u8; 16];
    if let Some(txid) = xor {
        k[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        k[4..].copy_from_slice(txid);
    }
    k
}
