//! Sessions in the node (SPEC "Sessions", docs/sessions.md): issuing a token with
//! every `put`, and holding a request that carries one until this node holds every
//! write it names.
//!
//! A token's latest writes are checked in the store. Its floor, a position in the
//! issuer's sequence of applied writes, is held when the issuer is this node (in
//! this run), or when this node's root once equalled a root the issuer announced at
//! that position or later: equal roots are equal databases, and a slot's record only
//! ever gets newer. [`Sessions::observe`] watches for such moments and remembers the
//! highest position per issuer (its *horizon*).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cirrus_proto::session::{Floor, Session, Write};
use libp2p::PeerId;
use libp2p::identity::Keypair;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use crate::peers::PeerTable;
use crate::store::Store;
use crate::store::writer::Writer;

/// How long a request waits for its session unless it says (`wait`, ms).
pub const DEFAULT_WAIT: Duration = Duration::from_millis(2000);
/// The longest `wait` honoured; a longer one is cut to this.
pub const MAX_WAIT: Duration = Duration::from_millis(10_000);

/// Tokens whose signature verified, so that a client reading again and again with
/// one token pays for the check once.
const VERIFIED: usize = 4096;

pub struct Sessions {
    key: Keypair,
    verified: Mutex<hashlink::LruCache<[u8; 32], Session>>,
    /// Our ed25519 public key, as tokens name issuers.
    me: [u8; 32],
    /// Per issuer: (epoch, highest position whose writes we are known to hold).
    horizons: Mutex<HashMap<[u8; 32], (u32, u64)>>,
    /// Bumped when a horizon moves.
    progress: watch::Sender<u64>,
    store: Arc<Store>,
    writer: Writer,
    table: Arc<PeerTable>,
}

/// A request's `session` and `wait`, taken out of its params.
pub struct Asked {
    pub session: Option<Session>,
    pub wait: Duration,
}

impl Sessions {
    pub fn new(key: Keypair, store: Arc<Store>, writer: Writer, table: Arc<PeerTable>) -> Self {
        let me = ed25519_key(&key.public()).expect("the node key is ed25519");
        Sessions {
            key,
            verified: Mutex::new(hashlink::LruCache::new(VERIFIED)),
            me,
            horizons: Mutex::default(),
            progress: watch::channel(0).0,
            store,
            writer,
            table,
        }
    }

