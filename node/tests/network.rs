//! The network (issue 3) on real `cirrus` processes on loopback: replication and
//! convergence, catching up after a restart, a new node streaming a large database,
//! misbehaving peers (forged gossip, garbage on the sync protocol), and `relay`.
//!
//! Misbehaving peers are libp2p swarms inside the test process
//! (`support::rogue`). Nothing here waits a fixed time: every condition is polled
//! until it holds or [`TIMEOUT`] passes.

mod support;

use std::collections::{BTreeMap, HashSet};

use cirrus_node::p2p::{announce_topic, records_topic};
use cirrus_proto::gossip::{Batch, MAX_BATCH_RECORDS};
use cirrus_proto::record::{Author, Kind, Record};
use cirrus_proto::sync::{Request, Response};
use libp2p::identity::Keypair;
use serde_json::{Value, json};
use support::rogue::*;
use support::*;

/// What the nodes should hold: the winning record of every slot, by the conflict
/// rule (the tests never reuse a `seq` within a slot, so the higher `seq` wins).
#[derive(Default)]
struct Model {
    slots: BTreeMap<(Author, Kind, String), Record>,
}

impl Model {
    fn add(&mut self, r: &Record) {
        let slot = (r.author, r.kind, r.key.clone());
        if self.slots.get(&slot).is_none_or(|held| held.seq < r.seq) {
            self.slots.insert(slot, r.clone());
        }
    }

    fn add_all(&mut self, rs: &[Record]) {
        rs.iter().for_each(|r| self.add(r));
    }

    /// `getdbhash` without the root.
    fn totals(&self) -> Value {
        let live: Vec<u64> = self
            .slots
            .values()
            .filter(|r| r.kind == Kind::Rating)
            .filter_map(|r| r.value.as_ref().map(|v| v.parse::<u64>().unwrap()))
            .collect();
        json!({"records": self.slots.len(), "ratings": {"count": live.len(), "sum": live.iter().sum::<u64>()}})
    }
}

#[test]
fn five_nodes_converge_and_report_their_peers() {
    let net = TestNet::start(5, &[]);
    let nodes = net.nodes();
    let mut model = Model::default();

    for (i, node) in nodes.iter().enumerate() {
        let a = author(100 + i as u8);
        let docs: Vec<Record> = (0..30)
            .map(|k| doc(&a, &format!("doc-{k}"), 1, &format!("written on node {i}")))
            .collect();
        put_all_applied(node, &docs);
        model.add_all(&docs);
        // Every node rates the same targets, so each target's total comes from all five.
        let ratings: Vec<Record> = (0..4)
            .map(|t| rating(&a, &format!("film-{t}"), 1, Some(((i + t) % 5 + 1) as u8)))
            .collect();
        put_all_applied(node, &ratings);
        model.add_all(&ratings);
        for k in 0..3 {
            let r = doc(&a, &format!("single-{k}"), 1, "one put");
            assert_eq!(node.put(&r)["status"], "applied");
            model.add(&r);
        }
    }
    // One author, several nodes: a newer version and a withdrawn rating written
    // through other nodes than the originals must win everywhere.
    let shared = author(99);
    let writes = [
        (0, doc(&shared, "shared", 1, "old")),
        (3, doc(&shared, "shared", 2, "new")),
        (1, rating(&shared, "film-0", 1, Some(5))),
        (4, rating(&shared, "film-0", 2, None)),
    ];
    for (n, r) in &writes {
        assert_eq!(nodes[*n].put(r)["status"], "applied");
        model.add(r);
    }

    let root = wait_converged(&nodes, &model.totals(), "after the writes");
    let shared_key = shared.verifying_key().to_bytes();
    assert_eq!(
        get_record(nodes[2], &shared_key, "shared", Kind::Doc)["value"],
        "new"
    );
    assert_eq!(
        get_record(nodes[2], &shared_key, "film-0", Kind::Rating)["value"],
        Value::Null,
        "the withdrawn rating is a tombstone everywhere"
    );
    let film0 = nodes[4].ok("getrating", json!({"target": "film-0"}));
    let want: u64 = (0..5).map(|i| (i % 5 + 1) as u64).sum();
    assert_eq!(
        (film0["count"].as_u64(), film0["sum"].as_u64()),
        (Some(5), Some(want))
    );

    // The hub: nodes 2 to 5 dialed it, so it sees them all as inbound, each from
    // the address it listens on (dials leave from --bind).
    let hub = nodes[0];
    let others: HashSet<String> = nodes[1..].iter().map(|n| n.peer_id.clone()).collect();
    let peers = wait_until(
        "the hub reports ping, agent and root for every peer",
        || {
            let peers = hub.peers();
            let ids: HashSet<String> = peers
                .iter()
                .map(|p| p["peerId"].as_str().unwrap().to_string())
                .collect();
            let ready = ids == others
                && peers.iter().all(|p| {
                    p["pingMs"].is_number()
                        && p["agent"].is_string()
                        && p["dbRoot"] == root.as_str()
                });
            if ready {
                Ok(peers)
            } else {
                Err(Value::Array(peers).to_string())
            }
        },
    );
    for p in &peers {
        assert_eq!(p["direction"], "inbound", "{p}");
        let from = nodes.iter().find(|n| n.peer_id == p["peerId"]).unwrap();
        assert!(
            p["addr"]
                .as_str()
                .unwrap()
                .starts_with(&format!("/ip4/{}/tcp/", from.ip())),
            "{p} does not come from {}",
            from.ip()
        );
        assert!(p["agent"].as_str().unwrap().starts_with("cirrus/"), "{p}");
        // Unix seconds of the connection, as the hub's clock had them.
        let since = p["connectedSince"].as_u64().expect("connectedSince");
        assert!(since > 1_600_000_000, "{p}");
        assert!(p["pingMs"].as_f64().unwrap() >= 0.0, "{p}");
    }
    // And node 2 dialed the hub.
    let to_hub = wait_lists(nodes[1], &hub.peer_id);
    assert_eq!(to_hub["direction"], "outbound", "{to_hub}");

    let info = hub.ok("getnodeinfo", json!({}));
    assert!(info["peers"].as_u64().unwrap() >= 1, "{info}");
    let listen: Vec<&str> = info["listen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        listen.iter().any(|a| hub.listen[0].starts_with(a)),
        "getnodeinfo listen {listen:?} lacks {}",
        hub.listen[0]
    );
    assert_eq!(info["db"]["root"], root.as_str());
}

