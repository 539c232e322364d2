//! Where the time of a `put` goes, stage by stage, in one thread and without HTTP
//! (issue 2). Builds the same JSON-RPC batches as `put_load`, then times, over all
//! of them, each step the node takes for a batch: envelope parsing, params
//! deserialization, signature check, record id, the store commit, and encoding the
//! response. Prints CPU microseconds per record for each stage.
//!
//! `cargo run --release --example put_stages -- --records 20000 --batch 100`

mod records;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cirrus_node::api::methods;
use cirrus_node::store::{Store, Stored};
use cirrus_proto::api::{PutParams, PutResult, PutStatus};
use cirrus_proto::jsonrpc::{Body, Request, Response, parse_body};
use clap::Parser;
use ed25519_dalek::SigningKey;

#[derive(Parser)]
struct Args {
    /// Records in total.
    #[arg(long, default_value_t = 20_000)]
    records: usize,
    /// Puts per JSON-RPC batch (and per store commit).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Bytes of value per record.
    #[arg(long, default_value_t = 64)]
    value_bytes: usize,
    /// Directory for the store's temp database (default: $TMPDIR or /tmp). Use a
    /// tmpfs such as /dev/shm to see the commit without the cost of fsync.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn bodies(args: &Args) -> Vec<Vec<u8>> {
    let keys: Vec<SigningKey> = (0..64u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]))
        .collect();
    let value = "x".repeat(args.value_bytes);
    (0..args.records)
        .step_by(args.batch)
        .map(|start| {
            records::put_batch_body(&keys, start..(start + args.batch).min(args.records), &value)
        })
        .collect()
}

#[derive(Default)]
struct Stages {
    envelope: Duration,
    params: Duration,
    verify: Duration,
    id: Duration,
    store: Duration,
    response: Duration,
}

fn timed<T>(acc: &mut Duration, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    *acc += t.elapsed();
    out
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.records > 0 && args.batch > 0, "records and batch > 0");
    let bodies = bodies(&args);
    let dir = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let store = Store::open(&dir.path().join("stages.redb"))?;

    let mut s = Stages::default();
    let total = Instant::now();
    for body in &bodies {
        let items = timed(&mut s.envelope, || match parse_body(body) {
            Ok(Body::Batch(items)) => items
                .into_iter()
                .map(|v| Request::from_value(v).expect("valid request"))
                .collect::<Vec<_>>(),
            _ => panic!("expected a batch"),
        });
        let mut ids = Vec::with_capacity(items.len());
        let mut batch = Vec::with_capacity(items.len());
        for req in items {
            let PutParams { record } = timed(&mut s.params, || {
                methods::params::<PutParams>(req.params).expect("valid params")
            });
            timed(&mut s.verify, || {
                record.verify().expect("signature verifies")
            });
            let id = timed(&mut s.id, || record.id());
            ids.push(req.id.expect("has an id"));
            batch.push(Stored { record, id });
        }
        let statuses = timed(&mut s.store, || store.apply(&batch))?;
        anyhow::ensure!(statuses.iter().all(|st| *st == PutStatus::Applied));
        let bytes = timed(&mut s.response, || {
            let responses: Vec<Response> = ids
                .into_iter()
                .zip(&batch)
                .zip(statuses)
                .map(|((rid, stored), status)| {
                    Response::ok(
                        rid,
                        serde_json::to_value(PutResult {
                            id: stored.id,
                            status,
                            // The node signs one token per message; not modelled here.
                            session: String::new(),
                        })
                        .expect("serializes"),
                    )
                })
                .collect();
            serde_json::to_vec(&responses).expect("serializes")
        });
        std::hint::black_box(bytes);
    }
    let total = total.elapsed();

    let n = args.records as f64;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n;
    println!(
        "{} records in batches of {} (store on {}):",
        args.records,
        args.batch,
        dir.path().display()
    );
    println!();
    println!("| stage | µs per record | share |");
    println!("|---|---:|---:|");
    for (name, d) in [
        ("JSON parse + envelope check", s.envelope),
        ("params → Record (hex decode)", s.params),
        ("ed25519 verify_strict", s.verify),
        ("record id (SHA-256)", s.id),
        ("Store::apply (one commit per batch)", s.store),
        ("encode responses", s.response),
    ] {
        println!(
            "| {name} | {:.1} | {:.0}% |",
            per(d),
            100.0 * d.as_secs_f64() / total.as_secs_f64()
        );
    }
    println!(
        "| **total, one thread** | **{:.1}** | → {:.0} records/s per core |",
        per(total),
        n / total.as_secs_f64()
    );
    Ok(())
}
