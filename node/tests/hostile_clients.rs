//! The node under attack by clients, on real processes on loopback (issue "Safe on
//! the open internet"): each test makes one attack and asserts the bound that stops
//! it, in bytes, counts or memory, counted on the node's side where a socket's
//! receive window could miss something. docs/security.md names each defence.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

fn rpc(id: impl Into<Value>, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id.into(), "method": method, "params": params})
}

/// A loopback address no other test uses, from the process id and `n`.
fn own_ip(n: u8) -> String {
    format!("127.253.{}.{n}", std::process::id() % 250)
}

/// A node's resident memory, in bytes.
fn rss(node: &TestNode) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.child.id())).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

/// `punch` makes the target send toward the requester's own address only: toward
/// anyone else it is refused at the rendezvous, never run through relay, and a
/// source that may be spoofed (UDP, not validated) must show it receives first.
#[test]
fn punch_is_aimed_at_the_requester_only() {
    let net = TestNet::start(2, &["--stun-keepalive-secs", "1"]);
    let (a, b) = (net.node(0), net.node(1));
    wait_until("A lists B's STUN endpoints", || {
        let e = entry_for(a, &b.peer_id).ok_or("not listed")?;
        if e["stun"]["udp"].as_array().is_some_and(|u| !u.is_empty()) {
            Ok(())
        } else {
            Err(e.to_string())
        }
    });
    let bystander = UdpSocket::bind((own_ip(1).as_str(), 0)).unwrap();
    let victim = bystander.local_addr().unwrap().to_string();
    let aim =
        |endpoint: &str| json!({"peerId": b.peer_id, "endpoint": endpoint, "transport": "udp"});

    // Over HTTP the request comes from 127.0.0.1; the bystander is elsewhere.
    let r = a.call("punch", aim(&victim));
    assert_eq!(error_code(&r), -32012, "{r}");
    let r = a.call(
        "punch",
        json!({"peerId": b.peer_id, "endpoint": victim, "transport": "tcp"}),
    );
    assert_eq!(error_code(&r), -32012, "{r}");
    // Through relay: B does not punch for a relayed request.
    let inner = rpc(
        5,
        "punch",
        json!({"peerId": a.peer_id, "endpoint": victim, "transport": "udp"}),
    );
    let r = a.ok("relay", json!({"peerId": b.peer_id, "request": inner}));
    assert_eq!(error_code(&r), -32601, "{r}");
    // Over UDP from a source not yet validated: a cookie first, nothing run.
    let udp = UdpSocket::bind((own_ip(2).as_str(), 0)).unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = serde_json::to_vec(&rpc(6, "punch", aim(&victim))).unwrap();
    req.resize(req.len() + 64, b' ');
    udp.send_to(&req, &a.udp).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = udp.recv_from(&mut buf).expect("an answer");
    let v: Value = serde_json::from_slice(&buf[..n]).unwrap();
    assert_eq!(error_code(&v), -32010, "{v}");
    assert!(n <= 3 * req.len());
    assert_eq!(
        b.metric("cirrus_punches_total", &[]),
        0.0,
        "B punched for one of the requests above"
    );

    // The positive control: toward the requester's own address it is done, and
    // what reaches that address is bounded by B's per-IP punch rate.
    let me = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mine = me.local_addr().unwrap().to_string();
    assert_eq!(a.ok("punch", aim(&mine)), json!({"ok": true}));
    wait_until("B's punch toward us is done", || {
        let done = b.metric("cirrus_punches_total", &[("result", "done")]);
        if done >= 1.0 {
            Ok(())
        } else {
            Err(b.metrics())
        }
    });
    me.set_nonblocking(true).unwrap();
    let mut packets = 0;
    while me.recv_from(&mut buf).is_ok() {
        packets += 1;
    }
    assert!(packets >= 1, "the punch reached the requester");
    // 20 packets a second per IP (the default), for a punch of 5 s, one socket.
    assert!(
        packets <= 20 * 5 + 20,
        "{packets} punch packets toward one IP"
    );
    // And the bystander got nothing, ever.
    bystander.set_nonblocking(true).unwrap();
    assert!(
        bystander.recv_from(&mut buf).is_err(),
        "the bystander got a packet"
    );
}