#[test]
fn a_stopped_node_catches_up_after_restart_with_and_without_bootstrap() {
    let mut net = TestNet::start(3, &[]);
    let boot = net.boot();
    let mut model = Model::default();
    let a = author(50);

    let first: Vec<Record> = (0..20)
        .map(|k| doc(&a, &format!("before-{k}"), 1, "v"))
        .collect();
    put_all_applied(net.node(0), &first);
    model.add_all(&first);
    wait_converged(&net.nodes(), &model.totals(), "before node 3 stops");
    // Node 3 must have learned its peers (identify) and saved them (every 10 s)
    // before it stops: a clean stop saves what is pending.
    wait_lists(net.node(2), &net.node(0).peer_id);
    let third_id = net.node(2).peer_id.clone();
    net.stop(2);
    let nodes = [net.node(0), net.node(1)];

    // Written while node 3 is down, on both remaining nodes.
    let on_first: Vec<Record> = (0..100)
        .map(|k| doc(&a, &format!("while-down-{k}"), 1, "v"))
        .collect();
    put_all_applied(nodes[0], &on_first);
    model.add_all(&on_first);
    let b = author(51);
    let on_second: Vec<Record> = (0..50)
        .map(|k| rating(&b, &format!("target-{k}"), 1, Some((k % 5 + 1) as u8)))
        .collect();
    put_all_applied(nodes[1], &on_second[..40]);
    for r in &on_second[40..] {
        assert_eq!(nodes[1].put(r)["status"], "applied");
    }
    model.add_all(&on_second);
    // A newer version of a record node 3 already holds.
    let newer = doc(&a, "before-0", 2, "changed while down");
    assert_eq!(nodes[1].put(&newer)["status"], "applied");
    model.add(&newer);
    wait_converged(&nodes, &model.totals(), "while node 3 is down");

    net.up(2, &["--bootstrap", &boot]);
    assert_eq!(net.node(2).peer_id, third_id, "same identity after restart");
    wait_converged(
        &net.nodes(),
        &model.totals(),
        "node 3 restarted with --bootstrap",
    );
    assert_eq!(
        get_record(
            net.node(2),
            &a.verifying_key().to_bytes(),
            "before-0",
            Kind::Doc
        )["value"],
        "changed while down"
    );
    net.stop(2);
    let nodes = [net.node(0), net.node(1)];

    // Down again; this time it restarts without --bootstrap and must find the network
    // through the peers it remembered.
    let later: Vec<Record> = (0..30)
        .map(|k| doc(&b, &format!("later-{k}"), 1, "v"))
        .collect();
    put_all_applied(nodes[1], &later);
    model.add_all(&later);
    wait_converged(&nodes, &model.totals(), "while node 3 is down again");
    net.up(2, &[]);
    wait_converged(
        &net.nodes(),
        &model.totals(),
        "node 3 restarted without --bootstrap",
    );
    let peers = net.node(2).peers();
    assert!(
        peers.iter().any(|p| p["direction"] == "outbound"),
        "the restarted node dialed a remembered peer: {peers:?}"
    );
}

