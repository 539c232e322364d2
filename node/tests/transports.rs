//! The client API over every transport, on real processes (issue 5):
//!
//! - HTTP, WebSocket and UDP give the same answers to the same requests, on the fixed
//!   ports and on a per-peer STUN client port;
//! - a stock WebSocket client (Python `websockets`, node/tests/py/ws_client.py);
//! - raw UDP sockets: plain answers, the cookie, fragments, the 3x rule, STUN,
//!   garbage;
//! - `cirrus call` over ws:// and udp://, and `--subscribe`;
//! - garbage on each transport leaves the node serving.
//!
//! Nothing is mocked and nothing is timed: waits are bounded polling loops that fail
//! with what they were waiting for.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cirrus_proto::record::Record;
use cirrus_proto::stun::{self, Class, Message, binding_request, parse_binding_response};
use serde_json::{Value, json};
use support::*;
use tokio_tungstenite::tungstenite;

/// Bound on one blocking read; a read that hits it fails the test (or, where noted,
/// ends a collection window).
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// From docs/udp.md.
const MAX_DATAGRAM_OUT: usize = 1200;
const FRAGMENT_TAG: u8 = 0xCF;
const COOKIE_REQUIRED: i64 = -32010;
const WS_INSTALL_HINT: &str = "scripts/test.sh installs it (python3 -m pip install websockets); run that script or install it by hand";

fn preview(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
    if bytes.len() > 200 {
        format!("{s}… ({} bytes)", bytes.len())
    } else {
        s
    }
}

/// A small deterministic byte generator for garbage (xorshift64).
struct Junk(u64);

impl Junk {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 >> 24) as u8
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Two nodes, so that A has per-peer STUN client ports (which serve A's API)
// ---------------------------------------------------------------------------

struct Pair {
    net: TestNet,
    /// A's STUN client UDP socket toward B: the UDP API.
    dyn_udp: SocketAddr,
    /// A's STUN client TCP port toward B: WebSocket, `ws://IP:PORT`.
    dyn_ws: String,
}

impl Pair {
    fn a(&self) -> &TestNode {
        self.net.node(0)
    }
    fn b(&self) -> &TestNode {
        self.net.node(1)
    }
}

/// Start A (with `extra` flags) and B bootstrapping from A, both with 1 s STUN
/// keepalives, and wait until A's `getnodeinfo.stun` lists client ports via B.
fn pair(extra: &[&str]) -> Pair {
    let mut net = TestNet::unstarted(2, &["--stun-keepalive-secs", "1"]);
    net.up(0, extra);
    let boot = net.boot();
    net.up(1, &["--bootstrap", &boot]);
    let (a, b) = (net.node(0), net.node(1));
    let (udp, tcp) = wait_until(
        "A's getnodeinfo.stun lists a UDP and a TCP client port via B",
        || {
            let s = a.ok("getnodeinfo", json!({}))["stun"].clone();
            let via_b = |t: &str| {
                s[t].as_array()
                    .and_then(|v| v.iter().find(|e| e["via"] == b.peer_id.as_str()))
                    .cloned()
            };
            match (via_b("udp"), via_b("tcp")) {
                (Some(u), Some(t)) => Ok((u, t)),
                _ => Err(s.to_string()),
            }
        },
    );
    let endpoint = |e: &Value| {
        let ip = e["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address: {e}"));
        let port = e["port"].as_u64().unwrap_or_else(|| panic!("no port: {e}"));
        format!("{ip}:{port}")
    };
    let (dyn_udp, dyn_ws) = (
        endpoint(&udp).parse().unwrap(),
        format!("ws://{}", endpoint(&tcp)),
    );
    Pair {
        net,
        dyn_udp,
        dyn_ws,
    }
}

/// Sign `n` docs by `author` with keys `{prefix}{i:04}`.
fn docs(author_no: u8, prefix: &str, n: usize) -> Vec<Record> {
    let a = author(author_no);
    (0..n)
        .map(|i| {
            doc(
                &a,
                &format!("{prefix}{i:04}"),
                1,
                &format!("value {i} of {prefix}"),
            )
        })
        .collect()
}

/// Put over HTTP in batches of `batch`; every put must be applied.
fn put_all(node: &TestNode, records: &[Record], batch: usize) {
    records
        .chunks(batch)
        .for_each(|chunk| put_all_applied(node, chunk));
}

