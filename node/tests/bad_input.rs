//! Bad input over HTTP: every case gets a clear JSON-RPC error, nothing is stored,
//! and the node keeps serving with its data unchanged.

mod support;

use cirrus_proto::record::{MAX_KEY_BYTES, MAX_VALUE_BYTES, Record};
use serde_json::{Value, json};
use support::*;

fn put_raw(record: Value) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"jsonrpc": "2.0", "id": 7, "method": "put", "params": {"record": record}}),
    )
    .unwrap()
}

#[test]
fn every_bad_input_gets_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let a = author(20);
    node.put(&doc(&a, "keep", 1, "me"));
    let before = node.db();

    let good = serde_json::to_value(doc(&a, "new", 1, "v")).unwrap();
    let with = |field: &str, v: Value| {
        let mut r = good.clone();
        r[field] = v;
        put_raw(r)
    };
    let mut bad_sig = good.clone();
    bad_sig["sig"] = json!("00".repeat(64));
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));

    let cases: Vec<(&str, Vec<u8>, i64, &str)> = vec![
        ("not json", b"{nope".to_vec(), -32700, "parse error"),
        (
            "truncated json",
            br#"{"jsonrpc":"2.0","id":1,"method":"getdb"#.to_vec(),
            -32700,
            "parse error",
        ),
        (
            "invalid utf-8",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\xfe\"}".to_vec(),
            -32700,
            "parse error",
        ),
        ("deep nesting", deep.into_bytes(), -32700, "recursion"),
        ("empty body", Vec::new(), -32700, "parse error"),
        ("empty batch", b"[]".to_vec(), -32600, "empty batch"),
        ("scalar", b"42".to_vec(), -32600, "object"),
        (
            "no jsonrpc",
            br#"{"id":1,"method":"getdbhash"}"#.to_vec(),
            -32600,
            "jsonrpc",
        ),
        (
            "method not string",
            br#"{"jsonrpc":"2.0","id":1,"method":5}"#.to_vec(),
            -32600,
            "method",
        ),
        (
            "id object",
            br#"{"jsonrpc":"2.0","id":{},"method":"getdbhash"}"#.to_vec(),
            -32600,
            "id",
        ),
        (
            "params positional",
            br#"{"jsonrpc":"2.0","id":1,"method":"get","params":[1,2]}"#.to_vec(),
            -32602,
            "by name",
        ),
        (
            "unknown method",
            br#"{"jsonrpc":"2.0","id":1,"method":"drop_everything"}"#.to_vec(),
            -32601,
            "drop_everything",
        ),
        (
            "missing record",
            br#"{"jsonrpc":"2.0","id":1,"method":"put","params":{}}"#.to_vec(),
            -32602,
            "record",
        ),
        (
            "unknown param",
            br#"{"jsonrpc":"2.0","id":1,"method":"getrating","params":{"target":"x","extra":1}}"#
                .to_vec(),
            -32602,
            "extra",
        ),
        ("wrong type", with("seq", json!("one")), -32602, "invalid"),
        ("negative seq", with("seq", json!(-1)), -32602, "invalid"),
        ("huge seq", with("seq", json!(1e300)), -32602, "invalid"),
        (
            "seq over u64",
            put_raw(
                json!({"author": good["author"], "kind": "doc", "key": "k", "seq": 18446744073709551616u128.to_string().parse::<f64>().unwrap(), "value": "v", "sig": good["sig"]}),
            ),
            -32602,
            "invalid",
        ),
        (
            "bad hex author",
            with("author", json!("zz".repeat(32))),
            -32602,
            "hex",
        ),
        (
            "short author",
            with("author", json!("ab")),
            -32602,
            "64 hex",
        ),
        (
            "bad kind",
            with("kind", json!("blob")),
            -32602,
            "unknown variant",
        ),
        (
            "value not string",
            with("value", json!(5)),
            -32602,
            "invalid",
        ),
        ("bad signature", put_raw(bad_sig), -32001, "signature"),
        (
            "tampered value",
            with("value", json!("changed")),
            -32001,
            "signature",
        ),
        (
            "someone else's author",
            with("author", json!("ff".repeat(32))),
            -32001,
            "invalid record",
        ),
    ];
    for (name, body, code, needle) in cases {
        let (status, out) = node.post(body);
        assert_eq!(status, 200, "{name}");
        let resp: Value = serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(error_code(&resp), code, "{name}: {resp}");
        let msg = resp["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(needle),
            "{name}: message {msg:?} should mention {needle:?}"
        );
        assert_eq!(node.db(), before, "{name} changed the database");
    }
}

