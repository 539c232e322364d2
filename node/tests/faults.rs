//! Network faults on five real `cirrus` processes: a partition with writes on both
//! sides (conflicting ones included), its healing, and a node that comes back with
//! a wiped data dir.
//!
//! How the partition is made: the five nodes first form one network. Nodes 4 and 5
//! are stopped (SIGTERM) and started again on their data dirs with `--no-redial`, 4
//! with no bootstrap and 5 with `--bootstrap` node 4. They come back on new ports
//! (port 0), so nodes 1 to 3 only know addresses that are dead; and with
//! `--no-redial`, 4 and 5 dial none of the peers they remember, and learn no others
//! from each other by peer exchange (each is the other's only peer). So sides A
//! (1, 2, 3) and B (4, 5) are two real networks that cannot reach each other, which
//! the test checks (`getpeerinfo`, and records written on one side stay there).
//! Healing: node 4 restarts once more, with redial and `--bootstrap` node 1.
//!
//! Nothing waits a fixed time: conditions are polled until they hold or [`TIMEOUT`].

mod support;

use std::collections::{BTreeMap, HashSet};

use cirrus_proto::record::{Author, Id, Kind, Record};
use serde_json::{Value, json};
use support::*;

/// The winner of every slot by the SPEC conflict rule (higher `seq`, then higher id).
#[derive(Default, Clone)]
struct Model {
    slots: BTreeMap<(Author, Kind, String), (Record, Id)>,
}

impl Model {
    fn add(&mut self, r: &Record) {
        let id = r.id();
        let slot = (r.author, r.kind, r.key.clone());
        let wins = match self.slots.get(&slot) {
            None => true,
            Some((held, held_id)) => r.supersedes(&id, held, held_id),
        };
        if wins {
            self.slots.insert(slot, (r.clone(), id));
        }
    }

    fn merge(&mut self, other: &Model) {
        other.slots.values().for_each(|(r, _)| self.add(r));
    }

    /// `getdbhash` without the root.
    fn totals(&self) -> Value {
        let live: Vec<u64> = self
            .slots
            .values()
            .filter_map(|(r, _)| r.rating().map(u64::from))
            .collect();
        json!({"records": self.slots.len(), "ratings": {"count": live.len(), "sum": live.iter().sum::<u64>()}})
    }

    fn winner(&self, author: &Author, kind: Kind, key: &str) -> &Record {
        &self.slots[&(*author, kind, key.to_string())].0
    }
}

/// Put records in one batch on `node`; each must be applied. Adds them to `model`.
fn put_all(node: &TestNode, model: &mut Model, records: &[Record]) {
    put_all_applied(node, records);
    records.iter().for_each(|r| model.add(r));
}

/// Each node holds exactly the model's winner in each of `slots`.
fn assert_winners(nodes: &[&TestNode], model: &Model, slots: &[(Author, Kind, &str)]) {
    for node in nodes {
        for (author, kind, key) in slots {
            let want = model.winner(author, *kind, key);
            let got = get_record(node, author, key, *kind);
            assert_eq!(
                (got["id"].as_str(), got["seq"].as_u64(), &got["value"]),
                (
                    Some(hex::encode(want.id()).as_str()),
                    Some(want.seq),
                    &json!(want.value)
                ),
                "node {} holds the wrong version of {} {key}",
                node.peer_id,
                kind.as_str()
            );
        }
    }
}

fn docs(a: &ed25519_dalek::SigningKey, prefix: &str, n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| doc(a, &format!("{prefix}-{i}"), 1, prefix))
        .collect()
}