// ---------------------------------------------------------------------------
// A blocking WebSocket client (tungstenite) and raw UDP
// ---------------------------------------------------------------------------

type WsStream = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

fn ws_connect(url: &str) -> WsStream {
    let (mut ws, _) =
        tungstenite::connect(url).unwrap_or_else(|e| panic!("WebSocket connect {url}: {e}"));
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    }
    ws
}

/// The `id` a request asks to be answered with: `Some` for a single request with an
/// id; `None` for a batch or bytes that are not a request.
fn request_id(req: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(req)
        .ok()
        .and_then(|v| v.as_object().and_then(|o| o.get("id").cloned()))
}

/// Whether `answer` answers a request with `want` (see [`request_id`]).
fn answers(answer: &Value, want: &Option<Value>) -> bool {
    match want {
        Some(id) => answer.get("id") == Some(id),
        None => answer.is_array() || answer.get("method").is_none(),
    }
}

/// Send one text frame and read until its answer (matched by id).
fn ws_exchange(ws: &mut WsStream, req: &[u8]) -> Value {
    let text = String::from_utf8(req.to_vec()).expect("a text frame is UTF-8");
    ws.send(tungstenite::Message::text(text))
        .unwrap_or_else(|e| panic!("WebSocket send {}: {e}", preview(req)));
    let want = request_id(req);
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t)
                    .unwrap_or_else(|e| panic!("non-JSON text frame {t:?}: {e}"));
                if answers(&v, &want) {
                    return v;
                }
            }
            Ok(tungstenite::Message::Binary(b)) => panic!("binary frame from the node: {b:?}"),
            Ok(_) => {}
            Err(e) => panic!(
                "WebSocket read, waiting for the answer to {}: {e}",
                preview(req)
            ),
        }
    }
}

/// A plain UDP socket on loopback, talking to one node address.
struct RawUdp {
    sock: UdpSocket,
    to: SocketAddr,
}

/// Source addresses handed out to fresh sockets in this process.
static SOURCES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl RawUdp {
    /// A socket on an address of its own (127.250.X.Y), which no earlier socket of
    /// this test had: a source the node has never seen, even once ports are reused.
    fn new(to: SocketAddr) -> RawUdp {
        let n = SOURCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ip = std::net::Ipv4Addr::new(127, 250, (n / 250) as u8, (n % 250 + 1) as u8);
        let sock = UdpSocket::bind((ip, 0)).unwrap();
        // Room for a few hundred fragments arriving at once.
        let size: libc::c_int = 4 << 20;
        // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int and its size.
        unsafe {
            use std::os::fd::AsRawFd;
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        RawUdp { sock, to }
    }

    fn local(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    fn send(&self, d: &[u8]) {
        self.sock.send_to(d, self.to).unwrap();
    }

    /// The next datagram from the node before `deadline`, if any.
    fn recv_until(&self, deadline: Instant) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65_536];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            if left.is_zero() {
                return None;
            }
            self.sock.set_read_timeout(Some(left)).unwrap();
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) if from == self.to => return Some(buf[..n].to_vec()),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) => panic!("UDP receive from {}: {e}", self.to),
            }
        }
    }

    /// The datagrams from the node waiting in the socket now (once the node says
    /// it sent them, see [`Udp`]), without waiting for more.
    fn drain_now(&self) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; 65_536];
        let mut got = Vec::new();
        self.sock.set_nonblocking(true).unwrap();
        while let Ok((n, from)) = self.sock.recv_from(&mut buf) {
            if from == self.to {
                got.push(buf[..n].to_vec());
            }
        }
        self.sock.set_nonblocking(false).unwrap();
        got
    }

    /// Send `req` and return its whole answer and the datagrams it came in: one plain
    /// datagram, or fragments put together by index. If a fragment goes missing, send
    /// the request again, as udp.md says (up to 5 tries).
    fn exchange(&self, req: &[u8]) -> (Value, Vec<Vec<u8>>) {
        let want = request_id(req);
        for _ in 0..5 {
            self.send(req);
            let mut parts = Fragments::default();
            let deadline = Instant::now() + IO_TIMEOUT / 2;
            while let Some(d) = self.recv_until(deadline) {
                if stun::is_stun(&d) {
                    continue;
                }
                if let Some((msg, datagrams)) = parts.push(d) {
                    let v: Value = serde_json::from_slice(&msg).unwrap_or_else(|e| {
                        panic!("UDP answer is not JSON ({e}): {}", preview(&msg))
                    });
                    if answers(&v, &want) {
                        return (v, datagrams);
                    }
                }
            }
        }
        panic!(
            "no complete UDP answer from {} to {} after 5 tries",
            self.to,
            preview(req)
        )
    }

    /// A socket whose source address the node counts as shown (cookie round trip).
    fn validated(to: SocketAddr) -> RawUdp {
        let u = RawUdp::new(to);
        let req = rpc(1, "getnodeinfo", json!({}));
        let (first, _) = u.exchange(&padded(&req, 64));
        let c = cookie_of(&first).unwrap_or_else(|| {
            panic!("getnodeinfo from a fresh socket should need a cookie: {first}")
        });
        let (second, _) = u.exchange(&serde_json::to_vec(&with_cookie(&req, &c)).unwrap());
        assert!(second["result"]["peerId"].is_string(), "{second}");
        u
    }
}

