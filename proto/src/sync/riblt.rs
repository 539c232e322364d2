//! Rateless invertible Bloom lookup tables over 64-bit items, after Yang, Gilad and
//! Alizadeh, "Practical Rateless Set Reconciliation" (SIGCOMM 2024).
//!
//! A set is coded into an endless sequence of symbols; symbol `i` holds the XOR of
//! the items mapped to it, the XOR of their checks and their count. Every item maps
//! to symbol 0 and then to a sparser and sparser sequence of later ones: index `i`
//! is hit with probability 1/(1 + i/2). Subtracting one side's first `n` symbols
//! from the other's codes the symmetric difference, and peeling it (a symbol holding
//! exactly one item names that item; remove it everywhere, repeat) recovers a
//! difference of `d` items from about 1.35·d symbols, whatever the sets' size.
//!
//! Written here rather than taken from a crate: the one Rust crate is a young
//! single-author port without a licence, and the wire form below (13 bytes a
//! symbol, counts modulo 256) and the incremental [`Sketch`] are specific to how
//! the node keeps its symbols.

/// A set element: 64 bits that name a record (see [`super::item`]).
pub type Item = u64;

/// One coded symbol, as a side computes it over its own set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Symbol {
    pub sum: u64,
    pub check: u32,
    /// Items coded here: exact on the side that built it.
    pub count: u64,
}

impl Symbol {
    fn toggle(&mut self, item: Item, add: bool) {
        self.sum ^= item;
        self.check ^= check(item);
        self.count = if add {
            self.count.wrapping_add(1)
        } else {
            self.count.wrapping_sub(1)
        };
    }
}

/// The check hash of an item: pure symbols are told by `check(sum) == check`. A
/// different mix from [`seed`], so it does not follow from the mapping.
fn check(item: Item) -> u32 {
    (mix(item ^ 0x6a09_e667_f3bc_c908) >> 32) as u32
}

fn seed(item: Item) -> u64 {
    mix(item)
}

/// splitmix64's finaliser: items are hash bits already, this only decorrelates.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The symbol indices an item is coded into: 0, then ever sparser.
struct Mapping {
    prng: u64,
    last: u64,
    started: bool,
}

impl Mapping {
    fn new(item: Item) -> Mapping {
        Mapping {
            prng: seed(item),
            last: 0,
            started: false,
        }
    }
}

impl Iterator for Mapping {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        if !self.started {
            self.started = true;
            return Some(0);
        }
        // The gap to the next index is (i + 1.5)·((1 - u)^(-1/2) - 1) for u uniform
        // in [0, 1), which gives index i the probability 1/(1 + i/2); 2^32/√r stands
        // in for (1 - u)^(-1/2) with r a uniform 64-bit number.
        self.prng = self.prng.wrapping_mul(0xda94_2042_e4dd_58b5);
        let step = (self.last as f64 + 1.5)
            * ((1u64 << 32) as f64 / (self.prng as f64 + 1.0).sqrt() - 1.0);
        self.last = self.last.saturating_add(step.ceil().max(1.0) as u64);
        Some(self.last)
    }
}

/// The probability that an item is coded into symbol `i`.
pub fn density(i: usize) -> f64 {
    2.0 / (2.0 + i as f64)
}

/// The first `n` symbols of a set.
pub fn encode(items: impl IntoIterator<Item = Item>, n: usize) -> Vec<Symbol> {
    let mut out = vec![Symbol::default(); n];
    for item in items {
        add_to(&mut out, item, true);
    }
    out
}

fn add_to(symbols: &mut [Symbol], item: Item, add: bool) {
    let n = symbols.len() as u64;
    for i in Mapping::new(item).take_while(|&i| i < n) {
        symbols[i as usize].toggle(item, add);
    }
}

/// The first symbols of a set, kept up to date as items come and go, so a peer's
/// question is answered without reading the set.
#[derive(Debug, Clone)]
pub struct Sketch {
    symbols: Vec<Symbol>,
    buckets: Vec<u64>,
}

impl Sketch {
    pub fn new(items: impl IntoIterator<Item = Item>, n: usize) -> Sketch {
        let mut sk = Sketch {
            symbols: vec![Symbol::default(); n],
            buckets: vec![0; BUCKETS],
        };
        for item in items {
            sk.insert(item);
        }
        sk
    }

