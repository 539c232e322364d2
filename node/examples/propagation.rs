//! Propagation across a loopback network (issue 3, benchmark 1).
//!
//! Starts `--nodes` `cirrus` processes, each on its own 127.0.0.x address with port 0,
//! the first alone and every other one with `--bootstrap` pointing at the first. Once
//! every node has peers and the gossip mesh has had time to form, it writes
//! `--records` signed records (each in its own slot) at `--rate` per second, one
//! JSON-RPC `put` per HTTP request, each to a node picked at random. Writes are
//! open-loop: record `i` is sent at `i / rate` seconds whatever happened to earlier
//! requests.
//!
//! Arrival is measured on a sample: every `--sample-every`-th record. From the moment
//! a sampled record is sent, one poller per node asks that node for all its sampled
//! records not seen yet, in one JSON-RPC batch of `get`s, at most every `--poll-ms`.
//! For each (record, node) this gives an upper bound on the arrival (the poll that
//! found it had its answer by then) and a lower bound (the send time of the last poll
//! that did not find it, or the put itself). A record's propagation time is the
//! largest over all nodes, measured from the moment its `put` was sent.
//!
//! After the last write is acknowledged, `getdbhash` is polled on every node every
//! 10 ms until all roots agree and every node counts every record.
//!
//! Prints a report on stderr and one JSON line on stdout. Build first:
//! `cargo build --release --bins --examples && target/release/examples/propagation`

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use cirrus_proto::record::{Kind, Record};
use clap::Parser;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Nodes in the network.
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    /// Records to write in total.
    #[arg(long, default_value_t = 10_000)]
    records: usize,
    /// Writes per second (one put per HTTP request).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Measure the arrival of every n-th record.
    #[arg(long, default_value_t = 10)]
    sample_every: usize,
    /// Shortest time between two polls of one node, in milliseconds.
    #[arg(long, default_value_t = 5)]
    poll_ms: u64,
    /// The nodes' --sync-interval-secs (anti-entropy period; the node default is 10).
    #[arg(long, default_value_t = 10)]
    sync_interval_secs: u64,
    /// Peers every node must have before writing starts.
    #[arg(long, default_value_t = 4)]
    min_peers: usize,
    /// Seconds to wait after the peers are there, for the gossip mesh to form.
    #[arg(long, default_value_t = 3.0)]
    settle_secs: f64,
    /// First octet-4 of the nodes' loopback addresses (node i binds 127.0.0.(base+i)).
    #[arg(long, default_value_t = 20)]
    ip_base: u8,
    /// The node binary (default: `cirrus` next to this example's directory).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Parent directory of the nodes' data dirs (default: $TMPDIR or /tmp).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the data dirs and node logs after the run.
    #[arg(long)]
    keep: bool,
}

/// A node process; SIGTERM on drop.
struct NodeProc {
    child: Child,
    url: String,
    peer_id: String,
    tcp: String,
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn node_bin(args: &Args) -> anyhow::Result<PathBuf> {
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("cannot locate the target directory")?
            .join("cirrus"),
    };
    ensure!(
        bin.exists(),
        "{} not found: run `cargo build --release --bins` first or pass --bin",
        bin.display()
    );
    Ok(bin)
}

fn start_node(
    bin: &Path,
    dir: &Path,
    ip: Ipv4Addr,
    bootstrap: Option<&str>,
    sync_secs: u64,
) -> anyhow::Result<NodeProc> {
    std::fs::create_dir_all(dir)?;
    let log = std::fs::File::create(dir.join("node.log"))?;
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args([
            "--bind",
            &ip.to_string(),
            "--http-port",
            "0",
            "--p2p-port",
            "0",
        ])
        .args(["--sync-interval-secs", &sync_secs.to_string()]);
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let ready: Value = loop {
        let Some(line) = lines.next() else {
            let _ = child.kill();
            bail!(
                "node at {ip} exited before it was ready; see {}",
                dir.display()
            );
        };
        let v: Value = serde_json::from_str(&line?).unwrap_or(Value::Null);
        if v["event"] == "ready" {
            break v;
        }
    };
    // Keep draining stdout so the node never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let str_of = |k: &str| ready[k].as_str().map(str::to_string);
    let tcp = ready["listen"]
        .as_array()
        .and_then(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .find(|a| a.contains("/tcp/"))
        })
        .context("no tcp listen address in the ready line")?
        .to_string();
    Ok(NodeProc {
        url: format!("http://{}", str_of("http").context("no http address")?),
        peer_id: str_of("peerId").context("no peer id")?,
        tcp,
        child,
    })
}