#[test]
fn a_new_node_streams_a_large_database() {
    let mut net = TestNet::unstarted(3, &[]);
    net.up(0, &[]);
    let boot = net.boot();
    net.up(1, &["--bootstrap", &boot]);
    net.wait_star();
    let nodes = [net.node(0), net.node(1)];
    let mut model = Model::default();
    // About 5 MB of records: more than one 4 MB page of the bulk stream.
    let value = "x".repeat(2000);
    for batch in 0..12 {
        let a = author(70 + batch as u8);
        let mut records: Vec<Record> = (0..200)
            .map(|k| doc(&a, &format!("bulk-{k:04}"), 1, &value))
            .collect();
        records.push(rating(&a, "bulk-target", 1, Some((batch % 5 + 1) as u8)));
        put_all_applied(nodes[batch % 2], &records);
        model.add_all(&records);
    }
    let tombstone = Record::sign(&author(70), Kind::Doc, "bulk-0000", 2, None);
    assert_eq!(nodes[1].put(&tombstone)["status"], "applied");
    model.add(&tombstone);
    let want = model.totals();
    assert!(want["records"].as_u64().unwrap() > 2400);
    let root = wait_converged(&nodes, &want, "the first two nodes");

    net.up(2, &["--bootstrap", &boot]);
    let newcomer = net.node(2);
    let joined = wait_converged(&net.nodes(), &want, "with the newcomer");
    assert_eq!(joined, root);
    // It got them by anti-entropy (nothing was written since it started, so not
    // by gossip), every one.
    let synced = newcomer.metric("cirrus_sync_records_total", &[]);
    assert!(
        synced >= want["records"].as_f64().unwrap(),
        "{synced} records came by anti-entropy, of {want}"
    );
    let a = author(81).verifying_key().to_bytes();
    assert_eq!(
        get_record(newcomer, &a, "bulk-0199", Kind::Doc)["value"],
        value.as_str()
    );
    let gone = get_record(
        newcomer,
        &author(70).verifying_key().to_bytes(),
        "bulk-0000",
        Kind::Doc,
    );
    assert_eq!(
        (gone["seq"].as_u64(), gone["value"].clone()),
        (Some(2), Value::Null)
    );
}

/// With anti-entropy an hour away, records written on one node reach its peer by
/// gossip alone: the node publishes what its clients write.
#[test]
fn client_writes_reach_a_peer_by_gossip_alone() {
    let net = TestNet::start(2, &["--sync-interval-secs", "3600"]);
    let (a, b) = (net.node(0), net.node(1));
    let alice = author(63);
    let ak = alice.verifying_key().to_bytes();
    probe_until_gossip_reaches(a, b, &alice);
    // From then on every one does, without anti-entropy.
    let keys: Vec<String> = (0..20).map(|i| format!("gossip-{i}")).collect();
    for k in &keys {
        assert_eq!(a.put(&doc(&alice, k, 1, "v"))["status"], "applied");
    }
    wait_until("all 20 records reach B", || {
        let missing: Vec<&String> = keys
            .iter()
            .filter(|k| get_record(b, &ak, k, Kind::Doc).is_null())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {missing:?}"))
        }
    });
}

/// A client's write leaves its node without the linger, and however many single
/// puts come, the node sends at most one batch that is not full per
/// `HURRY_GAP`. The linger here is ten minutes, far past [`TIMEOUT`]: a record
/// that waited for it would never arrive in time, and every batch that is not
/// full went because a client wrote.
#[test]
fn client_writes_skip_the_linger_and_their_batches_are_bounded() {
    use cirrus_proto::gossip::HURRY_GAP;
    let net = TestNet::start(
        2,
        &[
            "--sync-interval-secs",
            "3600",
            "--gossip-linger-ms",
            "600000",
        ],
    );
    let (a, b) = (net.node(0), net.node(1));
    let alice = author(66);
    let sent = || a.metric("cirrus_gossip_batches_total", &[("direction", "sent")]);
    let n = probe_until_gossip_reaches(a, b, &alice);
    assert!(sent() >= 1.0, "no batch went");

    // Single puts from 8 clients at once. The bound counts from before the first
    // put to after the last, so a slow machine only loosens it; after the last
    // put at most the one hurried batch that waits for its gap can go.
    const CLIENTS: usize = 8;
    const EACH: usize = 125;
    let before = sent();
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let alice = &alice;
            s.spawn(move || {
                for i in 0..EACH {
                    let r = a.put(&doc(alice, &format!("single-{c}-{i}"), 1, "v"));
                    assert_eq!(r["status"], "applied");
                }
            });
        }
    });
    let elapsed = start.elapsed();
    let full = (CLIENTS * EACH).div_ceil(MAX_BATCH_RECORDS);
    let most = (elapsed.as_micros() / HURRY_GAP.as_micros()) as usize + 1 + full + 1;
    let want = (n + CLIENTS * EACH) as u64;
    wait_until("every single put reaches B", || {
        let got = b.db()["records"].as_u64().unwrap_or(0);
        if got >= want {
            Ok(())
        } else {
            Err(format!("{got} of {want}"))
        }
    });
    let batches = sent() - before;
    assert!(
        batches <= most as f64,
        "{batches} batches for {} single puts in {elapsed:?}: at most {most}",
        CLIENTS * EACH
    );
}

/// Until A has heard B's gossip subscription, a publish has nobody to go to: put a
/// record by `author` at a time until one arrives. Returns how many were put.
fn probe_until_gossip_reaches(
    a: &TestNode,
    b: &TestNode,
    author: &ed25519_dalek::SigningKey,
) -> usize {
    let ak = author.verifying_key().to_bytes();
    let mut n = 0;
    wait_until("a first record reaches B by gossip", || {
        n += 1;
        let key = format!("probe-{n}");
        a.put(&doc(author, &key, 1, "v"));
        std::thread::sleep(POLL);
        if get_record(b, &ak, &key, Kind::Doc).is_null() {
            Err(format!("{n} probes put"))
        } else {
            Ok(())
        }
    });
    n
}

