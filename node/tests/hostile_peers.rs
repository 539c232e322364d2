//! The node against a hostile peer: a libp2p peer inside the test process that
//! speaks the node's own protocols (support::rogue) and abuses them. Each test
//! asserts the bound that holds, counted on the node's side.

mod support;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use cirrus_node::p2p::BehaviourEvent;
use cirrus_proto::peer::{self, PeerEntry};
use cirrus_proto::sync::{self, Item};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, Message};
use libp2p::{Multiaddr, PeerId, Swarm};
use serde_bytes::ByteBuf;
use support::rogue::*;
use support::*;

type Node = cirrus_node::p2p::Behaviour;

/// A loopback address no other test uses, from the process id and `n`.
fn own_ip(n: u8) -> String {
    format!("127.249.{}.{n}", std::process::id() % 250)
}

/// A node on an address of its own (so it reaches loopback only, as a testnet
/// node does).
fn node_on(n: u8, args: &[&str]) -> (TestNode, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start_on(&own_ip(n), dir.path(), args);
    (node, dir)
}

/// A peer exchange answer cannot aim our dials: at most 64 entries are taken, at
/// most 4 new peers dialed per answer, addresses this node cannot use are dropped,
/// and what the node remembers stays bounded.
#[test]
fn peer_exchange_cannot_aim_our_dials() {
    let (node, _dir) = node_on(1, &["--max-known-peers", "100"]);
    // Ten listeners the entries point at, on addresses of their own; each counts
    // the connections made to it.
    let dialed = Arc::new(AtomicUsize::new(0));
    let mut targets = Vec::new();
    for k in 0..10u8 {
        let l = TcpListener::bind((own_ip(100 + k).as_str(), 0)).unwrap();
        targets.push(l.local_addr().unwrap());
        let dialed = dialed.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                if s.is_ok() {
                    dialed.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    let answered = Arc::new(AtomicUsize::new(0));
    let entries: Vec<PeerEntry> = (0..5000)
        .map(|i| {
            let addr: Multiaddr = match i % 5 {
                0 => format!(
                    "/ip4/{}/tcp/{}",
                    targets[i % 10].ip(),
                    targets[i % 10].port()
                ),
                1 => "/ip4/10.0.0.1/tcp/22".into(),
                2 => "/ip4/198.51.100.1/tcp/80".into(),
                3 => "/ip4/0.0.0.0/tcp/1".into(),
                _ => "/ip4/224.0.0.1/udp/5353/quic-v1".into(),
            }
            .parse()
            .unwrap();
            PeerEntry {
                peer: PeerId::random().to_bytes().into(),
                addrs: vec![addr.to_vec().into()],
            }
        })
        .collect();
    let (seen, list) = (answered.clone(), entries.clone());
    let mut rogue = Rogue::new(
        || rogue_swarm(Keypair::generate_ed25519()),
        move |swarm: &mut Swarm<Node>, ev, _| match ev {
            BehaviourEvent::Peer(request_response::Event::Message {
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            }) => {
                let answer = match request {
                    cirrus_node::p2p::Inbound::Valid(peer::Request::Peers) => {
                        seen.fetch_add(1, Ordering::SeqCst);
                        peer::Response::Peers(list.clone())
                    }
                    _ => peer::Response::Refused("no".into()),
                };
                let _ = swarm.behaviour_mut().peer.send_response(channel, answer);
            }
            other => gossiper_chores(swarm, other, &mut Vec::new()),
        },
    );
    rogue.connect(&node.listen[0]);
    rogue.wait_until("the node took our peer exchange answer", |_| {
        let taken = node.metric("cirrus_peer_exchange_total", &[("result", "taken")]);
        if taken > 0.0 {
            Ok(())
        } else {
            Err(node
                .metrics()
                .lines()
                .filter(|l| l.contains("exchange") || l.contains("peers"))
                .collect::<Vec<_>>()
                .join("\n"))
        }
    });
    rogue.pump(std::time::Duration::from_millis(500));
    let m = node.metrics();
    let exchanges = answered.load(Ordering::SeqCst) as f64;
    let taken = metric_in(&m, "cirrus_peer_exchange_total", &[("result", "taken")]);
    let dials = metric_in(&m, "cirrus_peer_exchange_total", &[("result", "dialed")]);
    assert!(
        taken <= 64.0 * exchanges,
        "{taken} entries taken from {exchanges} answers"
    );
    assert!(
        dials <= 4.0 * exchanges,
        "{dials} dials from {exchanges} answers"
    );
    assert!(
        dialed.load(Ordering::SeqCst) as f64 <= 4.0 * exchanges,
        "{} connections reached the targets",
        dialed.load(Ordering::SeqCst)
    );
    // Of 64 entries taken, 4 in 5 point nowhere this node may go: at most the
    // loopback ones are remembered, and never more than max-known-peers.
    let known = metric_in(&m, "cirrus_known_peers", &[]);
    assert!(known <= 100.0, "{known} peers remembered");
    assert!(node.db()["records"] == 0, "the node still serves");
}

/// A hello answered with something that is not the peer's own announcement gets
/// the peer disconnected; a flood of announcements costs at most 100 signature
/// checks a second from one peer.
#[test]
fn bad_hellos_disconnect_and_announcement_floods_are_cheap() {
    let (node, _dir) = node_on(2, &[]);
    let mut liar = Rogue::new(
        || rogue_swarm(Keypair::generate_ed25519()),
        |swarm: &mut Swarm<Node>, ev, _| match ev {
            BehaviourEvent::Peer(request_response::Event::Message {
                message: Message::Request { channel, .. },
                ..
            }) => {
                let junk = peer::Response::Hello(ByteBuf::from(vec![7u8; 200]));
                let _ = swarm.behaviour_mut().peer.send_response(channel, junk);
            }
            other => gossiper_chores(swarm, other, &mut Vec::new()),
        },
    );
    let id = liar.connect(&node.listen[0]);
    liar.wait_until("the node drops the peer whose hello is junk", |r| {
        if r.closed.contains(&id) {
            Ok(())
        } else {
            Err(format!("{:?}", r.closed))
        }
    });

    let key = Keypair::generate_ed25519();
    let k = key.clone();
    let mut flood = Rogue::new(move || rogue_swarm(k), gossiper_chores);
    flood
        .swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&cirrus_node::p2p::announce_topic())
        .unwrap();
    flood.connect(&node.listen[0]);
    let rogue_id = flood.id();
    flood.wait_until("the node lists the flooder", |_| {
        entry_for(&node, &rogue_id).ok_or("not yet".to_string())
    });
    let started = Instant::now();
    let n = 1500u64;
    for at in 0..n {
        flood.publish_on(
            cirrus_node::p2p::announce_topic(),
            announcement(&key, &"11".repeat(32), 1_000 + at),
        );
    }
    let secs = flood.wait_until("the node is done with the flood", |_| {
        let m = node.metrics();
        let all = metric_in(&m, "cirrus_announcements_total", &[]);
        if all >= n as f64 - 1.0 {
            Ok(started.elapsed().as_secs_f64())
        } else {
            Err(format!("{all} announcements handled"))
        }
    });
    let m = node.metrics();
    let checked = metric_in(&m, "cirrus_announcements_total", &[("result", "taken")])
        + metric_in(&m, "cirrus_announcements_total", &[("result", "invalid")]);
    assert!(
        checked <= 100.0 * (secs + 1.0) + 1.0,
        "{checked} announcements checked in {secs:.1} s from one peer"
    );
}

/// An announcement as docs/network.md defines it, signed by `key`.
fn announcement(key: &Keypair, root: &str, at: u64) -> Vec<u8> {
    let body = serde_json::json!({"key": hex::encode(key.public().encode_protobuf()), "root": root,
        "records": 0, "epoch": 1, "position": 0, "at": at, "stunPort": 1,
        "stun": {"address": null, "nat": "unknown", "udp": [], "tcp": []}})
    .to_string();
    let sig = key
        .sign(&[b"cirrus-announce/3\n".as_slice(), body.as_bytes()].concat())
        .unwrap();
    [sig, body.into_bytes()].concat()
}

/// Sync: a request over the item limit disconnects the peer; a record repeated in
/// one message is verified once, and one the node holds already is not verified
/// again.
#[test]
fn abusive_sync_is_refused_and_repeats_cost_nothing() {
    let (node, _dir) = node_on(3, &[]);
    let mut rogue = Rogue::new(raw_swarm, raw_chores);
    let id = rogue.connect(&node.listen[0]);
    let cbor = |r: &sync::Request| cbor4ii::serde::to_vec(Vec::new(), r).unwrap();

    let held = doc(&author(20), "held", 1, "v");
    node.put(&held);
    let fresh = doc(&author(20), "fresh", 1, "v");
    let verified = |n: &TestNode| n.metric("cirrus_records_verified_total", &[("origin", "sync")]);
    let before = verified(&node);
    // The same new record 100 times, and the held one 100 times, in one message.
    let mut items: Vec<ByteBuf> = Vec::new();
    for _ in 0..100 {
        items.push(fresh.encode().into());
        items.push(held.encode().into());
    }
    let req = sync::Request::Reconcile(vec![Item::Records(items)]);
    rogue.swarm.behaviour_mut().send_request(&id, cbor(&req));
    rogue.wait_until("the node answers the repeats", |r| {
        r.responses.pop().ok_or("no answer".to_string())
    });
    assert_eq!(
        verified(&node) - before,
        1.0,
        "the repeats were verified again"
    );
    assert_eq!(
        get_record(
            &node,
            &fresh.author,
            "fresh",
            cirrus_proto::record::Kind::Doc
        )["seq"],
        1
    );

    // Over the item limit: a protocol violation.
    let too_many = sync::Request::Reconcile(
        (0..2049)
            .map(|_| Item::Empty {
                path: ByteBuf::from(vec![0u8]),
            })
            .collect(),
    );
    rogue
        .swarm
        .behaviour_mut()
        .send_request(&id, cbor(&too_many));
    rogue.wait_until("the node drops the peer", |r| {
        if r.closed.contains(&id) {
            Ok(())
        } else {
            Err(format!("{:?}", r.closed))
        }
    });
}

/// A sketch longer than the symbols a node keeps in memory costs it a scan of every
/// record. A peer gets four at once and then one per 15 s; the rest are refused,
/// and the peer stays connected and is still served short ones.
#[test]
fn long_sketches_are_rationed_per_peer() {
    let (node, _dir) = node_on(4, &[]);
    node.put(&doc(&author(21), "k", 1, "v"));
    let mut rogue = Rogue::new(raw_swarm, raw_chores);
    let id = rogue.connect(&node.listen[0]);
    // A well-formed sketch of ten records the node does not hold.
    let sketch = |n: usize| {
        let items = (0..10u8).map(|i| sync::item(&[i; 32], &[i; 32]));
        let sk = sync::riblt::Sketch::new(items, n);
        sync::Request::Sketch {
            root: ByteBuf::from(vec![7u8; 32]),
            records: 10,
            symbols: ByteBuf::from(sync::encode_symbols(sk.prefix(n))),
            buckets: ByteBuf::new(),
        }
    };
    let ask = |rogue: &mut Rogue<RawBehaviour>, req: &sync::Request| {
        rogue.swarm.behaviour_mut().send_request(&id, cbor(req));
        let bytes = rogue.wait_until("the node answers the sketch", |r| {
            r.responses.pop().ok_or("no answer".to_string())
        });
        cbor4ii::serde::from_slice::<sync::Response>(&bytes).unwrap()
    };
    let asked = 12;
    let started = Instant::now();
    let mut refused = 0;
    for _ in 0..asked {
        // One at a time: two at once from one peer are refused for another reason.
        match ask(&mut rogue, &sketch(cirrus_node::store::CACHED + 1)) {
            sync::Response::Refused(_) => refused += 1,
            sync::Response::Decoded { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let long = |result| node.metric("cirrus_sync_long_sketches_total", &[("result", result)]);
    let served = asked - refused;
    assert_eq!(long("served"), served as f64);
    assert_eq!(long("refused"), refused as f64);
    // The burst, plus what the 15 s refill gave while the test ran.
    let allowed = 4 + (elapsed / 15.0).floor() as usize;
    assert!(served >= 4, "{served} served");
    assert!(served <= allowed, "{served} served in {elapsed:.1} s");
    // A short sketch is still answered, on the same connection.
    match ask(&mut rogue, &sketch(64)) {
        sync::Response::Decoded { .. } | sync::Response::Need(_) => {}
        other => panic!("{other:?}"),
    }
    assert!(rogue.connected.contains(&id) && !rogue.closed.contains(&id));
}