    pub fn insert(&mut self, item: Item) {
        add_to(&mut self.symbols, item, true);
        let b = &mut self.buckets[bucket(item)];
        *b = b.wrapping_add(1);
    }

    pub fn remove(&mut self, item: Item) {
        add_to(&mut self.symbols, item, false);
        let b = &mut self.buckets[bucket(item)];
        *b = b.wrapping_sub(1);
    }

    /// Items per bucket of the size estimate.
    pub fn buckets(&self) -> &[u64] {
        &self.buckets
    }

    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The first `n` symbols (`n` at most [`Sketch::len`]).
    pub fn prefix(&self, n: usize) -> &[Symbol] {
        &self.symbols[..n.min(self.symbols.len())]
    }
}

/// A symbol of the difference (theirs minus ours); counts are kept modulo 256, all
/// the wire carries past the first few symbols.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Diff {
    pub sum: u64,
    pub check: u32,
    pub count: u8,
}

impl Diff {
    /// `theirs − mine`, where only the low byte of their count is known.
    pub fn between(theirs: (u64, u32, u8), mine: &Symbol) -> Diff {
        Diff {
            sum: theirs.0 ^ mine.sum,
            check: theirs.1 ^ mine.check,
            count: theirs.2.wrapping_sub(mine.count as u8),
        }
    }

    fn is_empty(&self) -> bool {
        *self == Diff::default()
    }

    /// `Some(true)`: exactly one item that only they hold; `Some(false)`: one that
    /// only we hold.
    fn pure(&self) -> Option<bool> {
        let side = match self.count {
            1 => true,
            255 => false,
            _ => return None,
        };
        (check(self.sum) == self.check).then_some(side)
    }

    fn remove(&mut self, item: Item, theirs: bool) {
        self.sum ^= item;
        self.check ^= check(item);
        self.count = if theirs {
            self.count.wrapping_sub(1)
        } else {
            self.count.wrapping_add(1)
        };
    }
}

/// The symmetric difference, by side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Difference {
    /// Items only the other side holds.
    pub theirs: Vec<Item>,
    /// Items only we hold.
    pub ours: Vec<Item>,
}