/// An announcement as docs/network.md defines it: the signature by `key` over the
/// domain and the body, then the body with `key`'s public key in it.
fn announcement(key: &Keypair, signer: &Keypair, root: &str, at: u64) -> Vec<u8> {
    let body = json!({"key": hex::encode(key.public().encode_protobuf()), "root": root,
                      "records": 0, "epoch": 1, "position": 0, "at": at, "stunPort": 1,
                      "stun": {"address": null, "nat": "unknown", "udp": [], "tcp": []}})
    .to_string();
    let sig = signer
        .sign(&[b"cirrus-announce/3\n".as_slice(), body.as_bytes()].concat())
        .unwrap();
    [sig, body.into_bytes()].concat()
}

/// A peer's announcement sets its `dbRoot`; one whose signature is not by the key
/// it names is dropped and costs the sender score, and an older one changes nothing.
#[test]
fn announcements_are_taken_only_from_their_signer_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let key = Keypair::generate_ed25519();
    let swarm_key = key.clone();
    let mut rogue = Rogue::new(move || rogue_swarm(swarm_key), gossiper_chores);
    rogue
        .swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&announce_topic())
        .unwrap();
    rogue.connect(&node.listen[0]);
    let rogue_id = rogue.id();
    let root_of =
        |node: &TestNode| entry_for(node, &rogue_id).map_or(Value::Null, |e| e["dbRoot"].clone());

    let (first, second) = ("11".repeat(32), "22".repeat(32));
    rogue.publish_on(announce_topic(), announcement(&key, &key, &first, 1_000));
    rogue.wait_until("the node takes the rogue's own announcement", |_| {
        let root = root_of(&node);
        if root == first.as_str() {
            Ok(())
        } else {
            Err(root.to_string())
        }
    });
    let score = rogue.wait_until("the node scores the rogue", |_| score_of(&node, &rogue_id));
    assert!(
        score >= 0.0,
        "an honest announcer's score is not negative: {score}"
    );

    // Signed by someone else in the rogue's name: refused, twice. Properly signed
    // but older than what the node has: changes nothing. A valid record behind them
    // on the same connection shows when the node has seen all three.
    let other = Keypair::generate_ed25519();
    rogue.publish_on(announce_topic(), announcement(&key, &other, &second, 2_000));
    rogue.publish_on(announce_topic(), announcement(&key, &other, &second, 2_001));
    rogue.publish_on(announce_topic(), announcement(&key, &key, &second, 999));
    let a = author(62);
    rogue.publish(doc(&a, "after-announcements", 1, "v").encode());
    rogue.wait_until("the record behind the announcements is stored", |_| {
        let r = get_record(
            &node,
            &a.verifying_key().to_bytes(),
            "after-announcements",
            Kind::Doc,
        );
        if r.is_null() {
            Err(r.to_string())
        } else {
            Ok(())
        }
    });
    assert_eq!(
        root_of(&node),
        first.as_str(),
        "a forged or older announcement was taken"
    );
    rogue.wait_until("the rogue's score falls below 0", |_| {
        let s = score_of(&node, &rogue_id)?;
        if s < 0.0 {
            Ok(s)
        } else {
            Err(format!("score {s}"))
        }
    });

    // A newer one, properly signed, still gets through.
    let third = "33".repeat(32);
    rogue.publish_on(announce_topic(), announcement(&key, &key, &third, 3_000));
    rogue.wait_until("the newer announcement is taken", |_| {
        let root = root_of(&node);
        if root == third.as_str() {
            Ok(())
        } else {
            Err(root.to_string())
        }
    });
}

/// Over `max-peers`, a node lets go of the inbound peers it has had longest (none
/// in its first 20 s), down to three quarters of it. Here every node dials the
/// bootstrap node, which ends with at most 4 of the 6; each node keeps a peer, and
/// a record written anywhere still reaches every node.
#[test]
fn a_node_over_max_peers_lets_inbound_peers_go_and_records_still_reach_everyone() {
    let net = TestNet::start(7, &["--max-peers", "4"]);
    wait_until(
        "the bootstrap node is at most at max-peers, no node alone",
        || {
            let counts: Vec<usize> = net.nodes().iter().map(|n| n.peers().len()).collect();
            let let_go = net.node(0).metric("cirrus_peers_let_go_total", &[]);
            if counts[0] <= 4 && counts.iter().all(|&n| n >= 1) && let_go >= 2.0 {
                Ok(())
            } else {
                Err(format!(
                    "peers {counts:?}, {let_go} let go by the bootstrap node"
                ))
            }
        },
    );
    let alice = author(60);
    let ak = alice.verifying_key().to_bytes();
    assert_eq!(
        net.node(6).put(&doc(&alice, "after-trimming", 1, "v"))["status"],
        "applied"
    );
    wait_until("the record reaches every node", || {
        let missing: Vec<usize> = (0..net.len())
            .filter(|&i| get_record(net.node(i), &ak, "after-trimming", Kind::Doc).is_null())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("nodes {missing:?} lack it"))
        }
    });
}

/// A node whose bootstrap peer is down when it starts keeps dialing it while it
/// has no peers, and joins once the bootstrap peer is back.
#[test]
fn a_node_alone_redials_its_bootstrap_peer_until_it_answers() {
    let mut net = TestNet::unstarted(2, &[]);
    // A fixed swarm port (the address is the test's own), so the bootstrap
    // address stays right across the restart.
    let port = ["--p2p-port", "38080"];
    net.up(0, &port);
    let boot = net.boot();
    net.stop(0);
    net.up(1, &["--bootstrap", &boot]);
    assert!(net.node(1).peers().is_empty(), "a stopped node answered");
    net.up(0, &port);
    let first = net.node(0).info()["peerId"].clone();
    wait_until("the node has joined its bootstrap peer", || {
        let ids = net.node(1).peer_ids();
        if ids.contains(first.as_str().unwrap()) {
            Ok(())
        } else {
            Err(format!("peers {ids:?}"))
        }
    });
}

