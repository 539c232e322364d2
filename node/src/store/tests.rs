//! The store against the definition: whatever the batches, the root, the proofs and
//! every trie node equal those of an in-memory trie over the records that should
//! win their slots; `list` by author keeps authors apart that share a key prefix.

use std::collections::BTreeMap;

use cirrus_proto::merkle::{self, EMPTY, Hash, MemTrie, NibblePath, Node};
use cirrus_proto::record::{Kind, Record};
use cirrus_proto::sync::Replica;
use ed25519_dalek::SigningKey;
use proptest::prelude::*;

use super::*;

fn stored(author: u8, key: &str, seq: u64, value: &str) -> Stored {
    let record = Record::sign(
        &SigningKey::from_bytes(&[author; 32]),
        Kind::Doc,
        key.to_string(),
        seq,
        Some(value.to_string()),
    );
    Stored {
        id: record.id(),
        record,
    }
}

/// Slot hash → the record that should hold it after `writes`, by the supersede rule.
fn winners(writes: &[Stored]) -> BTreeMap<Hash, Stored> {
    let mut out: BTreeMap<Hash, Stored> = BTreeMap::new();
    for w in writes {
        let slot = w.record.slot().hash();
        let wins = out
            .get(&slot)
            .is_none_or(|old| w.record.supersedes(&w.id, &old.record, &old.id));
        if wins {
            out.insert(slot, w.clone());
        }
    }
    out
}

fn check_against_reference(store: &Store, expected: &BTreeMap<Hash, Stored>) {
    let mut reference = MemTrie::default();
    for (slot, s) in expected {
        merkle::upsert(&mut reference, slot, &s.id).unwrap();
    }
    let root = merkle::root_hash(&mut reference).unwrap();
    let hash = store.db_hash().unwrap();
    assert_eq!(hash.root, root);
    assert_eq!(hash.records, expected.len() as u64);

    for s in expected.values() {
        let slot = s.record.slot();
        assert_eq!(store.get(&slot).unwrap().as_ref(), Some(s));
        let (got, proof, at) = store.get_with_proof(&slot).unwrap();
        assert_eq!(got.as_ref(), Some(s));
        assert_eq!(at, root);
        assert_eq!(proof.verify(&root, &slot.hash()), Ok(Some(s.id)));
    }
    let absent = stored(250, "absent", 1, "x").record.slot();
    let (got, proof, _) = store.get_with_proof(&absent).unwrap();
    assert!(got.is_none());
    assert_eq!(proof.verify(&root, &absent.hash()), Ok(None));

    // Every node the reference holds, and every child path of its branches (empty,
    // or below a leaf), reads the same from a snapshot.
    let mut snap = store.snapshot().unwrap();
    let mut paths: Vec<NibblePath> = vec![NibblePath::ROOT];
    for (p, n) in reference.nodes() {
        paths.push(*p);
        if p.len() < 63 {
            paths.extend((0..16).map(|i| p.child(i)));
            if let Node::Leaf { .. } = n {
                paths.extend((0..16).map(|i| p.child(i).child(i)));
            }
        }
    }
    for p in paths {
        assert_eq!(
            snap.node(&p).unwrap(),
            reference.nodes().get(&p).cloned(),
            "depth {}",
            p.len()
        );
    }
    for s in expected.values() {
        let slot = s.record.slot().hash();
        assert_eq!(snap.record(&slot).unwrap(), Some(s.record.encode()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// New slots, newer and older versions and duplicates, in batches of any size,
    /// committed with and without fsync, and the file opened again.
    #[test]
    fn the_store_matches_an_in_memory_trie_whatever_the_batches(
        writes in prop::collection::vec((0u8..4, 0u16..60, 1u64..4), 1..200),
        cuts in prop::collection::vec(1usize..40, 1..20),
    ) {
        let writes: Vec<Stored> = writes
            .iter()
            .map(|(a, k, seq)| stored(*a, &format!("k{k}"), *seq, &format!("v{seq}")))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let store = Store::open(&path).unwrap();
        let (mut rest, mut i) = (writes.as_slice(), 0);
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            store.apply_with(&rest[..n], i % 2 == 0).unwrap();
            rest = &rest[n..];
            i += 1;
        }
        let expected = winners(&writes);
        check_against_reference(&store, &expected);
        drop(store);
        check_against_reference(&Store::open(&path).unwrap(), &expected);
    }
}

/// One record is a leaf at the root; none is the empty root.
#[test]
fn an_empty_store_and_a_store_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db.redb")).unwrap();
    assert_eq!(store.db_hash().unwrap().root, EMPTY);
    check_against_reference(&store, &BTreeMap::new());
    let one = stored(1, "only", 1, "v");
    store.apply(std::slice::from_ref(&one)).unwrap();
    check_against_reference(&store, &winners(&[one]));
}

/// A record of `author` with a chosen author key: the store trusts its caller with
/// signatures, and no real key pair has a chosen prefix.
fn forged(author: [u8; 32], key: &str) -> Stored {
    let mut record = stored(1, key, 1, "v").record;
    record.author = author;
    Stored {
        id: record.id(),
        record,
    }
}

#[test]
fn list_by_author_skips_another_author_with_the_same_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db.redb")).unwrap();
    let (mut a, mut b) = ([7u8; 32], [7u8; 32]);
    a[31] = 1;
    b[31] = 2;
    // Both write "shared"; each has keys the other lacks, interleaved in key order.
    let writes = vec![
        forged(a, "a1"),
        forged(b, "a2"),
        forged(a, "a3"),
        forged(b, "shared"),
        forged(a, "shared"),
        forged(b, "z"),
    ];
    store.apply(&writes).unwrap();
    for (author, keys) in [(a, ["a1", "a3", "shared"]), (b, ["a2", "shared", "z"])] {
        // One record per page: the cursor walks past the other author's entries.
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let q = ListQuery {
                author: Some(author),
                after: after.take(),
                limit: 1,
                ..Default::default()
            };
            let (page, next) = store.list(&q).unwrap();
            got.extend(page.into_iter().map(|s| {
                assert_eq!(s.record.author, author);
                s.record.key
            }));
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(got, keys);
    }
    // Without an author, all six in (key, author) order.
    let q = ListQuery {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(store.list(&q).unwrap().0.len(), 6);
}
