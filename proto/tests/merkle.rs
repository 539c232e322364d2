//! The trie: order independence, proofs of presence and absence, tamper detection.

use std::collections::BTreeMap;

use cirrus_proto::merkle::{self, EMPTY, Hash, MemTrie, Node};
use cirrus_proto::record::{Kind, Record};
use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

fn h(i: u64) -> Hash {
    Sha256::digest(i.to_be_bytes()).into()
}

fn build(pairs: &[(Hash, Hash)]) -> (MemTrie, Hash) {
    let mut s = MemTrie::default();
    let mut root = EMPTY;
    for (slot, id) in pairs {
        root = merkle::upsert(&mut s, slot, id).unwrap();
        assert_eq!(root, merkle::root_hash(&mut s).unwrap());
    }
    (s, root)
}

/// The root computed from scratch by the definition in docs/merkle.md.
fn reference_root(slots: &BTreeMap<Hash, Hash>, depth: usize) -> Hash {
    match slots.len() {
        0 => EMPTY,
        1 => {
            let (s, id) = slots.iter().next().unwrap();
            merkle::leaf_hash(s, id)
        }
        _ => {
            let mut children = [EMPTY; 16];
            for (n, c) in children.iter_mut().enumerate() {
                let sub: BTreeMap<Hash, Hash> = slots
                    .iter()
                    .filter(|(s, _)| merkle::nibble(s, depth) == n)
                    .map(|(s, i)| (*s, *i))
                    .collect();
                *c = reference_root(&sub, depth + 1);
            }
            merkle::branch_hash(&children)
        }
    }
}

#[test]
fn empty_and_single() {
    let (_, root) = build(&[]);
    assert_eq!(root, EMPTY);
    let (_, root) = build(&[(h(1), h(2))]);
    assert_eq!(root, merkle::leaf_hash(&h(1), &h(2)));
}

