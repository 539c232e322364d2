//! The author-signed record (SPEC "Records").
//!
//! A record lives in a *slot* `(author, kind, key)`. Its canonical form is the signed
//! message followed by the 64-byte signature; the same bytes are what the store keeps,
//! and the record id is SHA-256 over them. The conflict rule ([`Record::supersedes`])
//! orders any two records of one slot the same way on every node, so the final state
//! does not depend on the order in which records arrive.

use ed25519_dalek::{Signature, SigningKey};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Domain tag at the start of every signed message.
pub const SIGNING_TAG: &[u8; 16] = b"cirrus-record-v1";
pub const MAX_KEY_BYTES: usize = 256;
pub const MAX_VALUE_BYTES: usize = 65_536;
/// Largest canonical record: tag, kind, author, key, seq, value, signature.
pub const MAX_ENCODED_BYTES: usize =
    16 + 1 + 32 + 2 + MAX_KEY_BYTES + 8 + 1 + 4 + MAX_VALUE_BYTES + 64;

pub type Id = [u8; 32];

/// The id of the record whose canonical bytes these are.
pub fn id_of(canonical: &[u8]) -> Id {
    Sha256::digest(canonical).into()
}
pub type Author = [u8; 32];

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Doc,
    Rating,
}

impl Kind {
    pub fn byte(self) -> u8 {
        match self {
            Kind::Doc => 0,
            Kind::Rating => 1,
        }
    }

