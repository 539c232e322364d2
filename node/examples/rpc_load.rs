//! Closed-loop request load over one transport (issue 5, scripts/bench-transports.sh).
//!
//! `--connections` WebSocket connections, UDP sockets or HTTP clients each send one
//! request, wait for its answer, and send the next, for `--seconds`. Only answers that
//! carry a `result` count; errors and (UDP) timeouts are reported separately.
//!
//! - `ws://HOST:PORT`: one WebSocket per connection, one request in flight on each.
//! - `udp://HOST:PORT`: one socket per connection. Each first does the cookie round
//!   trip (a `getnodeinfo` whose answer is over the 3x budget, then again with the
//!   cookie), so it is a validated source for the run; a request not answered within
//!   `--udp-timeout-ms` is sent again and counted as a timeout.
//! - `http://HOST:PORT`: reqwest (hyper) with keep-alive, for a cross-check of wrk.
//!
//! The clock starts once every connection is open (and every UDP source validated).
//! Prints a human line on stderr and one JSON line on stdout:
//! `{"transport":"ws","connections":C,"seconds":S,"answers":N,"perSec":R,"errors":E,"timeouts":T}`.
//!
//! `target/release/examples/rpc_load ws://127.0.0.1:38082 --connections 32 --seconds 10`

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Args {
    /// ws://, udp:// or http://HOST:PORT
    url: String,
    /// Concurrent connections (sockets), each with one request in flight.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Length of the timed run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Method to call, with empty params.
    #[arg(long, default_value = "getdbhash")]
    method: String,
    /// Runtime worker threads of this load generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// UDP: resend a request not answered within this time.
    #[arg(long, default_value_t = 1000)]
    udp_timeout_ms: u64,
}

#[derive(Default)]
struct Counts {
    answers: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
}

struct Run {
    args: Args,
    counts: Counts,
    /// Set when the timed window ends.
    stop: AtomicBool,
    /// Set once every connection is ready: answers before it are not counted.
    started: AtomicBool,
    ready: Barrier,
}

impl Run {
    fn request(&self, id: u64) -> String {
        json!({"jsonrpc": "2.0", "id": id, "method": self.args.method, "params": {}}).to_string()
    }

    /// Count one answer to request `id`; false if it is not an answer to it.
    fn count(&self, bytes: &[u8], id: u64) -> bool {
        let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
            return false;
        };
        if v.get("id") != Some(&json!(id)) {
            return false;
        }
        if self.started.load(Ordering::Relaxed) && !self.stop.load(Ordering::Relaxed) {
            let c = if v.get("result").is_some() {
                &self.counts.answers
            } else {
                &self.counts.errors
            };
            c.fetch_add(1, Ordering::Relaxed);
        }
        true
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (scheme, rest) = args.url.split_once("://").context("URL needs a scheme")?;
    let (scheme, rest) = (scheme.to_string(), rest.trim_end_matches('/').to_string());
    let n = args.connections;
    let seconds = args.seconds;
    let run = Arc::new(Run {
        args,
        counts: Counts::default(),
        stop: AtomicBool::new(false),
        started: AtomicBool::new(false),
        ready: Barrier::new(n + 1),
    });
    let mut tasks = Vec::new();
    for c in 0..n {
        let run = run.clone();
        let (scheme, rest) = (scheme.clone(), rest.clone());
        tasks.push(tokio::spawn(async move {
            match scheme.as_str() {
                "ws" => ws_conn(&run, &format!("ws://{rest}"), c).await,
                "udp" => udp_conn(&run, &rest, c).await,
                "http" => http_conn(&run, &format!("http://{rest}"), c).await,
                other => bail!("unknown scheme {other}"),
            }
        }));
    }
    if tokio::time::timeout(Duration::from_secs(60), run.ready.wait())
        .await
        .is_err()
    {
        for t in tasks {
            if t.is_finished() {
                t.await??;
            }
        }
        bail!("not every connection got ready within 60 s");
    }
    run.started.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    run.stop.store(true, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    for t in tasks {
        t.await??;
    }
    let answers = run.counts.answers.load(Ordering::Relaxed);
    let errors = run.counts.errors.load(Ordering::Relaxed);
    let timeouts = run.counts.timeouts.load(Ordering::Relaxed);
    let per_sec = answers as f64 / elapsed;
    eprintln!(
        "{scheme}: {n} connections, {elapsed:.1} s: {answers} answers, {per_sec:.0}/s, \
         {errors} errors, {timeouts} timeouts"
    );
    println!(
        "{}",
        json!({"transport": scheme, "connections": n, "seconds": elapsed, "answers": answers,
               "perSec": per_sec, "errors": errors, "timeouts": timeouts})
    );
    Ok(())
}

async fn ws_conn(run: &Run, url: &str, c: usize) -> anyhow::Result<()> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("connection {c}: connect {url}"))?;
    run.ready.wait().await;
    let mut id = 0u64;
    while !run.stop.load(Ordering::Relaxed) {
        id += 1;
        ws.send(Message::text(run.request(id))).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if run.count(t.as_bytes(), id) => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("connection {c}: {e}"),
                None => bail!("connection {c}: closed by the node"),
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}