impl Difference {
    pub fn len(&self) -> usize {
        self.theirs.len() + self.ours.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Peel a coded difference. `None` when these symbols are too few for it (or were
/// made up: a symbol that claims an item the item's mapping does not reach, or more
/// items than symbols, ends the peeling).
pub fn peel(mut diff: Vec<Diff>) -> Option<Difference> {
    let n = diff.len();
    let mut out = Difference::default();
    let mut queue: Vec<usize> = (0..n).filter(|&i| diff[i].pure().is_some()).collect();
    while let Some(i) = queue.pop() {
        let Some(theirs) = diff[i].pure() else {
            continue;
        };
        // Each true item is recovered once; more than one per symbol is a lie.
        if out.len() >= n {
            return None;
        }
        let item = diff[i].sum;
        let mut reached = false;
        for j in Mapping::new(item).take_while(|&j| j < n as u64) {
            let j = j as usize;
            reached |= j == i;
            diff[j].remove(item, theirs);
            if diff[j].pure().is_some() {
                queue.push(j);
            }
        }
        if !reached {
            return None;
        }
        if theirs {
            out.theirs.push(item);
        } else {
            out.ours.push(item);
        }
    }
    diff.iter().all(Diff::is_empty).then_some(out)
}

/// Buckets of the size estimate: items are also counted by the top byte of a third
/// mix, so the count differences of 256 independent buckets say how large the
/// difference is before any symbol is peeled.
pub const BUCKETS: usize = 256;

pub fn bucket(item: Item) -> usize {
    (mix(item ^ 0xbb67_ae85_84ca_a73b) >> 56) as usize
}

/// Estimate the size of the difference from the bucket counts: theirs (low bytes,
/// as sent) against ours (exact), and `delta`, their set size minus ours. Bucket
/// k's count difference has mean `delta/256` and variance `d·p(1 − p)` with p =
/// 1/256, so each standardised square estimates `d`, and their mean is within about
/// ±9% (√(2/255)). The low byte is enough while a bucket's deviation stays under
/// 128, that is for differences up to a few hundred thousand.
pub fn estimate(theirs: &[u8], mine: &[u64], delta: i64) -> f64 {
    let p = 1.0 / BUCKETS as f64;
    let mean = delta as f64 * p;
    let near = mean.round() as i64;
    let terms = theirs.len().min(mine.len());
    if terms == 0 {
        return delta.unsigned_abs() as f64;
    }
    let sum: f64 = theirs
        .iter()
        .zip(mine)
        .map(|(&t, &m)| {
            let raw = t.wrapping_sub(m as u8).wrapping_sub(near as u8) as i8;
            let c = (near + raw as i64) as f64 - mean;
            c * c / (p * (1.0 - p))
        })
        .sum();
    (sum / terms as f64).max(delta.unsigned_abs() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(range: std::ops::Range<u64>) -> Vec<Item> {
        range
            .map(|i| mix(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .collect()
    }

    fn diff(theirs: &[Symbol], mine: &[Symbol]) -> Vec<Diff> {
        theirs
            .iter()
            .zip(mine)
            .map(|(t, m)| Diff::between((t.sum, t.check, t.count as u8), m))
            .collect()
    }

    #[test]
    fn the_mapping_hits_index_i_with_probability_one_over_one_plus_half_i() {
        let all = items(0..20_000);
        for i in [1usize, 2, 10, 100] {
            let hits = all
                .iter()
                .filter(|&&x| {
                    Mapping::new(x)
                        .take_while(|&j| j <= i as u64)
                        .any(|j| j == i as u64)
                })
                .count();
            let p = hits as f64 / all.len() as f64;
            let want = density(i);
            assert!(
                (p - want).abs() < 0.02 + want * 0.1,
                "index {i}: {p} against {want}"
            );
        }
    }

    #[test]
    fn a_difference_is_peeled_from_about_one_and_a_half_symbols_per_item() {
        let shared = items(0..5_000);
        let only_theirs = items(10_000..10_600);
        let only_ours = items(20_000..20_400);
        let theirs = encode(shared.iter().chain(&only_theirs).copied(), 1_600);
        let mine = encode(shared.iter().chain(&only_ours).copied(), 1_600);
        let mut got = peel(diff(&theirs, &mine)).expect("1.6 symbols per item peel");
        got.theirs.sort();
        got.ours.sort();
        let (mut t, mut o) = (only_theirs.clone(), only_ours.clone());
        t.sort();
        o.sort();
        assert_eq!(got.theirs, t);
        assert_eq!(got.ours, o);
    }

    #[test]
    fn too_few_symbols_say_so() {
        let theirs = encode(items(0..1_000), 100);
        let mine = encode(std::iter::empty(), 100);
        assert_eq!(peel(diff(&theirs, &mine)), None);
    }

    #[test]
    fn equal_sets_peel_to_nothing() {
        let s = encode(items(0..1_000), 64);
        assert_eq!(peel(diff(&s, &s)), Some(Difference::default()));
    }

    #[test]
    fn a_sketch_kept_up_to_date_equals_one_built_afresh() {
        let mut sk = Sketch::new(items(0..1_000), 256);
        for x in items(1_000..1_100) {
            sk.insert(x);
        }
        for x in items(0..50) {
            sk.remove(x);
        }
        assert_eq!(sk.prefix(256), encode(items(50..1_100), 256).as_slice());
    }

    #[test]
    fn made_up_symbols_end_the_peeling_without_a_result() {
        // A pure-looking symbol whose item does not map there.
        let mut d = vec![Diff::default(); 64];
        let x = (0u64..)
            .map(mix)
            .find(|&x| !Mapping::new(x).take_while(|&j| j < 64).any(|j| j == 63))
            .expect("some item skips index 63");
        d[63] = Diff {
            sum: x,
            check: check(x),
            count: 1,
        };
        assert_eq!(peel(d), None);
    }

    #[test]
    fn the_estimate_is_within_a_third() {
        for (a, b) in [(0u64, 1_000u64), (500, 500), (3_000, 7_000), (0, 100_000)] {
            let shared = items(0..2_000);
            let theirs = Sketch::new(
                shared.iter().copied().chain(items(1 << 40..(1 << 40) + b)),
                0,
            );
            let mine = Sketch::new(
                shared.iter().copied().chain(items(1 << 41..(1 << 41) + a)),
                0,
            );
            let low: Vec<u8> = theirs.buckets().iter().map(|&c| c as u8).collect();
            let est = estimate(&low, mine.buckets(), b as i64 - a as i64);
            let d = (a + b) as f64;
            assert!(est > d / 1.33 && est < d * 1.33, "{a}+{b}: estimate {est}");
        }
    }
}