/// Who signed a gossiped announcement (the key named in its body).
fn signer_of(data: &[u8]) -> Option<libp2p::PeerId> {
    let body: Value = serde_json::from_slice(data.get(64..)?).ok()?;
    let key = hex::decode(body["key"].as_str()?).ok()?;
    Some(
        libp2p::identity::PublicKey::try_decode_protobuf(&key)
            .ok()?
            .to_peer_id(),
    )
}

/// An announcement reaches the announcer's direct peers and no further: a node
/// takes a peer's own and does not pass it on, even to a peer in its gossip mesh
/// (which does get what the node forwards on the records topic, and the node's own
/// announcements).
#[test]
fn announcements_reach_direct_peers_and_are_not_forwarded() {
    use libp2p::gossipsub::Event as Gossip;
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let key = Keypair::generate_ed25519();
    let swarm_key = key.clone();
    let mut announcer = Rogue::new(move || rogue_swarm(swarm_key), gossiper_chores);
    // The listener keeps every gossip message it gets, as (topic, bytes).
    let mut listener = Rogue::new(
        || rogue_swarm(Keypair::generate_ed25519()),
        |swarm, ev, kept: &mut Vec<Vec<u8>>| match ev {
            cirrus_node::p2p::BehaviourEvent::Gossipsub(Gossip::Message { message, .. }) => {
                let tag = u8::from(message.topic == announce_topic().hash());
                kept.push([vec![tag], message.data].concat());
            }
            other => gossiper_chores(swarm, other, kept),
        },
    );
    for g in [&mut announcer, &mut listener] {
        let gs = &mut g.swarm.behaviour_mut().gossipsub;
        gs.subscribe(&announce_topic()).unwrap();
        gs.subscribe(&records_topic()).unwrap();
    }
    let node_id = listener.connect(&node.listen[0]);
    announcer.connect(&node.listen[0]);
    let announcer_id = announcer.swarm.local_peer_id().to_owned();
    listener.wait_until("the node and the listener share both gossip meshes", |r| {
        let gs = &r.swarm.behaviour().gossipsub;
        let both = [announce_topic(), records_topic()]
            .iter()
            .all(|t| gs.mesh_peers(&t.hash()).any(|p| *p == node_id));
        if both { Ok(()) } else { Err("not yet".into()) }
    });

    let root = "44".repeat(32);
    announcer.publish_on(announce_topic(), announcement(&key, &key, &root, 1_000));
    announcer.wait_until("the node takes the announcer's own announcement", |_| {
        let got = entry_for(&node, &announcer_id.to_string()).map(|e| e["dbRoot"].clone());
        if got == Some(Value::from(root.as_str())) {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });
    // The node forwards a record the announcer publishes after it: by the time the
    // listener has that, it would have had the announcement before it.
    let a = author(61);
    let record = doc(&a, "behind-the-announcement", 1, "v").encode();
    announcer.publish(record.clone());
    listener.wait_until(
        "the node forwards the record and announces its new root",
        |r| {
            let forwarded = r.responses.iter().any(|m| {
                m[0] == 0
                    && Batch::split(&m[1..]).is_ok_and(|b| b.iter().any(|x| **x == record[..]))
            });
            let own = r
                .responses
                .iter()
                .any(|m| m[0] == 1 && signer_of(&m[1..]) == Some(node_id));
            if forwarded && own {
                Ok(())
            } else {
                Err(format!("record {forwarded}, node's announcement {own}"))
            }
        },
    );
    let relayed = listener
        .responses
        .iter()
        .filter(|m| m[0] == 1 && signer_of(&m[1..]) == Some(announcer_id))
        .count();
    assert_eq!(relayed, 0, "the node forwarded a peer's announcement");

    // Another node's announcement, properly signed, passed on by the announcer
    // (as a peer on an older version would): ignored, and no offence.
    let ignored = |n: &TestNode| n.metric("cirrus_announcements_total", &[("result", "ignored")]);
    let before = ignored(&node);
    let other = Keypair::generate_ed25519();
    announcer.publish_on(
        announce_topic(),
        announcement(&other, &other, &"55".repeat(32), 5_000),
    );
    announcer.wait_until("the node ignores the relayed announcement", |_| {
        let now = ignored(&node);
        if now > before {
            Ok(())
        } else {
            Err(format!("ignored {now}"))
        }
    });
    let score = score_of(&node, &announcer_id.to_string()).unwrap();
    assert!(score >= 0.0, "relaying an announcement cost score: {score}");
    let root_now = entry_for(&node, &announcer_id.to_string()).map(|e| e["dbRoot"].clone());
    assert_eq!(
        root_now,
        Some(Value::from(root.as_str())),
        "a relayed announcement was taken"
    );
}

/// Peers over `max-peers` are let go from those that dialed this node, never from
/// the peers it dialed itself: a flood of fresh connections (all within their
/// grace) cannot push out the peers a node picked.
#[test]
fn a_flood_of_inbound_peers_does_not_push_out_the_peers_a_node_dialed() {
    let mut net = TestNet::unstarted(2, &[]);
    net.up(0, &[]);
    let boot = net.boot();
    net.up(1, &["--bootstrap", &boot, "--max-peers", "4"]);
    let (picked, node) = (net.node(0).peer_id.clone(), net.node(1));
    // Until the node's own dial is past its grace, it could not be let go anyway.
    let since = wait_until("the node's dial is past its 20 s of grace", || {
        let entry = entry_for(node, &picked).ok_or("not connected")?;
        let since = entry["connectedSince"].as_u64().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if now >= since + 21 {
            Ok(since)
        } else {
            Err(format!("connected at {since}"))
        }
    });
    let mut flood: Vec<_> = (0..6)
        .map(|_| Rogue::new(|| rogue_swarm(Keypair::generate_ed25519()), gossiper_chores))
        .collect();
    for r in &mut flood {
        r.connect(&node.listen[0]);
    }
    // The node lets flood peers go (after their own grace) until it is within
    // max-peers; the peer it dialed stays on the same connection throughout.
    wait_until("the node is back within max-peers", || {
        let (n, gone) = (
            node.peers().len(),
            node.metric("cirrus_peers_let_go_total", &[]),
        );
        if n <= 4 && gone >= 3.0 {
            Ok(())
        } else {
            Err(format!("{n} peers, {gone} let go"))
        }
    });
    let entry = entry_for(node, &picked).expect("the peer the node dialed was let go");
    assert_eq!(
        entry["connectedSince"].as_u64(),
        Some(since),
        "the node's own dial was dropped"
    );
}

/// A rogue peer on the records topic, connected to `node`.
fn records_gossiper(node: &TestNode) -> Rogue<cirrus_node::p2p::Behaviour> {
    gossiper_with(node, gossiper_chores)
}

/// The same, with its own chores.
fn gossiper_with(
    node: &TestNode,
    chores: impl FnMut(
        &mut libp2p::Swarm<cirrus_node::p2p::Behaviour>,
        cirrus_node::p2p::BehaviourEvent,
        &mut Vec<Vec<u8>>,
    ) + 'static,
) -> Rogue<cirrus_node::p2p::Behaviour> {
    let mut rogue = Rogue::new(|| rogue_swarm(Keypair::generate_ed25519()), chores);
    rogue
        .swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&records_topic())
        .unwrap();
    rogue.connect(&node.listen[0]);
    rogue
}

