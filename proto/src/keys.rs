//! Authors' public keys, decompressed once per thread while they repeat. A record's
//! check decompresses its author's key (a curve point) before the signature check
//! proper; an author writes many records, and reusing the point saves about a tenth
//! of each check (BENCHMARKS.md, "Put throughput"). The result is exactly that of
//! `VerifyingKey::from_bytes`: an entry is used only for the very same bytes.

use std::cell::RefCell;

use ed25519_dalek::{SignatureError, VerifyingKey};

/// Sets per thread, picked by the key's first byte, of two keys each (the one used
/// last first): 256 keys, about 50 KB on a thread that checks signatures, nothing
/// on one that does not. A flood of new authors only costs the decompression each
/// costs anyway.
const SETS: usize = 128;

type Set = [Option<VerifyingKey>; 2];

thread_local! {
    static KEYS: RefCell<Vec<Set>> = const { RefCell::new(Vec::new()) };
}

/// `VerifyingKey::from_bytes(bytes)`, from this thread's cache where it holds them.
pub fn verifying_key(bytes: &[u8; 32]) -> Result<VerifyingKey, SignatureError> {
    KEYS.with(|keys| {
        let mut keys = keys.borrow_mut();
        if keys.is_empty() {
            keys.resize(SETS, [None; 2]);
        }
        let set = &mut keys[usize::from(bytes[0]) % SETS];
        let is = |k: &Option<VerifyingKey>| k.is_some_and(|k| k.as_bytes() == bytes);
        if is(&set[1]) {
            set.swap(0, 1);
        }
        if let Some(k) = set[0].filter(|k| k.as_bytes() == bytes) {
            return Ok(k);
        }
        let k = VerifyingKey::from_bytes(bytes)?;
        *set = [Some(k), set[0]];
        Ok(k)
    })
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;

    fn key(i: u32) -> VerifyingKey {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&i.to_le_bytes());
        SigningKey::from_bytes(&seed).verifying_key()
    }

    #[test]
    fn a_cached_key_is_the_one_its_bytes_give_and_bad_bytes_stay_an_error() {
        let a = key(0);
        let slot = |k: &[u8; 32]| usize::from(k[0]) % SETS;
        // Three keys in one set of two, used in turn: none is mistaken for another.
        let mut same: Vec<VerifyingKey> = (1..)
            .map(key)
            .filter(|k| slot(k.as_bytes()) == slot(a.as_bytes()))
            .take(2)
            .collect();
        same.insert(0, a);
        for _ in 0..3 {
            for k in &same {
                assert_eq!(verifying_key(k.as_bytes()).unwrap(), *k);
            }
        }
        // Bytes in the same set that are no point on the curve: an error every
        // time, and the set's keys are still right after.
        let bad = (0..=255u8)
            .map(|i| {
                let mut bytes = [i; 32];
                bytes[0] = a.as_bytes()[0];
                bytes
            })
            .find(|bytes| VerifyingKey::from_bytes(bytes).is_err())
            .expect("bytes that do not decompress");
        verifying_key(a.as_bytes()).unwrap();
        for _ in 0..2 {
            assert!(verifying_key(&bad).is_err());
        }
        assert_eq!(verifying_key(a.as_bytes()).unwrap(), a);
    }
}