/// `relay` is charged at its full size: the inner batch counts against the caller's
/// rate on the rendezvous, and against the relaying peer's rate on the node that
/// runs it.
#[test]
fn relay_is_charged_in_full_on_both_nodes() {
    let mut net = TestNet::unstarted(2, &["--limit-loopback"]);
    net.up(0, &["--rate-limit", "20", "--rate-burst", "100"]);
    let boot = net.boot();
    net.up(
        1,
        &[
            "--bootstrap",
            &boot,
            "--rate-limit",
            "20",
            "--rate-burst",
            "100",
            "--relay-rate-limit",
            "20",
        ],
    );
    let (a, b) = (net.node(0), net.node(1));
    wait_lists(a, &b.peer_id);
    let batch = |n: usize| -> Value {
        Value::Array((0..n).map(|i| rpc(i, "getdbhash", json!({}))).collect())
    };
    // 1 + 1000 requests: over A's whole burst at once.
    let r = a.rpc(&rpc(
        1,
        "relay",
        json!({"peerId": b.peer_id, "request": batch(1000)}),
    ));
    assert_eq!(error_code(&r), -32006, "a relay of 1000 costs 1001: {r}");
    assert_eq!(
        b.metric("cirrus_api_requests_total", &[("transport", "relay")]),
        0.0
    );

    // Through another rendezvous than A's limit, B still holds its own: A's
    // requests are limited at A (each relay costs 1 + 40), and B charges A, the
    // peer, for what it runs. Whatever gets through, B never runs more than its
    // burst plus its rate for the time it took.
    let started = Instant::now();
    let mut refused = 0;
    for i in 0..20 {
        let r = a.rpc(&rpc(
            i,
            "relay",
            json!({"peerId": b.peer_id, "request": batch(40)}),
        ));
        if r.get("error").is_some() {
            refused += 1;
        }
    }
    let served = b.metric(
        "cirrus_api_requests_total",
        &[("transport", "relay"), ("outcome", "ok")],
    );
    let secs = started.elapsed().as_secs_f64();
    assert!(
        served <= 100.0 + 20.0 * (secs + 1.0),
        "B ran {served} relayed requests in {secs:.1} s against a burst of 100 and 20/s"
    );
    assert!(
        refused > 0,
        "20 relays of 41 requests each all went through"
    );
}

/// A WebSocket client that sends `list` requests and never reads its answers: the
/// node stops reading it (a bounded number in flight), its queue is bounded, and it
/// is closed once a write stalls. The node's memory stays within 64 MiB of where it
/// was, and it serves others all along.
#[test]
fn a_websocket_client_that_never_reads_cannot_grow_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start_with(dir.path(), &["--write-timeout-secs", "3"]);
    // 100 records of 60,000 bytes of quotes, which JSON doubles: a page of `list`
    // is about as large as an answer gets.
    let a = author(11);
    let value = "\"".repeat(60_000);
    for chunk in (0..100).collect::<Vec<_>>().chunks(5) {
        let records: Vec<_> = chunk
            .iter()
            .map(|i| doc(&a, &format!("big-{i}"), 1, &value))
            .collect();
        put_all_applied(&node, &records);
    }
    let baseline = rss(&node);

    let addr = node.ws.trim_start_matches("ws://").to_string();
    let mut s = TcpStream::connect(&addr).unwrap();
    // A small receive buffer, so the node's writes stall soon.
    let (mut ws, _) = tokio_tungstenite::tungstenite::client::client(
        format!("ws://{addr}/"),
        s.try_clone().unwrap(),
    )
    .expect("handshake");
    let list = rpc(1, "list", json!({"limit": 1000})).to_string();
    let mut peak = baseline;
    let mut sent = 0;
    let deadline = Instant::now() + TIMEOUT;
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    // Send until the node stops taking frames (TCP pushes back) or closes.
    while Instant::now() < deadline && sent < 5000 {
        if ws
            .send(tokio_tungstenite::tungstenite::Message::Text(
                list.clone().into(),
            ))
            .is_err()
        {
            break;
        }
        sent += 1;
        if sent % 20 == 0 {
            peak = peak.max(rss(&node));
        }
    }
    // The node closes the connection once its writes stall.
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    wait_until("the node closes the non-reading client", || {
        peak = peak.max(rss(&node));
        let mut buf = [0u8; 1 << 16];
        match s.read(&mut buf) {
            Ok(0) | Err(_) => Ok(()),
            Ok(_) => Err(format!("still open after {sent} requests")),
        }
    });
    let grew = peak.saturating_sub(baseline);
    assert!(
        grew <= 64 << 20,
        "RSS grew by {} MiB under a non-reading client ({sent} requests sent)",
        grew >> 20
    );
    // Still serving.
    assert_eq!(node.db()["records"], 100);
}

