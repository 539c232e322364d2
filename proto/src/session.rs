//! Session tokens (SPEC "Sessions"; docs/sessions.md): what a client has written so
//! far, in at most 1 KiB however long the session, so that any node can tell
//! whether it holds all of it.
//!
//! A token names the session's latest writes exactly (slot hash, `seq`, id prefix;
//! at most [`MAX_WRITES`]) and, for everything older, a *floor*: a position in the
//! issuing node's sequence of applied writes. The issuer held every write of the
//! client's previous token before it applied this one (a request carrying a token
//! waits for it), so "everything the issuer had applied at that position" covers
//! the whole session. `complete` says that no write ever fell out of the exact
//! list, so that the floor is not needed.
//!
//! The issuer signs the token with its node key, so a node can tell a token from
//! a forgery without asking anyone. Wire: base64url (no padding) of
//! `version 1 ‖ flags ‖ issuer ed25519 key (32) ‖ epoch (u32) ‖ position (u64) ‖
//! n (u8) ‖ n × (slot hash (32) ‖ seq (u64) ‖ id prefix (8)) ‖ signature (64)`,
//! big-endian; the signature is over [`DOMAIN`] and everything before it.

use ed25519_dalek::{Signature, Verifier, VerifyingKey};

use crate::merkle::Hash;
use crate::record::Id;

/// Writes a token names exactly; older ones are covered by its floor.
pub const MAX_WRITES: usize = 12;
/// Longest token string: the SPEC's bound.
pub const MAX_CHARS: usize = 1024;
/// Separates these signatures from any other use of a node's key.
pub const DOMAIN: &[u8] = b"cirrus-session/1\n";
const VERSION: u8 = 1;
const HEADER: usize = 1 + 1 + 32 + 4 + 8 + 1;
const WRITE: usize = 32 + 8 + 8;
const SIG: usize = 64;
const COMPLETE: u8 = 0x01;

/// One write the session made: its slot, and the record as the conflict rule
/// ranks it (a node holds it if its slot holds this record or one that wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Write {
    pub slot: Hash,
    pub seq: u64,
    /// The first 8 bytes of the record id.
    pub id: [u8; 8],
}

impl Write {
    pub fn new(slot: Hash, seq: u64, id: &Id) -> Write {
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&id[..8]);
        Write {
            slot,
            seq,
            id: prefix,
        }
    }

    /// Whether a slot holding a record of `seq` and `id` holds this write (the same
    /// record, or one that supersedes it: higher seq, or equal seq and higher id).
    pub fn held_by(&self, seq: u64, id: &Id) -> bool {
        (seq, &id[..8]) >= (self.seq, &self.id[..])
    }
}

/// Everything the issuer had applied when its count of applied writes reached
/// `position`, in the run of the node that `epoch` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Floor {
    /// The issuer's ed25519 public key.
    pub issuer: [u8; 32],
    pub epoch: u32,
    pub position: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub floor: Floor,
    /// Newest first.
    pub writes: Vec<Write>,
    /// No write ever fell out of `writes`: they are the whole session.
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("a session token is at most {MAX_CHARS} characters")]
    TooLong,
    #[error("not a session token: {0}")]
    Malformed(&'static str),
    #[error("the session token's signature does not verify")]
    Forged,
}

impl Session {
    /// A session of one write, at `floor`.
    pub fn first(floor: Floor, write: Write) -> Session {
        Session {
            floor,
            writes: vec![write],
            complete: true,
        }
    }

    /// The session after one more write, issued at `floor` by a node that held all
    /// of `self`.
    pub fn then(&self, floor: Floor, write: Write) -> Session {
        let mut writes = Vec::with_capacity(MAX_WRITES);
        writes.push(write);
        writes.extend(self.writes.iter().copied().filter(|w| w.slot != write.slot));
        let complete = self.complete && writes.len() <= MAX_WRITES;
        writes.truncate(MAX_WRITES);
        Session {
            floor,
            writes,
            complete,
        }
    }