#[test]
fn partition_heal_and_a_wiped_node_resyncs() {
    let mut net = TestNet::start(5, &[]);

    // One network, one database.
    let mut model = Model::default();
    for i in 0..5 {
        put_all(
            net.node(i),
            &mut model,
            &docs(&author(150 + i as u8), "joined", 20),
        );
    }
    let x = author(160); // writes the contested slots on both sides
    put_all(
        net.node(0),
        &mut model,
        &[doc(&x, "seq", 1, "before"), rating(&x, "film", 1, Some(2))],
    );
    wait_converged(&net.nodes(), &model.totals(), "before the partition");

    // Partition: 4 and 5 come back on new ports, knowing only each other.
    let side_a_ids: HashSet<String> = (0..3).map(|i| net.node(i).peer_id.clone()).collect();
    let side_b_ids: HashSet<String> =
        [net.node(3).peer_id.clone(), net.node(4).peer_id.clone()].into();
    net.stop(3);
    net.stop(4);
    net.up(3, &["--no-redial"]);
    let four = net.node(3).listen[0].clone();
    net.up(4, &["--no-redial", "--bootstrap", &four]);
    let (n4, n5) = (net.node(3), net.node(4));
    assert!(side_b_ids.contains(&n4.peer_id) && side_b_ids.contains(&n5.peer_id));
    wait_until("4 and 5 are each other's only peer", || {
        let (p4, p5) = (n4.peer_ids(), n5.peer_ids());
        if p4 == HashSet::from([n5.peer_id.clone()]) && p5 == HashSet::from([n4.peer_id.clone()]) {
            Ok(())
        } else {
            Err(format!("4 has {p4:?}, 5 has {p5:?}"))
        }
    });
    let side_a: Vec<&TestNode> = (0..3).map(|i| net.node(i)).collect();
    let side_b: Vec<&TestNode> = (3..5).map(|i| net.node(i)).collect();
    wait_until("side A lists no peer of side B", || {
        let seen: Vec<HashSet<String>> = side_a.iter().map(|n| n.peer_ids()).collect();
        if seen.iter().all(|s| s.is_disjoint(&side_b_ids)) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });

    // Writes on both sides. Contested slots of author x: a higher seq on B, a higher
    // seq on A, an equal seq (the higher id wins), and a rating set on A but
    // withdrawn with a higher seq on B.
    let (mut on_a, mut on_b) = (model.clone(), model.clone());
    put_all(side_a[0], &mut on_a, &docs(&author(170), "side-a", 30));
    put_all(side_a[2], &mut on_a, &docs(&author(171), "side-a2", 10));
    put_all(side_b[1], &mut on_b, &docs(&author(172), "side-b", 30));
    put_all(
        side_a[1],
        &mut on_a,
        &[
            doc(&x, "seq", 3, "A, seq 3"),
            doc(&x, "seq-2", 9, "A, seq 9"),
            doc(&x, "tie", 4, "A, seq 4"),
            rating(&x, "film", 2, Some(5)),
            rating(&author(170), "film", 1, Some(4)),
        ],
    );
    put_all(
        side_b[0],
        &mut on_b,
        &[
            doc(&x, "seq", 7, "B, seq 7"),
            doc(&x, "seq-2", 2, "B, seq 2"),
            doc(&x, "tie", 4, "B, seq 4"),
            rating(&x, "film", 3, None),
            rating(&author(172), "film", 1, Some(1)),
        ],
    );
    let root_a = wait_converged(&side_a, &on_a.totals(), "side A during the partition");
    let root_b = wait_converged(&side_b, &on_b.totals(), "side B during the partition");
    assert_ne!(root_a, root_b);
    // Still apart: no peer across, and nothing crossed.
    for n in &side_a {
        assert!(
            n.peer_ids().is_disjoint(&side_b_ids),
            "{} reached side B",
            n.peer_id
        );
    }
    for n in &side_b {
        assert!(
            n.peer_ids().is_disjoint(&side_a_ids),
            "{} reached side A",
            n.peer_id
        );
        let a_key = author(170).verifying_key().to_bytes();
        assert_eq!(get_record(n, &a_key, "side-a-0", Kind::Doc), Value::Null);
    }

    // Heal: node 4 restarts with redial and a bootstrap address on side A.
    net.stop(3);
    let boot = net.boot();
    net.up(3, &["--bootstrap", &boot]);
    model = on_a.clone();
    model.merge(&on_b);
    let all = net.nodes();
    let healed = wait_converged(&all, &model.totals(), "after healing");
    let xk = x.verifying_key().to_bytes();
    let contested = [
        (xk, Kind::Doc, "seq"),
        (xk, Kind::Doc, "seq-2"),
        (xk, Kind::Doc, "tie"),
        (xk, Kind::Rating, "film"),
    ];
    assert_winners(&all, &model, &contested);
    assert_eq!(
        model.winner(&xk, Kind::Doc, "seq").value.as_deref(),
        Some("B, seq 7")
    );
    assert_eq!(
        model.winner(&xk, Kind::Doc, "seq-2").value.as_deref(),
        Some("A, seq 9")
    );
    assert_eq!(model.winner(&xk, Kind::Rating, "film").value, None);
    for n in &all {
        let film = n.ok("getrating", json!({"target": "film"}));
        assert_eq!(
            (film["count"].as_u64(), film["sum"].as_u64()),
            (Some(2), Some(5)),
            "x withdrew its rating; 170 gave 4 and 172 gave 1: {film}"
        );
    }

    // Node 3 comes back with a wiped data dir: a new identity that streams it all.
    let old_id = net.node(2).peer_id.clone();
    net.stop(2);
    std::fs::remove_dir_all(net.dir(2)).unwrap();
    std::fs::create_dir(net.dir(2)).unwrap();
    let five = net.node(4).listen[0].clone();
    net.up(2, &["--bootstrap", &five]);
    assert_ne!(
        net.node(2).peer_id,
        old_id,
        "a wiped data dir is a new identity"
    );
    assert_eq!(
        wait_converged(&net.nodes(), &model.totals(), "after the wipe"),
        healed
    );
    // It came empty and got every record by anti-entropy.
    let synced = net.node(2).metric("cirrus_sync_records_total", &[]);
    let want = model.totals()["records"].as_f64().unwrap();
    assert!(
        synced >= want,
        "{synced} records by anti-entropy, of {want}"
    );
    assert_winners(&[net.node(2)], &model, &contested);
}