/// A web page in the operator's browser reaches loopback, but cannot act as admin:
/// admin methods need the token from loopback too, on every transport; the public
/// API answers any origin (CORS), which is what makes it usable from pages at all.
#[test]
fn a_web_page_cannot_drive_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let client = reqwest::blocking::Client::new();
    // A "simple" request a page can send with no preflight: text/plain.
    for (method, params) in [
        ("shutdown", json!({})),
        ("addpeer", json!({"addr": "/ip4/127.0.0.1/tcp/1"})),
    ] {
        let resp = client
            .post(&node.url)
            .header("content-type", "text/plain")
            .header("origin", "http://evil.example")
            .body(rpc(1, method, params).to_string())
            .send()
            .unwrap();
        assert_eq!(
            resp.headers()
                .get("access-control-allow-origin")
                .and_then(|v| v.to_str().ok()),
            Some("*")
        );
        let v: Value = resp.json().unwrap();
        assert_eq!(error_code(&v), -32007, "{method}: {v}");
    }
    // A preflight for a JSON POST is answered.
    let pre = client
        .request(reqwest::Method::OPTIONS, &node.url)
        .header("origin", "http://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .unwrap();
    assert!(pre.status().is_success(), "{}", pre.status());
    let allowed = pre
        .headers()
        .get("access-control-allow-methods")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(allowed.contains("POST"), "{allowed}");
    // Over WebSocket from loopback, without the token: refused too.
    let (mut ws, _) = tokio_tungstenite::tungstenite::connect(&node.ws).unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        rpc(2, "shutdown", json!({})).to_string().into(),
    ))
    .unwrap();
    let answer = loop {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = ws.read().unwrap() {
            break serde_json::from_str::<Value>(&t).unwrap();
        }
    };
    assert_eq!(error_code(&answer), -32007, "{answer}");
    assert_eq!(node.db()["records"], 0, "still up");
    // A wrong token: refused. The operator's CLI with the data dir: it stops.
    let r = node.call("shutdown", json!({"token": "0".repeat(64)}));
    assert_eq!(error_code(&r), -32007, "{r}");
    let out = cirrus(&[
        "call",
        "shutdown",
        "--node",
        &node.url,
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut node = node;
    let status = node.child.wait().unwrap();
    assert!(status.success(), "the node stopped cleanly: {status}");
}

/// From a UDP source that has not shown it receives at its address, the node runs
/// only a single plain read: a write, a batch, a relay or a punch get a cookie, and
/// nothing happens until the cookie comes back. All such sources share one
/// request budget, so faking many addresses buys no more work.
#[test]
fn a_spoofable_udp_source_can_only_read() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start_with(dir.path(), &["--udp-unvalidated-rate", "50"]);
    let r = doc(&author(12), "spoofed", 1, "v");
    let sock = UdpSocket::bind((own_ip(3).as_str(), 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let ask = |req: &Value| -> Value {
        let mut b = serde_json::to_vec(req).unwrap();
        b.resize(b.len().max(200), b' ');
        sock.send_to(&b, &node.udp).unwrap();
        let mut buf = vec![0u8; 65536];
        let (n, _) = sock.recv_from(&mut buf).unwrap();
        serde_json::from_slice(&buf[..n]).unwrap()
    };
    for req in [
        rpc(1, "put", json!({"record": r})),
        json!([rpc(2, "getdbhash", json!({}))]),
        rpc(
            3,
            "relay",
            json!({"peerId": "x", "request": rpc(1, "getdbhash", json!({}))}),
        ),
        rpc(4, "getdbhash", json!({"session": "x"})),
    ] {
        let v = ask(&req);
        assert_eq!(error_code(&v), -32010, "{req}: {v}");
    }
    assert_eq!(node.db()["records"], 0, "nothing was written");
    // With the cookie, the write goes through.
    let cookie = ask(&rpc(5, "put", json!({"record": r})))["error"]["data"]["cookie"].clone();
    let mut put = rpc(6, "put", json!({"record": r}));
    put["cookie"] = cookie;
    assert_eq!(ask(&put)["result"]["status"], "applied");

    // 400 reads from 400 addresses, as a spoofer would send them: the node runs
    // no more of them than the shared budget allows for the time they took.
    let handled = |m: &str| {
        metric_in(m, "cirrus_udp_datagrams_total", &[])
            - metric_in(
                m,
                "cirrus_udp_datagrams_total",
                &[("result", "stun_response")],
            )
    };
    let m = node.metrics();
    let (before, before_all) = (
        metric_in(&m, "cirrus_udp_datagrams_total", &[("result", "dropped")]),
        handled(&m),
    );
    // In bursts of 80, each taken in by the node before the next: a socket's
    // receive buffer (some 200 KB) holds only a few hundred small datagrams, and
    // what the kernel drops the node never sees or counts.
    let started = Instant::now();
    let req = serde_json::to_vec(&rpc(7, "getdbhash", json!({}))).unwrap();
    let mut dropped = 0.0;
    for burst in 0..5u32 {
        for i in burst * 80..(burst + 1) * 80 {
            let ip = format!("127.254.{}.{}", i / 200, i % 200 + 1);
            let s = UdpSocket::bind((ip.as_str(), 0)).unwrap();
            s.send_to(&req, &node.udp).unwrap();
        }
        let sent = f64::from((burst + 1) * 80);
        dropped = wait_until("the node is done with the burst", || {
            let m = node.metrics();
            let all = handled(&m);
            if all >= before_all + sent {
                Ok(metric_in(
                    &m,
                    "cirrus_udp_datagrams_total",
                    &[("result", "dropped")],
                ))
            } else {
                Err(format!("{all} handled of {sent}"))
            }
        }) - before;
    }
    let secs = started.elapsed().as_secs_f64();
    let ran = 400.0 - dropped;
    assert!(
        ran <= 50.0 + 50.0 * (secs + 1.0),
        "{ran} of 400 spoofable reads ran in {secs:.2} s against a budget of 50/s"
    );
}

/// Slots are not held by silence: a connection that sends nothing is closed after
/// the header timeout, and its slot is free again; when every slot is taken, the
/// oldest connection of the busiest source gives way to a newcomer.
#[test]
fn silent_connections_lose_their_slots() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start_with(
        dir.path(),
        &[
            "--limit-loopback",
            "--max-connections",
            "6",
            "--max-connections-per-ip",
            "4",
            "--http-header-timeout-secs",
            "1",
        ],
    );
    let http: SocketAddr = node.url.trim_start_matches("http://").parse().unwrap();
    let from = |ip: &str| {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::new(ip.parse().unwrap(), 0).into())
            .unwrap();
        s.connect(&http.into()).unwrap();
        let s: TcpStream = s.into();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s
    };
    let closed = |s: &mut TcpStream| {
        let mut b = [0u8; 16];
        matches!(s.read(&mut b), Ok(0) | Err(_))
    };
    // A silent connection is closed by the node after the header timeout.
    let mut silent = from(&own_ip(10));
    assert!(closed(&mut silent), "the node closes a silent connection");

    // Four from one source fill its share; a fifth is refused at once.
    let ip_a = own_ip(11);
    let mut held: Vec<TcpStream> = (0..4).map(|_| from(&ip_a)).collect();
    let mut fifth = from(&ip_a);
    assert!(
        closed(&mut fifth),
        "a fifth connection of one source is refused"
    );
    // Two more from another source fill all six; a newcomer from a third source
    // takes the place of the oldest of the busiest source (the first of A's).
    held.push(from(&own_ip(12)));
    held.push(from(&own_ip(12)));
    let evictions = node.metric("cirrus_connection_evictions_total", &[]);
    let mut newcomer = from(&own_ip(13));
    let body = rpc(1, "getdbhash", json!({})).to_string();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    newcomer.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    newcomer.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the newcomer is served: {answer:?}"
    );
    assert!(
        node.metric("cirrus_connection_evictions_total", &[]) > evictions,
        "a connection gave way"
    );
    assert!(
        closed(&mut held[0]),
        "the oldest of the busiest source gave way"
    );
}