/// How many of `keys` (documents by `author`) the node holds.
fn held(node: &TestNode, author: &Author, keys: &[&str]) -> usize {
    keys.iter()
        .filter(|k| !get_record(node, author, k, Kind::Doc).is_null())
        .count()
}

#[test]
fn forged_gossip_is_dropped_and_its_sender_loses_score() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let mut rogue = records_gossiper(&node);
    let rogue_id = rogue.id();
    let before = node.db()["records"].as_u64().unwrap();
    let a = author(60);
    let ak = a.verifying_key().to_bytes();

    // A valid record through the same path is stored: the path works.
    rogue.publish(doc(&a, "honest-1", 1, "v").encode());
    rogue.wait_until("the valid gossip record is stored", |_| {
        let r = get_record(&node, &ak, "honest-1", Kind::Doc);
        if r.is_null() {
            Err(r.to_string())
        } else {
            Ok(())
        }
    });
    let score = rogue.wait_until("the node scores the rogue", |_| score_of(&node, &rogue_id));
    assert!(
        score >= 0.0,
        "an honest peer's score is not negative: {score}"
    );

    let forged: Vec<Record> = (0..2)
        .map(|i| {
            let mut r = doc(&a, &format!("forged-{i}"), 1, "evil");
            r.sig[7] ^= 0x01;
            assert!(r.verify().is_err(), "the signature is broken");
            r
        })
        .collect();
    for r in &forged {
        rogue.publish(r.encode());
    }
    // Then a valid one again: it still gets through (two invalid messages are not
    // enough to graylist), and once it is stored the forged ones were seen too.
    rogue.publish(doc(&a, "honest-2", 1, "v").encode());
    let score = rogue.wait_until("the rogue's score falls below 0", |_| {
        let s = score_of(&node, &rogue_id)?;
        if s < 0.0 {
            Ok(s)
        } else {
            Err(format!("score {s}"))
        }
    });
    rogue.wait_until("the second valid record is stored", |_| {
        let r = get_record(&node, &ak, "honest-2", Kind::Doc);
        if r.is_null() {
            Err(r.to_string())
        } else {
            Ok(())
        }
    });
    for r in &forged {
        assert_eq!(
            get_record(&node, &ak, &r.key, Kind::Doc),
            Value::Null,
            "forged record {} was stored",
            r.key
        );
    }
    assert_eq!(
        node.db()["records"].as_u64().unwrap(),
        before + 2,
        "only the two valid records were stored (score {score})"
    );
}