/// What the node says of its UDP API, counted on its side: datagrams it is done
/// with (each counted once its answer, if any, is sent), and bytes it sent to
/// sources not yet validated. A bound on what reached a source is asserted on
/// these, not on what a socket happened to receive within some window.
#[derive(Debug, Clone, Copy)]
struct Udp {
    handled: f64,
    unvalidated_bytes: f64,
    silent: f64,
    cookie: f64,
}

impl Udp {
    fn of(node: &TestNode) -> Udp {
        let m = node.metrics();
        let all = metric_in(&m, "cirrus_udp_datagrams_total", &[]);
        // STUN answers to the node's own clients arrive all the time: not ours.
        let theirs = metric_in(
            &m,
            "cirrus_udp_datagrams_total",
            &[("result", "stun_response")],
        );
        Udp {
            handled: all - theirs,
            unvalidated_bytes: metric_in(&m, "cirrus_udp_unvalidated_sent_bytes_total", &[]),
            silent: metric_in(&m, "cirrus_udp_datagrams_total", &[("result", "silent")])
                + metric_in(
                    &m,
                    "cirrus_udp_datagrams_total",
                    &[("result", "stun_silent")],
                ),
            cookie: metric_in(&m, "cirrus_udp_datagrams_total", &[("result", "cookie")]),
        }
    }

    /// Wait until the node is done with `n` more datagrams than `self` counted.
    fn settle(self, node: &TestNode, n: usize, what: &str) -> Udp {
        wait_until(&format!("the node is done with {what}"), || {
            let now = Udp::of(node);
            if now.handled >= self.handled + n as f64 {
                Ok(now)
            } else {
                Err(format!("{now:?}, was {self:?}"))
            }
        })
    }
}

/// Fragments by message number, each kept whole (header included).
#[derive(Default)]
struct Fragments(HashMap<u32, (u16, BTreeMap<u16, Vec<u8>>)>);

impl Fragments {
    /// Feed one datagram; returns the JSON text and its datagrams once complete.
    fn push(&mut self, d: Vec<u8>) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
        assert!(
            d.len() <= MAX_DATAGRAM_OUT,
            "a {}-byte datagram from the node, over {MAX_DATAGRAM_OUT}: {}",
            d.len(),
            preview(&d)
        );
        if d.first() != Some(&FRAGMENT_TAG) {
            assert!(
                matches!(d.first(), Some(b'{' | b'[')),
                "a datagram that is neither JSON, a fragment nor STUN: {}",
                preview(&d)
            );
            return Some((d.clone(), vec![d]));
        }
        assert!(d.len() > 9, "fragment shorter than its header: {d:?}");
        let no = u32::from_be_bytes(d[1..5].try_into().unwrap());
        let index = u16::from_be_bytes([d[5], d[6]]);
        let count = u16::from_be_bytes([d[7], d[8]]);
        assert!(index < count, "fragment index {index} of {count}");
        let entry = self.0.entry(no).or_insert_with(|| (count, BTreeMap::new()));
        assert_eq!(
            entry.0, count,
            "fragments of message {no} disagree on the count"
        );
        entry.1.insert(index, d);
        if entry.1.len() < count as usize {
            return None;
        }
        let (_, parts) = self.0.remove(&no).unwrap();
        let json: Vec<u8> = parts.values().flat_map(|f| f[9..].to_vec()).collect();
        Some((json, parts.into_values().collect()))
    }
}

