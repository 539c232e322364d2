//! Hole punching through a rendezvous node (docs/nat.md) on plain loopback, so a
//! machine without root tests it too; `testnet/natlab.sh` covers the NAT types.
//!
//! Loopback has no NAT: the client's STUN mapping is its own address, so it sends no
//! TTL-limited opening, and the direct path must work whenever the request fits it.
//! The relay fallback is shown with a request too big for one UDP datagram, which
//! the direct UDP path cannot carry and the swarm can. Nothing waits a fixed time:
//! conditions are polled until they hold or `support::TIMEOUT` passes.

mod support;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::Output;
use std::time::Duration;

use cirrus_node::rendezvous::{PeerLink, Via, call_peer};
use cirrus_proto::api::Transport;
use cirrus_proto::record::Kind;
use cirrus_proto::stun;
use libp2p::identity::Keypair;
use serde_json::{Value, json};
use support::*;

/// Bound on one blocking socket read; a read that hits it fails the test.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A rendezvous node and a target bootstrapped to it, once the rendezvous node
/// lists the target's STUN-found UDP and TCP endpoints (what a client punches to).
struct Pair {
    net: TestNet,
    /// B's endpoints as B itself reports them (`getnodeinfo.stun`): (udp, tcp).
    endpoints: (Vec<SocketAddr>, Vec<SocketAddr>),
}

impl Pair {
    fn a(&self) -> &TestNode {
        self.net.node(0)
    }
    fn b(&self) -> &TestNode {
        self.net.node(1)
    }
}

/// `address:port` of each entry of a `stun` object's list, read by hand from the
/// JSON (not with the client's own parser, which is what is being tested).
fn endpoints_in(stun: &Value, list: &str) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = stun[list]
        .as_array()
        .unwrap_or_else(|| panic!("stun.{list} is not a list: {stun}"))
        .iter()
        .map(|m| {
            let addr = m["address"].as_str().expect("an address");
            let port = m["port"].as_u64().expect("a port");
            format!("{addr}:{port}").parse().expect("ip:port")
        })
        .collect();
    out.sort();
    out
}

fn pair() -> Pair {
    // Keepalives every second, so B's mappings are found and announced soon.
    let net = TestNet::start(2, &["--stun-keepalive-secs", "1"]);
    let (a, b) = (net.node(0), net.node(1));
    let endpoints = wait_until(
        "A lists B with the stun.udp and stun.tcp endpoints B reports",
        || {
            let own = b.ok("getnodeinfo", json!({}))["stun"].clone();
            let mine = (endpoints_in(&own, "udp"), endpoints_in(&own, "tcp"));
            let peers = a.peers();
            let entry = peers
                .iter()
                .find(|p| p["peerId"] == b.peer_id)
                .ok_or_else(|| Value::Array(peers.clone()).to_string())?;
            if entry["stun"].is_null() {
                return Err(entry.to_string());
            }
            let listed = (
                endpoints_in(&entry["stun"], "udp"),
                endpoints_in(&entry["stun"], "tcp"),
            );
            if mine.0.is_empty() || mine.1.is_empty() || listed != mine {
                Err(format!("B reports {mine:?}, A lists {entry}"))
            } else {
                Ok(mine)
            }
        },
    );
    Pair { net, endpoints }
}

