//! A real `cirrus` process on a loopback port, for integration tests.
//!
//! Every node gets its own temp data dir and port 0, so tests run in parallel.

#![allow(dead_code)] // each test binary uses its own subset

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cirrus_proto::record::{Author, Kind, Record};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_cirrus");

/// How often [`wait_until`] checks, and how long it waits: far longer than any wait
/// takes on a quiet machine, so a loaded one does not fail a test that is only slow.
pub const POLL: Duration = Duration::from_millis(100);
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Poll `check` every [`POLL`] until it returns `Ok`; after [`TIMEOUT`], fail with
/// what was being waited for and the last state `check` described.
pub fn wait_until<T>(what: &str, check: impl FnMut() -> Result<T, String>) -> T {
    wait_until_every(POLL, what, check)
}

/// [`wait_until`], checking every `poll`: for a wait whose end should be noticed
/// sooner than [`POLL`] allows.
pub fn wait_until_every<T>(
    poll: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match check() {
            Ok(v) => return v,
            Err(state) if Instant::now() > deadline => {
                panic!("timed out after {TIMEOUT:?} waiting until {what}; last state: {state}")
            }
            Err(_) => std::thread::sleep(poll),
        }
    }
}

pub struct TestNode {
    pub child: Child,
    pub url: String,
    /// `ws://IP:PORT` and the UDP API's `IP:PORT`.
    pub ws: String,
    pub udp: String,
    pub peer_id: String,
    /// Swarm addresses with `/p2p/<id>`; the TCP one first.
    pub listen: Vec<String>,
    pub data_dir: PathBuf,
    http: reqwest::blocking::Client,
}

/// `cirrus run` on loopback with every port 0 (so tests run in parallel) and
/// `data_dir`; no other flags.
pub fn run_command(data_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "run",
        "--bind",
        "127.0.0.1",
        "--http-port",
        "0",
        "--p2p-port",
        "0",
        "--stun-port",
        "0",
        "--ws-port",
        "0",
        "--udp-port",
        "0",
        "--data-dir",
    ])
    .arg(data_dir);
    cmd
}

/// Two nodes on loopback, B bootstrapped to A, both started with `extra`.
pub struct Linked {
    pub a: TestNode,
    pub b: TestNode,
    /// Their data dirs, removed when this is dropped.
    pub dirs: (tempfile::TempDir, tempfile::TempDir),
}

pub fn linked(extra: &[&str]) -> Linked {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestNode::start_with(da.path(), extra);
    let b = TestNode::start_with(db.path(), &[extra, &["--bootstrap", &a.listen[0]]].concat());
    Linked {
        a,
        b,
        dirs: (da, db),
    }
}

