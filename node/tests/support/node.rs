//! A real `cirrus` process on a loopback address and port 0.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cirrus_proto::record::Record;
use serde_json::{Value, json};

use super::BIN;

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

/// `cirrus run` on `ip` with every port 0 (so tests run in parallel) and
/// `data_dir`; no other flags.
pub fn run_command_on(ip: &str, data_dir: &Path) -> Command {
    run_command_setting(ip, data_dir, &[])
}

/// [`run_command_on`], but the port flags among `set` are left for the caller.
fn run_command_setting(ip: &str, data_dir: &Path, set: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--bind", ip]);
    for flag in [
        "--http-port",
        "--p2p-port",
        "--stun-port",
        "--ws-port",
        "--udp-port",
    ] {
        if !set.contains(&flag) {
            cmd.args([flag, "0"]);
        }
    }
    cmd.arg("--data-dir")
        .arg(data_dir)
        // Whatever the test machine's environment says, it does not configure these
        // nodes; and a node never touches the real ~/.cirrus.
        .env_remove("CIRRUS_BOOTSTRAP")
        .env_remove("CIRRUS_CONFIG")
        .env("HOME", data_dir);
    cmd
}

/// [`run_command_on`] 127.0.0.1.
pub fn run_command(data_dir: &Path) -> Command {
    run_command_on("127.0.0.1", data_dir)
}

impl TestNode {
    pub fn start(data_dir: &Path) -> TestNode {
        Self::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra: &[&str]) -> TestNode {
        Self::start_on("127.0.0.1", data_dir, extra)
    }

    /// A port that `extra` sets is not set to 0.
    pub fn start_on(ip: &str, data_dir: &Path, extra: &[&str]) -> TestNode {
        let mut cmd = run_command_setting(ip, data_dir, extra);
        // Anti-entropy every second, so tests converge fast, unless a test sets it.
        if !extra.contains(&"--sync-interval-secs") {
            cmd.args(["--sync-interval-secs", "1"]);
        }
        cmd.args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn cirrus");
        let ready = ready_line(&mut child);
        let field = |k: &str| {
            ready[k]
                .as_str()
                .unwrap_or_else(|| panic!("ready line without {k}: {ready}"))
                .to_string()
        };
        TestNode {
            url: format!("http://{}", field("http")),
            ws: format!("ws://{}", field("ws")),
            udp: field("udp"),
            peer_id: field("peerId"),
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
            child,
            data_dir: data_dir.to_owned(),
            http: reqwest::blocking::Client::new(),
        }
    }

    /// The IP the node listens on.
    pub fn ip(&self) -> std::net::IpAddr {
        self.udp.parse::<std::net::SocketAddr>().unwrap().ip()
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

    /// Call a method; returns the whole response object, which must be one.
    pub fn call(&self, method: &str, params: Value) -> Value {
        let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let (status, bytes) = self.post(serde_json::to_vec(&req).unwrap());
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method}: HTTP {status}, not a JSON-RPC response ({e}): {:?}",
                String::from_utf8_lossy(&bytes)
            )
        });
        assert_eq!(v["id"], 1, "{method}: HTTP {status}, answered {v}");
        v
    }

    /// Call a method that must succeed: HTTP 200 and a `result`.
    pub fn ok(&self, method: &str, params: Value) -> Value {
        let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let (status, bytes) = self.post(serde_json::to_vec(&req).unwrap());
        let r: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method}: HTTP {status}, not JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes)
            )
        });
        assert_eq!(status, 200, "{method}: HTTP {status}: {r}");
        assert!(
            r.get("error").is_none() && r.get("result").is_some() && r["id"] == 1,
            "{method} failed: {r}"
        );
        r["result"].clone()
    }

    pub fn put(&self, record: &Record) -> Value {
        self.ok("put", json!({ "record": record }))
    }

    pub fn db(&self) -> Value {
        self.ok("getdbhash", json!({}))
    }

    pub fn info(&self) -> Value {
        self.ok("getnodeinfo", json!({}))
    }

    pub fn peers(&self) -> Vec<Value> {
        self.ok("getpeerinfo", json!({}))
            .as_array()
            .expect("getpeerinfo returns an array")
            .clone()
    }

    pub fn peer_ids(&self) -> HashSet<String> {
        self.peers()
            .iter()
            .map(|p| p["peerId"].as_str().unwrap().to_string())
            .collect()
    }

    /// The admin token from the data dir.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// `GET /metrics`, which must pass as Prometheus text.
    pub fn metrics(&self) -> String {
        let resp = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .expect("node answers /metrics");
        assert_eq!(resp.status().as_u16(), 200);
        resp.text().unwrap()
    }

    /// The sum of the samples of `name` whose labels include every `labels` pair
    /// (0 when there is none yet: a counter appears with its first count).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_in(&self.metrics(), name, labels)
    }

    pub fn stop(mut self) {
        terminate(&mut self.child);
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// [`TestNode::metric`] over a metrics text already fetched.
pub fn metric_in(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            if n != name {
                return None;
            }
            let rest = rest.trim_end_matches('}');
            let all = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
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

/// `node`'s `getpeerinfo` entry for `peer`, if it lists it.
pub fn entry_for(node: &TestNode, peer: &str) -> Option<Value> {
    node.peers().into_iter().find(|p| p["peerId"] == peer)
}

/// Wait until `node` lists `peer`; returns the entry.
pub fn wait_lists(node: &TestNode, peer: &str) -> Value {
    super::wait_until(&format!("{} lists peer {peer}", node.peer_id), || {
        entry_for(node, peer).ok_or_else(|| Value::Array(node.peers()).to_string())
    })
}

/// The JSON line a node started with piped stdout prints once it serves.
pub fn ready_line(child: &mut std::process::Child) -> Value {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout piped"))
        .read_line(&mut line)
        .expect("read ready line");
    serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("node did not start (stdout {line:?}): {e}"))
}