fn rpc(id: impl Into<Value>, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id.into(), "method": method, "params": params})
}

/// `req` encoded, then padded with JSON whitespace to at least `size` bytes.
fn padded(req: &Value, size: usize) -> Vec<u8> {
    let mut b = serde_json::to_vec(req).unwrap();
    if b.len() < size {
        b.resize(size, b' ');
    }
    b
}

fn with_cookie(req: &Value, cookie: &str) -> Value {
    let mut r = req.clone();
    r["cookie"] = json!(cookie);
    r
}

/// The cookie of a -32010 answer.
fn cookie_of(v: &Value) -> Option<String> {
    (v["error"]["code"] == COOKIE_REQUIRED).then(|| {
        let c = v["error"]["data"]["cookie"]
            .as_str()
            .unwrap_or_else(|| panic!("-32010 without data.cookie: {v}"));
        assert!(
            !c.is_empty() && c.bytes().all(|b| b.is_ascii_hexdigit()),
            "cookie is not hex: {v}"
        );
        c.to_string()
    })
}

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
// 3. Raw UDP
// ---------------------------------------------------------------------------

#[test]
fn raw_udp_plain_answers_cookie_fragments_amplification_and_stun() {
    let p = pair(&[]);
    put_all(p.a(), &docs(50, "udp-", 1000), 100);
    let http_list = p.a().ok("list", json!({"limit": 1000}));
    assert_eq!(http_list["records"].as_array().unwrap().len(), 1000);
    let http_db = p.a().db();
    for (name, addr) in [
        ("the UDP port", p.a().udp.parse().unwrap()),
        ("a STUN client UDP port", p.dyn_udp),
    ] {
        udp_small_answer(name, addr, &http_db);
        udp_cookie_and_fragments(name, addr, &http_list);
        udp_first_requests_get_at_most_three_times_their_size(name, p.a(), addr);
        udp_stun_binding(name, addr);
        // The node still answers.
        let u = RawUdp::new(addr);
        let (v, _) = u.exchange(&padded(&rpc(1, "getdbhash", json!({})), 100));
        assert_eq!(v["result"], http_db, "{name}: after the UDP checks");
    }
}

/// A small request is answered by one plain JSON datagram.
fn udp_small_answer(name: &str, addr: SocketAddr, http_db: &Value) {
    let u = RawUdp::new(addr);
    u.send(&padded(&rpc(7, "getdbhash", json!({})), 100));
    let d = u
        .recv_until(Instant::now() + IO_TIMEOUT)
        .unwrap_or_else(|| panic!("{name}: no answer to getdbhash within {IO_TIMEOUT:?}"));
    assert_eq!(
        d[0],
        b'{',
        "{name}: not a plain JSON datagram: {}",
        preview(&d)
    );
    let v: Value =
        serde_json::from_slice(&d).unwrap_or_else(|e| panic!("{name}: {e}: {}", preview(&d)));
    assert_eq!(v["id"], 7, "{name}: {v}");
    assert_eq!(&v["result"], http_db, "{name}: {v}");
}

