//! Authors' public keys, decompressed once per thread while they repeat. A record's
//! check decompresses its author's key (a curve point) before the signature check
//! proper; an author writes many records, and reusing the point saves 6 to 12% of
//! each check (BENCHMARKS.md, "Put throughput"). The result is exactly that of
//! `VerifyingKey::from_bytes`: an entry is used only for the very same bytes.

use std::cell::RefCell;

use ed25519_dalek::{SignatureError, VerifyingKey};

/// Sets per thread, picked by the key's first byte, of two keys each (the one used
/// last first): 256 keys, about 50 KB on a thread that checks signatures (the
/// node checks on the runtime's blocking threads), nothing on one that does not.
/// A flood of new authors only costs the decompression each costs anyway.
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
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    fn signer(i: u32) -> SigningKey {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&i.to_le_bytes());
        SigningKey::from_bytes(&seed)
    }

    fn set_of(k: &VerifyingKey) -> usize {
        usize::from(k.as_bytes()[0]) % SETS
    }

    /// Checks the key the cache gives for `signer`: its own signature passes and
    /// another signer's fails, so a wrong point cannot pass for the right bytes.
    fn check(signer: &SigningKey, other: &SigningKey) {
        let k = verifying_key(signer.verifying_key().as_bytes()).unwrap();
        assert_eq!(k, signer.verifying_key());
        let msg = b"a record";
        assert!(k.verify_strict(msg, &signer.sign(msg)).is_ok());
        assert!(k.verify_strict(msg, &other.sign(msg)).is_err());
    }

    #[test]
    fn a_cached_key_is_the_one_its_bytes_give_and_bad_bytes_stay_an_error() {
        // Three signers whose keys share one set of two.
        let first = signer(0);
        let same: Vec<SigningKey> = std::iter::once(first.clone())
            .chain(
                (1..)
                    .map(signer)
                    .filter(|s| set_of(&s.verifying_key()) == set_of(&first.verifying_key()))
                    .take(2),
            )
            .collect();
        let [a, b, c] = &same[..] else { unreachable!() };
        // a, b: both held; a again is a hit on the second way, b again on the
        // second way too; c evicts the one used least lately (a), then b is still
        // held and a comes back.
        for (k, other) in [(a, b), (b, c), (a, b), (b, a), (c, a), (b, c), (a, c)] {
            check(k, other);
        }
        // Bytes in the same set that are no point on the curve: an error every
        // time, and the set's keys are still right after.
        let bad = (0..=255u8)
            .map(|i| {
                let mut bytes = [i; 32];
                bytes[0] = a.verifying_key().as_bytes()[0];
                bytes
            })
            .find(|bytes| VerifyingKey::from_bytes(bytes).is_err())
            .expect("bytes that do not decompress");
        for _ in 0..2 {
            assert!(verifying_key(&bad).is_err());
        }
        check(a, b);
        check(c, a);
    }

    /// A flood of new authors: the cache stays at its sets of two, whatever comes.
    #[test]
    fn the_cache_holds_at_most_its_sets_of_two() {
        for i in 0..1_000 {
            verifying_key(signer(i).verifying_key().as_bytes()).unwrap();
        }
        KEYS.with(|keys| assert_eq!(keys.borrow().len(), SETS));
    }

    #[test]
    fn a_key_used_again_comes_from_the_cache() {
        let s = signer(42);
        let k = verifying_key(s.verifying_key().as_bytes()).unwrap();
        let set = set_of(&k);
        let held = KEYS.with(|keys| keys.borrow()[set][0]);
        assert_eq!(held, Some(k));
    }
}