/// One message's answer has a byte budget: a batch of `list`s over large values
/// stops running once the answers pass it, and the rest get an error.
#[test]
fn one_message_cannot_build_a_huge_answer() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start_with(dir.path(), &["--max-answer-bytes", "2000000"]);
    let a = author(13);
    let value = "\\".repeat(60_000); // escaped, twice its size
    for chunk in (0..40).collect::<Vec<_>>().chunks(5) {
        let records: Vec<_> = chunk
            .iter()
            .map(|i| doc(&a, &format!("v{i}"), 1, &value))
            .collect();
        put_all_applied(&node, &records);
    }
    let batch: Vec<Value> = (0..100)
        .map(|i| rpc(i, "list", json!({"limit": 1000})))
        .collect();
    let (status, body) = node.post(serde_json::to_vec(&batch).unwrap());
    assert_eq!(status, 200);
    // The budget, plus the one answer that crossed it (a page is at most 1 MiB of
    // values as JSON writes them, and their envelopes).
    assert!(
        body.len() < 2_000_000 + 1_500_000,
        "{} bytes for one message",
        body.len()
    );
    let answers: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(answers.len(), 100, "one answer per request");
    let not_run = answers
        .iter()
        .filter(|r| r["error"]["code"] == -32004)
        .count();
    assert!(not_run >= 90, "{not_run} of 100 were not run");
    assert!(answers[0]["result"]["records"].is_array(), "the first ran");
}