/// A large answer needs a cookie first; with it, the answer comes in fragments.
fn udp_cookie_and_fragments(name: &str, addr: SocketAddr, http_list: &Value) {
    let req = rpc(8, "list", json!({"limit": 1000}));
    let u = RawUdp::new(addr);
    let (first, datagrams) = u.exchange(&padded(&req, 100));
    assert_eq!(
        datagrams.len(),
        1,
        "{name}: the cookie error is one datagram"
    );
    let cookie = cookie_of(&first)
        .unwrap_or_else(|| panic!("{name}: a fresh source got a large answer: {first}"));
    assert_eq!(first["id"], 8, "{name}: {first}");
    assert_eq!(
        first["error"]["message"], "cookie required",
        "{name}: {first}"
    );

    // A cookie is bound to its source: another socket cannot use it, nor one that is
    // not hex, nor one that is not a string.
    for bad in [json!(cookie), json!("0123456789abcdef"), json!(123)] {
        let other = RawUdp::new(addr);
        let mut r = req.clone();
        r["cookie"] = bad.clone();
        let (v, _) = other.exchange(&padded(&r, 100));
        assert_eq!(
            v["error"]["code"],
            COOKIE_REQUIRED,
            "{name}: cookie {bad} from {} (not its source) was accepted",
            other.local()
        );
    }

    let (full, datagrams) = u.exchange(&serde_json::to_vec(&with_cookie(&req, &cookie)).unwrap());
    assert_eq!(full["id"], 8, "{name}");
    assert_eq!(
        &full["result"], http_list,
        "{name}: UDP list differs from HTTP"
    );
    let json_len: usize = datagrams.iter().map(|d| d.len() - 9).sum();
    assert!(datagrams.len() > 1, "{name}: expected fragments");
    assert_eq!(
        datagrams.len(),
        json_len.div_ceil(MAX_DATAGRAM_OUT - 9),
        "{name}: fragment count for {json_len} bytes"
    );
    let first_no = &datagrams[0][1..5];
    for (i, d) in datagrams.iter().enumerate() {
        assert_eq!(d[0], FRAGMENT_TAG, "{name}: fragment {i}");
        assert_eq!(&d[1..5], first_no, "{name}: fragment {i}: message number");
        assert_eq!(u16::from_be_bytes([d[5], d[6]]) as usize, i, "{name}");
        assert_eq!(u16::from_be_bytes([d[7], d[8]]) as usize, datagrams.len());
        if i + 1 < datagrams.len() {
            assert_eq!(
                d.len(),
                MAX_DATAGRAM_OUT,
                "{name}: fragment {i} is not full"
            );
        }
    }

    // The source now counts as shown: no cookie needed, and each answer has its own
    // message number.
    let (again, more) = u.exchange(&serde_json::to_vec(&req).unwrap());
    assert_eq!(&again["result"], http_list, "{name}: after the cookie");
    assert_ne!(&more[0][1..5], first_no, "{name}: message numbers repeat");
    let (info, _) = u.exchange(&serde_json::to_vec(&rpc(9, "getnodeinfo", json!({}))).unwrap());
    assert!(info["result"]["peerId"].is_string(), "{name}: {info}");
}

/// What a first request from a fresh source must get back, besides the 3x bound.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Expect {
    /// Exactly the -32010 error with a cookie: the answer is over 3x, the error is not.
    Cookie,
    /// Nothing: even the cookie error is over 3x.
    Silence,
    /// Anything within 3x (the answer may or may not fit).
    Any,
}

/// From a fresh socket with no cookie, whatever the request, the node sends back at
/// most three times its size: the bytes the node counts as sent to unvalidated
/// sources, one request at a time.
fn udp_first_requests_get_at_most_three_times_their_size(
    name: &str,
    node: &TestNode,
    addr: SocketAddr,
) {
    use Expect::*;
    let list = |limit: u64| rpc(1, "list", json!({"limit": limit}));
    let getdbhash = rpc(2, "getdbhash", json!({}));
    let big_batch: Vec<Value> = (0..100).map(|i| rpc(i, "getdbhash", json!({}))).collect();
    let junk_batch = format!("[{}]", vec!["{}"; 200].join(","));
    let bytes = |v: &Value| serde_json::to_vec(v).unwrap();
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("list of 1000, unpadded", bytes(&list(1000)), Cookie),
        ("list of 1000, padded", padded(&list(1000), 200), Cookie),
        // Answers of about 4 to 12 times the request: between 3x and a looser rule.
        ("list of 1, unpadded", bytes(&list(1)), Cookie),
        ("list of 2, unpadded", bytes(&list(2)), Cookie),
        ("list of 3, unpadded", bytes(&list(3)), Cookie),
        (
            "getnodeinfo, unpadded",
            bytes(&rpc(3, "getnodeinfo", json!({}))),
            Cookie,
        ),
        ("getdbhash, unpadded", bytes(&getdbhash), Any),
        ("tiny parse error", b"{nope".to_vec(), Silence),
        ("tiny empty batch", b"[]".to_vec(), Silence),
        ("tiny scalar", b"1".to_vec(), Silence),
        // More than a plain read: only a cookie comes back.
        (
            "batch of 100 getdbhash",
            bytes(&Value::Array(big_batch)),
            Cookie,
        ),
        (
            "batch of 200 invalid requests",
            junk_batch.into_bytes(),
            Cookie,
        ),
        (
            "STUN Binding request, header only",
            Message::new(Class::Request, stun::BINDING, [1; 12]).encode(false),
            Any,
        ),
        (
            "STUN Binding request with FINGERPRINT",
            Message::new(Class::Request, stun::BINDING, [2; 12]).encode(true),
            Any,
        ),
    ];
    for (what, req, expect) in &cases {
        let before = Udp::of(node);
        let u = RawUdp::new(addr);
        u.send(req);
        let after = before.settle(node, 1, what);
        let sent = after.unvalidated_bytes - before.unvalidated_bytes;
        assert!(
            sent <= (3 * req.len()) as f64,
            "{name}: {what}: {} bytes in, {sent} bytes sent to the fresh source (over 3x)",
            req.len()
        );
        match expect {
            Cookie => {
                assert_eq!(after.cookie - before.cookie, 1.0, "{name}: {what}");
                let d = u
                    .recv_until(Instant::now() + IO_TIMEOUT)
                    .unwrap_or_else(|| panic!("{name}: {what}: the cookie never arrived"));
                let v: Value = serde_json::from_slice(&d).unwrap();
                assert!(cookie_of(&v).is_some(), "{name}: {what}: {v}");
                assert_eq!(
                    sent,
                    d.len() as f64,
                    "{name}: {what}: one datagram, the cookie"
                );
            }
            Silence => {
                assert_eq!(sent, 0.0, "{name}: {what}: something was sent");
                assert_eq!(after.silent - before.silent, 1.0, "{name}: {what}");
            }
            Any => {}
        }
    }
}

