//! STUN (issue 4) on real processes: stock clients (coturn's `turnutils_stunclient`,
//! Python's `aioice`) against our server, `cirrus stun` against coturn's
//! `turnserver`, per-peer client pairs between two nodes, peer-id signatures,
//! garbage on both transports, and idle connections trying to hold every TCP slot.
//!
//! coturn and aioice are not mocked: when they are missing the tests fail and say
//! that `scripts/test.sh` installs them. Nothing waits a fixed time: conditions are
//! polled until they hold or [`TIMEOUT`] passes. "No answer" is shown without a
//! timer: on UDP, a good request sent after the garbage from the same socket must get
//! the first datagram back (the server answers one datagram at a time, in order);
//! on TCP, the test half-closes and reads to the end of the stream.

mod support;

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use cirrus_proto::stun::{
    self, Attribute, Class, Message, attr, binding_request, parse_binding_response,
    peer_signing_message,
};
use ed25519_dalek::{Signer, SigningKey};
use libp2p_identity::PeerId;
use serde_json::{Value, json};
use support::*;

/// Bound on one blocking socket read; a read that hits it fails the test.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;
const INSTALL_HINT: &str = "scripts/test.sh installs it (apt-get install coturn; python3 -m pip install aioice); run that script or install it by hand";

// ---------------------------------------------------------------------------
// Tools from outside the project
// ---------------------------------------------------------------------------

