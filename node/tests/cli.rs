//! The `cirrus` client commands against real nodes.

mod common;

use std::process::{Command, Output};

use common::*;

fn cirrus(home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("HOME", home)
        .env_remove("CIRRUS_NODE")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn keygen_put_rate_get_with_proof_call_and_compare() {
    let home = tempfile::tempdir().unwrap();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (n1, n2) = (TestNode::start(d1.path()), TestNode::start(d2.path()));
    let h = home.path();

    let out = cirrus(h, &["keygen"]);
    assert!(out.status.success());
    let author = stdout(&out).trim().to_string();
    assert_eq!(author.len(), 64);
    assert!(
        !cirrus(h, &["keygen"]).status.success(),
        "keygen does not overwrite"
    );

    for n in [&n1, &n2] {
        let out = cirrus(
            h,
            &[
                "put", "greeting", "hello", "--seq", "5", "--node", &n.url, "--json",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["status"], "applied");
        assert!(
            cirrus(h, &["rate", "film", "4", "--seq", "1", "--node", &n.url])
                .status
                .success()
        );
    }
    let out = cirrus(h, &["compare", "--node", &n1.url, "--node", &n2.url]);
    assert!(out.status.success(), "{}", stdout(&out));
    let table = stdout(&out);
    assert!(table.contains(&n1.peer_id) && table.contains(&n2.peer_id) && table.contains("agree"));

    // Only n1 gets the next write: compare must now fail.
    let out = cirrus(h, &["put", "greeting", "bye", "--node", &n1.url]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("applied"));
    let out = cirrus(
        h,
        &["compare", "--node", &n1.url, "--node", &n2.url, "--json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["agree"], false);

    let out = cirrus(
        h,
        &["get", &author, "greeting", "--proof", "--node", &n1.url],
    );
    assert!(out.status.success());
    assert!(stdout(&out).contains("\"bye\""));
    assert!(String::from_utf8_lossy(&out.stderr).contains("proof: present"));
    let out = cirrus(
        h,
        &[
            "get", &author, "film", "--kind", "rating", "--proof", "--node", &n2.url,
        ],
    );
    assert!(out.status.success() && stdout(&out).contains("\"4\""));
    let out = cirrus(
        h,
        &["get", &author, "nothing", "--proof", "--node", &n2.url],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("proof: absent"));

    let out = cirrus(
        h,
        &[
            "call",
            "getrating",
            r#"{"target":"film"}"#,
            "--node",
            &n1.url,
        ],
    );
    assert!(out.status.success());
    assert!(stdout(&out).contains("\"sum\": 4"));
    let out = cirrus(h, &["call", "nosuch", "--node", &n1.url]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-32601"));
    let out = cirrus(h, &["rate", "film", "9", "--node", &n1.url]);
    assert!(!out.status.success());
    let out = cirrus(h, &["call", "getdbhash", "{not json", "--node", &n1.url]);
    assert!(!out.status.success());
    let out = cirrus(
        h,
        &["compare", "--node", &n1.url, "--node", "http://127.0.0.1:1"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("unreachable"));
    let out = cirrus(h, &["call", "getdbhash", "--node", "gopher://x"]);
    assert!(!out.status.success());
}
