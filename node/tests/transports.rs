//! The client API over every transport, on real processes (issue 5):
//!
//! - HTTP, WebSocket and UDP give the same answers to the same requests, on the fixed
//!   ports and on a per-peer STUN client port;
//! - a stock WebSocket client (Python `websockets`, node/tests/py/ws_client.py);
//! - `cirrus call` over ws:// and udp://, and `--subscribe` to records and to peers.
//!
//! Raw UDP (cookie, fragments, the 3x rule) has its own file, udp_raw.rs, and so
//! does garbage on every transport, garbage.rs. Nothing is mocked and nothing is
//! timed: waits are bounded polling loops that fail with what they were waiting for.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use cirrus_proto::record::Record;
use serde_json::{Value, json};
use support::transport::*;
use support::*;
use tokio_tungstenite::tungstenite;

const WS_INSTALL_HINT: &str = "scripts/test.sh installs it (python3 -m pip install websockets); run that script or install it by hand";

/// The same bytes over HTTP, for comparing; `None` when HTTP answers 204.
fn http_answer(node: &TestNode, req: &[u8]) -> Option<Value> {
    let (status, body) = node.post(req.to_vec());
    if status == 204 {
        assert!(body.is_empty(), "204 with a body");
        return None;
    }
    assert_eq!(status, 200, "HTTP status for {}", preview(req));
    Some(serde_json::from_slice(&body).unwrap())
}

/// A response (or each response of a batch) without its `id`.
fn without_ids(v: &Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.iter().map(without_ids).collect()),
        Value::Object(o) => {
            let mut o = o.clone();
            o.remove("id");
            Value::Object(o)
        }
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------
// 1. The same answer on every transport
// ---------------------------------------------------------------------------

