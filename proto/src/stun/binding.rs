//! The Binding method: what a server answers, what a client sends and reads.

use std::net::SocketAddr;

use ed25519_dalek::{Signature, VerifyingKey};

use super::BINDING;
use super::attribute::{Attribute, attr};
use super::error::StunError;
use super::message::{Class, Message};

/// What the server learned from a request carrying a valid peer signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenPeer {
    /// libp2p peer id bytes.
    pub peer_id: Vec<u8>,
    /// The source address the request came from (the peer's NAT mapping).
    pub observed: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BindingAnswer {
    /// Bytes to send back to the source, if any.
    pub reply: Option<Vec<u8>>,
    pub peer: Option<ProvenPeer>,
}

/// The bytes a node signs to prove its peer id in a request.
pub fn peer_signing_message(txid: &[u8; 12]) -> Vec<u8> {
    [&b"cirrus-stun-v1"[..], txid].concat()
}

/// A Binding request; with `peer`, it carries the peer id and the signature over
/// [`peer_signing_message`].
pub fn binding_request(txid: [u8; 12], software: &str, peer: Option<(&[u8], &[u8])>) -> Vec<u8> {
    let mut m =
        Message::new(Class::Request, BINDING, txid).with(Attribute::Software(software.into()));
    if let Some((id, sig)) = peer {
        m = m
            .with(Attribute::PeerId(id.to_vec()))
            .with(Attribute::PeerSignature(sig.to_vec()));
    }
    m.encode(true)
}

/// A Binding indication: keeps a NAT mapping open, and is the hole-punching packet.
pub fn binding_indication(txid: [u8; 12]) -> Vec<u8> {
    Message::new(Class::Indication, BINDING, txid).encode(true)
}

/// A server answers a request with at most this many times its size, whatever
/// the request: the source may be spoofed, and a bigger answer would make the
/// server an amplifier toward whoever it names (QUIC's factor, RFC 9000 §8).
pub const AMPLIFICATION: usize = 3;

/// The server side: answer one message that arrived from `from`. Malformed input,
/// anything that is not a request and methods other than Binding get no reply
/// (§6.3: silently discarded). A success carries XOR-MAPPED-ADDRESS and FINGERPRINT,
/// then MAPPED-ADDRESS and SOFTWARE as far as [`AMPLIFICATION`] allows (a request
/// of a stock client always leaves room for all four).
pub fn handle_binding(bytes: &[u8], from: SocketAddr, software: &str) -> BindingAnswer {
    let Ok(msg) = Message::decode(bytes) else {
        return BindingAnswer::default();
    };
    if msg.class != Class::Request || msg.method != BINDING {
        return BindingAnswer::default();
    }
    let budget = AMPLIFICATION * bytes.len();
    let fits = |reply: Vec<u8>| (reply.len() <= budget).then_some(reply);
    let unknown: Vec<u16> = msg
        .attributes
        .iter()
        .filter_map(|a| match a {
            Attribute::Other { typ, .. } if attr::comprehension_required(*typ) => Some(*typ),
            _ => None,
        })
        .collect();
    if !unknown.is_empty() {
        let reply = Message::new(Class::Error, msg.method, msg.transaction_id)
            .with(Attribute::ErrorCode {
                code: 420,
                reason: "Unknown Attribute".into(),
            })
            .with(Attribute::UnknownAttributes(unknown))
            .encode(true);
        return BindingAnswer {
            reply: fits(reply),
            peer: None,
        };
    }
    let base = Message::new(Class::Success, BINDING, msg.transaction_id)
        .with(Attribute::XorMappedAddress(from));
    let full = base
        .clone()
        .with(Attribute::MappedAddress(from))
        .with(Attribute::Software(software.into()))
        .encode(true);
    let reply = fits(full)
        .or_else(|| {
            fits(
                base.clone()
                    .with(Attribute::MappedAddress(from))
                    .encode(true),
            )
        })
        .unwrap_or_else(|| base.encode(true));
    let peer = proven_peer(&msg).map(|peer_id| ProvenPeer {
        peer_id,
        observed: from,
    });
    BindingAnswer {
        reply: Some(reply),
        peer,
    }
}

/// The peer id of a request whose Cirrus signature verifies, if any.
fn proven_peer(msg: &Message) -> Option<Vec<u8>> {
    let Some(Attribute::PeerId(id)) = msg.get(attr::CIRRUS_PEER_ID) else {
        return None;
    };
    let Some(Attribute::PeerSignature(sig)) = msg.get(attr::CIRRUS_PEER_SIGNATURE) else {
        return None;
    };
    let key = ed25519_of_peer_id(id)?;
    let sig = Signature::from_slice(sig).ok()?;
    key.verify_strict(&peer_signing_message(&msg.transaction_id), &sig)
        .ok()?;
    Some(id.clone())
}

/// An ed25519 libp2p peer id is the identity multihash of the protobuf-encoded
/// public key: `00 24` (identity, 36 bytes) `08 01` (type Ed25519) `12 20` (32 bytes).
fn ed25519_of_peer_id(id: &[u8]) -> Option<VerifyingKey> {
    let key = id.strip_prefix(&[0x00, 0x24, 0x08, 0x01, 0x12, 0x20])?;
    VerifyingKey::from_bytes(key.try_into().ok()?).ok()
}

/// The client side: the mapped address in the answer to our request `txid`.
pub fn parse_binding_response(bytes: &[u8], txid: &[u8; 12]) -> Result<SocketAddr, StunError> {
    let msg = Message::decode(bytes)?;
    if msg.transaction_id != *txid {
        return Err(StunError::WrongTransaction);
    }
    match msg.class {
        Class::Success => {}
        Class::Error => {
            return Err(match msg.get(attr::ERROR_CODE) {
                Some(Attribute::ErrorCode { code, reason }) => StunError::ServerError {
                    code: *code,
                    reason: reason.clone(),
                },
                _ => StunError::Malformed("error response without ERROR-CODE"),
            });
        }
        _ => return Err(StunError::Malformed("not a response")),
    }
    let xor = msg.attributes.iter().find_map(|a| match a {
        Attribute::XorMappedAddress(s) => Some(*s),
        _ => None,
    });
    let plain = msg.attributes.iter().find_map(|a| match a {
        Attribute::MappedAddress(s) => Some(*s),
        _ => None,
    });
    xor.or(plain).ok_or(StunError::NoAddress)
}
