//! The node's identity key (libp2p ed25519): created on first start, then reused, so
//! the peer id is stable across restarts. The key file is never overwritten: an
//! unreadable key is an error for the operator to look at, not a reason to
//! silently become a different node.

use std::io::Write;
use std::path::Path;

use libp2p_identity::Keypair;

pub const KEY_FILE: &str = "node.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot access node key {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("node key {path} is not a valid libp2p key: {reason}")]
    Invalid { path: String, reason: String },
    #[error("cannot get randomness: {0}")]
    Random(String),
}

pub fn load_or_create(data_dir: &Path) -> Result<Keypair, IdentityError> {
    let path = data_dir.join(KEY_FILE);
    let shown = path.display().to_string();
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| IdentityError::Invalid {
            path: shown,
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| IdentityError::Random(e.to_string()))?;
            let key = Keypair::ed25519_from_bytes(seed).expect("32 bytes is a valid ed25519 seed");
            let bytes = key.to_protobuf_encoding().expect("ed25519 keys encode");
            write_private(&path, &bytes).map_err(|source| IdentityError::Io {
                path: shown,
                source,
            })?;
            Ok(key)
        }
        Err(source) => Err(IdentityError::Io {
            path: shown,
            source,
        }),
    }
}

/// Write a secret file readable only by its owner, atomically (temp file + rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
