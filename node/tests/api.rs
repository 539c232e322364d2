//! The HTTP JSON-RPC API of one real node: methods, batches, conflict rule, proofs.

mod support;

use cirrus_proto::api::GetResult;
use cirrus_proto::record::{Kind, Slot};
use serde_json::{Value, json};
use support::*;

#[test]
fn put_get_list_rating_and_dbhash() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let empty = node.db();
    assert_eq!(empty["records"], 0);
    assert_eq!(empty["root"], "0".repeat(64));

    let alice = author(1);
    let r = doc(&alice, "greeting", 1, "hello");
    let res = node.put(&r);
    assert_eq!(res["status"], "applied");
    assert_eq!(res["id"], hex::encode(r.id()));
    assert_eq!(node.put(&r)["status"], "duplicate");

    let got = node.ok(
        "get",
        json!({"author": hex::encode(r.author), "key": "greeting"}),
    );
    assert_eq!(got["record"]["value"], "hello");
    assert_eq!(got["record"]["id"], hex::encode(r.id()));
    assert!(got.get("proof").is_none());

    node.put(&rating(&alice, "film", 1, Some(4)));
    node.put(&rating(&author(2), "film", 1, Some(1)));
    let rt = node.ok("getrating", json!({"target": "film"}));
    assert_eq!(
        (rt["count"].as_u64(), rt["sum"].as_u64()),
        (Some(2), Some(5))
    );
    assert_eq!(rt["average"], 2.5);
    let none = node.ok("getrating", json!({"target": "nothing"}));
    assert_eq!(
        (none["count"].as_u64(), none["average"].clone()),
        (Some(0), Value::Null)
    );

    let db = node.db();
    assert_eq!(db["records"], 3);
    assert_eq!(db["ratings"], json!({"count": 2, "sum": 5}));
    assert_ne!(db["root"], empty["root"]);

    let info = node.ok("getnodeinfo", json!({}));
    assert_eq!(info["peerId"], node.peer_id);
    assert_eq!(info["db"], db);
    assert_eq!(
        info["ports"]["http"].as_u64().unwrap(),
        node.url.rsplit(':').next().unwrap().parse::<u64>().unwrap()
    );
    assert!(info["version"].is_string() && info["uptime"].is_u64());
}

#[test]
fn conflict_rule_stale_newer_and_equal_seq() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let a = author(3);
    let v2 = doc(&a, "k", 2, "two");
    let v1 = doc(&a, "k", 1, "one");
    assert_eq!(node.put(&v2)["status"], "applied");
    assert_eq!(node.put(&v1)["status"], "stale");
    let x = doc(&a, "k", 2, "x");
    // Equal seq: the higher id wins, whichever arrives first.
    let (hi, lo) = if x.id() > v2.id() {
        (&x, &v2)
    } else {
        (&v2, &x)
    };
    assert_eq!(
        node.put(&x)["status"],
        if x.id() > v2.id() { "applied" } else { "stale" }
    );
    assert_eq!(node.put(lo)["status"], "stale");
    let got = node.ok(
        "get",
        json!({"author": hex::encode(a.verifying_key().to_bytes()), "key": "k"}),
    );
    assert_eq!(got["record"]["id"], hex::encode(hi.id()));
    // A tombstone with a higher seq replaces the value and is kept.
    let del = cirrus_proto::record::Record::sign(&a, Kind::Doc, "k", 3, None);
    assert_eq!(node.put(&del)["status"], "applied");
    let got = node.ok(
        "get",
        json!({"author": hex::encode(a.verifying_key().to_bytes()), "key": "k"}),
    );
    assert_eq!(got["record"]["value"], Value::Null);
    assert_eq!(node.db()["records"], 1);
}

#[test]
fn rating_updates_and_tombstones_move_the_aggregates() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let a = author(4);
    node.put(&rating(&a, "t", 1, Some(5)));
    node.put(&rating(&a, "t", 2, Some(2)));
    let rt = node.ok("getrating", json!({"target": "t"}));
    assert_eq!(
        (rt["count"].as_u64(), rt["sum"].as_u64()),
        (Some(1), Some(2))
    );
    node.put(&rating(&a, "t", 3, None));
    let rt = node.ok("getrating", json!({"target": "t"}));
    assert_eq!(rt["count"], 0);
    assert_eq!(node.db()["ratings"], json!({"count": 0, "sum": 0}));
    assert_eq!(
        node.db()["records"],
        1,
        "the tombstone still occupies the slot"
    );
}

