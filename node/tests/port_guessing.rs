//! The target's half of port guessing (docs/nat.md, "Port guessing") on loopback,
//! where there is no NAT: the sockets a guess opens, that they serve the API, that
//! the unused ones close, and the bounds a hostile requester meets. The whole
//! search through real NATs runs in `testnet/natlab.sh`.
//!
//! The requester uses an address of the test net's own /24 that no node holds, so
//! the probes toward random ports of it reach nobody else's sockets.

mod support;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use cirrus_proto::stun;
use serde_json::{Value, json};
use support::*;

/// Two nodes: A the rendezvous, B the target, once B has UDP STUN mappings.
fn pair() -> TestNet {
    let net = TestNet::start(2, &["--stun-keepalive-secs", "1"]);
    wait_until("B has a UDP STUN mapping", || {
        let udp = net.node(1).ok("getnodeinfo", json!({}))["stun"]["udp"].clone();
        match udp.as_array() {
            Some(list) if !list.is_empty() => Ok(()),
            _ => Err(udp.to_string()),
        }
    });
    net
}

/// `punch` posted to `node` from `from` (a requester on its own address).
fn punch_from(from: IpAddr, node: &TestNode, params: Value) -> Value {
    let http = reqwest::blocking::Client::builder()
        .local_address(from)
        .build()
        .unwrap();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "punch", "params": params});
    let resp = http
        .post(&node.url)
        .body(body.to_string())
        .send()
        .expect("A answers");
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().expect("a JSON-RPC response")
}

/// A socket on the requester's own address. It reads with a timeout shorter than
/// the 2.5 s a guess's sockets wait to be used, and long against the milliseconds
/// in which a guess opens its sockets.
fn requester(ip: IpAddr) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s
}

/// The sources of the STUN indications that reach `sock` until it has heard
/// nothing for its read timeout.
fn indication_sources(sock: &UdpSocket) -> Vec<SocketAddr> {
    let mut buf = [0u8; 1500];
    let mut from = Vec::new();
    while let Ok((n, addr)) = sock.recv_from(&mut buf) {
        if stun::is_stun(&buf[..n]) {
            from.push(addr);
        }
    }
    from
}

/// getnodeinfo over UDP to `at`: the peer id that answers, following a cookie
/// challenge once; an error when the port is closed or silent.
fn peer_id_at(at: SocketAddr) -> Result<String, String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client =
        cirrus_node::client::Client::connect(&format!("udp://{at}"), Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
    let info = rt
        .block_on(client.call("getnodeinfo", json!({})))
        .map_err(|e| e.to_string())?;
    Ok(info["peerId"].as_str().unwrap_or_default().to_string())
}

