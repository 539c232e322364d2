//! `rpc.discover`: the OpenRPC document names exactly the methods the node answers,
//! is valid against the OpenRPC meta-schema (`docs/openrpc/meta-schema.json`,
//! checked with Python's `jsonschema`), and the node's real answers match the
//! result schemas it gives.

mod support;

use std::collections::BTreeSet;
use std::process::Command;

use cirrus_proto::api::Method;
use serde_json::{Value, json};
use support::*;

#[test]
fn the_document_describes_every_method_and_the_answers_match_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let doc = node.ok("rpc.discover", json!({}));
    assert_eq!(doc["openrpc"], "1.3.2");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    // Exactly the dispatcher's methods: each name in the document is answered (not
    // -32601, but for the WebSocket-only ones over HTTP), and a name outside it is not.
    let named: BTreeSet<String> = doc["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    let table: BTreeSet<String> = Method::ALL.iter().map(|m| m.name().to_string()).collect();
    assert_eq!(named, table);
    for m in Method::ALL {
        let answer = node.call(m.name(), json!({}));
        let code = answer["error"]["code"].as_i64();
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        if m.websocket_only() {
            assert!(
                message.contains("only over WebSocket"),
                "{}: {answer}",
                m.name()
            );
        } else {
            assert_ne!(code, Some(-32601), "{}: {answer}", m.name());
        }
    }
    for name in ["getnodeinfo2", "rpc.other", "Put", ""] {
        assert_eq!(error_code(&node.call(name, json!({}))), -32601, "{name:?}");
    }

    // Real answers, checked against the document's result schemas.
    let key = author(7);
    let r = doc_record(&key);
    let put = node.put(&r);
    let author_hex = hex::encode(key.verifying_key().to_bytes());
    let samples = json!({
        "put": [put],
        "getnodeinfo": [node.ok("getnodeinfo", json!({}))],
        "getpeerinfo": [node.ok("getpeerinfo", json!({}))],
        "getdbhash": [node.ok("getdbhash", json!({}))],
        "get": [
            node.ok("get", json!({"author": author_hex, "key": "openrpc/1"})),
            node.ok("get", json!({"author": author_hex, "key": "openrpc/1", "proof": true})),
            node.ok("get", json!({"author": author_hex, "key": "absent", "proof": true})),
        ],
        "list": [node.ok("list", json!({"limit": 5}))],
        "getrating": [node.ok("getrating", json!({"target": "nothing"}))],
        "getreachability": [node.ok("getreachability", json!({}))],
        "rpc.discover": [doc.clone()],
    });
    let work = tempfile::tempdir().unwrap();
    let (doc_path, samples_path) = (
        work.path().join("doc.json"),
        work.path().join("samples.json"),
    );
    std::fs::write(&doc_path, serde_json::to_vec(&doc).unwrap()).unwrap();
    std::fs::write(&samples_path, serde_json::to_vec(&samples).unwrap()).unwrap();
    let meta = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/openrpc/meta-schema.json"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/openrpc_check.py");
    let out = Command::new("python3")
        .args([
            script,
            doc_path.to_str().unwrap(),
            meta,
            samples_path.to_str().unwrap(),
        ])
        .output()
        .expect("python3 runs (scripts/test.sh installs jsonschema)");
    assert!(
        out.status.success(),
        "the document or an answer does not check:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The checker itself fails on a document that breaks the meta-schema and on an
/// answer that breaks its schema.
#[test]
fn the_checker_rejects_a_broken_document_and_a_wrong_answer() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let mut doc = node.ok("rpc.discover", json!({}));
    let work = tempfile::tempdir().unwrap();
    let meta = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/openrpc/meta-schema.json"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/openrpc_check.py");
    let check = |doc: &Value, samples: &Value| {
        let (d, s) = (work.path().join("d.json"), work.path().join("s.json"));
        std::fs::write(&d, serde_json::to_vec(doc).unwrap()).unwrap();
        std::fs::write(&s, serde_json::to_vec(samples).unwrap()).unwrap();
        let out = Command::new("python3")
            .args([script, d.to_str().unwrap(), meta, s.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let wrong = json!({"getdbhash": [{"root": "not hex", "records": -1}]});
    let (ok, said) = check(&doc, &wrong);
    assert!(!ok && said.contains("getdbhash"), "{said}");
    doc["methods"][0]["paramStructure"] = json!("sideways");
    let (ok, said) = check(&doc, &json!({}));
    assert!(!ok && said.contains("meta-schema"), "{said}");
}

fn doc_record(key: &ed25519_dalek::SigningKey) -> cirrus_proto::record::Record {
    doc(key, "openrpc/1", 1, "described")
}