#[test]
fn proofs_of_presence_and_absence_verify_against_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let a = author(5);
    for i in 0..300 {
        node.put(&doc(&a, &format!("key{i}"), 1, "v"));
    }
    let root = node.db()["root"].clone();
    for (key, present) in [("key7", true), ("key299", true), ("absent", false)] {
        let res = node.ok(
            "get",
            json!({"author": hex::encode(a.verifying_key().to_bytes()), "key": key, "proof": true}),
        );
        assert_eq!(res["root"], root);
        let res: GetResult = serde_json::from_value(res).unwrap();
        let slot = Slot {
            author: a.verifying_key().to_bytes(),
            kind: Kind::Doc,
            key: key.into(),
        };
        let proven = res
            .proof
            .unwrap()
            .verify(&res.root.unwrap(), &slot.hash())
            .unwrap();
        assert_eq!(proven.is_some(), present, "{key}");
        if present {
            assert_eq!(proven, res.record.map(|r| r.id));
        }
    }
}

#[test]
fn list_pages_through_everything_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let authors = [author(6), author(7), author(8)];
    let mut batch = Vec::new();
    for (n, a) in authors.iter().enumerate() {
        for i in 0..90 {
            let r = if i % 3 == 0 {
                rating(a, &format!("item{i:03}"), 1, Some(3))
            } else {
                doc(a, &format!("item{i:03}"), 1, "v")
            };
            batch.push(json!({"jsonrpc": "2.0", "id": n * 1000 + i, "method": "put", "params": {"record": r}}));
        }
    }
    let out = node.rpc(&Value::Array(batch));
    assert!(
        out.as_array()
            .unwrap()
            .iter()
            .all(|r| r["result"]["status"] == "applied")
    );

    let collect = |params: Value, limit: usize| {
        let mut seen = Vec::new();
        let mut after = Value::Null;
        loop {
            let mut p = params.clone();
            p["limit"] = json!(limit);
            if !after.is_null() {
                p["after"] = after.clone();
            }
            let page = node.ok("list", p);
            let recs = page["records"].as_array().unwrap();
            assert!(recs.len() <= limit);
            seen.extend(recs.iter().map(|r| {
                (
                    r["author"].as_str().unwrap().to_string(),
                    r["kind"].as_str().unwrap().to_string(),
                    r["key"].as_str().unwrap().to_string(),
                )
            }));
            after = page["next"].clone();
            if after.is_null() {
                return seen;
            }
        }
    };
    let all = collect(json!({}), 100);
    assert_eq!(all.len(), 270);
    let mut dedup = all.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 270, "no record twice");

    let a6 = hex::encode(authors[0].verifying_key().to_bytes());
    assert_eq!(collect(json!({"author": a6}), 7).len(), 90);
    assert_eq!(
        collect(json!({"author": a6, "kind": "rating"}), 7).len(),
        30
    );
    assert_eq!(collect(json!({"kind": "doc"}), 1000).len(), 180);
    assert_eq!(collect(json!({"prefix": "item01"}), 4).len(), 30);
    assert_eq!(
        collect(json!({"kind": "rating", "prefix": "item00"}), 50).len(),
        3 * 4
    );

    // A cursor from a query without author does not fit a query with one.
    let page = node.ok("list", json!({"limit": 1}));
    let r = node.call("list", json!({"author": a6, "after": page["next"]}));
    assert_eq!(error_code(&r), -32602);
    for bad in [
        json!({"limit": 0}),
        json!({"limit": 1001}),
        json!({"after": "zz"}),
        json!({"prefix": "a\u{0}"}),
        json!({"kind": "blob"}),
    ] {
        assert_eq!(error_code(&node.call("list", bad.clone())), -32602, "{bad}");
    }
}

