//! Root update cost per record at 10k / 100k / 1M records (issue 2).
//!
//! For each size N: a fresh `Store` on a temp redb file is prefilled with N signed
//! records in big batches, then new records are applied
//! - one per transaction (`store.apply(&[one])`, default durability: one fsync each),
//! - in batches of 100 (the size of one full JSON-RPC batch),
//! - in one batch of M records,
//!
//! and the same three measurements are repeated on a copy of the prefilled file on
//! tmpfs (`/dev/shm`), where fsync is free, so the fsync share of a commit is visible.
//! The depth of the trie is the length of the measured slots' root-to-leaf paths
//! (`Proof::branches.len()`). As a control, the bare Merkle update
//! (`cirrus_proto::merkle::upsert` over an in-memory node map, no database) is timed
//! at the same N.
//!
//! Environment:
//! - `CIRRUS_BENCH_MAX`: largest N to run (default 1000000; 100000 skips 1M).
//! - `CIRRUS_BENCH_M`: new records per measurement (default 2000).
//! - `CIRRUS_BENCH_TMPFS`: directory for the fsync-free copy (default `/dev/shm`;
//!   empty string skips that part).
//! - `TMPDIR`: where the on-disk database goes (default `/tmp`).
//!
//! Run: `cargo bench -p cirrus-node --bench root_update`.

// The examples' record builder, so this bench and `catchup` sign records one way.
#[path = "../examples/records/mod.rs"]
mod records;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cirrus_node::store::{Store, Stored};
use cirrus_proto::merkle::{self, Hash, MemTrie};

const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];
const PREFILL_BATCH: usize = 50_000;
const SMALL_BATCH: usize = 100;

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")),
        Err(_) => default,
    }
}

/// The three store measurements at one size, in microseconds per record.
struct StoreTimes {
    single: Vec<Duration>,
    batch_small: Duration,
    batch_m: Duration,
}