impl TestNode {
    pub fn start(data_dir: &Path) -> TestNode {
        Self::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra: &[&str]) -> TestNode {
        let mut cmd = run_command(data_dir);
        // Anti-entropy every second, so tests converge fast, unless a test sets it.
        if !extra.contains(&"--sync-interval-secs") {
            cmd.args(["--sync-interval-secs", "1"]);
        }
        cmd.args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn cirrus");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read ready line");
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("node did not start (stdout {line:?}): {e}"));
        TestNode {
            child,
            url: format!("http://{}", ready["http"].as_str().unwrap()),
            ws: format!("ws://{}", ready["ws"].as_str().unwrap()),
            udp: ready["udp"].as_str().unwrap().to_string(),
            peer_id: ready["peerId"].as_str().unwrap().to_string(),
            listen: {
                let mut l: Vec<String> = ready["listen"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect();
                l.sort_by_key(|a| !a.contains("/tcp/"));
                l
            },
            data_dir: data_dir.to_owned(),
            http: reqwest::blocking::Client::new(),
        }
    }

    /// POST raw bytes; returns HTTP status and body.
    pub fn post(&self, body: impl Into<Vec<u8>>) -> (u16, Vec<u8>) {
        let resp = self
            .http
            .post(&self.url)
            .body(body.into())
            .send()
            .expect("node answers");
        let status = resp.status().as_u16();
        (status, resp.bytes().unwrap().to_vec())
    }

    /// POST a JSON value; returns the parsed response body (Null for an empty body).
    pub fn rpc(&self, body: &Value) -> Value {
        let (_, bytes) = self.post(serde_json::to_vec(body).unwrap());
        if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        }
    }

    /// Call a method; returns the whole response object.
    pub fn call(&self, method: &str, params: Value) -> Value {
        self.rpc(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
    }

    /// Call a method that must succeed; returns its result.
    pub fn ok(&self, method: &str, params: Value) -> Value {
        let r = self.call(method, params);
        assert!(r.get("error").is_none(), "{method} failed: {r}");
        r["result"].clone()
    }

    pub fn put(&self, record: &Record) -> Value {
        self.ok("put", json!({ "record": record }))
    }

    pub fn db(&self) -> Value {
        self.ok("getdbhash", json!({}))
    }

    pub fn stop(mut self) {
        terminate(&mut self.child);
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGTERM and wait: the node shuts down cleanly.
pub fn terminate(child: &mut Child) {
    // SAFETY: kill(2) on the pid of a child we own and have not yet waited for.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "node exited with {status} after SIGTERM");
}

pub fn author(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

pub fn doc(author: &SigningKey, key: &str, seq: u64, value: &str) -> Record {
    Record::sign(author, Kind::Doc, key, seq, Some(value.to_string()))
}

pub fn rating(author: &SigningKey, target: &str, seq: u64, score: Option<u8>) -> Record {
    Record::sign(
        author,
        Kind::Rating,
        target,
        seq,
        score.map(|s| s.to_string()),
    )
}

/// Put records in one JSON-RPC batch; returns the answers, one per record, in order.
pub fn put_batch(node: &TestNode, records: &[Record]) -> Vec<Value> {
    let batch: Vec<Value> = records
        .iter()
        .enumerate()
        .map(|(i, r)| json!({"jsonrpc": "2.0", "id": i, "method": "put", "params": {"record": r}}))
        .collect();
    let resp = node.rpc(&Value::Array(batch));
    let answers = resp
        .as_array()
        .unwrap_or_else(|| panic!("batch put: {resp}"));
    assert_eq!(answers.len(), records.len(), "one answer per put: {resp}");
    answers.clone()
}

/// Put records in one batch; every put must be applied.
pub fn put_all_applied(node: &TestNode, records: &[Record]) {
    for (r, a) in records.iter().zip(put_batch(node, records)) {
        assert_eq!(
            a["result"]["status"],
            "applied",
            "{} {}: {a}",
            r.kind.as_str(),
            r.key
        );
    }
}

/// Wait until every node reports the same `getdbhash` and its `records` and
/// `ratings` are `want`'s. Returns the common root.
pub fn wait_converged(nodes: &[&TestNode], want: &Value, what: &str) -> String {
    wait_until(
        &format!("{what}: {} nodes hold {want}", nodes.len()),
        || {
            let dbs: Vec<Value> = nodes.iter().map(|n| n.db()).collect();
            let agree = dbs.iter().all(|d| d == &dbs[0]);
            if agree && dbs[0]["records"] == want["records"] && dbs[0]["ratings"] == want["ratings"]
            {
                Ok(dbs[0]["root"].as_str().unwrap().to_string())
            } else {
                Err(Value::Array(dbs).to_string())
            }
        },
    )
}

/// The `record` that `get` returns (Null when the node holds none).
pub fn get_record(node: &TestNode, author: &Author, key: &str, kind: Kind) -> Value {
    node.ok(
        "get",
        json!({"author": hex::encode(author), "key": key, "kind": kind.as_str()}),
    )["record"]
        .clone()
}

pub fn peers_of(node: &TestNode) -> Vec<Value> {
    node.ok("getpeerinfo", json!({}))
        .as_array()
        .expect("getpeerinfo returns an array")
        .clone()
}

pub fn peer_ids(node: &TestNode) -> HashSet<String> {
    peers_of(node)
        .iter()
        .map(|p| p["peerId"].as_str().unwrap().to_string())
        .collect()
}

pub fn error_code(resp: &Value) -> i64 {
    resp["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an error, got {resp}"))
}
