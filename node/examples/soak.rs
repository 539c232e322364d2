//! Load soak on a local network (issue 7): no acknowledged write lost, no crash,
//! bounded memory.
//!
//! Starts `--nodes` `cirrus` processes on 127.0.0.1 with port 0 everywhere (the
//! first alone, the others with `--bootstrap` at the first), each on a temp data
//! dir, logs in `<dir>/nodeN/log`. Then, for `--secs` seconds, on every node:
//! - `--writers` writers per transport (HTTP, WebSocket, UDP, through
//!   `cirrus_node::client::Client` with `http://`, `ws://` and `udp://` URLs) put
//!   signed records as fast as the node answers: fresh docs, newer versions of its
//!   own docs, ratings, and every 20th request a batch of 10 puts. A put answered
//!   `applied` (or `duplicate`: a UDP retry of a put that was applied) is
//!   *acknowledged*;
//! - `--readers` readers cycle `get` (of a recently acknowledged slot), `list` and
//!   `getdbhash` over the three transports.
//!
//! Each writer owns its author key, so the newest version it sent of a slot is the
//! one every node must end up with. When the time is up, the load stops and the
//! soak waits (at most `--converge-secs`) until every node reports the same
//! `getdbhash`, then lists every node's records and checks every acknowledged
//! record on every node: there, or a newer version of the same slot. It reports
//! acknowledged writes, errors per transport, lost writes, processes that died, and
//! each node's RSS every `--sample-secs` during the load, after the check and for
//! `--idle-secs` with no load (so a plateau can be told from growth), on stderr as
//! tables and on stdout as one JSON line. Exit status 1 if a write was lost, a node
//! died, or the nodes did not converge.
//!
//! `scripts/soak.sh` builds and runs it (`SOAK_SECS`, default 60). By hand:
//! `cargo build --release --bins --examples && target/release/examples/soak --secs 60`

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cirrus_node::client::{Client, ClientError};
use cirrus_proto::record::{Id, Kind, Record};
use clap::Parser;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Nodes in the network.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Seconds of load.
    #[arg(long, env = "SOAK_SECS", default_value_t = 60)]
    secs: u64,
    /// Most seconds to wait for the nodes to agree after the load.
    #[arg(long, default_value_t = 180)]
    converge_secs: u64,
    /// Bytes of value per doc.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// The `cirrus` binary [default: `cirrus` next to this example's directory].
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Parent of the nodes' temp dir [default: $TMPDIR or /tmp].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the nodes' data dirs and logs (they are kept anyway when the soak fails).
    #[arg(long)]
    keep: bool,
    /// Writers per node and transport, each with its own author key.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Readers per node.
    #[arg(long, default_value_t = 2)]
    readers: usize,
    /// Seconds between RSS samples during the load.
    #[arg(long, default_value_t = 10)]
    sample_secs: u64,
    /// Seconds to keep sampling RSS with no load after the check, to tell memory
    /// that stays from memory in flight.
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
    /// Client timeout per call, seconds.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
}

const TRANSPORTS: [&str; 3] = ["http", "ws", "udp"];

struct NodeProc {
    child: Child,
    peer_id: String,
    http: String,
    ws: String,
    udp: String,
    listen: Vec<String>,
}