/// A STUN Binding request on the API socket gets the source's own address back.
fn udp_stun_binding(name: &str, addr: SocketAddr) {
    let u = RawUdp::new(addr);
    let txid = *b"transports01";
    // SOFTWARE makes the request large enough for the answer under the 3x rule.
    let req = binding_request(
        txid,
        "cirrus transports test: a Binding request on the UDP API socket",
        None,
    );
    u.send(&req);
    let d = u
        .recv_until(Instant::now() + IO_TIMEOUT)
        .unwrap_or_else(|| panic!("{name}: no answer to a STUN Binding request"));
    assert!(d.len() <= 3 * req.len(), "{name}: STUN answer over 3x");
    let mapped = parse_binding_response(&d, &txid)
        .unwrap_or_else(|e| panic!("{name}: bad Binding response ({e}): {d:?}"));
    assert_eq!(mapped, u.local(), "{name}: mapped address");
}

// ---------------------------------------------------------------------------
// 4. `cirrus call` over ws:// and udp://
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

// ---------------------------------------------------------------------------
// 5. Garbage on each transport
// ---------------------------------------------------------------------------

#[test]
fn garbage_on_every_transport_leaves_the_node_serving() {
    let p = pair(&[]);
    put_all(p.a(), &docs(70, "junk-", 5), 10);
    let db = p.a().db();
    let ws_addrs = [
        p.a().ws.trim_start_matches("ws://").to_string(),
        p.dyn_ws.trim_start_matches("ws://").to_string(),
    ];
    let http_addr = p.a().url.trim_start_matches("http://").to_string();
    let mut junk = Junk(0x5eed_c0ff_ee00_0001);

    // Half-open WebSocket handshakes, held open while everything else runs.
    let mut held = Vec::new();
    for addr in &ws_addrs {
        for _ in 0..20 {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
            )
            .unwrap();
            held.push(s);
        }
    }
    // Half-open HTTP requests too.
    for _ in 0..20 {
        let mut s = TcpStream::connect(&http_addr).unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"js")
            .unwrap();
        held.push(s);
    }

    for addr in &ws_addrs {
        // Bytes that are not HTTP at all, a TLS ClientHello start, plain HTTP without
        // the upgrade: the node answers 4xx or closes.
        let not_ws: Vec<(&str, Vec<u8>)> = vec![
            ("random bytes", junk.bytes(3000)),
            ("TLS ClientHello", {
                let mut h = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
                h.extend(junk.bytes(500));
                h
            }),
            // (Connection: close, so the node closes once it answered, rather than
            // keep the connection for the next request.)
            (
                "HTTP POST",
                b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
                    .to_vec(),
            ),
            (
                "HTTP GET without upgrade",
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            ),
            (
                "upgrade without a key",
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec(),
            ),
        ];
        for (what, bytes) in not_ws {
            let reply = tcp_exchange(addr, &bytes);
            assert!(
                reply.is_empty() || reply.starts_with(b"HTTP/1.1 4"),
                "WebSocket port {addr}: {what}: {}",
                preview(&reply)
            );
        }
        // A completed handshake, then frames that break the protocol: the node closes.
        let bad_frames: Vec<(&str, Vec<u8>)> = vec![
            ("an unmasked client frame", b"\x81\x05hello".to_vec()),
            ("a reserved opcode", b"\x83\x80\x00\x00\x00\x00".to_vec()),
            ("random bytes", junk.bytes(2000)),
        ];
        for (what, frame) in bad_frames {
            let mut s = ws_handshake(addr);
            s.write_all(&frame).unwrap();
            if what != "random bytes" {
                // Read until the node closes; a close frame may come first.
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(_) => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                        Err(e) => panic!("WebSocket {addr}: after {what}, no close: {e}"),
                    }
                }
            }
        }
        // And still serving WebSocket.
        let mut ws = ws_connect(&format!("ws://{addr}"));
        let v = ws_exchange(
            &mut ws,
            &serde_json::to_vec(&rpc(1, "getdbhash", json!({}))).unwrap(),
        );
        assert_eq!(v["result"], db, "WebSocket {addr} after garbage");
    }

    // Garbage to the HTTP port.
    for bytes in [
        junk.bytes(3000),
        b"\x16\x03\x01\x00\x05hello".to_vec(),
        b"GET\r\n\r\n".to_vec(),
    ] {
        let reply = tcp_exchange(&http_addr, &bytes);
        assert!(
            reply.is_empty() || reply.starts_with(b"HTTP/1.1 4"),
            "HTTP: {}",
            preview(&reply)
        );
    }

    // Garbage datagrams, from a validated source (so every answer comes back) and from
    // a fresh one (so the 3x rule applies).
    for addr in [p.a().udp.parse().unwrap(), p.dyn_udp] {
        udp_garbage(p.a(), addr, &mut junk, &db);
    }

    // Everything is still served, with the half-open connections still open.
    assert_eq!(p.a().db(), db);
    let mut ws = ws_connect(&p.a().ws);
    let v = ws_exchange(
        &mut ws,
        &serde_json::to_vec(&rpc(2, "getdbhash", json!({}))).unwrap(),
    );
    assert_eq!(v["result"], db);
    let u = RawUdp::new(p.a().udp.parse().unwrap());
    assert_eq!(
        u.exchange(&padded(&rpc(3, "getdbhash", json!({})), 100)).0["result"],
        db
    );
    drop(held);
    // B, a peer of A all along, is fine too.
    assert!(p.b().ok("getnodeinfo", json!({}))["peers"].as_u64() >= Some(1));
}