    fn body(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER + self.writes.len() * WRITE + SIG);
        b.push(VERSION);
        b.push(if self.complete { COMPLETE } else { 0 });
        b.extend_from_slice(&self.floor.issuer);
        b.extend_from_slice(&self.floor.epoch.to_be_bytes());
        b.extend_from_slice(&self.floor.position.to_be_bytes());
        b.push(self.writes.len() as u8);
        for w in &self.writes {
            b.extend_from_slice(&w.slot);
            b.extend_from_slice(&w.seq.to_be_bytes());
            b.extend_from_slice(&w.id);
        }
        b
    }

    /// The bytes the issuer signs.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut m = DOMAIN.to_vec();
        m.extend_from_slice(&self.body());
        m
    }

    /// The token, given the issuer's signature over [`Session::signing_bytes`].
    pub fn encode(&self, signature: &[u8; 64]) -> String {
        let mut b = self.body();
        b.extend_from_slice(signature);
        base64url::encode(&b)
    }

    /// Parse a token and check its signature.
    pub fn decode(token: &str) -> Result<Session, SessionError> {
        if token.len() > MAX_CHARS {
            return Err(SessionError::TooLong);
        }
        let b = base64url::decode(token).ok_or(SessionError::Malformed("not base64url"))?;
        if b.len() < HEADER + SIG {
            return Err(SessionError::Malformed("too short"));
        }
        if b[0] != VERSION {
            return Err(SessionError::Malformed("unknown version"));
        }
        if b[1] & !COMPLETE != 0 {
            return Err(SessionError::Malformed("unknown flags"));
        }
        let n = b[HEADER - 1] as usize;
        if n == 0 || n > MAX_WRITES || b.len() != HEADER + n * WRITE + SIG {
            return Err(SessionError::Malformed("wrong length"));
        }
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let issuer: [u8; 32] = b[2..34].try_into().expect("32 bytes");
        let floor = Floor {
            issuer,
            epoch: u32::from_be_bytes(b[34..38].try_into().expect("4 bytes")),
            position: u64_at(38),
        };
        let writes = (0..n)
            .map(|i| {
                let at = HEADER + i * WRITE;
                Write {
                    slot: b[at..at + 32].try_into().expect("32 bytes"),
                    seq: u64_at(at + 32),
                    id: b[at + 40..at + 48].try_into().expect("8 bytes"),
                }
            })
            .collect();
        let s = Session {
            floor,
            writes,
            complete: b[1] & COMPLETE != 0,
        };
        let key = VerifyingKey::from_bytes(&issuer).map_err(|_| SessionError::Forged)?;
        let sig = Signature::from_bytes(b[b.len() - SIG..].try_into().expect("64 bytes"));
        key.verify(&s.signing_bytes(), &sig)
            .map_err(|_| SessionError::Forged)?;
        Ok(s)
    }
}

/// RFC 4648 §5 base64url without padding: the token travels in JSON and URLs.
mod base64url {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    pub fn encode(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    pub fn decode(s: &str) -> Option<Vec<u8>> {
        URL_SAFE_NO_PAD.decode(s).ok()
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    fn floor(position: u64) -> Floor {
        Floor {
            issuer: key().verifying_key().to_bytes(),
            epoch: 9,
            position,
        }
    }

    fn write(i: u8) -> Write {
        Write {
            slot: [i; 32],
            seq: u64::from(i),
            id: [i; 8],
        }
    }

    fn token(s: &Session) -> String {
        s.encode(&key().sign(&s.signing_bytes()).to_bytes())
    }

    #[test]
    fn a_token_round_trips_and_stays_under_the_bound_however_long_the_session() {
        let mut s = Session::first(floor(1), write(0));
        assert_eq!(Session::decode(&token(&s)).unwrap(), s);
        for i in 1..200u8 {
            s = s.then(floor(u64::from(i) + 1), write(i));
            let t = token(&s);
            assert!(t.len() <= MAX_CHARS, "{} chars after {i} writes", t.len());
            assert_eq!(Session::decode(&t).unwrap(), s);
        }
        assert_eq!(s.writes.len(), MAX_WRITES);
        assert_eq!(s.writes[0], write(199), "newest first");
        assert!(!s.complete, "writes fell out: the floor is needed");
        assert_eq!(s.floor.position, 200);
    }

    #[test]
    fn a_rewrite_of_a_slot_replaces_its_entry_and_stays_complete() {
        let s = Session::first(floor(1), write(1));
        let again = Write { seq: 5, ..write(1) };
        let s = s.then(floor(2), again);
        assert_eq!(s.writes, vec![again]);
        assert!(s.complete);
    }

    #[test]
    fn forged_and_broken_tokens_are_refused() {
        let s = Session::first(floor(3), write(4));
        let t = token(&s);
        // Another key's signature.
        let other = SigningKey::from_bytes(&[8; 32]);
        let forged = s.encode(&other.sign(&s.signing_bytes()).to_bytes());
        assert_eq!(Session::decode(&forged), Err(SessionError::Forged));
        // One changed byte anywhere is caught.
        let raw = base64url::decode(&t).unwrap();
        for i in 0..raw.len() {
            let mut b = raw.clone();
            b[i] ^= 0x20;
            assert!(Session::decode(&base64url::encode(&b)).is_err(), "byte {i}");
        }
        for bad in [
            "",
            "!!!!",
            "A",
            &"A".repeat(MAX_CHARS + 1),
            &t[..t.len() - 1],
        ] {
            assert!(Session::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_write_is_held_by_itself_or_a_record_that_wins() {
        let w = Write::new([1; 32], 5, &[0x80; 32]);
        assert!(w.held_by(5, &[0x80; 32]));
        assert!(w.held_by(6, &[0; 32]), "a higher seq wins");
        assert!(w.held_by(5, &[0x81; 32]), "equal seq, higher id wins");
        assert!(!w.held_by(5, &[0x7f; 32]));
        assert!(!w.held_by(4, &[0xff; 32]));
    }
}
