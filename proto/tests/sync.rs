//! Reconciliation between two in-memory replicas: they end equal, whatever they held.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;

use cirrus_proto::merkle::{self, Hash, NibblePath, Node, NodeSource, NodeStore};
use cirrus_proto::record::{Kind, Record};
use cirrus_proto::sync::{self, Item, Outcome, Replica, riblt};
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

/// Two replicas from their specs, and one that holds both.
fn replicas(a: &[(u8, u8, u64, bool)], b: &[(u8, u8, u64, bool)]) -> (Mem, Mem, Mem) {
    let (ra, rb) = (records(a), records(b));
    let (mut ma, mut mb, mut merged) = (Mem::default(), Mem::default(), Mem::default());
    ma.apply(&ra);
    mb.apply(&rb);
    merged.apply(&ra);
    merged.apply(&rb);
    (ma, mb, merged)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn two_replicas_end_equal(
        a_spec in prop::collection::vec((0u8..3, 0u8..60, 0u64..3, any::<bool>()), 0..120),
        b_spec in prop::collection::vec((0u8..3, 0u8..60, 0u64..3, any::<bool>()), 0..120),
    ) {
        let (mut a, mut b, mut merged) = replicas(&a_spec, &b_spec);
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

impl Mem {
    /// Our first `n` symbols and bucket counts.
    fn sketch(&self, n: usize) -> riblt::Sketch {
        riblt::Sketch::new(
            self.records
                .iter()
                .map(|(slot, (_, id))| sync::item(slot, id)),
            n,
        )
    }
    fn under(&mut self, prefixes: &[[u8; sync::PREFIX]]) -> Vec<Record> {
        let mut out = Vec::new();
        for p in prefixes {
            for (_, bytes) in self
                .records_under(&sync::prefix_path(p), usize::MAX)
                .unwrap()
                .unwrap()
            {
                out.push(Record::decode(&bytes).unwrap());
            }
        }
        out
    }
}

/// The symbol exchange from `a` to `b`, as the node runs it; `Some(round trips)`
/// once the difference was settled, `None` when it was left to the walk.
fn settle_by_symbols(a: &mut Mem, b: &mut Mem) -> Option<usize> {
    let mut n = sync::PROBE;
    for ask in 1..=4 {
        let mine = a.sketch(n);
        let wire = sync::decode_symbols(&sync::encode_symbols(mine.prefix(n))).unwrap();
        let buckets = if ask == 1 {
            sync::encode_buckets(mine.buckets())
        } else {
            Vec::new()
        };
        let theirs = b.sketch(n);
        let sizes = (a.records.len() as u64, b.records.len() as u64);
        match sync::respond(&wire, theirs.prefix(n), (&buckets, theirs.buckets()), sizes) {
            Outcome::Need(m) => n = m,
            Outcome::Decoded(d) => {
                let pre =
                    |items: &[u64]| items.iter().map(|&i| sync::prefix(i)).collect::<Vec<_>>();
                let to_a = b.under(&pre(&d.ours));
                let won_a = a.apply(&to_a);
                let mut to_b = a.under(&pre(&d.theirs));
                to_b.extend(won_a.iter().map(|s| a.records[s].0.clone()));
                let won_b = b.apply(&to_b);
                let back: Vec<Record> = won_b.iter().map(|s| b.records[s].0.clone()).collect();
                a.apply(&back);
                return Some(ask + 1);
            }
        }
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn the_symbol_exchange_leaves_two_replicas_equal(
        a_spec in prop::collection::vec((0u8..3, 0u8..80, 0u64..3, any::<bool>()), 0..160),
        b_spec in prop::collection::vec((0u8..3, 0u8..80, 0u64..3, any::<bool>()), 0..160),
    ) {
        let (mut a, mut b, mut merged) = replicas(&a_spec, &b_spec);
        let rounds = settle_by_symbols(&mut a, &mut b);
        prop_assert!(rounds.is_some(), "left to the walk");
        prop_assert!(rounds.unwrap() <= 4);
        prop_assert_eq!(a.root(), merged.root());
        prop_assert_eq!(b.root(), merged.root());
    }

    /// Symbols and bucket counts of any bytes: an answer, never a panic; a "need"
    /// always asks for more than was sent, and a decoded difference has at most
    /// as many items as symbols.
    #[test]
    fn any_symbols_get_an_answer(
        bytes in prop::collection::vec(any::<u8>(), 0..4000),
        buckets in prop::collection::vec(any::<u8>(), 256..=256),
        first in any::<bool>(),
        sizes in (any::<u64>(), any::<u64>()),
    ) {
        let whole = bytes.len() / sync::SYMBOL_BYTES * sync::SYMBOL_BYTES;
        let theirs = sync::decode_symbols(&bytes[..whole]).unwrap();
        prop_assert!(bytes.len() == whole || sync::decode_symbols(&bytes).is_none());
        let mut mine = Mem::default();
        mine.apply(&records(&[(0, 1, 1, false), (1, 2, 1, true), (2, 3, 2, false)]));
        let sk = mine.sketch(theirs.len());
        let b: &[u8] = if first { &buckets } else { &[] };
        match sync::respond(&theirs, sk.prefix(theirs.len()), (b, sk.buckets()), sizes) {
            Outcome::Need(n) => prop_assert!(n > theirs.len() && n <= sync::MAX_SYMBOLS),
            Outcome::Decoded(d) => prop_assert!(d.len() <= theirs.len()),
        }
    }
}