fn call_via(p: &Pair, method: &str, params: &str, transport: &str) -> Output {
    cirrus(&[
        "call",
        method,
        params,
        "--peer",
        &p.b().peer_id,
        "--rendezvous",
        &p.a().url,
        "--transport",
        transport,
    ])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The endpoint in `path: direct (T to IP:PORT) after N ms` on stderr.
fn direct_endpoint(stderr: &str, transport: &str) -> SocketAddr {
    let prefix = format!("path: direct ({transport} to ");
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line on stderr: {stderr}"));
    let at = line.split(')').next().unwrap_or_default();
    at.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

fn unknown_peer() -> String {
    Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_string()
}

#[test]
fn the_cli_reaches_the_target_directly_over_udp_and_tcp() {
    let p = pair();
    for (transport, listed) in [("udp", &p.endpoints.0), ("tcp", &p.endpoints.1)] {
        let out = call_via(&p, "getnodeinfo", "{}", transport);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{transport}: {stderr}");
        let info: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{transport}: stdout {stdout:?}: {e}"));
        assert_eq!(info["peerId"], p.b().peer_id, "{transport}: {stdout}");
        let at = direct_endpoint(&stderr, transport);
        assert!(
            listed.contains(&at),
            "{transport}: answered from {at}, not one of B's endpoints {listed:?}"
        );
    }
}

#[test]
fn call_peer_from_rust_reaches_the_target_directly_over_udp() {
    let p = pair();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let request = json!({"jsonrpc": "2.0", "id": 7, "method": "getnodeinfo"});
    let reached = rt
        .block_on(call_peer(
            &p.a().url,
            &p.b().peer_id,
            Transport::Udp,
            request,
            Duration::from_secs(10),
        ))
        .expect("call_peer");
    // The first answer may come through the relay (it is raced against the
    // punch); the direct path must open all the same.
    match reached.direct {
        Ok((at, _)) => assert!(
            p.endpoints.0.contains(&at),
            "direct to {at}, not one of B's endpoints {:?}",
            p.endpoints.0
        ),
        Err(why) => panic!("no direct path on loopback, where it must open: {why}"),
    }
    if let Via::Direct(at) = reached.via {
        assert!(p.endpoints.0.contains(&at), "{at}");
    }
    let r = reached.response;
    assert_eq!(r["id"], 7, "{r}");
    assert_eq!(r["result"]["peerId"], p.b().peer_id, "{r}");

    // Both sides report the punch: the rendezvous node cannot see how it ended, the
    // target saw the client's request arrive from the punched endpoint's address.
    let a_events = p.a().ok("getreachability", json!({}))["events"].clone();
    assert!(
        has_event(
            &a_events,
            "punch",
            "rendezvous",
            &p.b().peer_id,
            Some("udp")
        ),
        "{a_events}"
    );
    let b_events = p.b().ok("getreachability", json!({}))["events"].clone();
    let punched = b_events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "punch" && e["role"] == "target")
        .unwrap_or_else(|| panic!("no punch at the target: {b_events}"));
    assert_eq!(punched["peerId"], p.a().peer_id, "{punched}");
    assert_eq!(punched["path"], "direct", "{punched}");
}

/// Whether `events` holds one of this kind, role, peer and transport.
fn has_event(events: &Value, kind: &str, role: &str, peer: &str, transport: Option<&str>) -> bool {
    events.as_array().is_some_and(|list| {
        list.iter().any(|e| {
            e["kind"] == kind
                && e["role"] == role
                && e["peerId"] == peer
                && e["transport"].as_str() == transport
        })
    })
}

#[test]
fn a_request_too_big_for_one_datagram_goes_through_the_relay_over_udp() {
    let p = pair();
    // A record of the largest legal value: its JSON is over the 65,507 bytes one UDP
    // datagram carries (docs/udp.md), but well within what the relay and WebSocket
    // carry.
    let big = "v".repeat(cirrus_proto::record::MAX_VALUE_BYTES);
    let mut written = Vec::new();
    for (n, transport) in [(1u64, "udp"), (2, "tcp")] {
        let rec = doc(&author(90), &format!("big-{transport}"), n, &big);
        let params = json!({ "record": rec }).to_string();
        assert!(params.len() > 65_507, "{}", params.len());
        let out = call_via(&p, "put", &params, transport);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{transport}: {stderr}");
        assert!(stdout.contains("applied"), "{transport}: {stdout}");
        if transport == "udp" {
            let why = stderr
                .lines()
                .find_map(|l| {
                    l.strip_prefix(&format!("answer 1: relay (through {}; direct: ", p.a().url))
                })
                .unwrap_or_else(|| panic!("no relayed answer on stderr: {stderr}"));
            assert!(why.contains("datagram"), "{why}");
        } else {
            // TCP speaks WebSocket to the target: the size is no obstacle.
            direct_endpoint(&stderr, transport);
        }
        written.push(rec);
    }
    for rec in written {
        let got = get_record(p.b(), &rec.author, &rec.key, Kind::Doc);
        assert_eq!(got["value"], big.as_str(), "B holds {}", rec.key);
    }
    // The relay shows on both sides.
    let a_events = p.a().ok("getreachability", json!({}))["events"].clone();
    assert!(
        has_event(&a_events, "relay", "rendezvous", &p.b().peer_id, None),
        "{a_events}"
    );
    let b_events = p.b().ok("getreachability", json!({}))["events"].clone();
    assert!(
        has_event(&b_events, "relay", "target", &p.a().peer_id, None),
        "{b_events}"
    );
}

#[test]
fn punch_refuses_bad_input_and_punches_toward_a_good_endpoint() {
    let p = pair();
    let (a, b) = (p.a(), p.b());
    let unknown = unknown_peer();
    let ok_endpoint = "127.0.0.1:9";
    for (params, code) in [
        (
            json!({"peerId": unknown, "endpoint": ok_endpoint, "transport": "udp"}),
            -32005,
        ),
        (
            json!({"peerId": "not-a-peer", "endpoint": ok_endpoint, "transport": "udp"}),
            -32602,
        ),
        (
            json!({"peerId": b.peer_id, "endpoint": "nonsense", "transport": "udp"}),
            -32602,
        ),
        (
            json!({"peerId": b.peer_id, "endpoint": "127.0.0.1", "transport": "udp"}),
            -32602,
        ),
        (
            json!({"peerId": b.peer_id, "endpoint": "127.0.0.1:70000", "transport": "tcp"}),
            -32602,
        ),
        (
            json!({"peerId": b.peer_id, "endpoint": ok_endpoint, "transport": "sctp"}),
            -32602,
        ),
        (
            json!({"peerId": b.peer_id, "endpoint": ok_endpoint, "transport": 17}),
            -32602,
        ),
        (
            json!({"peerId": b.peer_id, "endpoint": ok_endpoint}),
            -32602,
        ),
        (json!({"peerId": b.peer_id}), -32602),
        (json!({}), -32602),
        (
            json!({"peerId": b.peer_id, "endpoint": ok_endpoint, "transport": "udp", "extra": 1}),
            -32602,
        ),
    ] {
        let r = a.call("punch", params.clone());
        assert_eq!(error_code(&r), code, "{params} -> {r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{r}"
        );
    }
    let r = a.rpc(&json!({"jsonrpc": "2.0", "id": 1, "method": "punch"}));
    assert_eq!(error_code(&r), -32602, "no params at all: {r}");

    // A still answers, and a good punch makes B send from its listed endpoints.
    assert_eq!(a.ok("getnodeinfo", json!({}))["peerId"], a.peer_id);

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let r = a.ok(
        "punch",
        json!({"peerId": b.peer_id, "endpoint": sock.local_addr().unwrap().to_string(),
               "transport": "udp"}),
    );
    assert_eq!(r, json!({"ok": true}));
    let mut buf = [0u8; 1500];
    let (n, from) = sock.recv_from(&mut buf).expect("B's punch packet");
    let msg = stun::Message::decode(&buf[..n]).expect("a STUN message");
    assert_eq!(msg.class, stun::Class::Indication);
    assert_eq!(msg.method, stun::BINDING);
    assert!(
        p.endpoints.0.contains(&from),
        "punched from {from}, not one of B's endpoints {:?}",
        p.endpoints.0
    );

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let r = a.ok(
        "punch",
        json!({"peerId": b.peer_id, "endpoint": listener.local_addr().unwrap().to_string(),
               "transport": "tcp"}),
    );
    assert_eq!(r, json!({"ok": true}));
    // B retries its connects every 200 ms for 5 s; accept blocks until one lands.
    let (_conn, from) = listener.accept().expect("B's punch connection");
    assert!(
        p.endpoints.1.contains(&from),
        "connected from {from}, not one of B's endpoints {:?}",
        p.endpoints.1
    );
}

#[test]
fn the_cli_fails_clearly_for_a_peer_the_rendezvous_node_does_not_know() {
    let p = pair();
    for peer in [unknown_peer(), "not-a-peer".to_string()] {
        for transport in ["udp", "tcp"] {
            let out = cirrus(&[
                "call",
                "getnodeinfo",
                "{}",
                "--peer",
                &peer,
                "--rendezvous",
                &p.a().url,
                "--transport",
                transport,
            ]);
            let stderr = text(&out.stderr);
            assert!(!out.status.success(), "{peer} over {transport}: {stderr}");
            assert!(
                stderr.contains("not connected to the rendezvous node"),
                "{peer} over {transport}: {stderr}"
            );
            assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
        }
    }
    // A rendezvous node that is not there fails too, without hanging.
    let out = cirrus(&[
        "call",
        "getnodeinfo",
        "{}",
        "--peer",
        &p.b().peer_id,
        "--rendezvous",
        "http://127.0.0.1:1",
    ]);
    assert!(!out.status.success(), "{}", text(&out.stderr));
    assert_eq!(p.a().ok("getnodeinfo", json!({}))["peerId"], p.a().peer_id);
}

/// A link answers at once over the relay, moves to the direct path when the punch
/// opens it, and when the target restarts (its punched socket gone) the next
/// request goes over the relay again and the link punches anew.
#[test]
fn a_link_starts_on_the_relay_moves_to_direct_and_recovers_a_lost_path() {
    let mut p = pair();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let request = json!({"jsonrpc": "2.0", "id": 3, "method": "getnodeinfo"});
    let link = rt
        .block_on(async {
            PeerLink::open(
                &p.a().url,
                &p.b().peer_id,
                Transport::Udp,
                Duration::from_secs(2),
            )
        })
        .unwrap();
    let first = rt
        .block_on(link.settled())
        .expect("a direct path on loopback");
    assert!(p.endpoints.0.contains(&first.0), "{first:?}");
    let (answer, via) = rt.block_on(link.call(&request)).unwrap();
    assert_eq!(answer["result"]["peerId"], p.b().peer_id, "{answer}");
    assert_eq!(via, Via::Direct(first.0));

    // The target restarts on the same address and identity: new STUN client
    // sockets, so the punched endpoint is dead.
    p.net.stop(1);
    p.net.up(1, &["--bootstrap", &p.net.boot()]);
    let b = p.b().peer_id.clone();
    wait_until("A lists the restarted B with STUN endpoints", || {
        let peers = p.a().peers();
        match peers.iter().find(|x| x["peerId"] == b) {
            Some(e) if e["stun"].is_object() && !endpoints_in(&e["stun"], "udp").is_empty() => {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    });
    let (answer, via) = rt.block_on(link.call(&request)).unwrap();
    assert_eq!(answer["result"]["peerId"], b, "{answer}");
    assert!(
        matches!(via, Via::Relay { .. }),
        "the dead path is left for the relay: {via:?}"
    );
    let mut saw_lost = false;
    let again = wait_until("the link punches again and goes direct", || {
        while let Some(e) = link.try_event() {
            saw_lost |= matches!(e, cirrus_node::rendezvous::LinkEvent::Lost { .. });
        }
        match rt.block_on(link.call(&request)) {
            Ok((_, Via::Direct(at))) => Ok(at),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(saw_lost, "the loss was reported");
    assert_ne!(again, first.0, "a new endpoint after the restart");
}
