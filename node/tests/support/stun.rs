//! Talking STUN to a node's server from the test process, shared by the STUN tests.
//! Every blocking read is bounded by [`IO_TIMEOUT`], so a missing answer fails the
//! test instead of hanging it. On UDP the very next datagram from the server must
//! answer the request just sent: the server answers one datagram at a time, in
//! order, so an answer to anything sent before it would show up first. That is how
//! "no answer" is shown without a timer.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use cirrus_proto::stun::{self, Attribute, Class, Message};
use serde_json::json;

use super::TestNode;

/// Bound on one blocking socket read; a read that hits it fails the test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

pub fn stun_port(node: &TestNode) -> u16 {
    let port = node.ok("getnodeinfo", json!({}))["ports"]["stun"]
        .as_u64()
        .expect("getnodeinfo.ports.stun");
    u16::try_from(port).unwrap()
}

pub fn txid(n: u64) -> [u8; 12] {
    let mut t = [0u8; 12];
    t[..8].copy_from_slice(&n.to_be_bytes());
    t[8..].copy_from_slice(b"test");
    t
}

pub fn udp_socket() -> UdpSocket {
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
pub fn udp_exchange(sock: &UdpSocket, server: SocketAddr, req: &[u8], what: &str) -> Message {
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
pub fn tcp_exchange(server: SocketAddr, bytes: &[u8], what: &str) -> Vec<u8> {
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
pub fn frames(mut bytes: &[u8]) -> Vec<Message> {
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

pub fn mapped_of(msg: &Message) -> SocketAddr {
    assert_eq!(msg.class, Class::Success, "not a success response: {msg:?}");
    let xor = msg.attributes.iter().find_map(|a| match a {
        Attribute::XorMappedAddress(s) => Some(*s),
        _ => None,
    });
    xor.unwrap_or_else(|| panic!("no XOR-MAPPED-ADDRESS in {msg:?}"))
}
