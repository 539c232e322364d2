//! How many coded symbols a difference of d items needs, and how good the probe's
//! estimate is: the figures behind `sync::NEED_PER_ITEM` and the catch-up bytes.
//!
//! `cargo run --release -p cirrus-proto --example riblt_overhead [trials]`
//!
//! For each d: sets of 10,000 shared items plus d split between the sides; the
//! smallest n whose first n symbols peel (found by doubling, then bisection), and
//! the estimate from the probe's bucket counts. Prints mean and p95 of n/d, the
//! estimate's relative error, and how often `respond`'s first ask is enough.

use cirrus_proto::sync::riblt::{self, Diff, Symbol};
use cirrus_proto::sync::{self, NEED_PER_ITEM, Outcome, PROBE};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn peels(theirs: &[Symbol], mine: &[Symbol], n: usize) -> bool {
    let d: Vec<Diff> = theirs[..n]
        .iter()
        .zip(mine)
        .map(|(t, m)| Diff::between((t.sum, t.check, t.count as u8), m))
        .collect();
    riblt::peel(d).is_some()
}

fn received(s: &[Symbol]) -> Vec<(u64, u32, u8)> {
    sync::decode_symbols(&sync::encode_symbols(s)).expect("own encoding")
}

fn main() {
    let trials: usize = std::env::args()
        .nth(1)
        .map_or(40, |a| a.parse().expect("trials"));
    let mut rng = Rng(7);
    println!(
        "| d | trials | symbols/d mean | symbols/d p95 | estimate/d p5..p95 | first ask enough | asked/d mean |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for d in [1usize, 10, 100, 1_000, 10_000] {
        let (mut ratios, mut est, mut asked) = (Vec::new(), Vec::new(), Vec::new());
        let mut enough = 0;
        for _ in 0..trials {
            let shared: Vec<u64> = (0..10_000).map(|_| rng.next()).collect();
            let only: Vec<u64> = (0..d).map(|_| rng.next()).collect();
            let split = (rng.next() % (d as u64 + 1)) as usize;
            let cap = (d * 4).max(4 * PROBE);
            let their_sketch =
                riblt::Sketch::new(shared.iter().chain(&only[..split]).copied(), cap);
            let my_sketch = riblt::Sketch::new(shared.iter().chain(&only[split..]).copied(), cap);
            let (theirs, mine) = (their_sketch.prefix(cap), my_sketch.prefix(cap));
            let (mut lo, mut hi) = (1, 1);
            while !peels(theirs, mine, hi) {
                lo = hi;
                hi = (hi * 2).min(cap);
            }
            while lo + 1 < hi {
                let mid = (lo + hi) / 2;
                if peels(theirs, mine, mid) {
                    hi = mid
                } else {
                    lo = mid
                }
            }
            ratios.push(hi as f64 / d as f64);
            let sizes = ((10_000 + split) as u64, (10_000 + d - split) as u64);
            let probe = received(&theirs[..PROBE]);
            let buckets = sync::encode_buckets(their_sketch.buckets());
            match sync::respond(&probe, mine, (&buckets, my_sketch.buckets()), sizes) {
                Outcome::Decoded(_) => {
                    enough += 1;
                    asked.push(PROBE as f64 / d as f64);
                    est.push(1.0);
                }
                Outcome::Need(n) => {
                    let n = n.min(cap);
                    asked.push(n as f64 / d as f64);
                    est.push(n as f64 / NEED_PER_ITEM / d as f64);
                    if peels(theirs, mine, n) {
                        enough += 1;
                    }
                }
            }
        }
        let q = |v: &mut Vec<f64>, p: f64| {
            v.sort_by(f64::total_cmp);
            v[((v.len() - 1) as f64 * p) as usize]
        };
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        println!(
            "| {d} | {trials} | {:.2} | {:.2} | {:.2}..{:.2} | {enough}/{trials} | {:.2} |",
            mean(&ratios),
            q(&mut ratios, 0.95),
            q(&mut est, 0.05),
            q(&mut est, 0.95),
            mean(&asked),
        );
    }
}
