//! Reconciliation between two in-memory replicas: they end equal, whatever they held.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;

use cirrus_proto::merkle::{self, Hash, NibblePath, Node, NodeSource, NodeStore};
use cirrus_proto::record::{Kind, Record};
use cirrus_proto::sync::{self, Item, Replica};
use ed25519_dalek::SigningKey;
use proptest::prelude::*;

#[derive(Default)]
struct Mem {
    trie: HashMap<NibblePath, Node>,
    records: BTreeMap<Hash, (Record, Hash)>,
}

impl NodeSource for Mem {
    type Error = Infallible;
    fn get(&mut self, p: &NibblePath) -> Result<Option<Node>, Infallible> {
        Ok(self.trie.get(p).cloned())
    }
}
impl NodeStore for Mem {
    fn put(&mut self, p: &NibblePath, n: Node) -> Result<(), Infallible> {
        self.trie.insert(*p, n);
        Ok(())
    }
}

impl Replica for Mem {
    type Error = Infallible;
    fn node(&mut self, p: &NibblePath) -> Result<Option<Node>, Infallible> {
        self.get(p)
    }
    fn record(&mut self, slot: &Hash) -> Result<Option<Vec<u8>>, Infallible> {
        Ok(self.records.get(slot).map(|(r, _)| r.encode()))
    }
    fn records_under(
        &mut self,
        p: &NibblePath,
        max: usize,
    ) -> Result<Option<Vec<(Hash, Vec<u8>)>>, Infallible> {
        let (lo, hi) = p.hash_range();
        let mut out = Vec::new();
        let mut bytes = 0;
        for (slot, (r, _)) in self.records.range(lo..=hi) {
            let enc = r.encode();
            bytes += enc.len();
            if bytes > max {
                return Ok(None);
            }
            out.push((*slot, enc));
        }
        Ok(Some(out))
    }
}

impl Mem {
    /// Apply with the conflict rule; returns the slots where our version won.
    fn apply(&mut self, recs: &[Record]) -> Vec<Hash> {
        let mut lost = Vec::new();
        for r in recs {
            let (slot, id) = (r.slot().hash(), r.id());
            match self.records.get(&slot) {
                Some((old, old_id)) if *old_id == id => {}
                Some((old, old_id)) if !r.supersedes(&id, old, old_id) => lost.push(slot),
                _ => {
                    self.records.insert(slot, (r.clone(), id));
                    merkle::upsert(self, &slot, &id).unwrap();
                }
            }
        }
        lost
    }
    fn root(&mut self) -> Hash {
        merkle::root_hash(self).unwrap()
    }
    fn receive(&mut self, items: &[Item]) -> Vec<Item> {
        let recs: Vec<Record> = sync::carried(items)
            .into_iter()
            .map(|b| Record::decode(b).unwrap())
            .collect();
        for r in &recs {
            r.verify().unwrap();
        }
        let lost = self.apply(&recs);
        sync::answer(self, items, &lost).unwrap()
    }
}

/// Run a reconciliation from `a` to `b`; returns the number of round trips.
fn reconcile(a: &mut Mem, b: &mut Mem) -> usize {
    let mut msg = sync::opening(a).unwrap();
    let mut rounds = 0;
    while !msg.is_empty() {
        rounds += 1;
        assert!(rounds <= sync::MAX_ROUNDS, "did not terminate");
        let reply = b.receive(&msg);
        msg = a.receive(&reply);
    }
    rounds
}

fn records(spec: &[(u8, u8, u64, bool)]) -> Vec<Record> {
    spec.iter()
        .map(|&(a, k, seq, rating)| {
            let key = SigningKey::from_bytes(&[a + 1; 32]);
            if rating {
                Record::sign(
                    &key,
                    Kind::Rating,
                    format!("t{k}"),
                    seq,
                    Some(((seq % 5) + 1).to_string()),
                )
            } else {
                Record::sign(
                    &key,
                    Kind::Doc,
                    format!("k{k}"),
                    seq,
                    Some(format!("v{seq}")),
                )
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn two_replicas_end_equal(
        a_spec in prop::collection::vec((0u8..3, 0u8..60, 0u64..3, any::<bool>()), 0..120),
        b_spec in prop::collection::vec((0u8..3, 0u8..60, 0u64..3, any::<bool>()), 0..120),
    ) {
        let (ra, rb) = (records(&a_spec), records(&b_spec));
        let (mut a, mut b) = (Mem::default(), Mem::default());
        a.apply(&ra);
        b.apply(&rb);
        let mut merged = Mem::default();
        merged.apply(&ra);
        merged.apply(&rb);
        reconcile(&mut a, &mut b);
        prop_assert_eq!(a.root(), merged.root());
        prop_assert_eq!(b.root(), merged.root());
        prop_assert_eq!(a.records.len(), merged.records.len());
        // Already equal: one round trip, nothing sent back.
        prop_assert_eq!(reconcile(&mut a, &mut b), 1);
    }
}

#[test]
fn one_missing_record_among_many_takes_few_round_trips() {
    let key = SigningKey::from_bytes(&[9; 32]);
    let all: Vec<Record> = (0..20_000)
        .map(|i| Record::sign(&key, Kind::Doc, format!("k{i}"), 1, None))
        .collect();
    let (mut a, mut b) = (Mem::default(), Mem::default());
    a.apply(&all[1..]);
    b.apply(&all);
    let rounds = reconcile(&mut a, &mut b);
    assert_eq!(a.root(), b.root());
    assert!(rounds <= 4, "{rounds} round trips");
}

#[test]
fn malformed_items_are_errors() {
    let mut m = Mem::default();
    m.apply(&records(&[(0, 1, 1, false), (0, 2, 1, false)]));
    let bad = [
        Item::Empty {
            path: vec![65].into(),
        },
        Item::Empty {
            path: vec![].into(),
        },
        Item::Branch {
            path: vec![0].into(),
            bitmap: 3,
            hashes: vec![0; 5].into(),
        },
        Item::Leaf {
            path: vec![0].into(),
            record: vec![1, 2, 3].into(),
        },
    ];
    for item in bad {
        assert!(
            sync::answer(&mut m, std::slice::from_ref(&item), &[]).is_err(),
            "{item:?}"
        );
    }
}