    /// Take `session` and `wait` out of a request's params; a bad one is -32602.
    pub fn take(
        &self,
        params: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<Asked, ApiError> {
        let session = match params.remove("session") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(t)) => Some(self.decode(&t)?),
            Some(_) => return Err(ApiError::Params("session must be a string".into())),
        };
        let wait = match params.remove("wait") {
            None | Some(serde_json::Value::Null) => DEFAULT_WAIT,
            Some(v) => {
                let ms = v.as_u64().ok_or_else(|| {
                    ApiError::Params("wait must be a whole number of milliseconds".into())
                })?;
                Duration::from_millis(ms).min(MAX_WAIT)
            }
        };
        Ok(Asked { session, wait })
    }

    fn decode(&self, token: &str) -> Result<Session, ApiError> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = cache.get(&digest) {
            return Ok(s.clone());
        }
        drop(cache);
        let s = Session::decode(token).map_err(|e| ApiError::Params(format!("session: {e}")))?;
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest, s.clone());
        Ok(s)
    }

    /// Return once this node holds all of `session`, or -32011 after `wait`. Wakes
    /// on commits and on horizon moves, never on a timer.
    pub async fn hold(&self, session: &Session, wait: Duration) -> Result<(), ApiError> {
        let deadline = tokio::time::Instant::now() + wait;
        let (mut commits, mut progress) = (self.writer.commits(), self.progress.subscribe());
        loop {
            let missing = self.missing(session)?;
            if missing == 0 {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Err(ApiError::Behind { missing }),
                r = commits.changed() => if r.is_err() { return Err(ApiError::Behind { missing }) },
                r = progress.changed() => if r.is_err() { return Err(ApiError::Behind { missing }) },
            }
        }
    }

    /// How much of `session` this node lacks: its writes not held, plus one when it
    /// needs its floor and does not hold it.
    pub fn missing(&self, session: &Session) -> Result<usize, ApiError> {
        let writes = self.store.missing(&session.writes)?;
        let floor = !session.complete && !self.holds(&session.floor);
        Ok(writes + usize::from(floor))
    }

    fn holds(&self, f: &Floor) -> bool {
        if f.issuer == self.me {
            return f.epoch == self.writer.epoch() && f.position <= self.writer.next_seq();
        }
        let h = self.horizons.lock().unwrap_or_else(|e| e.into_inner());
        h.get(&f.issuer)
            .is_some_and(|(epoch, at)| *epoch == f.epoch && *at >= f.position)
    }

    /// The token after `writes` (oldest first), applied here on top of `before`
    /// (which this node held: the requests waited for it).
    pub fn issue(&self, before: Option<&Session>, writes: &[Write]) -> Option<String> {
        let floor = Floor {
            issuer: self.me,
            epoch: self.writer.epoch(),
            position: self.writer.next_seq(),
        };
        let mut s = before.cloned();
        for w in writes {
            s = Some(match s {
                Some(b) => b.then(floor, *w),
                None => Session::first(floor, *w),
            });
        }
        let s = s?;
        let sig = self
            .key
            .sign(&s.signing_bytes())
            .expect("ed25519 signing does not fail");
        let sig: [u8; 64] = sig.try_into().expect("an ed25519 signature is 64 bytes");
        Some(s.encode(&sig))
    }

    /// Until `stop`: whenever we commit or a peer announces, note every peer whose
    /// announced root is ours now: we hold everything it had at that position.
    pub async fn observe(self: Arc<Self>, stop: CancellationToken) {
        let (mut commits, mut announced) = (self.writer.commits(), self.table.announced());
        loop {
            self.note_horizons();
            tokio::select! {
                _ = stop.cancelled() => return,
                r = commits.changed() => if r.is_err() { return },
                r = announced.changed() => if r.is_err() { return },
            }
        }
    }

    fn note_horizons(&self) {
        let peers = self.table.positions();
        if peers.is_empty() {
            return;
        }
        let Ok(ours) = self.store.db_hash() else {
            return;
        };
        let mut moved = false;
        let mut h = self.horizons.lock().unwrap_or_else(|e| e.into_inner());
        for (peer, root, (epoch, position)) in peers {
            if root != ours.root {
                continue;
            }
            let Some(issuer) = peer_key(&peer) else {
                continue;
            };
            let e = h.entry(issuer).or_insert((epoch, 0));
            // A new run of the peer starts its count again.
            if e.0 != epoch {
                *e = (epoch, 0);
            }
            if position > e.1 {
                e.1 = position;
                moved = true;
            }
        }
        // Peers come and go; an issuer unheard of for long is of no use. A bound
        // anyway: one entry per peer ever connected would grow without end.
        if h.len() > 4096 {
            h.clear();
        }
        drop(h);
        if moved {
            self.progress.send_modify(|n| *n += 1);
        }
    }
}

fn ed25519_key(k: &libp2p::identity::PublicKey) -> Option<[u8; 32]> {
    k.clone().try_into_ed25519().ok().map(|k| k.to_bytes())
}

/// The ed25519 key inside a peer id (ed25519 peer ids inline their key).
fn peer_key(peer: &PeerId) -> Option<[u8; 32]> {
    let mh = multihash_digest(peer)?;
    let key = libp2p::identity::PublicKey::try_decode_protobuf(mh).ok()?;
    ed25519_key(&key)
}

/// An identity multihash's digest: the protobuf-encoded public key.
fn multihash_digest(peer: &PeerId) -> Option<&[u8]> {
    let b = peer.as_ref();
    (b.code() == 0).then(|| b.digest())
}
