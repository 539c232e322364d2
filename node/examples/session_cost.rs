//! What sessions and verified reads cost a client, side by side in one run:
//!
//! - put on node A, then at once read the record on node B over HTTP: with the
//!   token (one `get`, which the node holds until it has the write) against without
//!   (`get` again until the record shows); the time from sending the put to the
//!   answer that shows the write, p50 and p99;
//! - a verified read (majority of the nodes' roots, then a proof checked here)
//!   against a plain `get`: calls made and wall time, p50 and p99.
//!
//! Three nodes in this process (`Node::start`, loopback 127.0.0.81-83, ports 0),
//! node 1 the others' bootstrap; the client calls them over HTTP.
//!
//! `cargo build --release --examples && target/release/examples/session_cost --rounds 1000`

mod records;

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use cirrus_node::client::Client;
use cirrus_node::cloud::{Cloud, CloudConfig};
use cirrus_node::config::{Config, RunArgs};
use cirrus_node::node::Node;
use cirrus_proto::record::{Kind, Record, Slot};
use clap::Parser;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Writes (and reads) per variant.
    #[arg(long, default_value_t = 1000)]
    rounds: usize,
}

fn node_config(
    dir: &Path,
    ip: [u8; 4],
    bootstrap: Vec<libp2p::Multiaddr>,
) -> anyhow::Result<Config> {
    Ok(Config::build(&RunArgs {
        data_dir: Some(dir.to_path_buf()),
        bind: Some(vec![IpAddr::from(ip)]),
        p2p_port: Some(0),
        http_port: Some(0),
        ws_port: Some(0),
        udp_port: Some(0),
        stun_port: Some(0),
        bootstrap: Some(bootstrap),
        ..RunArgs::default()
    })?)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn row(what: &str, calls: f64, ms: &mut [f64]) {
    println!(
        "| {what} | {calls:.2} | {:.2} | {:.2} |",
        percentile(ms, 0.5),
        percentile(ms, 0.99)
    );
}

fn get_params(r: &Record) -> Value {
    json!({"author": hex::encode(r.author), "key": r.key, "kind": r.kind})
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let first = Node::start(&node_config(dirs[0].path(), [127, 0, 0, 81], vec![])?).await?;
    let boot: libp2p::Multiaddr = first.listen[0].clone();
    let mut nodes = vec![first];
    for (i, d) in dirs.iter().enumerate().skip(1) {
        nodes.push(
            Node::start(&node_config(
                d.path(),
                [127, 0, 0, 81 + i as u8],
                vec![boot.clone()],
            )?)
            .await?,
        );
    }
    let urls: Vec<String> = nodes.iter().map(|n| format!("http://{}", n.http)).collect();
    let clients: Vec<Client> = urls
        .iter()
        .map(|u| Client::connect(u, Duration::from_secs(15)))
        .collect::<Result<_, _>>()?;
    // Wait for the mesh: every node lists the other two.
    let t = Instant::now();
    loop {
        let mut ok = true;
        for c in &clients {
            let peers = c.call("getpeerinfo", json!({})).await?;
            ok &= peers.as_array().is_some_and(|p| p.len() == 2);
        }
        if ok {
            break;
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(30), "no mesh in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let key = SigningKey::from_bytes(&[0x5e; 32]);
    let records_of = |tag: &str| -> Vec<Record> {
        (0..args.rounds)
            .map(|i| Record::sign(&key, Kind::Doc, format!("{tag}/{i}"), 1, Some("v".into())))
            .collect()
    };

    println!(
        "{} rounds; 3 nodes on loopback; client over HTTP",
        args.rounds
    );
    println!();
    println!("| variant | calls per read | p50 ms | p99 ms |");
    println!("|---|---|---|---|");

    // Put on A, read on B: with the token, and without (polling until it shows).
    let (mut with, mut without) = (Vec::new(), Vec::new());
    let (mut with_calls, mut without_calls) = (0usize, 0usize);
    for (k, (a, b)) in records_of("with")
        .into_iter()
        .zip(records_of("without"))
        .enumerate()
    {
        let (w, r) = (&clients[k % 3], &clients[(k + 1) % 3]);
        let t0 = Instant::now();
        let put = w.call("put", json!({ "record": a })).await?;
        let mut p = get_params(&a);
        p["session"] = put["session"].clone();
        let got = r.call("get", p).await?;
        with.push(t0.elapsed().as_secs_f64() * 1000.0);
        with_calls += 1;
        anyhow::ensure!(
            got["record"]["seq"] == 1,
            "a read with the token missed its write"
        );

        let t0 = Instant::now();
        w.call("put", json!({ "record": b })).await?;
        loop {
            without_calls += 1;
            if r.call("get", get_params(&b)).await?["record"]["seq"] == 1 {
                break;
            }
        }
        without.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let n = args.rounds as f64;
    row(
        "put, then read on another node with the token",
        with_calls as f64 / n,
        &mut with,
    );
    row(
        "put, then read on another node without it (again until it shows)",
        without_calls as f64 / n,
        &mut without,
    );

    // Verified read against a plain get, of records every node holds.
    let cfg = CloudConfig {
        discover: false,
        ..CloudConfig::default()
    };
    let cloud = Cloud::connect(&urls, cfg).await?;
    let held = records_of("with");
    let (mut plain, mut verified) = (Vec::new(), Vec::new());
    let mut verified_calls = 0usize;
    for (k, r) in held.iter().enumerate() {
        let t0 = Instant::now();
        clients[k % 3].call("get", get_params(r)).await?;
        plain.push(t0.elapsed().as_secs_f64() * 1000.0);
        let slot = Slot {
            author: r.author,
            kind: Kind::Doc,
            key: r.key.clone(),
        };
        let t0 = Instant::now();
        let read = cloud.verified_get(&slot).await.context("verified read")?;
        verified.push(t0.elapsed().as_secs_f64() * 1000.0);
        // getdbhash of each node asked, and the proofs asked for until one checked.
        verified_calls += read.majority.asked + read.caught.len() + 1;
    }
    row("plain get", 1.0, &mut plain);
    row(
        "verified get (3 roots, 1 proof checked)",
        verified_calls as f64 / n,
        &mut verified,
    );

    for node in nodes {
        node.shutdown_token().cancel();
        node.run().await?;
    }
    Ok(())
}