/// A batch is judged whole for gossipsub (one forged record rejects it, and its
/// sender loses score) but its valid records are kept: they are signed by their
/// authors, whoever passed them on. Batches that break the framing's limits are
/// rejected and store nothing.
#[test]
fn forged_and_malformed_batches_cost_their_sender_and_store_no_forgery() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let mut rogue = records_gossiper(&node);
    let rogue_id = rogue.id();
    let a = author(63);
    let ak = a.verifying_key().to_bytes();
    let mut forged = doc(&a, "forged", 1, "evil");
    forged.sig[3] ^= 0x80;
    let mixed = [
        doc(&a, "mixed-1", 1, "v").encode(),
        forged.encode(),
        doc(&a, "mixed-2", 1, "v").encode(),
    ];
    rogue.publish_batch(&mixed);
    rogue.wait_until("both valid records of the mixed batch are stored", |_| {
        let held = held(&node, &ak, &["mixed-1", "mixed-2"]);
        if held == 2 {
            Ok(())
        } else {
            Err(format!("{held} of 2"))
        }
    });
    assert_eq!(get_record(&node, &ak, "forged", Kind::Doc), Value::Null);

    let tiny = doc(&a, "t", 1, "v").encode();
    let mut bad_version = Batch::encode(1, [&tiny[..]]);
    bad_version[0] = 9;
    let malformed = [
        bad_version,
        Batch::encode(2, vec![&tiny[..]; MAX_BATCH_RECORDS + 1]),
        Batch::encode(3, [&tiny[..]])[..20].to_vec(),
        b"not a batch at all".to_vec(),
    ];
    let invalid = |n: &TestNode| n.metric("cirrus_gossip_records_total", &[("result", "invalid")]);
    for m in malformed {
        rogue.publish_on(records_topic(), m);
    }
    rogue.wait_until(
        "the forged record and the four malformed batches are counted",
        |_| {
            let n = invalid(&node);
            if n >= 5.0 {
                Ok(())
            } else {
                Err(format!("{n} invalid"))
            }
        },
    );
    let score = rogue.wait_until("the rogue's score is negative", |_| {
        let s = score_of(&node, &rogue_id)?;
        if s < 0.0 {
            Ok(s)
        } else {
            Err(format!("score {s}"))
        }
    });
    assert_eq!(get_record(&node, &ak, "t", Kind::Doc), Value::Null);
    assert_eq!(
        node.db()["records"].as_u64(),
        Some(2),
        "only the two valid records were stored (score {score})"
    );
}

/// Every mesh peer sends a node each record once, so copies are the rule: a copy
/// of a record seen lately is dropped before it is decoded or verified. And
/// records written together leave the node together, in fewer batches than
/// records.
#[test]
fn copies_are_not_verified_again_and_records_written_together_share_a_batch() {
    use libp2p::gossipsub::Event as Gossip;
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    // The rogue keeps every records batch the node sends it.
    let mut rogue = gossiper_with(&node, |swarm, ev, kept: &mut Vec<Vec<u8>>| match ev {
        cirrus_node::p2p::BehaviourEvent::Gossipsub(Gossip::Message { message, .. })
            if message.topic == records_topic().hash() =>
        {
            kept.push(message.data)
        }
        other => gossiper_chores(swarm, other, kept),
    });
    let a = author(64);
    let ak = a.verifying_key().to_bytes();
    let [r, s, t] = ["r", "s", "t"].map(|k| doc(&a, k, 1, "v").encode());
    rogue.publish_batch(std::slice::from_ref(&r));
    rogue.publish_batch(&[r.clone(), s.clone()]);
    rogue.publish_batch(&[r.clone(), s.clone(), t.clone()]);
    rogue.wait_until("r, s and t are stored", |_| {
        let held = held(&node, &ak, &["r", "s", "t"]);
        if held == 3 {
            Ok(())
        } else {
            Err(format!("{held} of 3"))
        }
    });
    let duplicates = rogue.wait_until("the three copies are counted", |_| {
        let d = node.metric("cirrus_gossip_records_total", &[("result", "duplicate")]);
        if d >= 3.0 {
            Ok(d)
        } else {
            Err(format!("{d} duplicates"))
        }
    });
    assert_eq!(duplicates, 3.0);
    assert_eq!(
        node.metric("cirrus_records_verified_total", &[("origin", "gossip")]),
        3.0,
        "a signature was checked twice"
    );

    let b = author(65);
    let written: Vec<Record> = (0..20).map(|i| doc(&b, &format!("w{i}"), 1, "v")).collect();
    put_all_applied(&node, &written);
    let want: HashSet<Vec<u8>> = written.iter().map(Record::encode).collect();
    let batches = rogue.wait_until("the rogue has all 20 records", |r| {
        let got: Vec<Vec<Vec<u8>>> = r
            .responses
            .iter()
            .filter_map(|m| Batch::split(m).ok())
            .map(|b| b.into_iter().map(<[u8]>::to_vec).collect::<Vec<_>>())
            .filter(|b| b.iter().any(|x| want.contains(x)))
            .collect();
        let n = got.iter().flatten().filter(|x| want.contains(*x)).count();
        if n >= want.len() {
            Ok(got.len())
        } else {
            Err(format!("{n} of 20"))
        }
    });
    assert!(
        batches < want.len(),
        "20 records written in one call left in {batches} batches"
    );
}

