//! Announcements on `cirrus/announce/3`: a node's root and STUN data, signed by the
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
//! `{"key": hex of the protobuf public key, "root": hex, "records": n, "epoch": n,
//! "position": n, "at": unix_ms, "stunPort": n, "stun": {the stun object, typed}}`.
//! `root` is the node's root once it had applied `position` writes in the run that
//! `epoch` names (or more: see sessions), which tells a peer with the same root that
//! it holds every write the node had then. The signature is over
//! [`DOMAIN`] then the body. The same bytes answer a peer's hello.

use cirrus_proto::api::StunInfo;
use cirrus_proto::merkle::Hash;
use libp2p::PeerId;
use libp2p::identity::{KeyType, Keypair, PublicKey};
use serde::{Deserialize, Serialize};

/// Separates these signatures from any other use of a node's key.
pub const DOMAIN: &[u8] = b"cirrus-announce/3\n";
const SIG_LEN: usize = 64;
/// Largest announcement taken: a node lists one mapping per peer and transport, so
/// even at [`StunInfo::MAX_MAPPINGS`] it stays well under this.
pub const MAX_BYTES: usize = 64 << 10;

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Body {
    #[serde(with = "cirrus_proto::hexser")]
    pub root: Hash,
    pub records: u64,
    /// The announcer's run (random per start) and its count of applied writes in
    /// that run, read before `root`.
    pub epoch: u32,
    pub position: u64,
    /// Unix milliseconds at the announcer; newer replaces older.
    pub at: u64,
    pub stun_port: u16,
    pub stun: StunInfo,
}

/// The wire form: the body and the announcer's key (hex of its protobuf encoding).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Sealed {
    key: String,
    #[serde(with = "cirrus_proto::hexser")]
    root: Hash,
    records: u64,
    epoch: u32,
    position: u64,
    at: u64,
    stun_port: u16,
    stun: StunInfo,
}

impl Sealed {
    fn new(key: &Keypair, b: Body) -> Sealed {
        Sealed {
            key: hex::encode(key.public().encode_protobuf()),
            root: b.root,
            records: b.records,
            epoch: b.epoch,
            position: b.position,
            at: b.at,
            stun_port: b.stun_port,
            stun: b.stun,
        }
    }

    fn body(self) -> Body {
        Body {
            root: self.root,
            records: self.records,
            epoch: self.epoch,
            position: self.position,
            at: self.at,
            stun_port: self.stun_port,
            stun: self.stun,
        }
    }
}

/// An announcement whose signature verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Announce {
    pub from: PeerId,
    pub body: Body,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnnounceError {
    #[error("announcement too short or over {MAX_BYTES} bytes")]
    Size,
    #[error("announcement body does not parse: {0}")]
    Body(String),
    #[error("announcement key is not an ed25519 public key")]
    Key,
    #[error("announcement signature does not verify")]
    Signature,
    #[error("announcement is signed by another node than the peer that sent it")]
    Relayed,
    #[error(
        "announcement lists more than {} mappings or a `seen` list",
        StunInfo::MAX_MAPPINGS
    )]
    TooMuch,
}

/// Sign `body` with `key`.
pub fn seal(key: &Keypair, body: Body) -> Vec<u8> {
    let body = serde_json::to_vec(&Sealed::new(key, body)).expect("announcements serialize");
    let sig = key
        .sign(&[DOMAIN, &body].concat())
        .expect("ed25519 signing does not fail");
    [sig, body].concat()
}

/// Check an announcement's signature and read it.
pub fn open(data: &[u8]) -> Result<Announce, AnnounceError> {
    Parsed::read(data)?.verify()
}

/// [`open`] for an announcement that the peer `from` passed us by gossip, where
/// only its own is taken (announcements are not forwarded): one that names another
/// key is refused before its signature is checked.
pub fn open_from(data: &[u8], from: &PeerId) -> Result<Announce, AnnounceError> {
    let parsed = Parsed::read(data)?;
    if parsed.key.to_peer_id() != *from {
        return Err(AnnounceError::Relayed);
    }
    parsed.verify()
}

