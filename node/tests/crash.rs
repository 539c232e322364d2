//! Crash safety on a real process: SIGKILL in the middle of a stream of writes
//! loses no acknowledged write and leaves a database that agrees with itself.
//!
//! Node A and node B first meet (so A remembers B). Then A runs isolated
//! (`--no-redial`: a record that A lost must not come back from B and hide the loss)
//! through [`CYCLES`] rounds of: writer threads stream signed puts over HTTP, single
//! and batched, noting which were acknowledged (answered `applied`); once
//! [`ACKED_PER_CYCLE`] are, with requests still going, A gets SIGKILL; A restarts on
//! the same data dir and must hold every acknowledged record (or a newer version
//! that the test itself sent), a root equal to the one rebuilt from its records with
//! `cirrus_proto::merkle`, and rating totals equal to those of its live ratings.
//! Finally A rejoins B, which kept running and took writes of its own (some
//! conflicting with A's), and both converge to one root that passes the same checks.
//!
//! Nothing waits a fixed time: conditions are polled until they hold or [`TIMEOUT`].

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cirrus_proto::merkle::{self, EMPTY, Hash, MemTrie};
use cirrus_proto::record::{Id, Kind, Record};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use support::*;

const CYCLES: usize = 3;
/// Acknowledged writes per cycle before the kill.
const ACKED_PER_CYCLE: usize = 400;
/// Puts per batch of the batching writer.
const BATCH: usize = 20;
/// How often to look at the count of acknowledged writes: often, so the kill lands
/// soon after [`ACKED_PER_CYCLE`] and still in the middle of the stream.
const ACK_POLL: Duration = Duration::from_millis(50);
/// Rating targets shared by every writer, so one target sums ratings of many authors.
const TARGETS: usize = 7;

/// One writer's records: fresh docs, newer versions and tombstones of its earlier
/// docs, and ratings (set and withdrawn) of the shared targets. The state carries
/// over cycles so a slot's `seq` only ever grows.
struct Stream {
    author: SigningKey,
    name: String,
    n: usize,
    docs: Vec<String>,
    last_seq: HashMap<(Kind, String), u64>,
}

impl Stream {
    fn new(author: SigningKey, name: &str) -> Stream {
        Stream {
            author,
            name: name.to_string(),
            n: 0,
            docs: Vec::new(),
            last_seq: HashMap::new(),
        }
    }

    fn next(&mut self, cycle: usize) -> Record {
        let i = self.n;
        self.n += 1;
        let (kind, key, value) = match i % 10 {
            6 if !self.docs.is_empty() => {
                let key = self.docs[(i * 7) % self.docs.len()].clone();
                (Kind::Doc, key, Some(format!("newer {i}")))
            }
            7 if !self.docs.is_empty() => {
                let key = self.docs[(i * 3) % self.docs.len()].clone();
                (Kind::Doc, key, None)
            }
            8 => (
                Kind::Rating,
                format!("film-{}", i % TARGETS),
                Some(((i / 10) % 5 + 1).to_string()),
            ),
            9 if i % 3 == 0 => (Kind::Rating, format!("film-{}", i % TARGETS), None),
            _ => {
                let key = format!("{}/c{cycle}/{i}", self.name);
                self.docs.push(key.clone());
                (Kind::Doc, key, Some(format!("value {i}")))
            }
        };
        let seq = self.last_seq.entry((kind, key.clone())).or_insert(0);
        *seq += 1;
        Record::sign(&self.author, kind, key, *seq, value)
    }
}

/// What one writer thread did in one cycle.
struct Written {
    stream: Stream,
    sent: Vec<Record>,
    acked: Vec<Record>,
    /// Why the stream ended (the node died under it), or what went wrong.
    end: Result<String, String>,
}

