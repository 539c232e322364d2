//! Announcements on `cirrus/announce/2`: a node's root and STUN data, signed by the
//! node inside the message.
//!
//! Gossip messages carry no author (gossipsub's anonymous mode): records are signed
//! by their authors already, and checking a gossipsub envelope signature on every
//! copy received was a third of a node's CPU in the propagation benchmark. An
//! announcement is the one message whose origin matters (it says what a peer holds
//! and where its NAT maps it), so it carries its own signature, checked once per
//! announcement rather than once per copy of every record.
//!
//! Wire: a 64-byte ed25519 signature, then the body, JSON:
//! `{"key": hex of the protobuf public key, "root": hex, "records": n, "at": unix_ms,
//! "stunPort": n, "stun": {...}}`. The signature is over [`DOMAIN`] then the body.

use libp2p::PeerId;
use libp2p::identity::{KeyType, Keypair, PublicKey};
use serde_json::Value;

/// Separates these signatures from any other use of a node's key.
pub const DOMAIN: &[u8] = b"cirrus-announce/2\n";
const SIG_LEN: usize = 64;

/// An announcement whose signature verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Announce {
    pub from: PeerId,
    /// Unix milliseconds at the announcer; newer replaces older.
    pub at: u64,
    pub root: String,
    pub stun_port: Option<u16>,
    pub stun: Option<Value>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnnounceError {
    #[error("announcement too short")]
    Short,
    #[error("announcement body is not a JSON object with key, root and at")]
    Body,
    #[error("announcement key is not an ed25519 public key")]
    Key,
    #[error("announcement signature does not verify")]
    Signature,
}

/// Sign `body` (a JSON object without `key`) with `key`.
pub fn seal(key: &Keypair, mut body: Value) -> Vec<u8> {
    body["key"] = hex::encode(key.public().encode_protobuf()).into();
    let body = body.to_string().into_bytes();
    let sig = key
        .sign(&[DOMAIN, &body].concat())
        .expect("ed25519 signing does not fail");
    [sig, body].concat()
}

/// Check an announcement's signature and read it.
pub fn open(data: &[u8]) -> Result<Announce, AnnounceError> {
    if data.len() < SIG_LEN {
        return Err(AnnounceError::Short);
    }
    let (sig, body) = data.split_at(SIG_LEN);
    let v: Value = serde_json::from_slice(body).map_err(|_| AnnounceError::Body)?;
    let key = v
        .get("key")
        .and_then(Value::as_str)
        .and_then(|k| hex::decode(k).ok())
        .ok_or(AnnounceError::Body)?;
    let key = PublicKey::try_decode_protobuf(&key).map_err(|_| AnnounceError::Key)?;
    if key.key_type() != KeyType::Ed25519 {
        return Err(AnnounceError::Key);
    }
    if !key.verify(&[DOMAIN, body].concat(), sig) {
        return Err(AnnounceError::Signature);
    }
    let root = v
        .get("root")
        .and_then(Value::as_str)
        .filter(|r| r.len() == 64 && r.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or(AnnounceError::Body)?;
    let at = v
        .get("at")
        .and_then(Value::as_u64)
        .ok_or(AnnounceError::Body)?;
    Ok(Announce {
        from: key.to_peer_id(),
        at,
        root: root.to_string(),
        stun_port: v
            .get("stunPort")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok()),
        stun: v.get("stun").filter(|s| s.is_object()).cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body() -> Value {
        json!({"root": "ab".repeat(32), "records": 3, "at": 1_700_000_000_000u64,
               "stunPort": 38084, "stun": {"nat": "none"}})
    }

    #[test]
    fn a_sealed_announcement_opens_as_its_signer() {
        let key = Keypair::generate_ed25519();
        let a = open(&seal(&key, body())).unwrap();
        assert_eq!(a.from, key.public().to_peer_id());
        assert_eq!(a.root, "ab".repeat(32));
        assert_eq!(a.at, 1_700_000_000_000);
        assert_eq!(a.stun_port, Some(38084));
        assert_eq!(a.stun, Some(json!({"nat": "none"})));
    }

    #[test]
    fn any_change_or_another_key_is_refused() {
        let key = Keypair::generate_ed25519();
        let sealed = seal(&key, body());
        // Every single flipped bit, in the signature and in the body.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(open(&bad).is_err(), "byte {i} flipped still opened");
        }
        // A body re-signed by another key names that key, not the first.
        let other = Keypair::generate_ed25519();
        let theirs = open(&seal(&other, body())).unwrap();
        assert_ne!(theirs.from, key.public().to_peer_id());
        // Someone else's key in the body, our signature: refused.
        let (sig, _) = sealed.split_at(SIG_LEN);
        let mut forged = body();
        forged["key"] = hex::encode(other.public().encode_protobuf()).into();
        let forged = [sig, forged.to_string().as_bytes()].concat();
        assert_eq!(open(&forged), Err(AnnounceError::Signature));
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        for data in [
            &b""[..],
            &[0u8; 63][..],
            &[0u8; 64][..],
            &[[0u8; 64].as_slice(), b"{}"].concat()[..],
            &[[0u8; 64].as_slice(), br#"{"key":"zz"}"#].concat()[..],
            &[[0u8; 64].as_slice(), br#"{"key":"00"}"#].concat()[..],
        ] {
            assert!(open(data).is_err());
        }
    }
}
