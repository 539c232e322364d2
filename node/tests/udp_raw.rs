//! The UDP API from raw sockets, on real processes (issue 5; docs/udp.md), on the
//! UDP port and on a per-peer STUN client port: a small answer comes in one plain
//! datagram; a large one only once the source has shown it receives there (the
//! cookie), and then in fragments; a source not yet shown gets at most three times
//! what it sent, so the node cannot be used to amplify a spoofed flood; and a STUN
//! Binding request on the same socket is answered.
//!
//! Nothing is mocked and nothing is timed: waits are bounded polling loops that fail
//! with what they were waiting for.

mod support;

use std::net::SocketAddr;
use std::time::Instant;

use cirrus_proto::stun::{self, Class, Message, binding_request, parse_binding_response};
use serde_json::{Value, json};
use support::transport::*;
use support::*;

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
