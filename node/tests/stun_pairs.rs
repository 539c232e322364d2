//! STUN between peers (issue 4), on real processes: each node keeps a client pair
//! per peer, whose mappings come and go with the peer, in networks of two and of
//! five; a peer id in a request is remembered only with a valid signature, so no
//! one can put an address under another's id; and however many ids prove
//! themselves, `seen` stays bounded.
//!
//! Nothing waits a fixed time: conditions are polled until they hold or
//! [`TIMEOUT`] passes.

mod support;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use cirrus_proto::stun::{
    self, Attribute, Class, Message, binding_request, parse_binding_response, peer_signing_message,
};
use ed25519_dalek::{Signer, SigningKey};
use libp2p_identity::PeerId;
use serde_json::{Value, json};
use support::stun::*;
use support::*;

fn stun_info(node: &TestNode) -> Value {
    node.ok("getnodeinfo", json!({}))["stun"].clone()
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

// ---------------------------------------------------------------------------
// a. Client pairs between peers
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

// ---------------------------------------------------------------------------
// b. Peer-id signatures
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