/// Put `records` in one request (a batch if `batch`). `Ok(statuses)` only for a
/// complete, well-formed answer; `Err` for a transport failure (not acknowledged).
fn send_puts(
    http: &reqwest::blocking::Client,
    url: &str,
    records: &[Record],
    batch: bool,
) -> Result<Result<Vec<String>, String>, String> {
    let reqs: Vec<Value> = records
        .iter()
        .enumerate()
        .map(|(i, r)| json!({"jsonrpc": "2.0", "id": i, "method": "put", "params": {"record": r}}))
        .collect();
    let body = if batch {
        Value::Array(reqs)
    } else {
        reqs[0].clone()
    };
    let resp = http
        .post(url)
        .body(body.to_string())
        .send()
        .map_err(|e| e.to_string())?;
    let bytes = resp.bytes().map_err(|e| e.to_string())?;
    let answer: Value = serde_json::from_slice(&bytes).map_err(|e| format!("cut answer: {e}"))?;
    let answers = match (&answer, batch) {
        (Value::Array(a), true) => a.clone(),
        (_, false) => vec![answer.clone()],
        _ => return Ok(Err(format!("batch answered with {answer}"))),
    };
    if answers.len() != records.len() {
        return Ok(Err(format!(
            "{} answers to {} puts",
            answers.len(),
            records.len()
        )));
    }
    Ok(answers
        .iter()
        .map(|a| {
            a["result"]["status"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("put failed: {a}"))
        })
        .collect())
}

/// Stream puts until the node stops answering.
fn write_until_dead(
    url: String,
    mut stream: Stream,
    cycle: usize,
    batch: bool,
    acked_count: Arc<AtomicUsize>,
) -> Written {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let (mut sent, mut acked) = (Vec::new(), Vec::new());
    let end = loop {
        let n = if batch { BATCH } else { 1 };
        let records: Vec<Record> = (0..n).map(|_| stream.next(cycle)).collect();
        sent.extend(records.iter().cloned());
        match send_puts(&http, &url, &records, batch) {
            Err(transport) => break Ok(transport),
            Ok(Err(bad)) => break Err(bad),
            Ok(Ok(statuses)) => {
                if let Some((r, s)) = records.iter().zip(&statuses).find(|(_, s)| *s != "applied") {
                    break Err(format!(
                        "{} {} seq {} answered {s}",
                        r.kind.as_str(),
                        r.key,
                        r.seq
                    ));
                }
                acked.extend(records);
                acked_count.fetch_add(n, Ordering::SeqCst);
            }
        }
    };
    Written {
        stream,
        sent,
        acked,
        end,
    }
}

/// Every record the test ever sent, by id, and the ones each node acknowledged.
#[derive(Default)]
struct Ledger {
    sent: HashMap<Id, Record>,
    on_a: Vec<Record>,
    on_b: Vec<Record>,
}

impl Ledger {
    fn send(&mut self, r: &Record) {
        self.sent.insert(r.id(), r.clone());
    }

    /// Put on a node that must apply it; note it as acknowledged by that node.
    fn put(&mut self, node: &TestNode, r: &Record, on_a: bool) {
        assert_eq!(
            node.put(r)["status"],
            "applied",
            "{} {}",
            r.kind.as_str(),
            r.key
        );
        self.send(r);
        if on_a {
            self.on_a.push(r.clone());
        } else {
            self.on_b.push(r.clone());
        }
    }
}

fn record_of(v: &Value) -> (Record, String) {
    let r: Record = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"));
    (r, v["id"].as_str().unwrap_or_default().to_string())
}

/// Every record the node holds, through `list` paging.
fn list_all(node: &TestNode) -> Vec<Record> {
    let mut out = Vec::new();
    let mut after = Value::Null;
    loop {
        let mut params = json!({"limit": 1000});
        if !after.is_null() {
            params["after"] = after.clone();
        }
        let page = node.ok("list", params);
        for v in page["records"].as_array().expect("records") {
            let (r, id) = record_of(v);
            assert_eq!(id, hex::encode(r.id()), "list gives each record's id: {v}");
            out.push(r);
        }
        after = page["next"].clone();
        if after.is_null() {
            return out;
        }
    }
}