#[test]
fn batches_keep_order_skip_notifications_and_share_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let a = author(9);
    let good = doc(&a, "k1", 1, "v");
    let mut bad = doc(&a, "k2", 1, "v");
    bad.sig[0] ^= 1;
    let batch = json!([
        {"jsonrpc": "2.0", "id": "a", "method": "put", "params": {"record": good}},
        {"jsonrpc": "2.0", "id": "b", "method": "getdbhash"},
        {"jsonrpc": "2.0", "method": "put", "params": {"record": doc(&a, "k3", 1, "notified")}},
        {"jsonrpc": "2.0", "id": "c", "method": "put", "params": {"record": bad}},
        {"jsonrpc": "2.0", "id": "d", "method": "nosuch"},
        42
    ]);
    let out = node.rpc(&batch);
    let out = out.as_array().unwrap();
    let ids: Vec<_> = out.iter().map(|r| r["id"].clone()).collect();
    assert_eq!(
        ids,
        vec![json!("a"), json!("b"), json!("c"), json!("d"), Value::Null]
    );
    assert_eq!(out[0]["result"]["status"], "applied");
    assert_eq!(out[2]["error"]["code"], -32001);
    assert_eq!(out[3]["error"]["code"], -32601);
    assert_eq!(out[4]["error"]["code"], -32600);
    assert_eq!(
        node.db()["records"],
        2,
        "the notification's put was applied too"
    );

    let (status, body) =
        node.post(serde_json::to_vec(&json!([{"jsonrpc": "2.0", "method": "getdbhash"}])).unwrap());
    assert_eq!((status, body.len()), (204, 0));
}

#[test]
fn large_values_end_a_list_page_early_and_paging_still_gets_everything() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let a = author(11);
    let big = "x".repeat(cirrus_proto::record::MAX_VALUE_BYTES);
    for i in 0..24 {
        node.put(&doc(&a, &format!("big{i:02}"), 1, &big));
    }
    let first = node.ok("list", json!({"limit": 1000}));
    let n = first["records"].as_array().unwrap().len();
    assert!(
        n < 24,
        "a page of 24 x 64 KiB should be cut by size, got {n}"
    );
    assert!(first["next"].is_string());
    let mut seen = n;
    let mut after = first["next"].clone();
    while !after.is_null() {
        let page = node.ok("list", json!({"limit": 1000, "after": after}));
        seen += page["records"].as_array().unwrap().len();
        after = page["next"].clone();
    }
    assert_eq!(seen, 24);
}

#[test]
fn list_gives_a_hundred_records_when_no_limit_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let a = author(9);
    let records: Vec<_> = (0..150)
        .map(|i| doc(&a, &format!("k{i:03}"), 1, "v"))
        .collect();
    put_all_applied(&node, &records);
    let page = node.ok("list", json!({}));
    assert_eq!(
        page["records"].as_array().unwrap().len(),
        100,
        "SPEC: default 100"
    );
    let next = page["next"].as_str().expect("a cursor to the rest");
    let rest = node.ok("list", json!({"after": next}));
    assert_eq!(rest["records"].as_array().unwrap().len(), 50);
    assert_eq!(rest["next"], serde_json::Value::Null);
    for bad in [0, 1001] {
        let r = node.call("list", json!({"limit": bad}));
        assert_eq!(error_code(&r), -32602, "limit {bad}: {r}");
    }
}

/// With no port flags a node listens on SPEC's ports: 38080 to 38084. It gets a
/// loopback address of its own, so nothing else can hold them.
#[test]
fn the_default_ports_are_the_specs() {
    let dir = tempfile::tempdir().unwrap();
    let ip = format!("127.252.{}.1", std::process::id() % 250);
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["run", "--bind", &ip, "--data-dir"])
        .arg(dir.path())
        .env("HOME", dir.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let ready = ready_line(&mut child);
    assert_eq!(ready["http"], format!("{ip}:38081"), "{ready}");
    assert_eq!(ready["ws"], format!("{ip}:38082"), "{ready}");
    assert_eq!(ready["udp"], format!("{ip}:38083"), "{ready}");
    let info: serde_json::Value = reqwest::blocking::Client::new()
        .post(format!("http://{ip}:38081/"))
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"getnodeinfo"}"#)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let ports = &info["result"]["ports"];
    assert_eq!(
        ports,
        &json!({"p2p": 38080, "http": 38081, "ws": 38082, "udp": 38083, "stun": 38084}),
        "{info}"
    );
    terminate(&mut child);
}