impl StoreTimes {
    fn single_mean_us(&self) -> f64 {
        us(self.single.iter().sum::<Duration>()) / self.single.len() as f64
    }
    fn single_pct_us(&self, pct: f64) -> f64 {
        let mut v = self.single.clone();
        v.sort();
        let i = ((v.len() as f64 - 1.0) * pct).round() as usize;
        us(v[i])
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn applied_all(store: &Store, batch: &[Stored]) {
    let statuses = store.apply(batch).expect("apply");
    assert!(
        statuses
            .iter()
            .all(|s| *s == cirrus_proto::api::PutStatus::Applied),
        "every new record must be applied"
    );
}

/// Apply `fresh` (3 × M new records) to `store`: M singly, M in batches of 100, M
/// in one batch.
fn measure(store: &Store, fresh: &[Stored]) -> StoreTimes {
    let m = fresh.len() / 3;
    let (singles, rest) = fresh.split_at(m);
    let (smalls, big) = rest.split_at(m);
    let single = singles
        .iter()
        .map(|r| {
            let t = Instant::now();
            applied_all(store, std::slice::from_ref(r));
            t.elapsed()
        })
        .collect();
    let t = Instant::now();
    for chunk in smalls.chunks(SMALL_BATCH) {
        applied_all(store, chunk);
    }
    let batch_small = t.elapsed();
    let t = Instant::now();
    applied_all(store, big);
    let batch_m = t.elapsed();
    StoreTimes {
        single,
        batch_small,
        batch_m,
    }
}

/// Mean and max root-to-leaf path length (number of branches) of `records`' slots.
fn depths(store: &Store, records: &[Stored]) -> (f64, usize) {
    let mut sum = 0;
    let mut max = 0;
    for r in records {
        let (found, proof, _) = store.get_with_proof(&r.record.slot()).expect("proof");
        assert_eq!(found.map(|s| s.id), Some(r.id), "record is stored");
        sum += proof.branches.len();
        max = max.max(proof.branches.len());
    }
    (sum as f64 / records.len() as f64, max)
}

fn mem_upsert_us(prefill: &[(Hash, Hash)], fresh: &[(Hash, Hash)]) -> f64 {
    let mut trie = MemTrie::default();
    for (slot, id) in prefill {
        let Ok(_) = merkle::upsert(&mut trie, slot, id);
    }
    let t = Instant::now();
    for (slot, id) in fresh {
        let Ok(_) = merkle::upsert(&mut trie, slot, id);
    }
    us(t.elapsed()) / fresh.len() as f64
}

struct Row {
    n: usize,
    prefill_s: f64,
    file_mb: f64,
    disk: StoreTimes,
    tmpfs: Option<StoreTimes>,
    depth_mean: f64,
    depth_max: usize,
    mem_us: f64,
}

fn file_mb(path: &Path) -> f64 {
    std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / 1e6)
}

fn run_size(n: usize, all: &[Stored], fresh: &[Stored], tmpfs: Option<&Path>) -> Row {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.redb");
    let t = Instant::now();
    {
        let store = Store::open(&path).expect("open store");
        for chunk in all[..n].chunks(PREFILL_BATCH) {
            applied_all(&store, chunk);
        }
    }
    let prefill_s = t.elapsed().as_secs_f64();
    let size = file_mb(&path);
    eprintln!("  N={n}: prefilled in {prefill_s:.1} s, file {size:.0} MB");

    // The fsync-free copy first, while the disk file is exactly the prefilled one.
    let tmpfs_times = tmpfs.map(|base| {
        let dir = tempfile::tempdir_in(base).expect("tmpfs temp dir");
        let copy: PathBuf = dir.path().join("bench.redb");
        std::fs::copy(&path, &copy).expect("copy to tmpfs");
        let store = Store::open(&copy).expect("open tmpfs copy");
        let times = measure(&store, fresh);
        eprintln!("  N={n}: tmpfs measured");
        times
    });

    let store = Store::open(&path).expect("reopen store");
    let disk = measure(&store, fresh);
    eprintln!("  N={n}: disk measured");
    let (depth_mean, depth_max) = depths(&store, fresh);
    drop(store);

    let pairs = |rs: &[Stored]| -> Vec<(Hash, Hash)> {
        rs.iter().map(|r| (r.record.slot().hash(), r.id)).collect()
    };
    let mem_us = mem_upsert_us(&pairs(&all[..n]), &pairs(fresh));
    Row {
        n,
        prefill_s,
        file_mb: size,
        disk,
        tmpfs: tmpfs_times,
        depth_mean,
        depth_max,
        mem_us,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument, if any, is ignored.
    let max = env_usize("CIRRUS_BENCH_MAX", 1_000_000);
    let m = env_usize("CIRRUS_BENCH_M", 2000);
    assert!(
        m >= SMALL_BATCH,
        "CIRRUS_BENCH_M must be at least {SMALL_BATCH}"
    );
    let tmpfs: Option<PathBuf> = match std::env::var("CIRRUS_BENCH_TMPFS") {
        Ok(s) if s.is_empty() => None,
        Ok(s) => Some(PathBuf::from(s)),
        Err(_) => Some(PathBuf::from("/dev/shm")).filter(|p| p.is_dir()),
    };
    let sizes: Vec<usize> = SIZES.iter().copied().filter(|&n| n <= max).collect();
    let largest = *sizes
        .last()
        .expect("CIRRUS_BENCH_MAX is below the smallest size");

    let t = Instant::now();
    // Records 0..largest prefill; the 3M after them are the measured new records.
    let all = records::sign_records(largest + 3 * m, 0x5a, "bench");
    let (prefill, fresh) = all.split_at(largest);
    eprintln!(
        "signed {} records in {:.1} s",
        all.len(),
        t.elapsed().as_secs_f64()
    );

    let rows: Vec<Row> = sizes
        .iter()
        .map(|&n| run_size(n, prefill, fresh, tmpfs.as_deref()))
        .collect();

    println!();
    println!(
        "Store::apply on redb, M = {m} new records per column (singles: one transaction each; \
         batch 100: {} transactions; batch M: one transaction). Times in µs per record.",
        m / SMALL_BATCH
    );
    println!();
    println!(
        "| records N | prefill s | file MB | trie depth mean / max | single: mean | single: p50 | single: p99 | batch 100 | batch {m} | bare trie upsert (memory) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.1} | {:.0} | {:.2} / {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.2} |",
            r.n,
            r.prefill_s,
            r.file_mb,
            r.depth_mean,
            r.depth_max,
            r.disk.single_mean_us(),
            r.disk.single_pct_us(0.5),
            r.disk.single_pct_us(0.99),
            us(r.disk.batch_small) / m as f64,
            us(r.disk.batch_m) / m as f64,
            r.mem_us,
        );
    }
    if rows.iter().any(|r| r.tmpfs.is_some()) {
        println!();
        println!(
            "Same, on a copy of the prefilled file on tmpfs ({}), where fsync costs nothing:",
            tmpfs
                .as_deref()
                .map_or(String::new(), |p| p.display().to_string())
        );
        println!();
        println!(
            "| records N | single: mean | single: p50 | single: p99 | batch 100 | batch {m} |"
        );
        println!("|---:|---:|---:|---:|---:|---:|");
        for r in &rows {
            if let Some(t) = &r.tmpfs {
                println!(
                    "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                    r.n,
                    t.single_mean_us(),
                    t.single_pct_us(0.5),
                    t.single_pct_us(0.99),
                    us(t.batch_small) / m as f64,
                    us(t.batch_m) / m as f64,
                );
            }
        }
    }
}