async fn udp_conn(run: &Run, addr: &str, c: usize) -> anyhow::Result<()> {
    let to: SocketAddr = tokio::net::lookup_host(addr)
        .await?
        .next()
        .context("no address")?;
    let sock = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).await?;
    sock.connect(to).await?;
    validate(&sock, c).await?;
    run.ready.wait().await;
    let timeout = Duration::from_millis(run.args.udp_timeout_ms);
    let mut buf = vec![0u8; 65_536];
    let mut id = 0u64;
    while !run.stop.load(Ordering::Relaxed) {
        id += 1;
        let req = run.request(id);
        'resend: loop {
            sock.send(req.as_bytes()).await?;
            let until = tokio::time::Instant::now() + timeout;
            loop {
                match tokio::time::timeout_at(until, sock.recv(&mut buf)).await {
                    Ok(r) => {
                        if run.count(&buf[..r?], id) {
                            break 'resend;
                        }
                    }
                    Err(_) => {
                        if run.stop.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        run.counts.timeouts.fetch_add(1, Ordering::Relaxed);
                        continue 'resend;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The cookie round trip (docs/udp.md): ask for something over the 3x budget, get
/// -32010 with a cookie, ask again with it. The source then counts as shown.
async fn validate(sock: &UdpSocket, c: usize) -> anyhow::Result<()> {
    let mut req = json!({"jsonrpc": "2.0", "id": 0, "method": "getnodeinfo", "params": {}});
    let mut buf = vec![0u8; 65_536];
    for _ in 0..10 {
        let mut body = serde_json::to_vec(&req)?;
        body.resize(body.len().max(64), b' ');
        sock.send(&body).await?;
        let Ok(n) = tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await else {
            continue;
        };
        let d = &buf[..n?];
        if d.first() == Some(&0xCF) {
            return Ok(()); // a fragment of the full answer: validated
        }
        let v: Value = serde_json::from_slice(d)?;
        match v["error"]["data"]["cookie"].as_str() {
            Some(cookie) => req["cookie"] = json!(cookie),
            None if v.get("result").is_some() => return Ok(()),
            None => bail!("socket {c}: unexpected answer {v}"),
        }
    }
    bail!("socket {c}: could not get validated")
}

async fn http_conn(run: &Run, url: &str, c: usize) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()?;
    let post = |id: u64| {
        http.post(url)
            .header("content-type", "application/json")
            .body(run.request(id))
            .send()
    };
    // Open the connection before the clock starts.
    post(0)
        .await
        .with_context(|| format!("client {c}: {url}"))?;
    run.ready.wait().await;
    let mut id = 0u64;
    while !run.stop.load(Ordering::Relaxed) {
        id += 1;
        let body = post(id).await?.bytes().await?;
        run.count(&body, id);
    }
    Ok(())
}
