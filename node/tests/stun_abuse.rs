//! What our STUN server must survive (issue 4), on real processes: garbage on both
//! transports, requests at the size limit, and idle connections trying to hold
//! every TCP slot. After each, the server still answers, and so does the node.
//!
//! "No answer" is shown without a timer: on UDP, a good request sent after the
//! garbage from the same socket must get the first datagram back (the server
//! answers one datagram at a time, in order); on TCP, the test half-closes and
//! reads to the end of the stream.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};

use cirrus_proto::stun::{self, Attribute, Class, Message, attr, binding_request};
use serde_json::json;
use support::stun::*;
use support::*;

fn error_code_of(msg: &Message) -> u16 {
    assert_eq!(msg.class, Class::Error, "not an error response: {msg:?}");
    match msg.get(attr::ERROR_CODE) {
        Some(Attribute::ErrorCode { code, .. }) => *code,
        _ => panic!("no ERROR-CODE in {msg:?}"),
    }
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
// a. Garbage
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
// b. TCP slots
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