/// The STUN server answers one source at most `stun-rate-limit` times a second:
/// a flood of Binding requests in one victim's name gets the victim little.
#[test]
fn the_stun_server_answers_one_source_a_bounded_number_of_times() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start_with(dir.path(), &["--limit-loopback", "--stun-rate-limit", "10"]);
    let port = node.info()["ports"]["stun"].as_u64().unwrap() as u16;
    let server = SocketAddr::new(node.ip(), port);
    let sock = UdpSocket::bind((own_ip(30).as_str(), 0)).unwrap();
    let count = |r: &str| {
        node.metric(
            "cirrus_stun_bindings_total",
            &[("transport", "udp"), ("result", r)],
        )
    };
    // In bursts, each taken in before the next: what overflows the socket's receive
    // buffer the kernel drops, and the server never counts.
    let started = Instant::now();
    let (bursts, each) = (5u32, 60u32);
    for b in 0..bursts {
        for i in b * each..(b + 1) * each {
            let mut txid = [0u8; 12];
            txid[..4].copy_from_slice(&i.to_be_bytes());
            let req = cirrus_proto::stun::binding_request(txid, "a STUN client", None);
            sock.send_to(&req, server).unwrap();
        }
        let sent = f64::from((b + 1) * each);
        wait_until("the server is done with the burst", || {
            let done = count("answered") + count("limited");
            if done >= sent {
                Ok(())
            } else {
                Err(format!("{done} of {sent}"))
            }
        });
    }
    let secs = started.elapsed().as_secs_f64();
    let n = bursts * each;
    let answered = count("answered");
    // A burst of twice the rate, then the rate.
    assert!(
        answered <= 20.0 + 10.0 * (secs + 1.0),
        "{answered} of {n} answered in {secs:.2} s at 10/s per source"
    );
    assert!(answered >= 1.0);
}