#[test]
fn oversize_keys_values_records_bodies_and_batches() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start_with(dir.path(), &["--max-batch", "50"]);
    let a = author(21);
    let before = node.db();

    let long_key = doc(&a, &"k".repeat(MAX_KEY_BYTES + 1), 1, "v");
    let r = node.call("put", json!({"record": long_key}));
    assert_eq!(error_code(&r), -32002);
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("key must be 1 to 256 bytes")
    );

    let big = Record::sign(
        &a,
        cirrus_proto::record::Kind::Doc,
        "k",
        1,
        Some("v".repeat(MAX_VALUE_BYTES + 1)),
    );
    let r = node.call("put", json!({"record": big}));
    assert_eq!(error_code(&r), -32002);
    assert!(r["error"]["message"].as_str().unwrap().contains("65536"));

    for (key, why) in [("", "key"), ("a\u{7}b", "control")] {
        let r = node.call("put", json!({"record": doc(&a, key, 1, "v")}));
        assert_eq!(error_code(&r), -32002, "{why}");
    }
    let r = node.call("put", json!({"record": Record::sign(&a, cirrus_proto::record::Kind::Rating, "t", 1, Some("9".into()))}));
    assert_eq!(error_code(&r), -32002);

    // The largest legal record is accepted.
    let max = Record::sign(
        &a,
        cirrus_proto::record::Kind::Doc,
        "k".repeat(MAX_KEY_BYTES),
        1,
        Some("v".repeat(MAX_VALUE_BYTES)),
    );
    assert_eq!(node.put(&max)["status"], "applied");
    let after_max = node.db();

    let (status, out) = node.post(vec![b' '; (1 << 20) + 1]);
    assert_eq!(status, 413);
    let resp: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(error_code(&resp), -32004);

    let batch: Vec<Value> = (0..51)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "getdbhash"}))
        .collect();
    let resp = node.rpc(&Value::Array(batch));
    assert_eq!(error_code(&resp), -32004);
    assert!(resp["error"]["message"].as_str().unwrap().contains("50"));

    assert_eq!(node.db(), after_max);
    assert_ne!(before, after_max);
}

#[test]
fn garbage_and_half_open_connections_leave_the_node_serving() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    node.put(&doc(&author(22), "k", 1, "v"));
    let before = node.db();
    let addr = node.url.trim_start_matches("http://").to_string();

    // Raw garbage instead of HTTP.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"\x00\x01\x02 this is not http\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(
        buf.is_empty() || buf.starts_with(b"HTTP/1.1 4"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );

    // Half-open: headers promise a body that never comes; others are still served.
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"jsonrpc\"")
        .unwrap();
    let idle = TcpStream::connect(&addr).unwrap();
    assert_eq!(node.db(), before);

    // Wrong method and path.
    let client = reqwest::blocking::Client::new();
    assert_eq!(
        client
            .put(&node.url)
            .body("{}")
            .send()
            .unwrap()
            .status()
            .as_u16(),
        405
    );
    assert_eq!(
        client
            .post(format!("{}/nope", node.url))
            .body("{}")
            .send()
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    drop((half, idle));
    assert_eq!(node.db(), before);
}
