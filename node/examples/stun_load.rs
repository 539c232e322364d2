//! Closed-loop load on a STUN server over UDP: N sockets, each sending a Binding
//! request, waiting for the answer with the same transaction id, and sending the
//! next, for a fixed time. Prints one JSON line: requests answered per second and
//! latency percentiles.
//!
//! ```text
//! cargo run --release -p cirrus-node --example stun_load -- \
//!     --server 127.0.0.1:38084 [--sockets 32] [--secs 5] [--threads 1] [--label NAME]
//! ```
//!
//! Only for servers on this machine's loopback or the project's own test hosts.
//! An answer that does not come within 200 ms counts as lost and the socket moves on
//! to a new request; answers with another transaction id (late ones) are skipped.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cirrus_proto::stun::{self, Class, Message};
use tokio::net::UdpSocket;

const LOSS_TIMEOUT: Duration = Duration::from_millis(200);

struct Args {
    server: SocketAddr,
    sockets: usize,
    secs: f64,
    threads: usize,
    label: String,
}

fn parse_args() -> Args {
    let mut a = Args {
        server: "127.0.0.1:38084".parse().unwrap(),
        sockets: 32,
        secs: 5.0,
        threads: 1,
        label: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => a.server = value().parse().expect("--server IP:PORT"),
            "--sockets" => a.sockets = value().parse().expect("--sockets N"),
            "--secs" => a.secs = value().parse().expect("--secs SECONDS"),
            "--threads" => a.threads = value().parse().expect("--threads N"),
            "--label" => a.label = value(),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        a.server.ip().is_loopback(),
        "load only goes to loopback servers (got {})",
        a.server
    );
    assert!(a.sockets > 0 && a.threads > 0 && a.secs > 0.0);
    if a.label.is_empty() {
        a.label = a.server.to_string();
    }
    a
}

#[derive(Default)]
struct Tally {
    /// Microseconds, one per answered request.
    latencies: Vec<u32>,
    lost: u64,
    /// Answers that did not decode as a Binding success with our address.
    bad: u64,
}

/// One socket's closed loop until `until`.
async fn run_socket(server: SocketAddr, n: u64, until: Instant) -> std::io::Result<Tally> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    sock.connect(server).await?;
    let me = sock.local_addr()?;
    let mut t = Tally {
        latencies: Vec::with_capacity(1 << 16),
        ..Tally::default()
    };
    let mut buf = [0u8; stun::MAX_MESSAGE];
    let mut seq = 0u64;
    while Instant::now() < until {
        let mut txid = [0u8; 12];
        txid[..4].copy_from_slice(&(n as u32).to_be_bytes());
        txid[4..].copy_from_slice(&seq.to_be_bytes());
        seq += 1;
        let req = stun::binding_request(txid, "stun_load", None);
        let sent = Instant::now();
        sock.send(&req).await?;
        let deadline = tokio::time::Instant::from_std(sent + LOSS_TIMEOUT);
        loop {
            match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => {
                    t.lost += 1;
                    break;
                }
                // ICMP errors (nothing listening) surface as receive errors.
                Ok(Err(_)) => {
                    t.lost += 1;
                    tokio::time::sleep_until(deadline).await;
                    break;
                }
                Ok(Ok(len)) => {
                    let Ok(m) = Message::decode(&buf[..len]) else {
                        t.bad += 1;
                        continue;
                    };
                    if m.transaction_id != txid {
                        continue; // a late answer to an earlier request
                    }
                    if m.class != Class::Success
                        || stun::parse_binding_response(&buf[..len], &txid).ok() != Some(me)
                    {
                        t.bad += 1;
                    } else {
                        let us = sent.elapsed().as_micros().min(u32::MAX as u128) as u32;
                        t.latencies.push(us);
                    }
                    break;
                }
            }
        }
    }
    Ok(t)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64
}

fn main() {
    let a = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(a.secs);
    let tallies: Vec<Tally> = rt.block_on(async {
        let tasks: Vec<_> = (0..a.sockets)
            .map(|n| tokio::spawn(run_socket(a.server, n as u64, until)))
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task").expect("socket"));
        }
        out
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut lat: Vec<u32> = tallies
        .iter()
        .flat_map(|t| t.latencies.iter().copied())
        .collect();
    lat.sort_unstable();
    let lost: u64 = tallies.iter().map(|t| t.lost).sum();
    let bad: u64 = tallies.iter().map(|t| t.bad).sum();
    let line = serde_json::json!({
        "server": a.label,
        "addr": a.server.to_string(),
        "sockets": a.sockets,
        "secs": elapsed,
        "answered": lat.len(),
        "lost": lost,
        "bad": bad,
        "rps": lat.len() as f64 / elapsed,
        "p50_us": percentile(&lat, 0.50),
        "p99_us": percentile(&lat, 0.99),
        "p999_us": percentile(&lat, 0.999),
        "max_us": lat.last().copied().unwrap_or(0),
    });
    println!("{line}");
}