/// The node agrees with itself and with what the test sent:
/// - every record it holds verifies, was sent by the test, and sits alone in its slot;
/// - `getdbhash.root` is the root rebuilt from those records, `records` their count;
/// - rating totals (`getdbhash.ratings`, `getrating` per target) are those of the
///   live ratings listed;
/// - every acknowledged record is there, or a newer version of it that the test sent.
///
/// Returns the root.
fn check_node(node: &TestNode, ledger: &Ledger, acked: &[&[Record]], label: &str) -> String {
    let db = node.db();
    let listed = list_all(node);
    assert_eq!(
        node.db(),
        db,
        "{label}: the node changed while it was being checked (is it isolated?)"
    );

    let mut trie = MemTrie::default();
    let mut root = EMPTY;
    let mut slots: HashMap<Hash, Id> = HashMap::new();
    let mut ratings: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for r in &listed {
        r.verify()
            .unwrap_or_else(|e| panic!("{label}: stored record does not verify ({e}): {r:?}"));
        let id = r.id();
        assert!(
            ledger.sent.contains_key(&id),
            "{label}: holds a record the test never sent: {r:?}"
        );
        let slot = r.slot().hash();
        assert!(
            slots.insert(slot, id).is_none(),
            "{label}: two records in one slot: {r:?}"
        );
        root = merkle::upsert(&mut trie, &slot, &id).unwrap();
        if let Some(score) = r.rating() {
            let t = ratings.entry(r.key.clone()).or_default();
            t.0 += 1;
            t.1 += score as u64;
        }
    }
    assert_eq!(
        db["root"].as_str().unwrap(),
        hex::encode(root),
        "{label}: getdbhash root differs from the root of the {} records listed",
        listed.len()
    );
    assert_eq!(db["records"], listed.len(), "{label}: record count");
    let (count, sum) = ratings
        .values()
        .fold((0, 0), |(c, s), (tc, ts)| (c + tc, s + ts));
    assert_eq!(
        db["ratings"],
        json!({"count": count, "sum": sum}),
        "{label}: rating totals vs the live ratings listed"
    );
    for t in 0..TARGETS {
        let target = format!("film-{t}");
        let got = node.ok("getrating", json!({"target": target}));
        let (c, s) = ratings.get(&target).copied().unwrap_or((0, 0));
        assert_eq!(
            (got["count"].as_u64(), got["sum"].as_u64()),
            (Some(c), Some(s)),
            "{label}: getrating {target}: {got}"
        );
    }

    // Each acknowledged record, with `get` (batched, 200 a request).
    for chunk in acked.iter().flat_map(|a| a.chunks(200)) {
        let reqs: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, r)| {
                json!({"jsonrpc": "2.0", "id": i, "method": "get", "params":
                    {"author": hex::encode(r.author), "key": r.key, "kind": r.kind.as_str()}})
            })
            .collect();
        let answers = node.rpc(&Value::Array(reqs));
        let answers = answers.as_array().expect("a batch answer");
        for (r, a) in chunk.iter().zip(answers) {
            let got = &a["result"]["record"];
            assert!(
                !got.is_null(),
                "{label}: LOST acknowledged {} {} seq {}: {a}",
                r.kind.as_str(),
                r.key,
                r.seq
            );
            let (held, id) = record_of(got);
            let want = hex::encode(r.id());
            assert!(
                id == want || held.supersedes(&held.id(), r, &r.id()),
                "{label}: acknowledged {} {} seq {} (id {want}) replaced by an older record: {got}",
                r.kind.as_str(),
                r.key,
                r.seq
            );
        }
    }
    db["root"].as_str().unwrap().to_string()
}