/// The path of `program` on PATH, or a failure that says how to get it.
fn require_program(program: &str, package: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{program}` (Debian package {package}) is not installed: {INSTALL_HINT}")
        })
}

fn require_aioice() {
    let out = Command::new("python3")
        .args(["-c", "import aioice.stun"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): {INSTALL_HINT}"));
    assert!(
        out.status.success(),
        "the Python package aioice is not importable ({}): {INSTALL_HINT}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A loopback address of this turnserver's own (127.251.X.Y, from the process id
/// and a counter), on which STUN's port 3478 is free whatever else runs: no port
/// is found free and then taken before turnserver binds it.
fn own_ip() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("127.251.{}.{}", std::process::id() % 250, n % 250 + 1)
}

/// coturn's `turnserver`, STUN only, on a loopback port; killed on drop (also when
/// the test panics).
struct Turnserver {
    child: Child,
    ip: String,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Turnserver {
    fn start() -> Turnserver {
        let bin = require_program("turnserver", "coturn");
        let dir = tempfile::tempdir().unwrap();
        let (ip, port) = (own_ip(), 3478);
        let child = Command::new(bin)
            .arg("-n") // no config file: only these options
            .args(["--listening-ip", &ip])
            .args(["--listening-port", &port.to_string()])
            .args([
                "--no-tls",
                "--no-dtls",
                "--no-auth",
                "--stun-only",
                "--no-cli",
            ])
            .args(["--log-file", "stdout", "--simple-log"])
            .arg("--pidfile")
            .arg(dir.path().join("turnserver.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start turnserver ({e}): {INSTALL_HINT}"));
        Turnserver {
            child,
            ip,
            port,
            _dir: dir,
        }
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    fn assert_running(&mut self) -> Result<(), String> {
        match self.child.try_wait().unwrap() {
            None => Ok(()),
            Some(status) => panic!("turnserver on port {} exited: {status}", self.port),
        }
    }
}

impl Drop for Turnserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cirrus_stun(server: &str, tcp: bool) -> Output {
    let mut args = vec!["stun", server, "--timeout", "2"];
    if tcp {
        args.push("--tcp");
    }
    cirrus(&args)
}

// ---------------------------------------------------------------------------
// Talking to our server from the test
// ---------------------------------------------------------------------------

fn stun_port(node: &TestNode) -> u16 {
    let port = node.ok("getnodeinfo", json!({}))["ports"]["stun"]
        .as_u64()
        .expect("getnodeinfo.ports.stun");
    u16::try_from(port).unwrap()
}

fn stun_info(node: &TestNode) -> Value {
    node.ok("getnodeinfo", json!({}))["stun"].clone()
}

fn txid(n: u64) -> [u8; 12] {
    let mut t = [0u8; 12];
    t[..8].copy_from_slice(&n.to_be_bytes());
    t[8..].copy_from_slice(b"test");
    t
}

fn udp_socket() -> UdpSocket {
    let s = UdpSocket::bind((LOOPBACK, 0)).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// The next datagram from `server` (others are skipped); fails after [`IO_TIMEOUT`].
fn recv_from_server(sock: &UdpSocket, server: SocketAddr, what: &str) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == server => return buf[..n].to_vec(),
            Ok(_) => continue,
            Err(e) => panic!("no answer from the STUN server at {server} to {what}: {e}"),
        }
    }
}

/// Send one request over UDP; the very next datagram from the server must answer it.
fn udp_exchange(sock: &UdpSocket, server: SocketAddr, req: &[u8], what: &str) -> Message {
    sock.send_to(req, server).unwrap();
    let reply = recv_from_server(sock, server, what);
    let msg =
        Message::decode(&reply).unwrap_or_else(|e| panic!("answer to {what} does not decode: {e}"));
    let sent = Message::decode(req).unwrap();
    assert_eq!(
        msg.transaction_id, sent.transaction_id,
        "the first datagram after {what} answers another message: {msg:?} (an earlier message got an answer it should not have)"
    );
    msg
}

/// Write `bytes` on a new connection, half-close, and read until the server closes.
/// Returns what came back. A reset counts as closed (the server may close with our
/// bytes unread).
fn tcp_exchange(server: SocketAddr, bytes: &[u8], what: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(server)
        .unwrap_or_else(|e| panic!("cannot connect to {server} for {what}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    // The server may close before reading everything; a failed write is fine.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) => panic!(
                "the server at {server} neither answered nor closed the connection after {what}: {e}"
            ),
        }
    }
}

/// Split a TCP byte stream into STUN messages.
fn frames(mut bytes: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = stun::frame_len(bytes)
            .expect("a STUN stream")
            .expect("a whole header");
        assert!(bytes.len() >= len, "a truncated answer: {bytes:?}");
        out.push(Message::decode(&bytes[..len]).expect("the answer decodes"));
        bytes = &bytes[len..];
    }
    out
}

fn mapped_of(msg: &Message) -> SocketAddr {
    assert_eq!(msg.class, Class::Success, "not a success response: {msg:?}");
    let xor = msg.attributes.iter().find_map(|a| match a {
        Attribute::XorMappedAddress(s) => Some(*s),
        _ => None,
    });
    xor.unwrap_or_else(|| panic!("no XOR-MAPPED-ADDRESS in {msg:?}"))
}

fn error_code_of(msg: &Message) -> u16 {
    assert_eq!(msg.class, Class::Error, "not an error response: {msg:?}");
    match msg.get(attr::ERROR_CODE) {
        Some(Attribute::ErrorCode { code, .. }) => *code,
        _ => panic!("no ERROR-CODE in {msg:?}"),
    }
}

/// A libp2p ed25519 peer id for `key`: `00 24 08 01 12 20` + the public key.
fn peer_id_bytes(key: &SigningKey) -> Vec<u8> {
    let mut id = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    id.extend_from_slice(key.verifying_key().as_bytes());
    id
}

fn peer_id_string(key: &SigningKey) -> String {
    PeerId::from_bytes(&peer_id_bytes(key))
        .expect("a valid peer id")
        .to_string()
}

/// A Binding request carrying `key`'s peer id, signed by `signer` over `signed_txid`
/// (a valid proof only when `signer` is `key` and `signed_txid` is `txid`).
fn peer_request(
    key: &SigningKey,
    signer: &SigningKey,
    txid: [u8; 12],
    signed_txid: [u8; 12],
) -> Vec<u8> {
    let sig = signer.sign(&peer_signing_message(&signed_txid)).to_bytes();
    binding_request(txid, "test", Some((&peer_id_bytes(key), &sig)))
}

fn seen_entries(node: &TestNode, peer: &str) -> Vec<Value> {
    stun_info(node)["seen"]
        .as_array()
        .map(|l| l.iter().filter(|e| e["peerId"] == peer).cloned().collect())
        .unwrap_or_default()
}

/// Deterministic pseudo-random bytes (xorshift64), so every run sends the same garbage.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------
// a. Stock clients against our server
// ---------------------------------------------------------------------------

#[test]
fn coturn_stunclient_gets_its_udp_address_from_our_server() {
    let client = require_program("turnutils_stunclient", "coturn");
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let port = stun_port(&node);

    let out = Command::new(client)
        .args(["-p", &port.to_string(), "127.0.0.1"])
        .output()
        .expect("run turnutils_stunclient");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "turnutils_stunclient failed ({}): {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let addr = stdout
        .split("UDP reflexive addr: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| {
            panic!("no \"UDP reflexive addr\" in turnutils_stunclient's output: {stdout}")
        });
    let addr: SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("turnutils_stunclient printed {addr:?}: {e}"));
    assert_eq!(addr.ip(), LOOPBACK, "{stdout}");
    assert_ne!(addr.port(), 0, "{stdout}");
    assert_ne!(
        addr.port(),
        port,
        "the client's port, not the server's: {stdout}"
    );
}

/// aioice's own STUN codec: builds a Binding request with FINGERPRINT, sends it over
/// TCP or UDP, parses the answer (checking its FINGERPRINT) and prints what it saw.
const AIOICE_CLIENT: &str = r#"
import json, socket, sys
from aioice import stun

transport, port = sys.argv[1], int(sys.argv[2])
req = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
req.add_fingerprint()
if transport == "tcp":
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(bytes(req))
    data = b""
    while len(data) < 20 or len(data) < 20 + int.from_bytes(data[2:4], "big"):
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("the server closed the connection after %r" % data)
        data += chunk
    data = data[: 20 + int.from_bytes(data[2:4], "big")]
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.bind(("127.0.0.1", 0))
    s.sendto(bytes(req), ("127.0.0.1", port))
    data, _ = s.recvfrom(4096)
resp = stun.parse_message(data)
local = s.getsockname()
print(json.dumps({
    "local": "%s:%d" % local,
    "class": resp.message_class.name,
    "method": resp.message_method.name,
    "sameTransaction": resp.transaction_id == req.transaction_id,
    "xorMapped": "%s:%d" % resp.attributes["XOR-MAPPED-ADDRESS"],
    "mapped": "%s:%d" % resp.attributes["MAPPED-ADDRESS"],
    "software": resp.attributes.get("SOFTWARE"),
    "fingerprint": "FINGERPRINT" in resp.attributes,
}))
"#;

fn aioice_binding(transport: &str, port: u16) -> Value {
    require_aioice();
    let out = Command::new("python3")
        .args(["-c", AIOICE_CLIENT, transport, &port.to_string()])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "the aioice client over {transport} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the aioice client prints JSON")
}

#[test]
fn aioice_gets_its_address_from_our_server_over_tcp_and_udp() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let port = stun_port(&node);
    for transport in ["tcp", "udp"] {
        let r = aioice_binding(transport, port);
        assert_eq!(r["class"], "RESPONSE", "{transport}: {r}");
        assert_eq!(r["method"], "BINDING", "{transport}: {r}");
        assert_eq!(r["sameTransaction"], true, "{transport}: {r}");
        assert_eq!(r["fingerprint"], true, "{transport}: {r}");
        assert_eq!(
            r["xorMapped"], r["local"],
            "{transport}: XOR-MAPPED-ADDRESS must be the client socket's address: {r}"
        );
        assert_eq!(r["mapped"], r["local"], "{transport}: MAPPED-ADDRESS: {r}");
        assert!(
            r["software"]
                .as_str()
                .is_some_and(|s| s.starts_with("cirrus/")),
            "{transport}: SOFTWARE: {r}"
        );
    }
}

// ---------------------------------------------------------------------------
// b. `cirrus stun` against coturn
// ---------------------------------------------------------------------------

#[test]
fn cirrus_stun_gets_its_address_from_coturn_over_udp_and_tcp() {
    let mut turn = Turnserver::start();
    let server = turn.addr();
    for tcp in [false, true] {
        let name = if tcp { "TCP" } else { "UDP" };
        // Poll until turnserver is up; then the answer itself is checked.
        let out = wait_until(
            &format!("turnserver answers `cirrus stun` over {name}"),
            || {
                turn.assert_running()?;
                let out = cirrus_stun(&server, tcp);
                if out.status.success() {
                    Ok(out)
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).into_owned())
                }
            },
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let addr: SocketAddr = stdout.trim().parse().unwrap_or_else(|e| {
            panic!("`cirrus stun {server}` over {name} printed {stdout:?}: {e}")
        });
        assert_eq!(addr.ip(), LOOPBACK, "over {name}: {stdout}");
        assert_ne!(addr.port(), 0, "over {name}: {stdout}");
        assert_ne!(addr.port(), turn.port, "over {name}: {stdout}");
    }
}

// ---------------------------------------------------------------------------
// c. Client pairs between peers
// ---------------------------------------------------------------------------

/// The `udp` or `tcp` entry of a `stun` object whose `via` is `peer`.
fn mapping_via(stun: &Value, transport: &str, peer: &str) -> Option<Value> {
    stun[transport]
        .as_array()?
        .iter()
        .find(|e| e["via"] == peer)
        .cloned()
}

fn peer_entry(node: &TestNode, peer: &str) -> Option<Value> {
    node.ok("getpeerinfo", json!({}))
        .as_array()?
        .iter()
        .find(|p| p["peerId"] == peer)
        .cloned()
}

#[test]
fn a_peer_gets_a_client_pair_whose_mappings_come_and_go_with_it() {
    let mut net = TestNet::start(2, &["--stun-keepalive-secs", "1"]);
    let (a, b) = (net.node(0), net.node(1));
    let (a_ip, b_ip) = (a.ip().to_string(), b.ip().to_string());

    // A's clients ask B's server: a UDP and a TCP mapping via B, unmapped on loopback.
    let mine = wait_until("A lists UDP and TCP mappings via B", || {
        let s = stun_info(a);
        match (
            mapping_via(&s, "udp", &b.peer_id),
            mapping_via(&s, "tcp", &b.peer_id),
        ) {
            (Some(u), Some(t)) => Ok((s, u, t)),
            _ => Err(s.to_string()),
        }
    });
    let (s, udp, tcp) = mine;
    for (name, e) in [("udp", &udp), ("tcp", &tcp)] {
        assert_eq!(e["address"], a_ip.as_str(), "{name}: {s}");
        assert!(e["port"].as_u64().is_some_and(|p| p > 0), "{name}: {s}");
        assert_eq!(e["port"], e["localPort"], "{name}: no NAT on loopback: {s}");
        assert!(e["lastSeen"].as_u64().is_some(), "{name}: {s}");
    }
    assert_ne!(
        udp["localPort"],
        stun_port(a),
        "a client socket of its own: {s}"
    );
    assert_eq!(s["nat"], "none", "{s}");
    assert_eq!(s["address"], a_ip.as_str(), "{s}");
    // And B's mappings were found asking A where A listens, not at the address
    // B's connection came from (issue: node 1 of a testnet had none).
    wait_until("B lists UDP and TCP mappings via A", || {
        let s = stun_info(b);
        match (
            mapping_via(&s, "udp", &a.peer_id),
            mapping_via(&s, "tcp", &a.peer_id),
        ) {
            (Some(u), Some(t))
                if u["address"] == b_ip.as_str() && t["address"] == b_ip.as_str() =>
            {
                Ok(())
            }
            _ => Err(s.to_string()),
        }
    });

    // B's server saw A prove its id, from the very sockets A lists.
    let seen = wait_until("B's server lists A in stun.seen over UDP and TCP", || {
        let e = seen_entries(b, &a.peer_id);
        if e.len() == 2 {
            Ok(e)
        } else {
            Err(format!("{e:?}"))
        }
    });
    for (name, mine) in [("udp", &udp), ("tcp", &tcp)] {
        let e = seen
            .iter()
            .find(|e| e["transport"] == name)
            .unwrap_or_else(|| panic!("no {name} entry for A in B's seen: {seen:?}"));
        assert_eq!(
            e["observed"],
            format!("{a_ip}:{}", mine["localPort"]),
            "B saw A's {name} client socket: {seen:?}"
        );
    }

    // A announced its `stun` object: B's getpeerinfo shows it for A.
    let announced = wait_until("B's getpeerinfo entry for A has A's stun object", || {
        let p = peer_entry(b, &a.peer_id).ok_or("A is not among B's peers")?;
        let s = &p["stun"];
        if mapping_via(s, "udp", &b.peer_id).is_some()
            && mapping_via(s, "tcp", &b.peer_id).is_some()
        {
            Ok(p)
        } else {
            Err(p.to_string())
        }
    });
    assert_eq!(announced["stun"]["nat"], "none", "{announced}");
    assert!(
        announced["stun"].get("seen").is_none(),
        "`seen` is not announced: {announced}"
    );

    // B leaves: A's client pair for it stops, and its mappings go.
    let b_id = b.peer_id.clone();
    net.stop(1);
    let a = net.node(0);
    wait_until("A's stun.udp and stun.tcp no longer list B", || {
        let s = stun_info(a);
        if mapping_via(&s, "udp", &b_id).is_none() && mapping_via(&s, "tcp", &b_id).is_none() {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    // A itself is fine.
    assert!(a.ok("getnodeinfo", json!({}))["peerId"] == a.peer_id);
}

// ---------------------------------------------------------------------------
// d. Peer-id signatures
// ---------------------------------------------------------------------------

/// Requests that carry `key`'s peer id without a valid proof, with transaction ids
/// `txid(first)`, `txid(first + 1)`, ...
fn forgeries(key: &SigningKey, other: &SigningKey, first: u64) -> Vec<(&'static str, Vec<u8>)> {
    let t = |i: u64| txid(first + i);
    let id = peer_id_bytes(key);
    let junk = [0xab; 64];
    vec![
        (
            "a signature over another transaction",
            peer_request(key, key, t(0), txid(9999)),
        ),
        (
            "a signature by another key",
            peer_request(key, other, t(1), t(1)),
        ),
        (
            "64 bytes that are no signature",
            binding_request(t(2), "t", Some((&id, &junk))),
        ),
        (
            "a truncated signature",
            binding_request(t(3), "t", Some((&id, &junk[..10]))),
        ),
        (
            "a peer id but no signature",
            Message::new(Class::Request, stun::BINDING, t(4))
                .with(Attribute::PeerId(id.clone()))
                .encode(true),
        ),
        ("a valid signature with a peer id one bit off", {
            let sig = key.sign(&peer_signing_message(&t(5))).to_bytes();
            let mut bad = id.clone();
            bad[10] ^= 1;
            binding_request(t(5), "t", Some((&bad, &sig)))
        }),
    ]
}

#[test]
fn a_forged_peer_signature_is_answered_but_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let server = SocketAddr::from((LOOPBACK, stun_port(&node)));
    let key = SigningKey::from_bytes(&[41; 32]);
    let other = SigningKey::from_bytes(&[42; 32]);
    let victim = SigningKey::from_bytes(&[43; 32]);
    let id = peer_id_string(&key);
    let victim_id = peer_id_string(&victim);

    let sock = udp_socket();
    let me = sock.local_addr().unwrap();
    for (i, (what, req)) in forgeries(&key, &other, 1).into_iter().enumerate() {
        // The request is still answered with the mapping...
        let reply = udp_exchange(&sock, server, &req, what);
        assert_eq!(mapped_of(&reply), me, "{what}");
        // ...and the server records before it answers, so the answer means the
        // decision is made: nothing stored.
        assert!(
            seen_entries(&node, &id).is_empty(),
            "{what} over UDP was remembered: {}",
            stun_info(&node)
        );
        let t = txid(100 + i as u64);
        let req = &forgeries(&key, &other, 100)[i].1;
        let got = frames(&tcp_exchange(server, req, what));
        assert_eq!(got.len(), 1, "{what} over TCP: one answer: {got:?}");
        assert_eq!(got[0].transaction_id, t, "{what} over TCP");
        assert_eq!(got[0].class, Class::Success, "{what} over TCP");
        assert!(
            seen_entries(&node, &id).is_empty(),
            "{what} over TCP was remembered: {}",
            stun_info(&node)
        );
    }

    // The same peer id with a correct signature is remembered, with our address.
    let reply = udp_exchange(
        &sock,
        server,
        &peer_request(&key, &key, txid(7), txid(7)),
        "a valid proof",
    );
    assert_eq!(mapped_of(&reply), me);
    let seen = seen_entries(&node, &id);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["transport"], "udp", "{seen:?}");
    assert_eq!(seen[0]["observed"], me.to_string(), "{seen:?}");

    // Over TCP too.
    let mut s = TcpStream::connect(server).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let tcp_me = s.local_addr().unwrap();
    s.write_all(&peer_request(&key, &key, txid(8), txid(8)))
        .unwrap();
    let mut buf = vec![0u8; 2048];
    let mut got = Vec::new();
    while stun::frame_len(&got)
        .unwrap()
        .is_none_or(|len| got.len() < len)
    {
        let n = s.read(&mut buf).expect("an answer over TCP");
        assert!(n > 0, "closed without an answer");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(parse_binding_response(&got, &txid(8)).unwrap(), tcp_me);
    let seen = seen_entries(&node, &id);
    let tcp_seen = seen.iter().find(|e| e["transport"] == "tcp");
    assert_eq!(
        tcp_seen.map(|e| e["observed"].clone()),
        Some(json!(tcp_me.to_string())),
        "{seen:?}"
    );

    // A forgery from another socket cannot move the remembered address.
    let sock2 = udp_socket();
    let reply = udp_exchange(
        &sock2,
        server,
        &peer_request(&key, &other, txid(9), txid(9)),
        "a forgery from elsewhere",
    );
    assert_eq!(mapped_of(&reply), sock2.local_addr().unwrap());
    let seen = seen_entries(&node, &id);
    let udp_seen = seen.iter().find(|e| e["transport"] == "udp").unwrap();
    assert_eq!(
        udp_seen["observed"],
        me.to_string(),
        "a forgery moved it: {seen:?}"
    );

    // A peer id that never proved itself never shows up.
    let reply = udp_exchange(
        &sock,
        server,
        &peer_request(&victim, &key, txid(10), txid(10)),
        "a forgery for another id",
    );
    assert_eq!(mapped_of(&reply), me);
    assert!(
        seen_entries(&node, &victim_id).is_empty(),
        "{}",
        stun_info(&node)
    );
}

/// Anyone can make keys and prove them: a flood of new proven ids must not grow
/// `seen` without bound. The newest stay, the oldest make room.
#[test]
fn a_flood_of_proven_peer_ids_keeps_seen_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let server = SocketAddr::from((LOOPBACK, stun_port(&node)));
    let sock = udp_socket();
    let flood = cirrus_node::stun::MAX_SEEN + 50;
    let key = |i: usize| {
        let mut seed = [0x5e; 32];
        seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
        SigningKey::from_bytes(&seed)
    };
    for i in 0..flood {
        let k = key(i);
        let t = txid(i as u64);
        let reply = udp_exchange(
            &sock,
            server,
            &peer_request(&k, &k, t, t),
            "a proven request",
        );
        assert_eq!(reply.class, Class::Success);
    }
    let seen = stun_info(&node)["seen"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(seen.len(), cirrus_node::stun::MAX_SEEN, "seen is bounded");
    let listed = |i: usize| {
        let id = peer_id_string(&key(i));
        seen.iter().any(|e| e["peerId"] == id)
    };
    assert!(listed(flood - 1), "the newest proven id is listed");
    assert!(!listed(0), "the oldest made room");
    // A known peer proving itself again is refreshed, not evicted.
    let k = key(50); // the oldest still listed
    let t = txid(1 << 40);
    udp_exchange(
        &sock,
        server,
        &peer_request(&k, &k, t, t),
        "a known peer again",
    );
    let k2 = key(flood);
    let t2 = txid((1 << 40) + 1);
    udp_exchange(
        &sock,
        server,
        &peer_request(&k2, &k2, t2, t2),
        "one more new id",
    );
    let seen = stun_info(&node)["seen"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(seen.len(), cirrus_node::stun::MAX_SEEN);
    let id50 = peer_id_string(&key(50));
    assert!(
        seen.iter().any(|e| e["peerId"] == id50),
        "a refreshed id stays"
    );
    let id51 = peer_id_string(&key(51));
    assert!(
        !seen.iter().any(|e| e["peerId"] == id51),
        "the next oldest made room"
    );
}

// ---------------------------------------------------------------------------
// e. Garbage
// ---------------------------------------------------------------------------

/// Messages that must get no answer at all, on either transport.
fn garbage() -> Vec<(String, Vec<u8>)> {
    let good = binding_request(txid(500), "test", None);
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, len) in [1usize, 7, 19, 20, 21, 100, 576, 2048, 2049, 4000]
        .into_iter()
        .enumerate()
    {
        cases.push((format!("{len} random bytes"), noise(i as u64 + 1, len)));
    }
    cases.push((
        "HTTP text".into(),
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec(),
    ));
    cases.push((
        "a JSON-RPC request".into(),
        br#"{"jsonrpc":"2.0","id":1,"method":"getnodeinfo","params":{}}"#.to_vec(),
    ));
    for cut in [1, 4, 8, good.len() - 20, good.len() - 1] {
        cases.push((
            format!("a request truncated to {} bytes", good.len() - cut),
            good[..good.len() - cut].to_vec(),
        ));
    }
    let mut huge = good.clone();
    huge[2..4].copy_from_slice(&0xfffcu16.to_be_bytes());
    cases.push(("a header claiming 65532 bytes".into(), huge[..20].to_vec()));
    cases.push((
        "a header claiming 65532 bytes, then the rest".into(),
        huge.clone(),
    ));
    let mut odd = good.clone();
    odd[3] = odd[3].wrapping_add(2);
    cases.push(("a length that is not a multiple of 4".into(), odd));
    let mut bad_fp = good.clone();
    *bad_fp.last_mut().unwrap() ^= 1;
    cases.push(("a request with a bad FINGERPRINT".into(), bad_fp));
    let mut bad_cookie = good.clone();
    bad_cookie[4] ^= 0xff;
    cases.push(("a request with a bad magic cookie".into(), bad_cookie));
    let mut past_end = Message::new(Class::Request, stun::BINDING, txid(501))
        .with(Attribute::Software("x".repeat(8)))
        .encode(false);
    past_end[22..24].copy_from_slice(&200u16.to_be_bytes()); // SOFTWARE length past the end
    cases.push(("an attribute running past the end".into(), past_end));
    let mut bad_addr = Message::new(Class::Request, stun::BINDING, txid(502))
        .with(Attribute::XorMappedAddress(SocketAddr::from((LOOPBACK, 1))))
        .encode(true);
    bad_addr[25] = 9; // address family 9
    cases.push((
        "a request with a malformed address attribute".into(),
        bad_addr,
    ));
    cases.push((
        "a Binding indication".into(),
        stun::binding_indication(txid(503)),
    ));
    cases.push((
        "a Binding success response".into(),
        Message::new(Class::Success, stun::BINDING, txid(504))
            .with(Attribute::XorMappedAddress(SocketAddr::from((LOOPBACK, 9))))
            .encode(true),
    ));
    cases.push((
        "a message larger than 2048 bytes".into(),
        Message::new(Class::Request, stun::BINDING, txid(505))
            .with(Attribute::Other {
                typ: 0x8fff,
                value: vec![0; 2048],
            })
            .encode(true),
    ));
    // Methods other than Binding are not answered: a server that answered them
    // would reflect whatever a spoofed source sends.
    cases.push((
        "an Allocate request".into(),
        Message::new(Class::Request, 0x003, txid(601)).encode(true),
    ));
    cases
}

/// Requests that get an error response: (what, request, expected code).
fn error_requests() -> Vec<(&'static str, Vec<u8>, u16, [u8; 12])> {
    let unknown = Message::new(Class::Request, stun::BINDING, txid(600))
        .with(Attribute::Other {
            typ: 0x0006, // USERNAME: comprehension-required, not understood
            value: b"user".to_vec(),
        })
        .encode(true);
    vec![(
        "an unknown comprehension-required attribute",
        unknown,
        420,
        txid(600),
    )]
}

fn check_error(what: &str, msg: &Message, code: u16, t: [u8; 12]) {
    assert_eq!(msg.transaction_id, t, "{what}");
    assert_eq!(error_code_of(msg), code, "{what}: {msg:?}");
    if code == 420 {
        assert_eq!(
            msg.get(attr::UNKNOWN_ATTRIBUTES),
            Some(&Attribute::UnknownAttributes(vec![0x0006])),
            "{what}: {msg:?}"
        );
    }
}

#[test]
fn garbage_gets_no_answer_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = TestNode::start(dir.path());
    let server = SocketAddr::from((LOOPBACK, stun_port(&node)));
    let cases = garbage();

    // UDP: all the garbage, then a good request whose answer must come first.
    let sock = udp_socket();
    let me = sock.local_addr().unwrap();
    sock.send_to(&[], server).unwrap();
    for (_, bytes) in &cases {
        sock.send_to(bytes, server).unwrap();
    }
    let reply = udp_exchange(
        &sock,
        server,
        &binding_request(txid(1), "t", None),
        "all the garbage over UDP",
    );
    assert_eq!(mapped_of(&reply), me);
    // One case at a time, for a failure that names it.
    for (i, (what, bytes)) in cases.iter().enumerate() {
        sock.send_to(bytes, server).unwrap();
        let req = binding_request(txid(1000 + i as u64), "t", None);
        let reply = udp_exchange(&sock, server, &req, &format!("{what} (UDP)"));
        assert_eq!(mapped_of(&reply), me, "{what}");
    }
    for (what, req, code, t) in error_requests() {
        check_error(what, &udp_exchange(&sock, server, &req, what), code, t);
    }

    // TCP: each case on its own connection gets nothing back and is closed.
    for (what, bytes) in &cases {
        let got = tcp_exchange(server, bytes, what);
        assert!(got.is_empty(), "{what} over TCP got an answer: {got:?}");
    }
    // Garbage after a good request on one connection: the good one is answered, then
    // the connection closes.
    let good = binding_request(txid(2), "t", None);
    for (what, bytes) in cases.iter().filter(|(_, b)| b.len() <= 1024) {
        let got = frames(&tcp_exchange(server, &[&good[..], bytes].concat(), what));
        assert!(
            got.len() == 1 && got[0].transaction_id == txid(2) && got[0].class == Class::Success,
            "a good request then {what} over TCP: {got:?}"
        );
    }
    for (what, req, code, t) in error_requests() {
        let got = frames(&tcp_exchange(server, &req, what));
        assert_eq!(got.len(), 1, "{what} over TCP: {got:?}");
        check_error(what, &got[0], code, t);
    }

    // Still serving: UDP, TCP (three pipelined requests, three answers in order),
    // and the HTTP API.
    let reply = udp_exchange(
        &sock,
        server,
        &binding_request(txid(3), "t", None),
        "a good request after it all",
    );
    assert_eq!(mapped_of(&reply), me);
    let pipelined: Vec<u8> = (10..13)
        .flat_map(|n| binding_request(txid(n), "t", None))
        .collect();
    let mut s = TcpStream::connect(server).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let tcp_me = s.local_addr().unwrap();
    s.write_all(&pipelined).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("three answers, then close");
    let got = frames(&all);
    assert_eq!(got.len(), 3, "{got:?}");
    for (m, n) in got.iter().zip(10..13) {
        assert_eq!(m.transaction_id, txid(n));
        assert_eq!(mapped_of(m), tcp_me);
    }
    assert!(node.child.try_wait().unwrap().is_none(), "the node died");
    let info = node.ok("getnodeinfo", json!({}));
    assert_eq!(info["ports"]["stun"], server.port(), "{info}");
}

/// Largest legal message (2048 bytes) is answered; one past it is not.
#[test]
fn a_request_of_exactly_the_size_limit_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let server = SocketAddr::from((LOOPBACK, stun_port(&node)));
    // header 20 + attribute 4 + value + FINGERPRINT 8 = 2048.
    let req = Message::new(Class::Request, stun::BINDING, txid(1))
        .with(Attribute::Other {
            typ: 0x8fff,
            value: vec![7; 2048 - 20 - 4 - 8],
        })
        .encode(true);
    assert_eq!(req.len(), stun::MAX_MESSAGE);
    let sock = udp_socket();
    let reply = udp_exchange(&sock, server, &req, "a 2048-byte request");
    assert_eq!(mapped_of(&reply), sock.local_addr().unwrap());
    let got = frames(&tcp_exchange(server, &req, "a 2048-byte request"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].class, Class::Success);
}

// ---------------------------------------------------------------------------
// f. TCP slots
// ---------------------------------------------------------------------------

/// TCP connections the server serves at once, and per address (`MAX_TCP` and
/// `MAX_TCP_PER_IP` in node/src/stun/server.rs).
const MAX_TCP: usize = 256;
const MAX_TCP_PER_IP: usize = 32;

/// A TCP connection to `server` from the loopback address `ip`, so one test can
/// stand for many clients.
fn tcp_from(ip: Ipv4Addr, server: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((ip, 0)).into())
        .unwrap_or_else(|e| panic!("cannot bind to {ip}: {e}"));
    s.connect(&server.into())
        .unwrap_or_else(|e| panic!("cannot connect from {ip} to {server}: {e}"));
    s.into()
}

/// Waits (up to [`IO_TIMEOUT`]) for the server to close `s`.
fn assert_closed(s: &mut TcpStream, what: &str) {
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("{what} was not closed: {other:?}"),
    }
}

/// Lift this process's soft open-file limit toward the hard one: the slot test holds
/// a few hundred sockets while other tests run, and the node it starts inherits the
/// limit for its side of them. A distribution default of 1024 already fits; this is
/// for shells that set less.
fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Send one Binding request on an open connection and read its answer, leaving the
/// connection open.
fn tcp_ask(s: &mut TcpStream, n: u64, what: &str) -> Message {
    s.write_all(&binding_request(txid(n), "t", None))
        .unwrap_or_else(|e| panic!("cannot send a request on {what}: {e}"));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        if let Ok(Some(len)) = stun::frame_len(&buf)
            && buf.len() >= len
        {
            let msg = Message::decode(&buf[..len]).expect("the answer decodes");
            assert_eq!(msg.transaction_id, txid(n), "{what}: {msg:?}");
            return msg;
        }
        match s.read(&mut chunk) {
            Ok(0) => panic!("the server closed {what} without an answer"),
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) => panic!("no answer on {what}: {e}"),
        }
    }
}

/// Connections that never send a byte fill every TCP slot; newcomers are still
/// answered, each taking the slot of the connection quiet longest, and a client that
/// keeps asking keeps its connection. Without eviction the newcomers would wait in
/// the backlog until the idle ones time out, far past [`IO_TIMEOUT`].
#[test]
fn idle_connections_cannot_hold_the_tcp_slots() {
    raise_fd_limit(4096);
    let dir = tempfile::tempdir().unwrap();
    let mut node = TestNode::start(dir.path());
    let server = SocketAddr::from((LOOPBACK, stun_port(&node)));

    // Spread over eight addresses, round robin, so none reaches its own cap.
    let sources: Vec<Ipv4Addr> = (1..=8).map(|i| Ipv4Addr::new(127, 0, 1, i)).collect();
    let mut idle: Vec<TcpStream> = (0..MAX_TCP - 1)
        .map(|i| tcp_from(sources[i % sources.len()], server))
        .collect();
    // The server accepts in order, so once the last slot's client is answered every
    // idle connection has been accepted before it, and all slots are taken.
    let mut honest = tcp_from(Ipv4Addr::new(127, 0, 2, 1), server);
    honest.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let honest_me = honest.local_addr().unwrap();
    let got = tcp_ask(&mut honest, 1, "the connection in the last slot");
    assert_eq!(mapped_of(&got), honest_me);

    // Each newcomer stays open, so each one needs a slot of its own.
    const NEWCOMERS: usize = 8;
    let mut newcomers = Vec::new();
    for i in 0..NEWCOMERS {
        let mut s = tcp_from(Ipv4Addr::new(127, 0, 3, 1), server);
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let me = s.local_addr().unwrap();
        let what = format!("newcomer {i} with every slot taken");
        assert_eq!(mapped_of(&tcp_ask(&mut s, 100 + i as u64, &what)), me);
        newcomers.push(s);
    }

    // The idle addresses hold the most, so they made room, each its oldest in
    // turn: the oldest idle connections, in the order they were accepted.
    for (i, s) in idle.iter_mut().take(NEWCOMERS).enumerate() {
        assert_closed(s, &format!("idle connection {i}, to make room"));
    }
    // The client that asked last is still served on its connection, and so is the
    // rest of the node.
    let got = tcp_ask(&mut honest, 2, "the connection that kept asking");
    assert_eq!(mapped_of(&got), honest_me);
    for (i, s) in newcomers.iter_mut().enumerate() {
        let what = format!("newcomer {i}, asking again");
        assert_eq!(
            mapped_of(&tcp_ask(s, 200 + i as u64, &what)),
            s.local_addr().unwrap()
        );
    }
    let sock = udp_socket();
    let reply = udp_exchange(
        &sock,
        server,
        &binding_request(txid(3), "t", None),
        "a UDP request with every TCP slot taken",
    );
    assert_eq!(mapped_of(&reply), sock.local_addr().unwrap());
    assert!(node.child.try_wait().unwrap().is_none(), "the node died");
    let info = node.ok("getnodeinfo", json!({}));
    assert_eq!(info["ports"]["stun"], server.port(), "{info}");
}

/// One address holds at most [`MAX_TCP_PER_IP`] connections even while slots are
/// free: its next connection takes the slot of its own quietest one, and nobody
/// else's. Without the cap all of them would stay open.
#[test]
fn one_address_cannot_take_more_than_its_share_of_tcp_slots() {
    raise_fd_limit(1024);
    let dir = tempfile::tempdir().unwrap();
    let mut node = TestNode::start(dir.path());
    let server = SocketAddr::from((LOOPBACK, stun_port(&node)));
    let greedy = Ipv4Addr::new(127, 0, 4, 1);

    let mut other = tcp_from(Ipv4Addr::new(127, 0, 5, 1), server);
    other.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let silent: Vec<TcpStream> = (0..MAX_TCP_PER_IP - 1)
        .map(|_| tcp_from(greedy, server))
        .collect();
    let mut asking = tcp_from(greedy, server);
    asking.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    // Answered: every connection before it has been accepted; the address is at its cap.
    tcp_ask(
        &mut asking,
        1,
        "the connection that fills the address's share",
    );

    let mut newest = tcp_from(greedy, server);
    newest.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let me = newest.local_addr().unwrap();
    assert_eq!(
        mapped_of(&tcp_ask(&mut newest, 2, "one more from the same address")),
        me
    );
    let mut silent = silent.into_iter();
    assert_closed(
        &mut silent.next().unwrap(),
        "the address's quietest connection",
    );
    // The rest of its connections, and other addresses', are still served.
    for (i, mut s) in silent.enumerate() {
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let me = s.local_addr().unwrap();
        let what = format!("silent connection {} of the address", i + 1);
        assert_eq!(mapped_of(&tcp_ask(&mut s, 10 + i as u64, &what)), me);
    }
    assert_eq!(
        mapped_of(&tcp_ask(&mut other, 3, "another address's connection")),
        other.local_addr().unwrap()
    );
    assert!(node.child.try_wait().unwrap().is_none(), "the node died");
}

/// Every node of a five-node network on five loopback addresses finds a UDP and a
/// TCP mapping through each of its four peers, the bootstrap node too (its peers
/// connected to it, from addresses it once asked STUN at, where nothing listened).
#[test]
fn every_node_of_five_has_a_mapping_via_each_peer() {
    let net = TestNet::start(5, &["--stun-keepalive-secs", "1"]);
    net.wait_mesh();
    for node in net.nodes() {
        let others: HashSet<String> = net
            .nodes()
            .iter()
            .filter(|n| n.peer_id != node.peer_id)
            .map(|n| n.peer_id.clone())
            .collect();
        wait_until(
            &format!("{} has 4 UDP and 4 TCP mappings", node.peer_id),
            || {
                let s = stun_info(node);
                let via = |t: &str| -> HashSet<String> {
                    s[t].as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|m| m["via"].as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                if via("udp") == others && via("tcp") == others {
                    Ok(())
                } else {
                    Err(s.to_string())
                }
            },
        );
    }
}
