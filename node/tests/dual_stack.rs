//! A node bound to `::` serves IPv4 and IPv6 on every port. Each client is seen at
//! the address it really has: an IPv4 client as IPv4, never as `::ffff:a.b.c.d`
//! (which a STUN answer would otherwise report, in the IPv6 family), and rate
//! limits are per client in both families. Its swarm takes peers of both families,
//! and its STUN clients learn a mapping over each.

mod support;

use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};

use cirrus_proto::jsonrpc::RATE_LIMITED;
use serde_json::{Value, json};
use support::stun::{IO_TIMEOUT, frames, mapped_of, stun_port, txid, udp_exchange};
use support::*;

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// One JSON-RPC call over HTTP from `from` to `to`.
fn call_from(from: IpAddr, to: SocketAddr, method: &str) -> Value {
    let http = reqwest::blocking::Client::builder()
        .local_address(from)
        .timeout(IO_TIMEOUT)
        .build()
        .unwrap();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method});
    http.post(format!("http://{to}/"))
        .json(&body)
        .send()
        .unwrap_or_else(|e| panic!("HTTP {method} from {from} to {to}: {e}"))
        .json()
        .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A record written at `from` (by author `n`) shows up at `to`.
fn crosses(from: &TestNode, to: &TestNode, n: u8) {
    let rec = doc(&author(n), "crossing", 1, "across families");
    from.put(&rec);
    wait_until("the record is on the other node", || {
        let got = get_record(to, &rec.author, "crossing", rec.kind);
        if got["value"] == "across families" {
            Ok(())
        } else {
            Err(got.to_string())
        }
    });
}

/// This machine must have IPv6 loopback, or the test cannot say anything.
fn require_ipv6_loopback() {
    UdpSocket::bind("[::1]:0").expect("IPv6 loopback (::1) is needed for this test");
}

#[test]
fn a_node_bound_to_both_families_sees_every_client_at_its_own_address() {
    require_ipv6_loopback();
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start_on(
        "::",
        dir.path(),
        &["--limit-loopback", "--rate-limit", "1", "--rate-burst", "5"],
    );
    let http = port_of(&node.url);

    // STUN over UDP and TCP: the mapped address is the client's, in its family.
    let stun = stun_port(&node);
    for client in ["127.0.0.61", "::1"] {
        let server = SocketAddr::new(
            if client.contains(':') {
                ip("::1")
            } else {
                ip("127.0.0.1")
            },
            stun,
        );
        let sock = UdpSocket::bind((ip(client), 0)).unwrap();
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let req = cirrus_proto::stun::binding_request(txid(1), "dual-stack test", None);
        let got = mapped_of(&udp_exchange(&sock, server, &req, "a Binding request"));
        assert_eq!(got, sock.local_addr().unwrap(), "UDP from {client}");

        // Over TCP the test connects from the loopback address of the server's family.
        let answer = frames(&support::stun::tcp_exchange(
            server,
            &req,
            "a Binding request",
        ));
        assert_eq!(mapped_of(&answer[0]).ip(), server.ip(), "TCP to {server}");
    }

    // Rate limits per source: one IPv4 client spends its burst and more; another
    // IPv4 client, and an IPv6 one, are still answered.
    let to4 = SocketAddr::new(ip("127.0.0.1"), http);
    let limited = (0..15)
        .map(|_| call_from(ip("127.0.0.62"), to4, "getdbhash"))
        .filter(|r| r["error"]["code"] == RATE_LIMITED)
        .count();
    assert!(limited >= 5, "only {limited} of 15 limited");
    let other = call_from(ip("127.0.0.63"), to4, "getdbhash");
    assert!(other["result"]["root"].is_string(), "{other}");
    let six = call_from(ip("::1"), SocketAddr::new(ip("::1"), http), "getdbhash");
    assert!(six["result"]["root"].is_string(), "{six}");
}

#[test]
fn peers_of_both_families_meet_at_a_dual_stack_node_and_records_cross() {
    require_ipv6_loopback();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let hub = TestNode::start_on("::", dirs[0].path(), &[]);
    let by_family = |v6: bool| {
        hub.listen
            .iter()
            .find(|a| {
                a.contains("/tcp/")
                    && a.starts_with(if v6 { "/ip6/::1/" } else { "/ip4/127.0.0.1/" })
            })
            .unwrap_or_else(|| {
                panic!(
                    "no {} TCP listen address in {:?}",
                    if v6 { "::1" } else { "127.0.0.1" },
                    hub.listen
                )
            })
            .clone()
    };
    let six = TestNode::start_on("::", dirs[1].path(), &["--bootstrap", &by_family(true)]);
    let four = TestNode::start_on(
        "127.0.0.64",
        dirs[2].path(),
        &["--bootstrap", &by_family(false)],
    );

    // The hub's STUN clients learn one mapping through each peer, in that peer's
    // family, over UDP and over TCP.
    wait_until(
        "the hub has a mapping of each family over each transport",
        || {
            let stun = hub.info()["stun"].clone();
            for transport in ["udp", "tcp"] {
                let families: Vec<bool> = stun[transport]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["address"].as_str().unwrap().contains(':'))
                    .collect();
                if !(families.contains(&true) && families.contains(&false)) {
                    return Err(format!("{transport}: {stun}"));
                }
            }
            Ok(())
        },
    );
    let v4_mapping = hub.info()["stun"]["udp"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| !m["address"].as_str().unwrap().contains(':'))
        .cloned()
        .unwrap();
    assert!(
        !v4_mapping["address"]
            .as_str()
            .unwrap()
            .starts_with("::ffff"),
        "{v4_mapping}"
    );

    // A record written at the IPv4-only node reaches the IPv6 one through the hub.
    crosses(&four, &six, 9);
    // And the IPv6 node really is reached over IPv6.
    assert!(TcpStream::connect(("::1", port_of(&six.url))).is_ok());
}