#[test]
fn sigkill_mid_stream_loses_no_acknowledged_write() {
    // Node 1 is B, node 2 is A.
    let mut net = TestNet::start(2, &[]);
    let mut ledger = Ledger::default();

    // A meets B, so it remembers B; both hold a few records.
    let (a, b) = (net.node(1), net.node(0));
    let peer_id = a.peer_id.clone();
    let first = author(140);
    for i in 0..5 {
        ledger.put(a, &doc(&first, &format!("before-{i}"), 1, "v"), true);
        ledger.put(b, &doc(&first, &format!("before-b-{i}"), 1, "v"), true);
    }
    wait_until("A and B converge before the crashes", || {
        let (da, db) = (a.db(), b.db());
        if da == db && da["records"] == 10 {
            Ok(())
        } else {
            Err(format!("A {da}, B {db}"))
        }
    });
    net.stop(1);

    let mut streams: Vec<(Stream, bool)> = vec![
        (Stream::new(author(141), "single-1"), false),
        (Stream::new(author(142), "single-2"), false),
        (Stream::new(author(143), "batch"), true),
    ];
    let contested = author(149);
    let b_writer = author(148);
    for cycle in 0..CYCLES {
        net.up(1, &["--no-redial"]);
        let (a, b) = (net.node(1), net.node(0));
        assert_eq!(a.peer_id, peer_id, "same identity after a crash");
        if cycle == 0 {
            // Conflicting versions while apart: A's wins one slot, B's the other.
            ledger.put(a, &doc(&contested, "slot-1", 5, "A wins"), true);
            ledger.put(b, &doc(&contested, "slot-1", 4, "B loses"), false);
            ledger.put(a, &doc(&contested, "slot-2", 2, "A loses"), true);
            ledger.put(b, &doc(&contested, "slot-2", 6, "B wins"), false);
        }
        // B keeps taking writes of its own.
        for i in 0..10 {
            ledger.put(
                b,
                &doc(&b_writer, &format!("b/c{cycle}/{i}"), 1, "on B"),
                false,
            );
        }
        let r = rating(&b_writer, "film-0", cycle as u64 + 1, Some(3));
        ledger.put(b, &r, false);

        let acked = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = std::mem::take(&mut streams)
            .into_iter()
            .map(|(stream, batch)| {
                let (url, acked) = (a.url.clone(), acked.clone());
                std::thread::spawn(move || write_until_dead(url, stream, cycle, batch, acked))
            })
            .collect();
        wait_until_every(
            ACK_POLL,
            &format!("cycle {cycle}: {ACKED_PER_CYCLE} writes are acknowledged"),
            || {
                let n = acked.load(Ordering::SeqCst);
                // A writer that stopped early says why in its `end`, below.
                if n >= ACKED_PER_CYCLE || writers.iter().any(|w| w.is_finished()) {
                    Ok(())
                } else {
                    Err(format!("{n} acknowledged"))
                }
            },
        );
        // The kill must be ours: a node that crashed by itself under the load
        // would pass as killed (TestNet::kill asserts it is still running).
        net.kill(1);

        let (mut cut, mut acked_now) = (Vec::new(), 0);
        for (i, w) in writers.into_iter().enumerate() {
            let w = w.join().expect("writer thread");
            let end = w.end.unwrap_or_else(|bad| {
                panic!("cycle {cycle}: writer {i} got a wrong answer before the kill: {bad}")
            });
            cut.extend(w.sent[w.acked.len()..].iter().map(Record::id));
            acked_now += w.acked.len();
            w.sent.iter().for_each(|r| ledger.send(r));
            ledger.on_a.extend(w.acked);
            eprintln!("cycle {cycle}: writer {i} ended with: {end}");
            streams.push((w.stream, i == 2));
        }
        assert!(
            acked_now >= ACKED_PER_CYCLE,
            "cycle {cycle}: only {acked_now} acknowledged before the writers stopped"
        );

        net.up(1, &["--no-redial"]);
        let a = net.node(1);
        assert_eq!(a.peer_id, peer_id, "same identity after SIGKILL");
        assert_eq!(
            a.ok("getpeerinfo", json!({})),
            json!([]),
            "A is isolated, so nothing can refill what it lost"
        );
        check_node(
            a,
            &ledger,
            &[&ledger.on_a],
            &format!("after kill {}", cycle + 1),
        );
        let held: HashSet<Id> = list_all(a).iter().map(Record::id).collect();
        let committed = cut.iter().filter(|id| held.contains(*id)).count();
        eprintln!(
            "cycle {cycle}: {acked_now} acknowledged; {} in requests cut by the kill, \
             {committed} of which were committed; A holds {} records",
            cut.len(),
            held.len()
        );
        net.stop(1);
    }

    // A rejoins B, which kept running: one root, which both can justify.
    let boot = net.boot();
    net.up(1, &["--bootstrap", &boot]);
    let (a, b) = (net.node(1), net.node(0));
    assert_eq!(a.peer_id, peer_id);
    let root = wait_until("A and B converge after A rejoins", || {
        let (da, db) = (a.db(), b.db());
        if da == db {
            Ok(da["root"].as_str().unwrap().to_string())
        } else {
            Err(format!("A {da}, B {db}"))
        }
    });
    let both: [&[Record]; 2] = [&ledger.on_a, &ledger.on_b];
    assert_eq!(check_node(a, &ledger, &both, "A after rejoining"), root);
    assert_eq!(check_node(b, &ledger, &both, "B after A rejoined"), root);
    let ck = hex::encode(contested.verifying_key().to_bytes());
    for node in [&a, &b] {
        for (key, want) in [("slot-1", "A wins"), ("slot-2", "B wins")] {
            let got = node.ok("get", json!({"author": ck, "key": key}));
            assert_eq!(got["record"]["value"], want, "{key}: {got}");
        }
    }
}