/// (user + system) CPU seconds of a process so far.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let Some(end) = stat.rfind(')') else {
        return f64::NAN;
    };
    let f: Vec<&str> = stat[end + 2..].split(' ').collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// The first three fields of /proc/loadavg.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn rpc(http: &reqwest::Client, url: &str, body: String) -> anyhow::Result<Value> {
    let resp = http
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    ensure!(status.is_success(), "HTTP {status}: {bytes:?}");
    Ok(serde_json::from_slice(&bytes)?)
}

async fn call(http: &reqwest::Client, url: &str, method: &str) -> anyhow::Result<Value> {
    let v = rpc(
        http,
        url,
        json!({"jsonrpc":"2.0","id":1,"method":method}).to_string(),
    )
    .await?;
    v.get("result")
        .cloned()
        .with_context(|| format!("{method}: {v}"))
}

/// Nanoseconds since the run's clock started; `NONE` for not yet.
const NONE: u64 = u64::MAX;

struct Shared {
    t0: Instant,
    sent: Vec<AtomicU64>,
    acked: Vec<AtomicU64>,
    /// Per node: sampled records not seen there yet → lower bound of their arrival.
    pending: Vec<Mutex<HashMap<usize, u64>>>,
    /// (record, node, lower, upper) for every arrival seen.
    arrivals: Mutex<Vec<(usize, usize, u64, u64)>>,
    /// One JSON-RPC `get` request per record (only sampled ones are used).
    gets: Vec<String>,
    polls: AtomicUsize,
    stop: AtomicBool,
}

impl Shared {
    fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }
}

