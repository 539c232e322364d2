//! Talking to a node's client API as a client would, shared by the transport tests:
//! a blocking WebSocket client (tungstenite); raw UDP sockets, each from a source
//! address of its own, that do the cookie round trip and put fragments together
//! (docs/udp.md); the node's own UDP counters, to assert bounds on what it sent
//! rather than on what a socket happened to receive; and a pair of nodes, since
//! only a node with a peer has per-peer STUN client ports, which serve its API too.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use cirrus_proto::record::Record;
use cirrus_proto::stun;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

use super::{TestNet, TestNode, author, doc, metric_in, put_all_applied, wait_until};

/// Bound on one blocking read; a read that hits it fails the test (or, where noted,
/// ends a collection window).
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// From docs/udp.md.
pub const MAX_DATAGRAM_OUT: usize = 1200;
pub const FRAGMENT_TAG: u8 = 0xCF;
pub const COOKIE_REQUIRED: i64 = -32010;

pub fn preview(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
    if bytes.len() > 200 {
        format!("{s}… ({} bytes)", bytes.len())
    } else {
        s
    }
}

// ---------------------------------------------------------------------------
// Two nodes, so that A has per-peer STUN client ports (which serve A's API)
// ---------------------------------------------------------------------------

pub struct Pair {
    net: TestNet,
    /// A's STUN client UDP socket toward B: the UDP API.
    pub dyn_udp: SocketAddr,
    /// A's STUN client TCP port toward B: WebSocket, `ws://IP:PORT`.
    pub dyn_ws: String,
}

impl Pair {
    pub fn a(&self) -> &TestNode {
        self.net.node(0)
    }
    pub fn b(&self) -> &TestNode {
        self.net.node(1)
    }
}

/// Start A (with `extra` flags) and B bootstrapping from A, both with 1 s STUN
/// keepalives, and wait until A's `getnodeinfo.stun` lists client ports via B.
pub fn pair(extra: &[&str]) -> Pair {
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
pub fn docs(author_no: u8, prefix: &str, n: usize) -> Vec<Record> {
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
pub fn put_all(node: &TestNode, records: &[Record], batch: usize) {
    records
        .chunks(batch)
        .for_each(|chunk| put_all_applied(node, chunk));
}

// ---------------------------------------------------------------------------
// A blocking WebSocket client (tungstenite) and raw UDP
// ---------------------------------------------------------------------------

pub type WsStream = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

pub fn ws_connect(url: &str) -> WsStream {
    let (mut ws, _) =
        tungstenite::connect(url).unwrap_or_else(|e| panic!("WebSocket connect {url}: {e}"));
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    }
    ws
}

/// The `id` a request asks to be answered with: `Some` for a single request with an
/// id; `None` for a batch or bytes that are not a request.
pub fn request_id(req: &[u8]) -> Option<Value> {
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
pub fn ws_exchange(ws: &mut WsStream, req: &[u8]) -> Value {
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
pub struct RawUdp {
    sock: UdpSocket,
    to: SocketAddr,
}

/// Source addresses handed out to fresh sockets in this process. Each test binary
/// counts from 0, which is enough: a node only ever hears from the binary that
/// started it, and every socket binds port 0, so binaries cannot collide.
static SOURCES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl RawUdp {
    /// A socket on an address of its own (127.250.X.Y), which no earlier socket of
    /// this test had: a source the node has never seen, even once ports are reused.
    pub fn new(to: SocketAddr) -> RawUdp {
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

    pub fn local(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    pub fn send(&self, d: &[u8]) {
        self.sock.send_to(d, self.to).unwrap();
    }

    /// The next datagram from the node before `deadline`, if any.
    pub fn recv_until(&self, deadline: Instant) -> Option<Vec<u8>> {
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
    pub fn drain_now(&self) -> Vec<Vec<u8>> {
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
    pub fn exchange(&self, req: &[u8]) -> (Value, Vec<Vec<u8>>) {
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
    pub fn validated(to: SocketAddr) -> RawUdp {
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
pub struct Udp {
    handled: f64,
    pub unvalidated_bytes: f64,
    pub silent: f64,
    pub cookie: f64,
}

impl Udp {
    pub fn of(node: &TestNode) -> Udp {
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
    pub fn settle(self, node: &TestNode, n: usize, what: &str) -> Udp {
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
pub struct Fragments(HashMap<u32, (u16, BTreeMap<u16, Vec<u8>>)>);

impl Fragments {
    /// Feed one datagram; returns the JSON text and its datagrams once complete.
    pub fn push(&mut self, d: Vec<u8>) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
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

pub fn rpc(id: impl Into<Value>, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id.into(), "method": method, "params": params})
}

/// `req` encoded, then padded with JSON whitespace to at least `size` bytes.
pub fn padded(req: &Value, size: usize) -> Vec<u8> {
    let mut b = serde_json::to_vec(req).unwrap();
    if b.len() < size {
        b.resize(size, b' ');
    }
    b
}

pub fn with_cookie(req: &Value, cookie: &str) -> Value {
    let mut r = req.clone();
    r["cookie"] = json!(cookie);
    r
}

/// The cookie of a -32010 answer.
pub fn cookie_of(v: &Value) -> Option<String> {
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
