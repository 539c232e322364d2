//! Catch-up cost of anti-entropy (issue 3, benchmark 2): a node that missed K of N
//! records reconciles with a peer that holds all N.
//!
//! Setup, outside the measurement:
//! 1. Sign N records (64 authors, one slot each) and write the first N − max(K)
//!    into a base redb file with `Store::apply`, in batches of 50,000.
//! 2. For each K: copy the base file for node A and add records up to N − K; copy
//!    A's file for node B. Start both nodes in this process with `Node::start` (port
//!    0, anti-entropy period of a year, so no periodic sync runs). A dials B; as the
//!    dialer, A starts its automatic reconciliation, which sees equal roots and ends
//!    after the summary.
//! 3. B's writer then applies the last K records (origin `Sync`, so B does not gossip
//!    them). Now A misses exactly K records that B holds.
//!
//! Measured: `cirrus_node::sync::reconcile_by(A, B)` by hand, once by coded symbols
//! (what nodes do) and once by the trie walk alone, each on fresh copies of the
//! stores, repeated until the roots agree (a walk leaves what did not fit in one
//! answer to the next reconciliation); the summed `SyncStats` and the wall time
//! until the last returns (the K records are then verified and committed on A).
//! Afterwards both roots and record counts must agree. Overhead is
//! `bytes_sent + bytes_received − record_bytes`, where `record_bytes` is the canonical
//! bytes of the records A received.
//!
//! `cargo build --release --examples && target/release/examples/catchup`
//! (`--n 1000000 --k 1,1000,100000` are the defaults; `--dir` picks the disk.)
//! `--k 1000000` (K = N) is a new node: A starts empty and streams all of B; the
//! time to verify every record on all cores is printed beside it.

mod records;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use cirrus_node::config::{Config, RunArgs};
use cirrus_node::node::{DB_FILE, Node};
use cirrus_node::store::writer::Origin;
use cirrus_node::store::{Store, Stored};
use cirrus_node::sync::{Method, SyncStats, reconcile_by};
use cirrus_proto::api::PutStatus;
use clap::Parser;
use libp2p::multiaddr::Protocol;
use serde_json::json;

const BATCH: usize = 50_000;

#[derive(Parser)]
struct Args {
    /// Records the complete node holds.
    #[arg(long, default_value_t = 1_000_000)]
    n: usize,
    /// Missing records, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,1000,100000")]
    k: Vec<usize>,
    /// Parent of the temp directory holding the databases (default: $TMPDIR or /tmp).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn fill(path: &Path, records: &[Stored]) -> anyhow::Result<()> {
    let store = Store::open(path)?;
    for chunk in records.chunks(BATCH) {
        let statuses = store.apply(chunk)?;
        ensure!(
            statuses.iter().all(|s| *s == PutStatus::Applied),
            "prefill records must all be new"
        );
    }
    Ok(())
}

fn node_config(dir: &Path, ip: [u8; 4]) -> anyhow::Result<Config> {
    Ok(Config::build(&RunArgs {
        data_dir: Some(dir.to_path_buf()),
        bind: Some(vec![IpAddr::from(ip)]),
        p2p_port: Some(0),
        http_port: Some(0),
        sync_interval_secs: Some(365 * 24 * 3600),
        ..RunArgs::default()
    })?)
}

async fn stop(node: Node) -> anyhow::Result<()> {
    node.shutdown_token().cancel();
    node.run().await?;
    Ok(())
}

struct Outcome {
    stats: SyncStats,
    reconciliations: usize,
    secs: f64,
    /// B's writer applying the same K records (verified already): a reference for
    /// how much of `secs` is the store.
    local_apply_secs: f64,
    new_on_a: u64,
}