/// Whether a datagram to `at` draws "port unreachable" (nothing listens there).
fn closed(at: SocketAddr, from: IpAddr) -> bool {
    let s = UdpSocket::bind((from, 0)).unwrap();
    s.connect(at).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let _ = s.send(b"{}");
    let mut buf = [0u8; 64];
    matches!(s.recv(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// From a requester on a spare address, ask node 1 to have node 2 open a guess
/// toward it; returns the requester's address and socket and where node 2's
/// opening packets came from.
fn open_guess(net: &TestNet) -> (IpAddr, UdpSocket, Vec<SocketAddr>) {
    let (a, b) = (net.node(0), net.node(1));
    let me: IpAddr = net.spare_ip().parse().unwrap();
    let sock = requester(me);
    let endpoint = sock.local_addr().unwrap();
    let r = punch_from(
        me,
        a,
        json!({"peerId": b.peer_id, "endpoint": endpoint.to_string(), "transport": "udp",
               "guess": {"kind": "open"}}),
    );
    assert_eq!(r["result"]["ok"], true, "{r}");
    let from = indication_sources(&sock);
    (me, sock, from)
}

#[test]
fn an_open_guess_opens_256_sockets_that_serve_the_api_and_closes_the_unused() {
    let net = pair();
    let b = net.node(1);
    let (me, _sock, from) = open_guess(&net);

    // One opening packet from each socket, all from B's address (no NAT here, so
    // the low TTL still arrives), each from a port of its own.
    let ports: HashSet<u16> = from.iter().map(|a| a.port()).collect();
    assert_eq!(from.len(), 256, "{from:?}");
    assert_eq!(ports.len(), 256, "a port per socket");
    assert!(from.iter().all(|f| f.ip() == b.ip()), "{from:?}");
    assert_eq!(b.metric("cirrus_punch_guess_sockets_total", &[]), 256.0);

    // Any of them serves the API as B; once one is used, the others close.
    let used = from[0];
    assert_eq!(peer_id_at(used).unwrap(), b.peer_id);
    // (Asked without a datagram: one would count as use and keep a socket open.)
    wait_until("the sockets nobody used close", || {
        match b.metric("cirrus_punch_guess_sockets_open", &[]) {
            1.0 => Ok(()),
            n => Err(format!("{n} open")),
        }
    });
    assert!(closed(from[255], me), "{} still answers", from[255]);
    assert_eq!(
        peer_id_at(used).unwrap(),
        b.peer_id,
        "the used socket stays"
    );
}

/// A requester that talks to every socket of its guess keeps two of them, not
/// all 256.
#[test]
fn a_requester_that_uses_every_guessed_socket_keeps_two() {
    let net = pair();
    let b = net.node(1);
    let (_, sock, from) = open_guess(&net);
    assert_eq!(from.len(), 256, "{from:?}");
    for at in &from {
        sock.send_to(b"{}", at).unwrap();
    }
    wait_until("B keeps two of the sockets", || {
        match b.metric("cirrus_punch_guess_sockets_open", &[]) {
            2.0 => Ok(()),
            n => Err(format!("{n} open")),
        }
    });
}

#[test]
fn guesses_are_bounded_and_bad_ones_refused_clearly() {
    let net = pair();
    let (a, b) = (net.node(0), net.node(1));
    let me: IpAddr = net.spare_ip().parse().unwrap();
    let sock = requester(me);
    let endpoint = sock.local_addr().unwrap().to_string();
    let params = |guess: Value, transport: &str| json!({"peerId": b.peer_id, "endpoint": endpoint, "transport": transport, "guess": guess});

    // Bad input: a clear error each, and nothing sent.
    for (guess, transport, code) in [
        (json!({"kind": "open"}), "tcp", -32602),
        (json!({"kind": "sideways"}), "udp", -32602),
        (json!({"kind": "probe"}), "udp", -32602),
        (json!({"kind": "probe", "localPort": 70000}), "udp", -32602),
        (json!("open"), "udp", -32602),
    ] {
        let r = punch_from(me, a, params(guess.clone(), transport));
        assert_eq!(r["error"]["code"], code, "{guess} over {transport}: {r}");
    }
    // A probe from a socket B does not have: refused by B, and why.
    let r = punch_from(
        me,
        a,
        params(json!({"kind": "probe", "localPort": 1}), "udp"),
    );
    assert_eq!(r["error"]["code"], -32005, "{r}");
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no STUN client socket on local port 1"),
        "{r}"
    );
    // Toward an address other than the requester's: refused at the rendezvous.
    let other = json!({"peerId": b.peer_id, "endpoint": "127.0.0.9:4000", "transport": "udp",
                       "guess": {"kind": "open"}});
    assert_eq!(punch_from(me, a, other)["error"]["code"], -32012);

    // Six guesses at once from one requester: B opens at most three guesses' worth
    // of sockets (768) and refuses the rest, saying why.
    let answers: Vec<Value> = std::thread::scope(|s| {
        let each: Vec<_> = (0..6)
            .map(|_| s.spawn(|| punch_from(me, a, params(json!({"kind": "open"}), "udp"))))
            .collect();
        each.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let accepted = answers.iter().filter(|r| r["result"]["ok"] == true).count();
    for r in answers.iter().filter(|r| r["result"]["ok"] != true) {
        let m = r["error"]["message"].as_str().unwrap_or_default();
        assert!(
            m.contains("too many sockets open for guessing")
                || m.contains("too many guesses")
                || m.contains("a guess toward this address is under way"),
            "{r}"
        );
    }
    let opened = indication_sources(&sock).len();
    assert!(
        (1..=3).contains(&accepted),
        "{accepted} accepted: {answers:?}"
    );
    assert_eq!(opened, 256 * accepted, "{accepted} guesses accepted");
    assert!(opened <= 768, "{opened} sockets");

    // A probe guess: exactly 1,024 probes, all toward the requester's address.
    let local_port = b.ok("getnodeinfo", json!({}))["stun"]["udp"][0]["localPort"]
        .as_u64()
        .unwrap();
    let before = b.metric("cirrus_punch_guess_probes_total", &[]);
    let r = wait_until("B takes a probe guess (once the open ones let it)", || {
        let r = punch_from(
            me,
            a,
            params(json!({"kind": "probe", "localPort": local_port}), "udp"),
        );
        if r["result"]["ok"] == true {
            Ok(r)
        } else {
            Err(r.to_string())
        }
    });
    assert_eq!(r["result"]["ok"], true);
    wait_until("B sent its 1,024 probes", || {
        let sent = b.metric("cirrus_punch_guess_probes_total", &[]) - before;
        if sent == 1024.0 {
            Ok(())
        } else {
            Err(format!("{sent}"))
        }
    });
}
