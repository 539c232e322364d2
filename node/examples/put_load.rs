//! Load generator for single-node `put` throughput over HTTP (issue 2).
//!
//! Signs `--records` records up front (each in its own slot, so every put is new),
//! encodes them as JSON-RPC batches of `--batch` puts, then sends the batches over
//! `--concurrency` connections (each connection sends its next batch as soon as the
//! previous one is answered) and checks that every response says `applied`. Only
//! the sending is timed; signing and encoding happen before the clock starts.
//!
//! Prints a human line on stderr and one JSON line on stdout:
//! `{"batch":B,"concurrency":C,"records":R,"seconds":S,"putsPerSec":P,...}`.
//!
//! `cargo run --release --example put_load -- http://127.0.0.1:38081 --batch 100`

mod records;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Node HTTP API, e.g. http://127.0.0.1:38081
    url: String,
    /// Records to put in total.
    #[arg(long, default_value_t = 20_000)]
    records: usize,
    /// Puts per JSON-RPC batch (one HTTP request).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent connections, each with one request in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Bytes of value per record.
    #[arg(long, default_value_t = 64)]
    value_bytes: usize,
}

/// Signing keys are random per run, so a second run against the same node puts new
/// slots rather than duplicates.
fn authors(n: usize) -> anyhow::Result<Vec<SigningKey>> {
    (0..n)
        .map(|_| {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
            Ok(SigningKey::from_bytes(&seed))
        })
        .collect()
}

/// One HTTP body per batch, JSON already encoded. Signed on every core.
fn bodies(args: &Args) -> anyhow::Result<Vec<Vec<u8>>> {
    let keys = authors(64)?;
    let value: String = "x".repeat(args.value_bytes);
    let batches: Vec<(usize, usize)> = (0..args.records)
        .step_by(args.batch)
        .map(|start| (start, (start + args.batch).min(args.records)))
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = batches.len().div_ceil(threads).max(1);
    let mut out = Vec::with_capacity(batches.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = batches
            .chunks(per_thread)
            .map(|mine| {
                let (keys, value) = (&keys, &value);
                s.spawn(move || {
                    mine.iter()
                        .map(|&(start, end)| records::put_batch_body(keys, start..end, value))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            out.extend(h.join().expect("signing thread"));
        }
    });
    Ok(out)
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat`
/// (Linux; in ticks of USER_HZ, which is 100 on Linux).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split(' ').collect();
    // Fields 14 and 15 of the file (utime, stime) are 11 and 12 after the comm.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Check one batch response: an array with one `applied` result per request.
fn check(body: &[u8], expected: usize) -> anyhow::Result<()> {
    let v: Value = serde_json::from_slice(body).context("response is not JSON")?;
    let Value::Array(items) = v else {
        bail!("expected a batch response, got {v:.200}");
    };
    ensure!(
        items.len() == expected,
        "{} responses for {expected} requests",
        items.len()
    );
    for item in &items {
        let status = item.pointer("/result/status").and_then(Value::as_str);
        ensure!(status == Some("applied"), "put not applied: {item}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.records > 0 && args.batch > 0 && args.concurrency > 0,
        "records, batch and concurrency must be positive"
    );
    let t = Instant::now();
    let bodies = Arc::new(bodies(&args)?);
    eprintln!(
        "signed and encoded {} records in {} batches in {:.1} s",
        args.records,
        bodies.len(),
        t.elapsed().as_secs_f64()
    );

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(120))
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_start = cpu_time();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, bodies, next) = (client.clone(), bodies.clone(), next.clone());
        let (url, batch, records) = (args.url.clone(), args.batch, args.records);
        tasks.spawn(async move {
            let mut latency = Duration::ZERO;
            let mut sent = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return anyhow::Ok((latency, sent));
                };
                let expected = batch.min(records - i * batch);
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .with_context(|| format!("POST {url}"))?;
                let status = resp.status();
                let bytes = resp.bytes().await?;
                latency += t.elapsed();
                ensure!(status.is_success(), "HTTP {status}: {bytes:?}");
                check(&bytes, expected)?;
                sent += 1;
            }
        });
    }
    let mut latency = Duration::ZERO;
    let mut requests = 0;
    while let Some(done) = tasks.join_next().await {
        let (l, n) = done??;
        latency += l;
        requests += n;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu_us = match (cpu_start, cpu_time()) {
        (Some(a), Some(b)) => (b - a).as_secs_f64() * 1e6 / args.records as f64,
        _ => f64::NAN,
    };
    let rate = args.records as f64 / secs;
    let mean_ms = latency.as_secs_f64() * 1e3 / requests.max(1) as f64;
    eprintln!(
        "{} records, batch {}, {} connections: {secs:.2} s, {rate:.0} puts/s, \
         mean request latency {mean_ms:.1} ms, load generator CPU {cpu_us:.1} µs/record",
        args.records, args.batch, args.concurrency
    );
    println!(
        "{}",
        json!({"batch": args.batch, "concurrency": args.concurrency, "records": args.records,
               "requests": requests, "seconds": secs, "putsPerSec": rate,
               "meanLatencyMs": mean_ms, "clientCpuUsPerRecord": cpu_us})
    );
    Ok(())
}