async fn poller(sh: Arc<Shared>, http: reqwest::Client, node: usize, url: String, poll: Duration) {
    loop {
        let started = Instant::now();
        let batch: Vec<usize> = {
            let p = sh.pending[node].lock().unwrap();
            p.keys().copied().take(500).collect()
        };
        if batch.is_empty() {
            if sh.stop.load(Ordering::Relaxed) {
                return;
            }
            tokio::time::sleep(poll).await;
            continue;
        }
        let body = format!(
            "[{}]",
            batch
                .iter()
                .map(|&i| sh.gets[i].as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        let sent = sh.now();
        let answer = rpc(&http, &url, body).await;
        let got = sh.now();
        sh.polls.fetch_add(1, Ordering::Relaxed);
        match answer {
            Ok(Value::Array(items)) => {
                let mut p = sh.pending[node].lock().unwrap();
                let mut arrivals = Vec::new();
                for item in items {
                    let Some(i) = item["id"].as_u64().map(|i| i as usize) else {
                        continue;
                    };
                    if item.pointer("/result/record").is_some_and(Value::is_object) {
                        if let Some(lower) = p.remove(&i) {
                            arrivals.push((i, node, lower, got));
                        }
                    } else if let Some(lower) = p.get_mut(&i) {
                        *lower = (*lower).max(sent);
                    }
                }
                drop(p);
                sh.arrivals.lock().unwrap().extend(arrivals);
            }
            Ok(other) => eprintln!("node {node}: unexpected answer {other:.200}"),
            Err(e) => eprintln!("node {node}: poll failed: {e:#}"),
        }
        if sh.stop.load(Ordering::Relaxed) {
            return;
        }
        tokio::time::sleep(poll.saturating_sub(started.elapsed())).await;
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

fn summary(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    json!({"n": v.len(), "mean": mean, "p50": pct(&v, 50.0), "p90": pct(&v, 90.0),
           "p99": pct(&v, 99.0), "max": v.last().copied().unwrap_or(f64::NAN)})
}

fn fmt_ms(s: &Value) -> String {
    let f = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
    format!(
        "n={} mean {:.1} p50 {:.1} p90 {:.1} p99 {:.1} max {:.1} ms",
        s["n"],
        f("mean"),
        f("p50"),
        f("p90"),
        f("p99"),
        f("max")
    )
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }
}

fn random_seed() -> anyhow::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
    Ok(seed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.nodes >= 2 && args.records > 0 && args.rate > 0.0 && args.sample_every > 0,
        "need at least 2 nodes, some records, a positive rate and sample interval"
    );
    let bin = node_bin(&args)?;
    let parent = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::var_os("TMPDIR").map_or("/tmp".into(), PathBuf::from));
    let root = tempfile::Builder::new()
        .prefix("cirrus-propagation.")
        .tempdir_in(&parent)?;

    // Sign everything before any clock starts.
    let keys: Vec<SigningKey> = (0..16)
        .map(|_| random_seed().map(|s| SigningKey::from_bytes(&s)))
        .collect::<Result<_, _>>()?;
    let run = hex::encode(&random_seed()?[..4]);
    let mut puts = Vec::with_capacity(args.records);
    let mut gets = Vec::with_capacity(args.records);
    for i in 0..args.records {
        let key = &keys[i % keys.len()];
        let name = format!("prop/{run}/{i:06}");
        let record = Record::sign(key, Kind::Doc, name.clone(), 1, Some("x".repeat(64)));
        puts.push(
            json!({"jsonrpc":"2.0","id":i,"method":"put","params":{"record":record}}).to_string(),
        );
        gets.push(
            json!({"jsonrpc":"2.0","id":i,"method":"get",
                   "params":{"author":hex::encode(record.author),"key":name}})
            .to_string(),
        );
    }

    // Start the network: node 0 alone, then the rest through it.
    let mut nodes: Vec<NodeProc> = Vec::new();
    for i in 0..args.nodes {
        let ip = Ipv4Addr::new(127, 0, 0, args.ip_base + i as u8);
        let boot = nodes.first().map(|n| n.tcp.clone());
        let dir = root.path().join(format!("node{i:02}"));
        nodes.push(start_node(
            &bin,
            &dir,
            ip,
            boot.as_deref(),
            args.sync_interval_secs,
        )?);
    }
    eprintln!(
        "{} nodes started (first {} at {}); data under {}",
        nodes.len(),
        nodes[0].peer_id,
        nodes[0].url,
        root.path().display()
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()?;
    let connect_start = Instant::now();
    let mut counts = vec![0usize; nodes.len()];
    loop {
        for (i, n) in nodes.iter().enumerate() {
            counts[i] = call(&http, &n.url, "getpeerinfo")
                .await?
                .as_array()
                .map_or(0, Vec::len);
        }
        let want = args.min_peers.min(args.nodes - 1);
        if counts.iter().all(|&c| c >= want) {
            break;
        }
        ensure!(
            connect_start.elapsed() < Duration::from_secs(60),
            "peers per node after 60 s: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The settle time doubles as the idle measure: what the nodes burn with no
    // writes (heartbeats, pings, keepalives) is not a cost per record.
    let idle_before: Vec<f64> = nodes.iter().map(|n| cpu_secs(n.child.id())).collect();
    let idle_start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
    let idle_cores = nodes
        .iter()
        .zip(&idle_before)
        .map(|(n, b)| cpu_secs(n.child.id()) - b)
        .sum::<f64>()
        / idle_start.elapsed().as_secs_f64();
    for (i, n) in nodes.iter().enumerate() {
        counts[i] = call(&http, &n.url, "getpeerinfo")
            .await?
            .as_array()
            .map_or(0, Vec::len);
    }
    eprintln!(
        "connected in {:.1} s (+{} s settle); peers per node: {counts:?}",
        connect_start.elapsed().as_secs_f64() - args.settle_secs,
        args.settle_secs
    );

    // Write, poll.
    let sh = Arc::new(Shared {
        t0: Instant::now(),
        sent: (0..args.records).map(|_| AtomicU64::new(NONE)).collect(),
        acked: (0..args.records).map(|_| AtomicU64::new(NONE)).collect(),
        pending: (0..nodes.len())
            .map(|_| Mutex::new(HashMap::new()))
            .collect(),
        arrivals: Mutex::new(Vec::new()),
        gets,
        polls: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    let cpu_before: Vec<f64> = nodes.iter().map(|n| cpu_secs(n.child.id())).collect();
    let own_cpu_before = cpu_secs(std::process::id());
    let poll = Duration::from_millis(args.poll_ms);
    let pollers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| tokio::spawn(poller(sh.clone(), http.clone(), i, n.url.clone(), poll)))
        .collect();
    let mut rng = Rng(u64::from_le_bytes(random_seed()?[..8].try_into().unwrap()) | 1);
    let failures = Arc::new(AtomicUsize::new(0));
    let mut writes = tokio::task::JoinSet::new();
    let start = tokio::time::Instant::now();
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    for (i, body) in puts.into_iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / args.rate)).await;
        let target = rng.below(urls.len());
        let (sh, http, url, failures) = (
            sh.clone(),
            http.clone(),
            urls[target].clone(),
            failures.clone(),
        );
        let sampled = i % args.sample_every == 0;
        writes.spawn(async move {
            let t = sh.now();
            sh.sent[i].store(t, Ordering::Relaxed);
            if sampled {
                for p in &sh.pending {
                    p.lock().unwrap().insert(i, t);
                }
            }
            let ok = match rpc(&http, &url, body).await {
                Ok(v) => v.pointer("/result/status") == Some(&json!("applied")),
                Err(e) => {
                    eprintln!("put {i}: {e:#}");
                    false
                }
            };
            sh.acked[i].store(sh.now(), Ordering::Relaxed);
            if !ok {
                failures.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Reap finished writes so the set does not grow with the run.
        while writes.try_join_next().is_some() {}
    }
    while writes.join_next().await.is_some() {}
    let write_secs = start.elapsed().as_secs_f64();
    let last_ack = sh
        .acked
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let failed = failures.load(Ordering::Relaxed);
    eprintln!(
        "wrote {} records in {write_secs:.2} s ({:.0}/s), {failed} failed",
        args.records,
        args.records as f64 / write_secs
    );

    // Time until every root agrees and every node counts every record.
    let expected = (args.records - failed) as u64;
    let converged_at = loop {
        let mut roots = Vec::new();
        let mut all = true;
        for n in &nodes {
            let db = call(&http, &n.url, "getdbhash").await?;
            all &= db["records"].as_u64() == Some(expected);
            roots.push(db["root"].as_str().unwrap_or_default().to_string());
        }
        let t = sh.now();
        if all && roots.iter().all(|r| *r == roots[0]) {
            break Some(t);
        }
        if t.saturating_sub(last_ack) > 120_000_000_000 {
            eprintln!("roots still differ 120 s after the last write");
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let cpu_after: Vec<f64> = nodes.iter().map(|n| cpu_secs(n.child.id())).collect();
    let own_cpu = cpu_secs(std::process::id()) - own_cpu_before;
    // Give the pollers a last chance, then stop them.
    let drain = Instant::now();
    while sh.pending.iter().any(|p| !p.lock().unwrap().is_empty())
        && drain.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sh.stop.store(true, Ordering::Relaxed);
    for p in pollers {
        let _ = p.await;
    }
    let poll_rate = sh.polls.load(Ordering::Relaxed) as f64 / sh.t0.elapsed().as_secs_f64();

    // Per record: the last node's arrival (bounds), from the put's send time.
    let arrivals = std::mem::take(&mut *sh.arrivals.lock().unwrap());
    let mut per_record: HashMap<usize, (usize, u64, u64)> = HashMap::new();
    let mut per_node_upper = Vec::new();
    for &(i, _node, lower, upper) in &arrivals {
        let e = per_record.entry(i).or_insert((0, 0, 0));
        e.0 += 1;
        e.1 = e.1.max(lower);
        e.2 = e.2.max(upper);
        let sent = sh.sent[i].load(Ordering::Relaxed);
        per_node_upper.push((upper - sent) as f64 / 1e6);
    }
    let sampled = args.records.div_ceil(args.sample_every);
    let complete: Vec<(usize, u64, u64)> = per_record
        .iter()
        .filter(|(_, e)| e.0 == nodes.len())
        .map(|(&i, &(_, lo, up))| (i, lo, up))
        .collect();
    let ms = |i: usize, t: u64| (t.saturating_sub(sh.sent[i].load(Ordering::Relaxed))) as f64 / 1e6;
    let all_upper = summary(complete.iter().map(|&(i, _, up)| ms(i, up)).collect());
    let all_lower = summary(complete.iter().map(|&(i, lo, _)| ms(i, lo)).collect());
    let one_node = summary(per_node_upper);
    // Latency against send time: a queue that grows through the run shows here.
    let window_secs = 2.0;
    let mut windows: Vec<Vec<f64>> = Vec::new();
    for &(i, _, up) in &complete {
        let w = (sh.sent[i].load(Ordering::Relaxed) as f64 / 1e9 / window_secs) as usize;
        if windows.len() <= w {
            windows.resize(w + 1, Vec::new());
        }
        windows[w].push(ms(i, up));
    }
    let by_window: Vec<Value> = windows
        .into_iter()
        .enumerate()
        .map(|(w, v)| {
            let mut s = summary(v);
            s["fromSec"] = json!(w as f64 * window_secs);
            s
        })
        .collect();
    let ack = summary(
        (0..args.records)
            .map(|i| ms(i, sh.acked[i].load(Ordering::Relaxed)))
            .collect(),
    );
    let converge_ms = converged_at.map(|t| (t.saturating_sub(last_ack)) as f64 / 1e6);
    let node_cpu: Vec<f64> = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(a, b)| b - a)
        .collect();
    let cpu_total: f64 = node_cpu.iter().sum();

    eprintln!();
    eprintln!(
        "sampled {sampled} records (every {}th); {} reached all {} nodes",
        args.sample_every,
        complete.len(),
        nodes.len()
    );
    eprintln!("put acknowledged:            {}", fmt_ms(&ack));
    eprintln!("on every node, upper bound:  {}", fmt_ms(&all_upper));
    eprintln!("on every node, lower bound:  {}", fmt_ms(&all_lower));
    eprintln!("on one node (each arrival):  {}", fmt_ms(&one_node));
    eprintln!("on every node (upper bound) by send time:");
    for w in &by_window {
        eprintln!(
            "  from {:>4.0} s: {}",
            w["fromSec"].as_f64().unwrap_or(0.0),
            fmt_ms(w)
        );
    }
    match converge_ms {
        Some(c) => eprintln!("all roots agree {c:.0} ms after the last write was acknowledged"),
        None => eprintln!("roots did not agree"),
    }
    let span = converged_at.unwrap_or(last_ack) as f64 / 1e9;
    let us_per_record_node = cpu_total * 1e6 / (args.records * nodes.len()) as f64;
    let marginal_us =
        (cpu_total - idle_cores * span).max(0.0) * 1e6 / (args.records * nodes.len()) as f64;
    eprintln!(
        "polls: {poll_rate:.0}/s over all nodes; CPU during writes+convergence: nodes \
         {cpu_total:.1} s ({:.2} cores), this program (writers, pollers) {own_cpu:.1} s \
         ({:.2} cores); node CPU per record per node {us_per_record_node:.0} µs \
         ({marginal_us:.0} µs above the idle {idle_cores:.2} cores); load average at the \
         end: {}",
        cpu_total / span,
        own_cpu / span,
        load_average()
    );
    println!(
        "{}",
        json!({
            "nodes": nodes.len(), "records": args.records, "rate": args.rate,
            "writeSeconds": write_secs, "failed": failed, "peers": counts,
            "sampleEvery": args.sample_every, "sampled": sampled,
            "sampledEverywhere": complete.len(), "pollMs": args.poll_ms,
            "pollsPerSec": poll_rate, "ackMs": ack,
            "everyNodeUpperMs": all_upper, "everyNodeLowerMs": all_lower,
            "oneNodeMs": one_node, "convergeAfterLastWriteMs": converge_ms,
            "everyNodeUpperBySendTimeMs": by_window,
            "nodeCpuSecs": node_cpu, "benchCpuSecs": own_cpu, "spanSecs": span,
            "nodeCpuUsPerRecordPerNode": us_per_record_node,
            "idleNodeCores": idle_cores, "marginalUsPerRecordPerNode": marginal_us,
            "loadAverage": load_average(), "syncIntervalSecs": args.sync_interval_secs,
        })
    );
    drop(nodes);
    if args.keep {
        let kept = root.keep();
        eprintln!("kept {}", kept.display());
    }
    Ok(())
}