fn spawn_node(bin: &Path, dir: &Path, bootstrap: Option<&str>) -> anyhow::Result<NodeProc> {
    std::fs::create_dir_all(dir)?;
    let log = std::fs::File::create(dir.join("log"))?;
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--bind", "127.0.0.1"]);
    for p in [
        "--http-port",
        "--p2p-port",
        "--stun-port",
        "--ws-port",
        "--udp-port",
    ] {
        cmd.args([p, "0"]);
    }
    cmd.arg("--data-dir").arg(dir.join("data"));
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    let mut child = cmd
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or("warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("spawn {}", bin.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .context("read the ready line")?;
    let ready: Value = serde_json::from_str(&line)
        .with_context(|| format!("node did not start; see {}", dir.join("log").display()))?;
    let s = |k: &str| ready[k].as_str().unwrap_or_default().to_string();
    let mut listen: Vec<String> = ready["listen"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    listen.sort_by_key(|a| !a.contains("/tcp/"));
    Ok(NodeProc {
        child,
        peer_id: s("peerId"),
        http: format!("http://{}", s("http")),
        ws: format!("ws://{}", s("ws")),
        udp: format!("udp://{}", s("udp")),
        listen,
    })
}

/// `{"t": seconds into the load, "rssMiB": [per node], "dbMiB": [per node]}`.
fn sample(start: Instant, pids: &[u32], files: &[PathBuf]) -> Value {
    let mib = |kib: u64| (kib as f64 / 1024.0 * 10.0).round() / 10.0;
    json!({
        "t": start.elapsed().as_secs(),
        "rssMiB": pids.iter().map(|p| mib(rss_kib(*p).0)).collect::<Vec<_>>(),
        "dbMiB": files
            .iter()
            .map(|f| mib(std::fs::metadata(f).map_or(0, |m| m.len() / 1024)))
            .collect::<Vec<_>>(),
    })
}

/// VmRSS and VmHWM (peak) of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[derive(Default)]
struct TransportStats {
    calls: AtomicU64,
    acked: AtomicU64,
    duplicate: AtomicU64,
    put_errors: AtomicU64,
    reads: AtomicU64,
    read_errors: AtomicU64,
    /// The first few error messages, for the report.
    samples: Mutex<Vec<String>>,
}

impl TransportStats {
    fn error(&self, read: bool, e: &str) {
        if read {
            &self.read_errors
        } else {
            &self.put_errors
        }
        .fetch_add(1, Ordering::Relaxed);
        let mut s = self.samples.lock().unwrap();
        if s.len() < 5 {
            s.push(format!("{}: {e}", if read { "read" } else { "put" }));
        }
    }
}

/// An acknowledged write: the slot and the version that must be there, or newer.
#[derive(Clone)]
struct Acked {
    author: [u8; 32],
    kind: Kind,
    key: String,
    seq: u64,
    id: Id,
}

/// One writer's records: fresh docs, newer versions of its docs, ratings.
struct Gen {
    key: SigningKey,
    name: String,
    value: String,
    n: u64,
    docs: Vec<String>,
    seqs: HashMap<(Kind, String), u64>,
}

impl Gen {
    fn next(&mut self) -> Record {
        let i = self.n;
        self.n += 1;
        let (kind, key, value) = match i % 10 {
            3 if !self.docs.is_empty() => {
                let k = self.docs[(i as usize * 7919) % self.docs.len()].clone();
                (Kind::Doc, k, Some(format!("v{i} {}", self.value)))
            }
            7 => (
                Kind::Rating,
                format!("target-{}", i % 50),
                Some((i % 5 + 1).to_string()),
            ),
            _ => {
                let k = format!("{}/{i}", self.name);
                self.docs.push(k.clone());
                (Kind::Doc, k, Some(self.value.clone()))
            }
        };
        let seq = self.seqs.entry((kind, key.clone())).or_insert(0);
        *seq += 1;
        Record::sign(&self.key, kind, key, *seq, value)
    }
}

fn random_key() -> SigningKey {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("getrandom");
    SigningKey::from_bytes(&seed)
}

/// Recently acknowledged slots, for readers to `get`.
type Recent = Arc<Mutex<Vec<(String, String, &'static str)>>>;

async fn writer(
    client: Client,
    mut records_of: Gen,
    stats: Arc<TransportStats>,
    recent: Recent,
    deadline: Instant,
) -> Vec<Acked> {
    let mut acked = Vec::new();
    let mut op = 0u64;
    while Instant::now() < deadline {
        op += 1;
        let records: Vec<Record> = (0..if op % 20 == 0 { 10 } else { 1 })
            .map(|_| records_of.next())
            .collect();
        stats.calls.fetch_add(1, Ordering::Relaxed);
        let statuses: Result<Vec<String>, String> = if records.len() == 1 {
            client
                .call("put", json!({ "record": records[0] }))
                .await
                .map_err(|e| e.to_string())
                .and_then(|v| {
                    v["status"]
                        .as_str()
                        .map(|s| vec![s.to_string()])
                        .ok_or_else(|| format!("no status in {v}"))
                })
        } else {
            let batch: Vec<Value> = records
                .iter()
                .enumerate()
                .map(|(i, r)| json!({"jsonrpc":"2.0","id":i,"method":"put","params":{"record":r}}))
                .collect();
            batch_statuses(&client, batch).await
        };
        match statuses {
            Ok(statuses) => {
                for (r, s) in records.iter().zip(statuses) {
                    match s.as_str() {
                        "applied" | "duplicate" => {
                            if s == "duplicate" {
                                stats.duplicate.fetch_add(1, Ordering::Relaxed);
                            }
                            stats.acked.fetch_add(1, Ordering::Relaxed);
                            acked.push(Acked {
                                author: r.author,
                                kind: r.kind,
                                key: r.key.clone(),
                                seq: r.seq,
                                id: r.id(),
                            });
                            let mut rec = recent.lock().unwrap();
                            if rec.len() >= 1000 {
                                rec.swap_remove((r.seq as usize + r.key.len()) % 1000);
                            }
                            rec.push((hex::encode(r.author), r.key.clone(), r.kind.as_str()));
                        }
                        other => stats.error(false, &format!("put answered {other:?}")),
                    }
                }
            }
            Err(e) => stats.error(false, &e),
        }
    }
    acked
}

async fn batch_statuses(client: &Client, batch: Vec<Value>) -> Result<Vec<String>, String> {
    let n = batch.len();
    let body = serde_json::to_vec(&batch).expect("serializes");
    let bytes = client.post(body).await.map_err(|e| e.to_string())?;
    let answers: Vec<Value> = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if answers.len() != n {
        return Err(format!("{} answers to a batch of {n}", answers.len()));
    }
    // Answers come in request order.
    answers
        .iter()
        .map(|a| {
            a["result"]["status"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("batch element failed: {a}"))
        })
        .collect()
}

async fn reader(clients: Vec<(Client, Arc<TransportStats>)>, recent: Recent, deadline: Instant) {
    let mut i = 0usize;
    while Instant::now() < deadline {
        i += 1;
        let (client, stats) = &clients[i % clients.len()];
        let result = match (i / clients.len()) % 3 {
            0 => {
                let pick = {
                    let r = recent.lock().unwrap();
                    (!r.is_empty()).then(|| r[(i * 7919) % r.len()].clone())
                };
                match pick {
                    Some((author, key, kind)) => client
                        .call("get", json!({"author": author, "key": key, "kind": kind}))
                        .await
                        .map(|_| ()),
                    None => client.call("getdbhash", json!({})).await.map(|_| ()),
                }
            }
            1 => client.call("list", json!({"limit": 20})).await.map(|_| ()),
            _ => client.call("getdbhash", json!({})).await.map(|_| ()),
        };
        match result {
            Ok(()) => stats.reads.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                stats.error(true, &e.to_string());
                0
            }
        };
    }
}

/// Every record a node holds: slot → (seq, id).
async fn holdings(
    client: &Client,
) -> Result<HashMap<([u8; 32], Kind, String), (u64, Id)>, ClientError> {
    let mut out = HashMap::new();
    let mut after = Value::Null;
    loop {
        let mut params = json!({"limit": 1000});
        if !after.is_null() {
            params["after"] = after;
        }
        let page = client.call("list", params).await?;
        for v in page["records"].as_array().into_iter().flatten() {
            let r: Record =
                serde_json::from_value(v.clone()).map_err(|e| ClientError::BadResponse {
                    url: client.url().into(),
                    why: e.to_string(),
                })?;
            out.insert((r.author, r.kind, r.key.clone()), (r.seq, r.id()));
        }
        after = page["next"].clone();
        if after.is_null() {
            return Ok(out);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("no parent dir")?
            .join("cirrus"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release --bins --examples) or pass --bin",
            bin.display()
        );
    }
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("cirrus-soak.")
        .tempdir_in(&parent)?;
    let base = tmp.path().to_owned();

    // The network.
    let mut nodes: Vec<NodeProc> = Vec::new();
    for i in 0..args.nodes {
        let boot = nodes.first().map(|n: &NodeProc| n.listen[0].clone());
        nodes.push(spawn_node(
            &bin,
            &base.join(format!("node{}", i + 1)),
            boot.as_deref(),
        )?);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let timeout = Duration::from_secs(args.timeout_secs);
    let http: Vec<Client> = nodes
        .iter()
        .map(|n| Client::connect(&n.http, timeout))
        .collect::<Result<_, _>>()?;
    rt.block_on(async {
        let start = Instant::now();
        loop {
            let mut ok = true;
            for c in &http {
                let info = c.call("getnodeinfo", json!({})).await?;
                ok &= info["peers"].as_u64().unwrap_or(0) >= 1;
            }
            if ok {
                return anyhow::Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("not every node has a peer after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })?;
    let rss_start: Vec<(u64, u64)> = nodes.iter().map(|n| rss_kib(n.child.id())).collect();
    eprintln!(
        "soak: {} nodes up under {}; {} s of load on HTTP, WS and UDP",
        nodes.len(),
        base.display(),
        args.secs
    );

    // The load.
    let stats: Vec<Arc<TransportStats>> = TRANSPORTS.iter().map(|_| Arc::default()).collect();
    let recent: Recent = Arc::default();
    let load_start = Instant::now();
    let deadline = load_start + Duration::from_secs(args.secs);
    let value = "x".repeat(args.value_bytes);
    // RSS and database file size of every node, every `--sample-secs` during the load.
    let pids: Vec<u32> = nodes.iter().map(|n| n.child.id()).collect();
    let files: Vec<PathBuf> = (0..nodes.len())
        .map(|i| base.join(format!("node{}/data/cirrus.redb", i + 1)))
        .collect();
    let sample_every = Duration::from_secs(args.sample_secs.max(1));
    let sampler = {
        let (pids, files) = (pids.clone(), files.clone());
        std::thread::spawn(move || {
            let mut rows = Vec::new();
            let mut next = load_start;
            while Instant::now() < deadline {
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                next += sample_every;
                rows.push(sample(load_start, &pids, &files));
            }
            rows
        })
    };
    let acked: Vec<Acked> = rt.block_on(async {
        let mut writers = Vec::new();
        for (ni, n) in nodes.iter().enumerate() {
            let urls = [&n.http, &n.ws, &n.udp];
            for (ti, url) in urls.iter().enumerate() {
                for wi in 0..args.writers {
                    let records_of = Gen {
                        key: random_key(),
                        name: format!("n{}-{}-{wi}", ni + 1, TRANSPORTS[ti]),
                        value: value.clone(),
                        n: 0,
                        docs: Vec::new(),
                        seqs: HashMap::new(),
                    };
                    writers.push(tokio::spawn(writer(
                        Client::connect(url, timeout)?,
                        records_of,
                        stats[ti].clone(),
                        recent.clone(),
                        deadline,
                    )));
                }
            }
            for _ in 0..args.readers {
                let mut read_clients = Vec::new();
                for (ti, url) in urls.iter().enumerate() {
                    read_clients.push((Client::connect(url, timeout)?, stats[ti].clone()));
                }
                let recent = recent.clone();
                writers.push(tokio::spawn(async move {
                    reader(read_clients, recent, deadline).await;
                    Vec::new()
                }));
            }
        }
        let mut all = Vec::new();
        for w in writers {
            all.extend(w.await?);
        }
        anyhow::Ok(all)
    })?;
    let load_secs = load_start.elapsed().as_secs_f64();
    let mut samples = sampler.join().expect("sampler thread");

    // Convergence, then every acknowledged write on every node.
    let conv_start = Instant::now();
    let converged: Option<Value> = rt.block_on(async {
        let mut last = Vec::new();
        while conv_start.elapsed() < Duration::from_secs(args.converge_secs) {
            last.clear();
            for c in &http {
                last.push(c.call("getdbhash", json!({})).await.unwrap_or(Value::Null));
            }
            if !last[0].is_null() && last.iter().all(|d| d == &last[0]) {
                return Some(last[0].clone());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        eprintln!("not converged; last getdbhash per node: {last:?}");
        None
    });
    let converge_secs = conv_start.elapsed().as_secs_f64();
    let mut lost_per_node = Vec::new();
    let mut lost_examples = Vec::new();
    for c in &http {
        let held = match rt.block_on(holdings(c)) {
            Ok(h) => h,
            Err(e) => {
                lost_examples.push(format!("{}: cannot list: {e}", c.url()));
                HashMap::new()
            }
        };
        let mut lost = 0u64;
        for a in &acked {
            let ok = match held.get(&(a.author, a.kind, a.key.clone())) {
                Some((seq, id)) => *seq > a.seq || (*seq == a.seq && *id == a.id),
                None => false,
            };
            if !ok {
                lost += 1;
                if lost_examples.len() < 5 {
                    lost_examples.push(format!(
                        "{} {} {} seq {}",
                        c.url(),
                        a.kind.as_str(),
                        a.key,
                        a.seq
                    ));
                }
            }
        }
        lost_per_node.push(lost);
    }

    // Who is still alive, and how big. The check above listed every record of every
    // node, so this sample shows what a full read adds; the idle ones after it show
    // whether memory falls back or stays.
    let load_samples = samples.len();
    let mut check = sample(load_start, &pids, &files);
    check["phase"] = json!("after the check");
    samples.push(check);
    let idle_end = Instant::now() + Duration::from_secs(args.idle_secs);
    while Instant::now() < idle_end {
        std::thread::sleep(sample_every.min(idle_end.saturating_duration_since(Instant::now())));
        let mut idle = sample(load_start, &pids, &files);
        idle["phase"] = json!("idle");
        samples.push(idle);
    }
    let mut node_rows = Vec::new();
    let mut crashes = 0;
    for (i, n) in nodes.iter_mut().enumerate() {
        let pid = n.child.id();
        let alive = matches!(n.child.try_wait(), Ok(None));
        crashes += usize::from(!alive);
        let (rss_end, peak) = rss_kib(pid);
        let file_kib = std::fs::metadata(&files[i]).map_or(0, |m| m.len() / 1024);
        let log = std::fs::read_to_string(base.join(format!("node{}", i + 1)).join("log"))
            .unwrap_or_default();
        let panics = log.matches("panicked").count();
        node_rows.push(json!({
            "node": i + 1, "peerId": n.peer_id, "alive": alive, "panicsInLog": panics,
            "rssStartKiB": rss_start[i].0, "rssEndKiB": rss_end, "rssPeakKiB": peak,
            "dbFileKiB": file_kib,
        }));
    }
    // Stop cleanly: SIGTERM must end each node with status 0.
    let mut unclean = 0;
    for n in &mut nodes {
        // SAFETY: kill(2) on our own child's pid, not yet waited for.
        unsafe { libc::kill(n.child.id() as i32, libc::SIGTERM) };
        match n.child.wait() {
            Ok(s) if s.success() => {}
            _ => unclean += 1,
        }
    }

    let acked_total = acked.len() as u64;
    let lost_total: u64 = lost_per_node.iter().sum();
    let per_transport: Vec<Value> = TRANSPORTS
        .iter()
        .zip(&stats)
        .map(|(t, s)| {
            json!({
                "transport": t,
                "putRequests": s.calls.load(Ordering::Relaxed),
                "acked": s.acked.load(Ordering::Relaxed),
                "duplicate": s.duplicate.load(Ordering::Relaxed),
                "putErrors": s.put_errors.load(Ordering::Relaxed),
                "reads": s.reads.load(Ordering::Relaxed),
                "readErrors": s.read_errors.load(Ordering::Relaxed),
                "errorSamples": *s.samples.lock().unwrap(),
            })
        })
        .collect();

    eprintln!(
        "\nload {load_secs:.1} s; {acked_total} acknowledged writes ({:.0}/s)",
        acked_total as f64 / load_secs
    );
    eprintln!(
        "| transport | put requests | acked writes | of which duplicate | put errors | reads | read errors |"
    );
    eprintln!("|---|---:|---:|---:|---:|---:|---:|");
    for t in &per_transport {
        eprintln!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            t["transport"].as_str().unwrap(),
            t["putRequests"],
            t["acked"],
            t["duplicate"],
            t["putErrors"],
            t["reads"],
            t["readErrors"]
        );
        for s in t["errorSamples"].as_array().into_iter().flatten() {
            eprintln!(
                "  {}: {}",
                t["transport"].as_str().unwrap(),
                s.as_str().unwrap_or_default()
            );
        }
    }
    match &converged {
        Some(db) => eprintln!("converged {converge_secs:.1} s after the load: {db}"),
        None => eprintln!("NOT converged within {} s", args.converge_secs),
    }
    eprintln!("lost acknowledged writes: {lost_total} (per node {lost_per_node:?})");
    for l in &lost_examples {
        eprintln!("  lost: {l}");
    }
    eprintln!(
        "| node | alive | panics in log | RSS before load MiB | RSS at end MiB | peak RSS MiB | db file MiB |"
    );
    eprintln!("|---|---|---:|---:|---:|---:|---:|");
    let mib = |v: &Value| v.as_f64().unwrap_or(0.0) / 1024.0;
    for r in &node_rows {
        eprintln!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            r["node"],
            if r["alive"] == true { "yes" } else { "NO" },
            r["panicsInLog"],
            mib(&r["rssStartKiB"]),
            mib(&r["rssEndKiB"]),
            mib(&r["rssPeakKiB"]),
            mib(&r["dbFileKiB"])
        );
    }
    eprintln!("RSS and db file size during the load, after the check and idle, MiB per node:");
    for (i, smp) in samples.iter().enumerate() {
        let phase = smp["phase"].as_str().unwrap_or("load");
        eprintln!(
            "  t={:>4} s  RSS {}  db {}{}",
            smp["t"],
            smp["rssMiB"],
            smp["dbMiB"],
            if i < load_samples {
                String::new()
            } else {
                format!("  ({phase})")
            }
        );
    }
    eprintln!("crashes: {crashes}; unclean shutdowns after the soak: {unclean}");

    let report = json!({
        "nodes": args.nodes, "secs": args.secs, "loadSecs": load_secs,
        "acked": acked_total, "lost": lost_total, "lostPerNode": lost_per_node,
        "converged": converged.is_some(), "convergeSecs": converge_secs, "db": converged,
        "crashes": crashes, "uncleanShutdowns": unclean,
        "transports": per_transport, "nodeStats": node_rows, "samples": samples,
    });
    println!("{report}");

    let failed = lost_total > 0 || crashes > 0 || unclean > 0 || converged.is_none();
    if failed || args.keep {
        let kept = tmp.keep();
        eprintln!("data dirs and logs kept in {}", kept.display());
    }
    if failed {
        bail!(
            "soak failed: {lost_total} lost, {crashes} crashed, {unclean} unclean shutdowns, converged: {}",
            converged.is_some()
        );
    }
    Ok(())
}