#[test]
fn http_ws_and_udp_give_the_same_answers() {
    let p = pair(&[]);
    let node = p.a();
    let alice = author(30);
    let stored: Vec<Record> = docs(30, "same-", 6);
    put_all(node, &stored, 10);
    put_all(
        node,
        &[
            rating(&alice, "film", 1, Some(4)),
            rating(&author(31), "film", 1, Some(2)),
        ],
        10,
    );
    let who = hex::encode(alice.verifying_key().as_bytes());
    let mut bad_sig = serde_json::to_value(doc(&alice, "never", 1, "x")).unwrap();
    bad_sig["sig"] = json!("00".repeat(64));

    let single = |id: i64, m: &str, params: Value| serde_json::to_vec(&rpc(id, m, params)).unwrap();
    let requests: Vec<(&str, Vec<u8>)> = vec![
        ("getdbhash", single(1, "getdbhash", json!({}))),
        (
            "get",
            single(2, "get", json!({"author": who, "key": "same-0001"})),
        ),
        (
            "get missing",
            single(3, "get", json!({"author": who, "key": "nope"})),
        ),
        (
            "get with proof",
            single(
                4,
                "get",
                json!({"author": who, "key": "same-0002", "proof": true}),
            ),
        ),
        ("list all", single(5, "list", json!({}))),
        (
            "list page",
            single(6, "list", json!({"author": who, "limit": 2})),
        ),
        ("list bad cursor", single(7, "list", json!({"after": "zz"}))),
        (
            "getrating",
            single(8, "getrating", json!({"target": "film"})),
        ),
        (
            "put duplicate",
            single(9, "put", json!({"record": stored[0]})),
        ),
        (
            "put bad signature",
            single(10, "put", json!({"record": bad_sig})),
        ),
        ("unknown method", single(11, "nosuch", json!({}))),
        ("missing params", single(12, "get", json!({}))),
        (
            "string id",
            serde_json::to_vec(&rpc("abc", "getdbhash", json!({}))).unwrap(),
        ),
        ("no jsonrpc", br#"{"id":13,"method":"getdbhash"}"#.to_vec()),
        (
            "params by position",
            br#"{"jsonrpc":"2.0","id":14,"method":"get","params":[1]}"#.to_vec(),
        ),
        ("not json", b"{nope".to_vec()),
        ("empty batch", b"[]".to_vec()),
        ("scalar", b"42".to_vec()),
        (
            "batch",
            serde_json::to_vec(&json!([
                rpc(1, "getdbhash", json!({})),
                rpc("two", "get", json!({"author": who, "key": "same-0003"})),
                rpc(3, "nosuch", json!({})),
                42,
                {"jsonrpc": "2.0", "method": "getdbhash"},
                rpc(5, "list", json!({"limit": 1})),
                rpc(6, "put", json!({"record": stored[1]})),
            ]))
            .unwrap(),
        ),
    ];

    let transports = [
        ("WebSocket port", p.a().ws.clone(), None),
        ("WebSocket on a STUN client port", p.dyn_ws.clone(), None),
        ("UDP port", String::new(), Some(p.a().udp.parse().unwrap())),
        ("UDP on a STUN client port", String::new(), Some(p.dyn_udp)),
    ];
    for (name, ws_url, udp_addr) in transports {
        let mut ws = udp_addr.is_none().then(|| ws_connect(&ws_url));
        // Validated first, so that every answer, errors included, comes back whole.
        let udp = udp_addr.map(RawUdp::validated);
        for (what, req) in &requests {
            let want = http_answer(node, req).unwrap_or_else(|| panic!("{what}: HTTP 204"));
            let got = match (&mut ws, &udp) {
                (Some(ws), _) => ws_exchange(ws, req),
                (_, Some(u)) => u.exchange(req).0,
                _ => unreachable!(),
            };
            assert_eq!(
                without_ids(&got),
                without_ids(&want),
                "{name} and HTTP differ for {what} ({})",
                preview(req)
            );
            if let Some(id) = request_id(req) {
                assert_eq!(got["id"], id, "{name}: {what}: id not echoed: {got}");
            }
        }

        // Notifications only: HTTP 204, nothing on the others (the next answer that
        // comes is the one to the request after it).
        let notes =
            br#"[{"jsonrpc":"2.0","method":"getdbhash"},{"jsonrpc":"2.0","method":"nosuch"}]"#;
        assert_eq!(http_answer(node, notes), None, "notifications over HTTP");
        let next = serde_json::to_vec(&rpc(99, "getdbhash", json!({}))).unwrap();
        let got = match (&mut ws, &udp) {
            (Some(ws), _) => {
                ws.send(tungstenite::Message::text(
                    String::from_utf8(notes.to_vec()).unwrap(),
                ))
                .unwrap();
                ws_exchange(ws, &next)
            }
            (_, Some(u)) => {
                u.send(notes);
                u.send(&next);
                let d = u
                    .recv_until(Instant::now() + IO_TIMEOUT)
                    .expect("an answer");
                serde_json::from_slice(&d).unwrap()
            }
            _ => unreachable!(),
        };
        assert_eq!(got["id"], 99, "{name}: notifications got an answer: {got}");

        // subscribe is for WebSocket only; over UDP it is -32601, as over HTTP.
        let sub =
            serde_json::to_vec(&rpc(20, "subscribe", json!({"topics": ["records"]}))).unwrap();
        let over_http = http_answer(node, &sub).unwrap();
        assert_eq!(error_code(&over_http), -32601, "{over_http}");
        match (&mut ws, &udp) {
            (Some(ws), _) => {
                let r = ws_exchange(ws, &sub);
                assert_eq!(r["result"]["topics"], json!(["records"]), "{name}: {r}");
            }
            (_, Some(u)) => assert_eq!(u.exchange(&sub).0, over_http, "{name}"),
            _ => unreachable!(),
        }
    }
    // Nothing above changed the data: the duplicate puts were duplicates.
    assert_eq!(node.db()["records"], 8);
}

// ---------------------------------------------------------------------------
// 2. A stock WebSocket client: Python `websockets`
// ---------------------------------------------------------------------------

fn require_websockets() {
    let out = Command::new("python3")
        .args(["-c", "import websockets"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): {WS_INSTALL_HINT}"));
    assert!(
        out.status.success(),
        "the Python package `websockets` is not installed: {WS_INSTALL_HINT}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_stock_websocket_client_on_the_ws_port_and_a_stun_client_port() {
    require_websockets();
    const MAX_BODY: usize = 4096;
    let p = pair(&["--max-body-bytes", &MAX_BODY.to_string()]);
    let stored = docs(40, "py-", 20);
    put_all(p.a(), &stored, 5); // small batches: the body limit is 4096 bytes
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/ws_client.py");
    let plan_dir = tempfile::tempdir().unwrap();

    for (run, (name, url)) in [
        ("the WebSocket port", p.a().ws.clone()),
        ("a STUN client TCP port", p.dyn_ws.clone()),
    ]
    .into_iter()
    .enumerate()
    {
        let plan = json!({
            "author": hex::encode(stored[0].author),
            "keys": stored.iter().map(|r| r.key.clone()).collect::<Vec<_>>(),
            "puts": docs(41, &format!("py-note-{run}-"), 3),
        });
        let plan_file = plan_dir.path().join(format!("plan-{run}.json"));
        std::fs::write(&plan_file, plan.to_string()).unwrap();
        let out = Command::new("python3")
            .arg(script)
            .args([url.as_str(), p.a().url.as_str()])
            .arg(&plan_file)
            .arg(MAX_BODY.to_string())
            .output()
            .expect("run python3");
        let text = format!(
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "Python websockets client against {name} ({url}) failed:\n{text}"
        );
        println!("Python websockets client against {name} ({url}):\n{text}");
    }
    // Still serving, with all 20 + 2 × 3 records.
    assert_eq!(p.a().db()["records"], 26);
}

// ---------------------------------------------------------------------------
// 3. `cirrus call` over ws:// and udp://
// ---------------------------------------------------------------------------

/// `cirrus call ARGS`.
fn call(args: &[&str]) -> Output {
    cirrus(&[&["call"], args, &["--timeout", "20"]].concat())
}

fn call_ok(args: &[&str]) -> Value {
    let out = call(args);
    assert!(
        out.status.success(),
        "cirrus call {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("cirrus call {args:?} printed non-JSON ({e})"))
}

#[test]
fn cirrus_call_over_ws_and_udp_and_subscribe() {
    let p = pair(&[]);
    put_all(p.a(), &docs(60, "call-", 1000), 100);
    let http_db = p.a().db();
    let http_list = p.a().ok("list", json!({"limit": 1000}));
    let get_params =
        json!({"author": hex::encode(author(60).verifying_key().as_bytes()), "key": "call-0007"});
    let http_get = p.a().ok("get", get_params.clone());
    assert_eq!(http_get["record"]["key"], "call-0007");
    let get_params = get_params.to_string();
    let ws_urls = [p.a().ws.clone(), p.dyn_ws.clone()];
    let udp_urls = [
        format!("udp://{}", p.a().udp),
        format!("udp://{}", p.dyn_udp),
    ];

    for url in ws_urls.iter().chain(&udp_urls) {
        assert_eq!(call_ok(&["getdbhash", "--node", url]), http_db, "{url}");
        assert_eq!(
            call_ok(&["get", &get_params, "--node", url]),
            http_get,
            "{url}"
        );
    }
    // A large answer: over udp:// it needs the cookie and comes in fragments.
    for url in ws_urls.iter().chain(&udp_urls) {
        let list = call_ok(&["list", r#"{"limit":1000}"#, "--node", url]);
        assert_eq!(list, http_list, "{url}: list of 1000");
        let info = call_ok(&["getnodeinfo", "--node", url]);
        assert_eq!(info["peerId"], p.a().peer_id, "{url}");
    }
    // Errors: exit 1 and the message.
    for url in ws_urls.iter().chain(&udp_urls) {
        let out = call(&["nosuch", "--node", url]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{url}: {err}");
        assert!(err.contains("-32601"), "{url}: {err}");
    }

    // --subscribe says "subscribed" on stderr once the node acknowledged it; from
    // then on it prints one JSON line per notification.
    for (run, url) in ws_urls.iter().enumerate() {
        let mut child = Command::new(BIN)
            .args([
                "call",
                "subscribe",
                r#"{"topics":["records"]}"#,
                "--subscribe",
            ])
            .args(["--node", url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cirrus call --subscribe");
        let lines = |pipe: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let out = lines(Box::new(child.stdout.take().unwrap()));
        let err = lines(Box::new(child.stderr.take().unwrap()));
        let next = |rx: &mpsc::Receiver<std::io::Result<String>>, what: &str| match rx
            .recv_timeout(TIMEOUT)
        {
            Ok(line) => line.expect("read a line"),
            Err(e) => panic!("{url}: `cirrus call --subscribe` printed no {what}: {e}"),
        };
        let said = next(&err, "acknowledgement on stderr");
        assert!(said.starts_with("subscribed to records"), "{url}: {said:?}");
        // Acknowledged: the very next record is notified, and first.
        let r = doc(&author(61), &format!("sub-{run}"), 1, "v");
        let id = p.a().put(&r)["id"].as_str().unwrap().to_string();
        let line = next(&out, "notification");
        let note: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{url}: not a JSON line ({e}): {line:?}"));
        assert_eq!(note["method"], "record", "{url}: {note}");
        assert_eq!(note["params"]["id"], id, "{url}: {note}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// `subscribe {"topics": ["peers"]}`: a `peer` notification when a peer connects
/// and when it leaves.
#[test]
fn subscribers_of_peers_hear_who_comes_and_goes() {
    let mut net = TestNet::unstarted(2, &[]);
    net.up(0, &[]);
    let ws = net.node(0).ws.clone();
    let mut child = Command::new(BIN)
        .args([
            "call",
            "subscribe",
            r#"{"topics":["peers"]}"#,
            "--subscribe",
        ])
        .args(["--node", &ws])
        .env("HOME", net.dir(0))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cirrus call --subscribe");
    let (tx, out) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut said = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert!(said.starts_with("subscribed to peers"), "{said:?}");
    let next = || -> Value {
        let line = out
            .recv_timeout(TIMEOUT)
            .expect("a peer notification")
            .unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
    };

    let boot = net.boot();
    let joined = net.up(1, &["--bootstrap", &boot]).peer_id.clone();
    let note = next();
    assert_eq!(note["method"], "peer", "{note}");
    assert_eq!(note["params"]["event"], "connected", "{note}");
    assert_eq!(note["params"]["peerId"], joined.as_str(), "{note}");
    assert!(
        note["params"]["addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("/ip4/")),
        "{note}"
    );
    net.stop(1);
    let note = next();
    assert_eq!(
        (
            note["params"]["event"].as_str(),
            note["params"]["peerId"].as_str()
        ),
        (Some("disconnected"), Some(joined.as_str())),
        "{note}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