async fn one_k(
    root: &Path,
    base: &Path,
    records: &[Stored],
    k: usize,
    method: Method,
) -> anyhow::Result<Outcome> {
    let n = records.len();
    let (a_dir, b_dir) = (root.join(format!("a{k}")), root.join(format!("b{k}")));
    std::fs::create_dir_all(&a_dir)?;
    std::fs::create_dir_all(&b_dir)?;
    let t = Instant::now();
    std::fs::copy(base, a_dir.join(DB_FILE))?;
    let base_count = Store::open(base)?.db_hash()?.records as usize;
    fill(&a_dir.join(DB_FILE), &records[base_count..n - k])?;
    std::fs::copy(a_dir.join(DB_FILE), b_dir.join(DB_FILE))?;
    eprintln!(
        "K={k}: two stores of {} records ready in {:.1} s",
        n - k,
        t.elapsed().as_secs_f64()
    );

    let a = Node::start(&node_config(&a_dir, [127, 0, 0, 71])?).await?;
    let b = Node::start(&node_config(&b_dir, [127, 0, 0, 72])?).await?;
    let b_addr = b
        .listen
        .iter()
        .find(|m| m.iter().any(|p| matches!(p, Protocol::Tcp(_))))
        .context("B has no tcp address")?
        .clone();
    a.network().dial(b_addr).await?;
    let t = Instant::now();
    while !a
        .network()
        .connections()
        .await?
        .iter()
        .any(|c| c.peer == b.peer_id)
    {
        ensure!(
            t.elapsed() < Duration::from_secs(10),
            "A did not connect to B"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A's automatic reconciliation on connect: equal roots, one summary. Let it end.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let t = Instant::now();
    for chunk in records[n - k..].chunks(BATCH) {
        let statuses = b.writer().apply(chunk.to_vec(), Origin::Sync).await?;
        ensure!(statuses.iter().all(|s| *s == PutStatus::Applied));
    }
    let local_apply_secs = t.elapsed().as_secs_f64();
    let before = a.store().db_hash()?;
    ensure!(before.records as usize == n - k && b.store().db_hash()?.records as usize == n);

    // A walk answer carries at most 4 MiB of records and leaves the rest to the next
    // reconciliation, so the node would reconcile again: count them all.
    let t = Instant::now();
    let mut stats = SyncStats::default();
    let mut reconciliations = 0;
    while reconciliations == 0 || a.store().db_hash()?.root != b.store().db_hash()?.root {
        reconciliations += 1;
        ensure!(
            reconciliations <= 20,
            "no convergence after 20 reconciliations"
        );
        let s = reconcile_by(
            a.network(),
            a.store(),
            a.writer(),
            a.metrics(),
            b.peer_id,
            method,
        )
        .await?;
        stats.add(&s);
    }
    let secs = t.elapsed().as_secs_f64();

    let (ha, hb) = (a.store().db_hash()?, b.store().db_hash()?);
    ensure!(
        ha.root == hb.root && ha.records == n as u64,
        "not converged: A {} records, B {}",
        ha.records,
        hb.records
    );
    stop(a).await?;
    stop(b).await?;
    std::fs::remove_dir_all(&a_dir)?;
    std::fs::remove_dir_all(&b_dir)?;
    Ok(Outcome {
        stats,
        reconciliations,
        secs,
        local_apply_secs,
        new_on_a: ha.records - before.records,
    })
}

/// Check every signature on all cores, as a reference for streaming a whole database.
fn verify_all(records: &[Stored]) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = records.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for part in records.chunks(chunk) {
            s.spawn(move || {
                for r in part {
                    r.record.verify().expect("signed here");
                }
            });
        }
    });
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let max_k = args.k.iter().copied().max().unwrap_or(0);
    ensure!(
        max_k <= args.n && !args.k.is_empty(),
        "every K must be at most N"
    );
    let parent = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::var_os("TMPDIR").map_or("/tmp".into(), PathBuf::from));
    let root = tempfile::Builder::new()
        .prefix("cirrus-catchup.")
        .tempdir_in(&parent)?;

    let t = Instant::now();
    let records = records::sign_records(args.n, 0x3c, "catchup");
    eprintln!(
        "signed {} records in {:.1} s",
        args.n,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let base = root.path().join("base.redb");
    fill(&base, &records[..args.n - max_k])?;
    eprintln!(
        "base store of {} records written in {:.1} s ({} MB)",
        args.n - max_k,
        t.elapsed().as_secs_f64(),
        std::fs::metadata(&base)?.len() / 1_000_000
    );

    if args.k.contains(&args.n) {
        let t = Instant::now();
        verify_all(&records);
        eprintln!(
            "verifying all {} records on {} cores took {:.1} s (the floor for a new node)",
            args.n,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            t.elapsed().as_secs_f64()
        );
    }
    let mut rows = Vec::new();
    for &k in &args.k {
        // K = N: A starts empty and streams B's whole database; the method only
        // decides the (empty) reconciliation after it.
        let methods: &[Method] = if k == args.n {
            &[Method::Symbols]
        } else {
            &[Method::Symbols, Method::Walk]
        };
        for &method in methods {
            let o = one_k(root.path(), &base, &records, k, method).await?;
            let s = &o.stats;
            let overhead = s.bytes_sent + s.bytes_received - s.record_bytes;
            let row = json!({
                "method": format!("{method:?}").to_lowercase(), "walked": s.walked,
            "reconciliations": o.reconciliations,
                "n": args.n, "k": k, "rounds": s.rounds, "requests": s.requests,
                "bytesSent": s.bytes_sent, "bytesReceived": s.bytes_received,
                "recordsReceived": s.records_received, "newRecordsOnA": o.new_on_a,
                "recordBytes": s.record_bytes, "pages": s.pages, "overheadBytes": overhead,
                "overheadPerMissing": overhead as f64 / k as f64,
                "overheadTarget": 32 * k, "seconds": o.secs,
                "localApplySeconds": o.local_apply_secs,
            });
            eprintln!("K={k}: {row}");
            println!("{row}");
            rows.push(row);
        }
    }

    eprintln!();
    eprintln!(
        "| method | walked | reconciliations | N | K | rounds | requests | records received | new on A | record bytes | bytes sent | bytes received | overhead bytes | overhead / missing record | target 32·K | seconds | B's local apply s |"
    );
    eprintln!(
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &rows {
        eprintln!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {:.3} | {:.3} |",
            r["method"].as_str().unwrap_or(""),
            r["walked"],
            r["reconciliations"],
            r["n"],
            r["k"],
            r["rounds"],
            r["requests"],
            r["recordsReceived"],
            r["newRecordsOnA"],
            r["recordBytes"],
            r["bytesSent"],
            r["bytesReceived"],
            r["overheadBytes"],
            r["overheadPerMissing"].as_f64().unwrap_or(f64::NAN),
            r["overheadTarget"],
            r["seconds"].as_f64().unwrap_or(f64::NAN),
            r["localApplySeconds"].as_f64().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