    pub fn from_byte(b: u8) -> Option<Kind> {
        match b {
            0 => Some(Kind::Doc),
            1 => Some(Kind::Rating),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Doc => "doc",
            Kind::Rating => "rating",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = RecordError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "doc" => Ok(Kind::Doc),
            "rating" => Ok(Kind::Rating),
            other => Err(RecordError::Kind(other.to_string())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Record {
    #[serde(with = "crate::hexser")]
    #[schemars(with = "crate::hexser::Hex<32>")]
    pub author: Author,
    pub kind: Kind,
    pub key: String,
    pub seq: u64,
    pub value: Option<String>,
    #[serde(with = "crate::hexser")]
    #[schemars(with = "crate::hexser::Hex<64>")]
    pub sig: [u8; 64],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("key must be 1 to {MAX_KEY_BYTES} bytes of UTF-8, got {0} bytes")]
    KeyLength(usize),
    #[error("key must not contain control characters")]
    KeyControl,
    #[error("value must be at most {MAX_VALUE_BYTES} bytes, got {0}")]
    ValueLength(usize),
    #[error("a rating's value must be a decimal integer from 1 to 5 or null, got {0:?}")]
    RatingValue(String),
    #[error("unknown kind {0:?}: expected \"doc\" or \"rating\"")]
    Kind(String),
    #[error("author is not a valid ed25519 public key")]
    Author,
    #[error("signature does not verify")]
    Signature,
    #[error("malformed record bytes: {0}")]
    Encoding(&'static str),
}

impl Record {
    /// Build and sign a record with an author's secret key.
    pub fn sign(
        secret: &SigningKey,
        kind: Kind,
        key: impl Into<String>,
        seq: u64,
        value: Option<String>,
    ) -> Record {
        let mut r = Record {
            author: secret.verifying_key().to_bytes(),
            kind,
            key: key.into(),
            seq,
            value,
            sig: [0; 64],
        };
        r.sig = ed25519_dalek::Signer::sign(secret, &r.signed_message()).to_bytes();
        r
    }

    /// The exact bytes the author signs (SPEC "Records").
    pub fn signed_message(&self) -> Vec<u8> {
        let key = self.key.as_bytes();
        let mut m = Vec::with_capacity(16 + 1 + 32 + 2 + key.len() + 8 + 5 + self.value_len());
        m.extend_from_slice(SIGNING_TAG);
        m.push(self.kind.byte());
        m.extend_from_slice(&self.author);
        // Lengths are bounded by `check_limits`; an over-long key cannot be encoded,
        // so clamp here and let validation report it.
        m.extend_from_slice(&(key.len().min(u16::MAX as usize) as u16).to_be_bytes());
        m.extend_from_slice(key);
        m.extend_from_slice(&self.seq.to_be_bytes());
        match &self.value {
            None => m.push(0),
            Some(v) => {
                m.push(1);
                m.extend_from_slice(&(v.len().min(u32::MAX as usize) as u32).to_be_bytes());
                m.extend_from_slice(v.as_bytes());
            }
        }
        m
    }

    /// Canonical bytes: signed message followed by the signature. Stored as is.
    pub fn encode(&self) -> Vec<u8> {
        let mut m = self.signed_message();
        m.extend_from_slice(&self.sig);
        m
    }

    /// Inverse of [`Record::encode`]; checks structure and limits, not the signature.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        let mut r = Reader(bytes);
        if r.take(16)? != SIGNING_TAG {
            return Err(RecordError::Encoding("bad tag"));
        }
        let kind = Kind::from_byte(r.take(1)?[0]).ok_or(RecordError::Encoding("bad kind"))?;
        let author: Author = r.take(32)?.try_into().expect("32 bytes");
        let key_len = u16::from_be_bytes(r.take(2)?.try_into().expect("2 bytes")) as usize;
        let key = std::str::from_utf8(r.take(key_len)?)
            .map_err(|_| RecordError::Encoding("key is not UTF-8"))?
            .to_string();
        let seq = u64::from_be_bytes(r.take(8)?.try_into().expect("8 bytes"));
        let value = match r.take(1)?[0] {
            0 => None,
            1 => {
                let len = u32::from_be_bytes(r.take(4)?.try_into().expect("4 bytes")) as usize;
                if len > MAX_VALUE_BYTES {
                    return Err(RecordError::ValueLength(len));
                }
                let v = std::str::from_utf8(r.take(len)?)
                    .map_err(|_| RecordError::Encoding("value is not UTF-8"))?;
                Some(v.to_string())
            }
            _ => return Err(RecordError::Encoding("bad value tag")),
        };
        let sig: [u8; 64] = r.take(64)?.try_into().expect("64 bytes");
        if !r.0.is_empty() {
            return Err(RecordError::Encoding("trailing bytes"));
        }
        let rec = Record {
            author,
            kind,
            key,
            seq,
            value,
            sig,
        };
        rec.check_limits()?;
        Ok(rec)
    }

    /// Record id: SHA-256 over the canonical bytes.
    pub fn id(&self) -> Id {
        id_of(&self.encode())
    }

    /// Size and content rules of SPEC "Records", without the signature check.
    pub fn check_limits(&self) -> Result<(), RecordError> {
        let klen = self.key.len();
        if klen == 0 || klen > MAX_KEY_BYTES {
            return Err(RecordError::KeyLength(klen));
        }
        if self.key.chars().any(char::is_control) {
            return Err(RecordError::KeyControl);
        }
        if self.value_len() > MAX_VALUE_BYTES {
            return Err(RecordError::ValueLength(self.value_len()));
        }
        if self.kind == Kind::Rating
            && let Some(v) = &self.value
            && rating_score(v).is_none()
        {
            return Err(RecordError::RatingValue(truncate(v, 16)));
        }
        Ok(())
    }

    /// Full validation: limits, then the ed25519 signature (strict verification, so
    /// every node accepts exactly the same set of signatures).
    pub fn verify(&self) -> Result<(), RecordError> {
        self.check_limits()?;
        let key = crate::keys::verifying_key(&self.author).map_err(|_| RecordError::Author)?;
        let sig = Signature::from_bytes(&self.sig);
        key.verify_strict(&self.signed_message(), &sig)
            .map_err(|_| RecordError::Signature)
    }

    /// The slot this record occupies.
    pub fn slot(&self) -> Slot {
        Slot {
            author: self.author,
            kind: self.kind,
            key: self.key.clone(),
        }
    }

    /// The SPEC conflict rule: higher `seq` wins; on equal `seq`, the higher id.
    pub fn supersedes(&self, self_id: &Id, other: &Record, other_id: &Id) -> bool {
        (self.seq, self_id) > (other.seq, other_id)
    }

    /// The score of a live rating (a rating whose value is not null).
    pub fn rating(&self) -> Option<u8> {
        match (self.kind, &self.value) {
            (Kind::Rating, Some(v)) => rating_score(v),
            _ => None,
        }
    }

    fn value_len(&self) -> usize {
        self.value.as_ref().map_or(0, String::len)
    }
}

/// A rating value is exactly one ASCII digit from 1 to 5.
pub fn rating_score(v: &str) -> Option<u8> {
    match v.as_bytes() {
        [d @ b'1'..=b'5'] => Some(d - b'0'),
        _ => None,
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// The `(author, kind, key)` a record occupies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    pub author: Author,
    pub kind: Kind,
    pub key: String,
}

impl Slot {
    /// The slot's position in the Merkle trie: SHA-256("cirrus-slot-v1" ‖ kind ‖ author ‖ key).
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"cirrus-slot-v1");
        h.update([self.kind.byte()]);
        h.update(self.author);
        h.update(self.key.as_bytes());
        h.finalize().into()
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Encoding("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
}