#[test]
fn slots_sharing_a_long_prefix_split_correctly() {
    let mut a = h(1);
    let mut b = a;
    b[5] ^= 0x01; // same first 11 nibbles
    a[31] ^= 0xff;
    let pairs = [(a, h(10)), (b, h(11)), (h(3), h(12))];
    let (mut s, root) = build(&pairs);
    let reference: BTreeMap<_, _> = pairs.iter().copied().collect();
    assert_eq!(root, reference_root(&reference, 0));
    for (slot, id) in pairs {
        let p = merkle::prove(&mut s, &slot).unwrap();
        assert_eq!(p.verify(&root, &slot), Ok(Some(id)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_order_gives_the_reference_root(
        ops in prop::collection::vec((0u64..200, 0u64..4), 1..300),
        seed in any::<u64>(),
    ) {
        // Several writes per slot: the last write per slot is what the slot holds.
        let pairs: Vec<(Hash, Hash)> = ops.iter().map(|&(s, v)| (h(s), h(1000 + v))).collect();
        let mut last = BTreeMap::new();
        for (s, id) in &pairs {
            last.insert(*s, *id);
        }
        // Permute, then replay only the final value per slot in that order.
        let mut finals: Vec<(Hash, Hash)> = last.iter().map(|(s, i)| (*s, *i)).collect();
        let mut rng = seed;
        for i in (1..finals.len()).rev() {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            finals.swap(i, (rng >> 33) as usize % (i + 1));
        }
        let (_, r1) = build(&pairs);
        let (mut store, r2) = build(&finals);
        prop_assert_eq!(r1, r2);
        prop_assert_eq!(r1, reference_root(&last, 0));

        for (slot, id) in &last {
            let p = merkle::prove(&mut store, slot).unwrap();
            prop_assert_eq!(p.verify(&r2, slot), Ok(Some(*id)));
        }
        for absent in 500..520u64 {
            let slot = h(absent);
            let p = merkle::prove(&mut store, &slot).unwrap();
            prop_assert_eq!(p.verify(&r2, &slot), Ok(None));
        }
    }

    #[test]
    fn conflict_rule_state_is_order_independent(
        writes in prop::collection::vec((0u8..3, 0u8..6, 0u64..4), 1..40),
        seed in any::<u64>(),
    ) {
        let authors: Vec<SigningKey> = (1..=3u8).map(|i| SigningKey::from_bytes(&[i; 32])).collect();
        let records: Vec<Record> = writes.iter().map(|&(a, k, seq)| {
            let kind = if k % 2 == 0 { Kind::Doc } else { Kind::Rating };
            let value = if kind == Kind::Rating { Some(((seq % 5) + 1).to_string()) } else { Some(format!("v{seq}-{k}")) };
            Record::sign(&authors[a as usize], kind, format!("key{}", k / 2), seq, value)
        }).collect();
        let mut shuffled = records.clone();
        let mut rng = seed;
        for i in (1..shuffled.len()).rev() {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (rng >> 33) as usize % (i + 1));
        }
        let (state_a, root_a) = apply_all(&records);
        let (state_b, root_b) = apply_all(&shuffled);
        prop_assert_eq!(state_a, state_b);
        prop_assert_eq!(root_a, root_b);
    }
}

/// A miniature store applying the conflict rule, as the node's store does.
fn apply_all(records: &[Record]) -> (BTreeMap<Hash, Record>, Hash) {
    let mut held: BTreeMap<Hash, Record> = BTreeMap::new();
    let mut trie = MemTrie::default();
    let mut root = EMPTY;
    for r in records {
        let slot = r.slot().hash();
        let wins = held
            .get(&slot)
            .is_none_or(|old| r.supersedes(&r.id(), old, &old.id()));
        if wins {
            held.insert(slot, r.clone());
            root = merkle::upsert(&mut trie, &slot, &r.id()).unwrap();
        }
    }
    (held, root)
}

#[test]
fn tampered_proofs_are_rejected() {
    let pairs: Vec<(Hash, Hash)> = (0..500).map(|i| (h(i), h(i + 10_000))).collect();
    let (mut s, root) = build(&pairs);
    let slot = h(42);
    let good = merkle::prove(&mut s, &slot).unwrap();
    assert!(good.branches.len() >= 2);

    let mut p = good.clone();
    p.branches[1][0][0] ^= 1;
    assert!(p.verify(&root, &slot).is_err());

    let mut p = good.clone();
    p.leaf.as_mut().unwrap().id[0] ^= 1;
    assert!(p.verify(&root, &slot).is_err());

    // A presence proof for one slot is not a proof for another, least of all a
    // proof that the other (which is present) is absent.
    let other = h(43);
    assert!(
        good.verify(&root, &other).is_err(),
        "{:?}",
        good.verify(&root, &other)
    );
    let mut wrong_root = root;
    wrong_root[0] ^= 1;
    assert!(good.verify(&wrong_root, &slot).is_err());

    // Absence proof cannot be turned into presence by dropping the leaf.
    let absent = h(99_999);
    let mut p = merkle::prove(&mut s, &absent).unwrap();
    assert_eq!(p.verify(&root, &absent), Ok(None));
    p.leaf = None;
    p.branches.pop();
    assert!(p.verify(&root, &absent).is_err());

    // JSON round trip.
    let j = serde_json::to_string(&good).unwrap();
    let back: merkle::Proof = serde_json::from_str(&j).unwrap();
    assert_eq!(back, good);
}

#[test]
fn node_encoding_round_trips_and_rejects_garbage() {
    let leaf = Node::Leaf {
        slot: h(1),
        id: h(2),
    };
    assert_eq!(Node::decode(&leaf.encode()).unwrap(), leaf);
    let mut children = [EMPTY; 16];
    children[3] = h(3);
    children[15] = h(4);
    let branch = Node::Branch { children };
    let enc = branch.encode();
    assert_eq!(enc.len(), 3 + 64);
    assert_eq!(Node::decode(&enc).unwrap(), branch);
    for bad in [&[][..], &[2], &[0, 1, 2], &enc[..enc.len() - 1]] {
        assert!(Node::decode(bad).is_err());
    }
}

/// A root computed by hand, and what merkle_reference.py (docs/merkle.md in a few
/// lines of Python, sharing nothing with this crate) prints: the same root, the
/// same proofs, and each of its proofs checks here.
#[test]
fn a_third_party_computes_the_same_root_and_proofs() {
    const ROOT: &str = "94a453da20cf74f75f06c0defa06e665a766d361597575c7a90218f5ce49ca45";
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/merkle_reference.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .output()
        .unwrap_or_else(|e| panic!("python3 {script}: {e}"));
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["root"], ROOT, "the script's root moved");

    let pairs: Vec<(Hash, Hash)> = (0..300).map(|i| (h(i), h(i + 10_000))).collect();
    let (mut s, root) = build(&pairs);
    assert_eq!(hex::encode(root), ROOT);
    let hash = |v: &serde_json::Value| -> Hash {
        hex::decode(v.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    };
    for (case, present) in [
        ("present", true),
        ("absent", false),
        ("absent_at_leaf", false),
    ] {
        let slot = hash(&r[case]["slot"]);
        let theirs: merkle::Proof = serde_json::from_value(r[case]["proof"].clone()).unwrap();
        let ours = merkle::prove(&mut s, &slot).unwrap();
        assert_eq!(ours, theirs, "{case}: the proofs differ");
        let proven = theirs.verify(&root, &slot).unwrap();
        if present {
            assert_eq!(proven, Some(h(42 + 10_000)), "{case}");
        } else {
            assert_eq!(proven, None, "{case}");
        }
    }
    assert!(r["absent_at_leaf"]["proof"]["leaf"].is_object());

    let sh = &r["slot_hash"];
    let slot = cirrus_proto::record::Slot {
        author: hash(&sh["author"]),
        kind: Kind::Rating,
        key: sh["key"].as_str().unwrap().into(),
    };
    assert_eq!(sh["kind"], 1);
    assert_eq!(hex::encode(slot.hash()), sh["hash"].as_str().unwrap());
}