#[test]
fn a_peer_sending_garbage_on_sync_is_disconnected_and_the_rest_go_on() {
    let net = TestNet::start(2, &[]);
    let (a, b) = (net.node(0), net.node(1));

    let mut rogue = Rogue::new(raw_swarm, raw_chores);
    let a_id = rogue.connect(&a.listen[0]);
    let rogue_id = rogue.id();
    rogue.wait_until("the node lists the rogue", |_| {
        entry_for(a, &rogue_id).ok_or("not listed".to_string())
    });

    // A well-formed request on the same raw path is answered, and the peer stays.
    rogue.swarm.behaviour_mut().send_request(
        &a_id,
        cbor(&Request::Range {
            after: None,
            max_bytes: 1 << 20,
        }),
    );
    let answer = rogue.wait_until("the node answers a range request", |r| {
        r.responses.pop().ok_or("no answer".to_string())
    });
    let page: Response = cbor4ii::serde::from_slice(&answer).expect("a cbor response");
    // A holds nothing yet: an empty last page.
    assert_eq!(
        page,
        Response::Range {
            records: Vec::new(),
            next: None
        }
    );
    assert!(rogue.connected.contains(&a_id));
    assert!(
        entry_for(a, &rogue_id).is_some(),
        "still listed after a valid request"
    );

    rogue
        .swarm
        .behaviour_mut()
        .send_request(&a_id, b"\xff\x00garbage".to_vec());
    rogue.wait_until("the node drops the rogue", |r| {
        let listed = entry_for(a, &rogue_id).is_some();
        if r.closed.contains(&a_id) && !listed {
            Ok(())
        } else {
            Err(format!("closed: {:?}, still listed: {listed}", r.closed))
        }
    });

    // The node goes on: it serves HTTP, keeps its honest peer, and replicates.
    assert!(
        entry_for(a, &b.peer_id).is_some(),
        "a dropped its honest peer"
    );
    assert!(entry_for(b, &a.peer_id).is_some(), "b lost a");
    let r = doc(&author(61), "after-garbage", 1, "still replicating");
    assert_eq!(b.put(&r)["status"], "applied");
    wait_until("a record written on b reaches a", || {
        let got = get_record(a, &r.author, &r.key, Kind::Doc);
        if got.is_null() {
            Err("absent".into())
        } else {
            Ok(())
        }
    });
}

#[test]
fn relay_reaches_a_connected_peer_and_nothing_else() {
    let net = TestNet::start(2, &[]);
    let (a, b) = (net.node(0), net.node(1));

    let getnodeinfo = json!({"jsonrpc": "2.0", "id": 9, "method": "getnodeinfo"});
    let r = a.ok(
        "relay",
        json!({"peerId": b.peer_id, "request": getnodeinfo}),
    );
    assert_eq!(r["jsonrpc"], "2.0", "{r}");
    assert_eq!(r["id"], 9, "{r}");
    assert_eq!(r["result"]["peerId"], b.peer_id, "{r}");
    assert_ne!(r["result"]["peerId"], a.peer_id, "{r}");

    // A write through the relay lands on b.
    let rec = doc(&author(62), "relayed", 1, "through a");
    let put = json!({"jsonrpc": "2.0", "id": 1, "method": "put", "params": {"record": rec}});
    let r = a.ok("relay", json!({"peerId": b.peer_id, "request": put}));
    assert_eq!(r["result"]["status"], "applied", "{r}");
    assert_eq!(
        get_record(b, &rec.author, "relayed", Kind::Doc)["value"],
        "through a"
    );

    let unknown = Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_string();
    let r = a.call("relay", json!({"peerId": unknown, "request": getnodeinfo}));
    assert_eq!(error_code(&r), -32005, "{r}");
    let r = a.call(
        "relay",
        json!({"peerId": "not-a-peer", "request": getnodeinfo}),
    );
    assert_eq!(error_code(&r), -32602, "{r}");

    // A relayed relay is refused: by a, which sees it...
    let inner = json!({"jsonrpc": "2.0", "id": 2, "method": "relay",
        "params": {"peerId": a.peer_id, "request": getnodeinfo}});
    let r = a.call("relay", json!({"peerId": b.peer_id, "request": inner}));
    assert_eq!(error_code(&r), -32602, "{r}");
    // ...and by b, when it comes hidden in a batch.
    let r = a.ok("relay", json!({"peerId": b.peer_id, "request": [inner]}));
    let answers = r
        .as_array()
        .unwrap_or_else(|| panic!("a batch answer: {r}"));
    assert_eq!(answers.len(), 1, "{r}");
    assert_eq!(error_code(&answers[0]), -32601, "{r}");
}

/// A node joins through a QUIC bootstrap address as well as through TCP: the swarm
/// listens on both (SPEC: 38080 TCP + UDP/QUIC), and the connection is QUIC.
#[test]
fn a_node_joins_over_quic() {
    let mut net = TestNet::unstarted(2, &[]);
    net.up(0, &[]);
    let quic = net
        .node(0)
        .listen
        .iter()
        .find(|a| a.contains("/quic-v1/"))
        .expect("a QUIC listen address")
        .clone();
    net.up(1, &["--bootstrap", &quic]);
    let (a, b) = (net.node(0), net.node(1));
    let entry = wait_lists(b, &a.peer_id);
    assert!(
        entry["addr"].as_str().unwrap().contains("/quic-v1"),
        "{entry}"
    );
    let r = doc(&author(64), "over-quic", 1, "v");
    b.put(&r);
    wait_converged(
        &[a, b],
        &b.db(),
        "a record written on B reaches A over QUIC",
    );
}