/// Several `--bind` addresses: every port on each, the same port numbers, a
/// swarm listener on each, and peers of either family only.
#[test]
fn a_node_bound_to_two_addresses_serves_each_and_peers_of_each_family_join() {
    require_ipv6_loopback();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let hub = TestNode::start_on("127.0.0.66,::1", dirs[0].path(), &[]);
    let http = port_of(&hub.url);
    for at in [ip("127.0.0.66"), ip("::1")] {
        let got = call_from(at, SocketAddr::new(at, http), "getdbhash");
        assert!(got["result"]["root"].is_string(), "{at}: {got}");
    }
    let stun = stun_port(&hub);
    for at in ["127.0.0.66", "::1"] {
        let server = SocketAddr::new(ip(at), stun);
        let sock = UdpSocket::bind((ip(at), 0)).unwrap();
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let req = cirrus_proto::stun::binding_request(txid(2), "two binds", None);
        let got = mapped_of(&udp_exchange(&sock, server, &req, "a Binding request"));
        assert_eq!(got, sock.local_addr().unwrap());
    }
    // Not on another loopback address: only what was bound.
    assert!(TcpStream::connect(("127.0.0.67", http)).is_err());

    let tcp_listen = |prefix: &str| {
        hub.listen
            .iter()
            .find(|a| a.starts_with(prefix) && a.contains("/tcp/"))
            .unwrap_or_else(|| panic!("no {prefix} TCP address in {:?}", hub.listen))
            .clone()
    };
    let four = TestNode::start_on(
        "127.0.0.68",
        dirs[1].path(),
        &["--bootstrap", &tcp_listen("/ip4/127.0.0.66/")],
    );
    let six = TestNode::start_on(
        "::1",
        dirs[2].path(),
        &["--bootstrap", &tcp_listen("/ip6/::1/")],
    );
    wait_until("the hub has both peers", || {
        let n = hub.info()["peers"].as_u64().unwrap();
        if n >= 2 {
            Ok(())
        } else {
            Err(format!("{n} peers"))
        }
    });
    crosses(&six, &four, 10);
}

/// A client reaches a target through a rendezvous URL in IPv6 (`http://[::1]:P`):
/// the plan takes the target's IPv6 endpoints and the rendezvous node's STUN
/// server at its IPv6 address, and the path opens over IPv6, by UDP and by TCP.
#[test]
fn a_client_punches_over_ipv6_through_an_ipv6_rendezvous_url() {
    require_ipv6_loopback();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let fast = ["--stun-keepalive-secs", "1"];
    let hub = TestNode::start_on("::", dirs[0].path(), &fast);
    let v6 = hub
        .listen
        .iter()
        .find(|a| a.starts_with("/ip6/::1/") && a.contains("/tcp/"))
        .unwrap_or_else(|| panic!("no ::1 TCP listen address in {:?}", hub.listen))
        .clone();
    let target = TestNode::start_on(
        "::",
        dirs[1].path(),
        &[fast[0], fast[1], "--bootstrap", &v6],
    );
    let v6_endpoints = |transport: &str| -> Result<Vec<SocketAddr>, String> {
        let peers = hub.peers();
        let entry = peers
            .iter()
            .find(|p| p["peerId"] == target.peer_id)
            .ok_or_else(|| format!("{peers:?}"))?;
        let list: Vec<SocketAddr> = entry["stun"][transport]
            .as_array()
            .ok_or_else(|| entry.to_string())?
            .iter()
            .filter_map(|m| {
                format!("[{}]:{}", m["address"].as_str()?, m["port"].as_u64()?)
                    .parse()
                    .ok()
            })
            .collect();
        if list.is_empty() {
            Err(entry.to_string())
        } else {
            Ok(list)
        }
    };
    let url = format!("http://[::1]:{}", port_of(&hub.url));
    for transport in ["udp", "tcp"] {
        let listed = wait_until("the hub lists the target's IPv6 endpoints", || {
            v6_endpoints(transport)
        });
        let out = cirrus(&[
            "call",
            "getnodeinfo",
            "{}",
            "--peer",
            &target.peer_id,
            "--rendezvous",
            &url,
            "--transport",
            transport,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{transport}: {stderr}");
        let info: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(info["peerId"], target.peer_id);
        let prefix = format!("path: direct ({transport} to ");
        let at: SocketAddr = stderr
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|l| l.split(')').next())
            .unwrap_or_else(|| panic!("{transport}: no direct path: {stderr}"))
            .parse()
            .unwrap();
        assert!(
            at.is_ipv6() && listed.contains(&at),
            "{transport}: {at} not in {listed:?}"
        );
    }
}
