//! Records to write, and what to read back.

use cirrus_proto::record::{Author, Kind, Record};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

use super::{TestNode, wait_until};

pub fn author(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

pub fn doc(author: &SigningKey, key: &str, seq: u64, value: &str) -> Record {
    Record::sign(author, Kind::Doc, key, seq, Some(value.to_string()))
}

pub fn rating(author: &SigningKey, target: &str, seq: u64, score: Option<u8>) -> Record {
    Record::sign(
        author,
        Kind::Rating,
        target,
        seq,
        score.map(|s| s.to_string()),
    )
}

/// Put records in one JSON-RPC batch; returns the answers, one per record, in order.
pub fn put_batch(node: &TestNode, records: &[Record]) -> Vec<Value> {
    let batch: Vec<Value> = records
        .iter()
        .enumerate()
        .map(|(i, r)| json!({"jsonrpc": "2.0", "id": i, "method": "put", "params": {"record": r}}))
        .collect();
    let resp = node.rpc(&Value::Array(batch));
    let answers = resp
        .as_array()
        .unwrap_or_else(|| panic!("batch put: {resp}"));
    assert_eq!(answers.len(), records.len(), "one answer per put: {resp}");
    answers.clone()
}

/// Put records in one batch; every put must be applied.
pub fn put_all_applied(node: &TestNode, records: &[Record]) {
    for (r, a) in records.iter().zip(put_batch(node, records)) {
        assert_eq!(
            a["result"]["status"],
            "applied",
            "{} {}: {a}",
            r.kind.as_str(),
            r.key
        );
    }
}

/// Wait until every node reports the same `getdbhash` and its `records` and
/// `ratings` are `want`'s. Returns the common root.
pub fn wait_converged(nodes: &[&TestNode], want: &Value, what: &str) -> String {
    wait_until(
        &format!("{what}: {} nodes hold {want}", nodes.len()),
        || {
            let dbs: Vec<Value> = nodes.iter().map(|n| n.db()).collect();
            let agree = dbs.iter().all(|d| d == &dbs[0]);
            if agree && dbs[0]["records"] == want["records"] && dbs[0]["ratings"] == want["ratings"]
            {
                Ok(dbs[0]["root"].as_str().unwrap().to_string())
            } else {
                Err(Value::Array(dbs).to_string())
            }
        },
    )
}

/// The `record` that `get` returns (Null when the node holds none).
pub fn get_record(node: &TestNode, author: &Author, key: &str, kind: Kind) -> Value {
    node.ok(
        "get",
        json!({"author": hex::encode(author), "key": key, "kind": kind.as_str()}),
    )["record"]
        .clone()
}

pub fn error_code(resp: &Value) -> i64 {
    resp["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an error, got {resp}"))
}