/// An announcement read, its signature not yet checked.
struct Parsed<'a> {
    key: PublicKey,
    sig: &'a [u8],
    body: &'a [u8],
    sealed: Sealed,
}

impl<'a> Parsed<'a> {
    fn read(data: &'a [u8]) -> Result<Parsed<'a>, AnnounceError> {
        if data.len() < SIG_LEN || data.len() > MAX_BYTES {
            return Err(AnnounceError::Size);
        }
        let (sig, body) = data.split_at(SIG_LEN);
        let sealed: Sealed =
            serde_json::from_slice(body).map_err(|e| AnnounceError::Body(e.to_string()))?;
        let key = hex::decode(&sealed.key).map_err(|_| AnnounceError::Key)?;
        let key = PublicKey::try_decode_protobuf(&key).map_err(|_| AnnounceError::Key)?;
        if key.key_type() != KeyType::Ed25519 {
            return Err(AnnounceError::Key);
        }
        Ok(Parsed {
            key,
            sig,
            body,
            sealed,
        })
    }

    fn verify(self) -> Result<Announce, AnnounceError> {
        if !self.key.verify(&[DOMAIN, self.body].concat(), self.sig) {
            return Err(AnnounceError::Signature);
        }
        let stun = &self.sealed.stun;
        if stun.udp.len() > StunInfo::MAX_MAPPINGS
            || stun.tcp.len() > StunInfo::MAX_MAPPINGS
            || !stun.seen.is_empty()
        {
            return Err(AnnounceError::TooMuch);
        }
        Ok(Announce {
            from: self.key.to_peer_id(),
            body: self.sealed.body(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Body {
        Body {
            root: [0xab; 32],
            records: 3,
            epoch: 7,
            position: 3,
            at: 1_700_000_000_000,
            stun_port: 38084,
            stun: StunInfo::unknown(),
        }
    }

    #[test]
    fn a_sealed_announcement_opens_as_its_signer() {
        let key = Keypair::generate_ed25519();
        let a = open(&seal(&key, body())).unwrap();
        assert_eq!(a.from, key.public().to_peer_id());
        assert_eq!(a.body, body());
    }

    #[test]
    fn from_a_peer_only_its_own_announcement_opens() {
        let (ours, theirs) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let sealed = seal(&theirs, body());
        let them = theirs.public().to_peer_id();
        assert_eq!(open_from(&sealed, &them).unwrap().from, them);
        let us = ours.public().to_peer_id();
        assert_eq!(open_from(&sealed, &us), Err(AnnounceError::Relayed));
        // The check on the key does not stand in for the signature.
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        assert_eq!(open_from(&bad, &them), Err(AnnounceError::Signature));
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
        let forged = Sealed::new(&other, body());
        let forged = [sig, &serde_json::to_vec(&forged).unwrap()].concat();
        assert_eq!(open(&forged), Err(AnnounceError::Signature));
    }

    #[test]
    fn oversized_untyped_and_overfull_announcements_are_refused() {
        let key = Keypair::generate_ed25519();
        // Any JSON object as `stun` is not a `stun` object.
        let mut v = serde_json::to_value(Sealed::new(&key, body())).unwrap();
        v["stun"] = serde_json::json!({"anything": "x".repeat(100)});
        let bytes = v.to_string().into_bytes();
        let sig = key.sign(&[DOMAIN, &bytes].concat()).unwrap();
        assert!(matches!(
            open(&[sig, bytes].concat()),
            Err(AnnounceError::Body(_))
        ));
        // Too many mappings.
        let mut b = body();
        let m = cirrus_proto::api::Mapping {
            port: 1,
            local_port: 2,
            via: "x".into(),
            last_seen: 0,
            address: "192.0.2.1".parse().unwrap(),
        };
        b.stun.udp = vec![m; StunInfo::MAX_MAPPINGS + 1];
        assert_eq!(open(&seal(&key, b)), Err(AnnounceError::TooMuch));
        // Too large as bytes.
        assert_eq!(open(&vec![0u8; MAX_BYTES + 1]), Err(AnnounceError::Size));
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