/// Send `bytes` on a new TCP connection and read what comes back until the node
/// closes it (or [`IO_TIMEOUT`]).
fn tcp_exchange(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                // An HTTP error answer is complete once its headers and body are in;
                // the node may keep the connection open after it.
                if got.starts_with(b"HTTP/1.1 4") && http_complete(&got) {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "{addr}: no answer and no close after {}: {e}",
                preview(bytes)
            ),
        }
    }
    got
}

fn http_complete(got: &[u8]) -> bool {
    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    got.len() >= end + 4 + len
}

/// A raw TCP connection with a completed WebSocket handshake.
fn ws_handshake(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).expect("handshake answer");
        assert_eq!(
            n,
            1,
            "{addr}: closed during the handshake: {}",
            preview(&head)
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{addr}: {}",
        preview(&head)
    );
    s
}

fn udp_garbage(node: &TestNode, addr: SocketAddr, junk: &mut Junk, db: &Value) {
    let stun_junk = |typ: [u8; 2], len: u16, body: Vec<u8>| {
        let mut m = typ.to_vec();
        m.extend_from_slice(&len.to_be_bytes());
        m.extend_from_slice(&0x2112_A442u32.to_be_bytes());
        m.extend_from_slice(b"junkjunkjunk");
        m.extend(body);
        m
    };
    let over_batch: Vec<Value> = (0..1001)
        .map(|i| json!({"jsonrpc":"2.0","id":i,"method":"x"}))
        .collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty datagram", Vec::new()),
        ("one random byte", junk.bytes(1)),
        ("random bytes", junk.bytes(100)),
        ("random 1500 bytes", junk.bytes(1500)),
        ("random 65507 bytes", junk.bytes(65_507)),
        ("0xCF alone", vec![FRAGMENT_TAG]),
        (
            "0xCF fragment header, count 0",
            vec![FRAGMENT_TAG, 0, 0, 0, 1, 0, 0, 0, 0],
        ),
        (
            "0xCF junk",
            [&[FRAGMENT_TAG][..], &junk.bytes(700)].concat(),
        ),
        (
            "STUN request, length past the end",
            stun_junk([0, 1], 0xFFFC, junk.bytes(40)),
        ),
        (
            "STUN request, junk attributes",
            stun_junk([0, 1], 40, junk.bytes(40)),
        ),
        (
            "STUN success response, junk",
            stun_junk([1, 1], 40, junk.bytes(40)),
        ),
        (
            "STUN error response, junk",
            stun_junk([1, 0x11], 8, junk.bytes(8)),
        ),
        ("STUN indication, junk", stun_junk([0, 0x11], 0, Vec::new())),
        ("STUN unknown method", stun_junk([0, 0x02], 0, Vec::new())),
        ("deep [ nesting", "[".repeat(65_000).into_bytes()),
        (
            "deep {\"a\": nesting",
            "{\"a\":".repeat(13_000).into_bytes(),
        ),
        ("65507 bytes of {", "{".repeat(65_507).into_bytes()),
        (
            "invalid UTF-8",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\xfe\"}".to_vec(),
        ),
        ("null", b"null".to_vec()),
        ("string", b"\"getdbhash\"".to_vec()),
        (
            "batch over max-batch",
            serde_json::to_vec(&over_batch).unwrap(),
        ),
        (
            "cookie in a batch of junk",
            br#"[1,{"cookie":"00"},{"cookie":7},"x"]"#.to_vec(),
        ),
    ];
    let validated = RawUdp::validated(addr);
    for (what, d) in &cases {
        let before = Udp::of(node);
        validated.send(d);
        let fresh = RawUdp::new(addr);
        fresh.send(d);
        // A request sent behind the garbage: its answer shows the node still serves.
        validated.send(&serde_json::to_vec(&rpc("alive", "getdbhash", json!({}))).unwrap());
        let mut alive = false;
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut from_validated = Vec::new();
        while let Some(d) = validated.recv_until(deadline) {
            alive |= serde_json::from_slice::<Value>(&d).is_ok_and(|v| v["id"] == "alive");
            from_validated.push(d);
            if alive {
                break;
            }
        }
        assert!(
            alive,
            "{addr}: no answer to getdbhash within {IO_TIMEOUT:?} after {what}"
        );
        // A STUN response goes to the socket's own STUN client, and is counted with
        // the node's background STUN traffic, which `Udp` leaves out.
        let response = stun::is_stun(d) && d[0] & 0x01 == 0x01;
        let after = before.settle(node, if response { 1 } else { 3 }, what);
        let sent = after.unvalidated_bytes - before.unvalidated_bytes;
        assert!(
            sent <= (3 * d.len()) as f64,
            "{addr}: {what}: {} bytes in, {sent} sent to the fresh source",
            d.len()
        );
        from_validated.extend(validated.drain_now());
        for (who, got) in [("validated", from_validated), ("fresh", fresh.drain_now())] {
            let mut parts = Fragments::default();
            for g in &got {
                if stun::is_stun(g) {
                    continue; // a STUN error answer to STUN junk
                }
                let Some((msg, _)) = parts.push(g.clone()) else {
                    continue;
                };
                let v: Value = serde_json::from_slice(&msg).unwrap_or_else(|e| {
                    panic!(
                        "{addr}: {what} ({who}): answer not JSON ({e}): {}",
                        preview(&msg)
                    )
                });
                let all_errors = match &v {
                    Value::Array(a) => a.iter().all(|r| r.get("error").is_some()),
                    r if r["id"] == "alive" => r["result"] == *db,
                    r => r.get("error").is_some(),
                };
                assert!(
                    all_errors,
                    "{addr}: {what} ({who}) got a non-error answer: {v}"
                );
            }
        }
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
