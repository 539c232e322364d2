//! Data and identity survive restarts, clean (SIGTERM) and not (SIGKILL).

mod support;

use serde_json::json;
use support::*;

#[test]
fn restart_keeps_records_root_and_peer_id() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let a = author(30);
    for i in 0..50 {
        node.put(&doc(&a, &format!("k{i}"), 1, "v"));
    }
    node.put(&rating(&a, "film", 1, Some(5)));
    let (db, peer) = (node.db(), node.peer_id.clone());
    node.stop();

    let node = TestNode::start(dir.path());
    assert_eq!(node.peer_id, peer);
    assert_eq!(node.db(), db);
    let got = node.ok(
        "get",
        json!({"author": hex::encode(a.verifying_key().to_bytes()), "key": "k49"}),
    );
    assert_eq!(got["record"]["value"], "v");

    // SIGKILL right after acknowledged writes: every acknowledged write is there.
    for i in 50..80 {
        node.put(&doc(&a, &format!("k{i}"), 1, "v"));
    }
    let db = node.db();
    node.kill();
    let node = TestNode::start(dir.path());
    assert_eq!(node.peer_id, peer);
    assert_eq!(node.db(), db);
}

#[test]
fn an_unreadable_node_key_is_an_error_not_a_new_identity() {
    let dir = tempfile::tempdir().unwrap();
    TestNode::start(dir.path()).stop();
    let key = dir.path().join("node.key");
    std::fs::write(&key, b"garbage").unwrap();
    let err = must_not_start(&["--data-dir", dir.path().to_str().unwrap()]);
    assert!(
        err.contains("node.key") && err.contains("not a valid"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&key).unwrap(),
        b"garbage",
        "the key file was left alone"
    );
}

#[test]
fn config_file_and_env_are_honoured_and_bad_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cirrus.toml");
    std::fs::write(
        &cfg,
        format!(
            "data-dir = {:?}\nbind = \"127.0.0.1\"\nhttp-port = 0\np2p-port = 0\nstun-port = 0\nws-port = 0\nudp-port = 0\nmax-batch = 2\n",
            dir.path().join("d")
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("HOME", dir.path())
        .env("CIRRUS_MAX_BODY_BYTES", "100")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ready = ready_line(&mut child);
    let url = format!("http://{}", ready["http"].as_str().unwrap());
    assert!(
        dir.path().join("d").join("node.key").exists(),
        "data-dir from the file"
    );
    let client = reqwest::blocking::Client::new();
    let three = json!([{"jsonrpc":"2.0","id":1,"method":"getdbhash"},{"jsonrpc":"2.0","id":2,"method":"getdbhash"},{"jsonrpc":"2.0","id":3,"method":"getdbhash"}]);
    let resp: serde_json::Value = client
        .post(&url)
        .body(three.to_string())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        resp["error"]["code"], -32004,
        "max-batch from the file: {resp}"
    );
    let resp = client.post(&url).body(vec![b' '; 101]).send().unwrap();
    assert_eq!(
        resp.status().as_u16(),
        413,
        "max-body-bytes from the environment"
    );
    terminate(&mut child);

    for (text, needle) in [
        ("http-port = \"x\"", "http-port"),
        ("no-such-key = 1", "no-such-key"),
        ("max-batch = 0", "max-batch"),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let err = must_not_start(&["--config", cfg.to_str().unwrap()]);
        assert!(err.contains(needle), "{text}: {err}");
    }
    let err = must_not_start(&["--http-port", "70000"]);
    assert!(err.contains("70000"), "{err}");
}
