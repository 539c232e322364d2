//! Garbage on every transport of the client API, on real processes (issue 5): the
//! WebSocket ports (fixed and per-peer STUN client), the HTTP port and both UDP
//! sockets get bytes they do not speak, broken frames and half-open handshakes held
//! throughout. The node answers with errors or closes, never more than three times
//! what a fresh source sent, and keeps serving everyone.
//!
//! Nothing is mocked and nothing is timed: waits are bounded polling loops that fail
//! with what they were waiting for.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use cirrus_proto::stun;
use serde_json::{Value, json};
use support::transport::*;
use support::*;

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
