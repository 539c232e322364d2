//! The `cirrus` client commands against real nodes.

mod support;

use std::process::Output;

use support::*;

fn cirrus(home: &std::path::Path, args: &[&str]) -> Output {
    cirrus_in(home, args)
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
    let err = fails(&cirrus(h, &["keygen"]));
    assert!(err.contains("exists"), "keygen does not overwrite: {err}");

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
    let err = fails(&cirrus(h, &["rate", "film", "9", "--node", &n1.url]));
    assert!(err.contains("1 to 5"), "{err}");
    let err = fails(&cirrus(
        h,
        &["call", "getdbhash", "{not json", "--node", &n1.url],
    ));
    assert!(err.contains("JSON"), "{err}");
    let out = cirrus(
        h,
        &["compare", "--node", &n1.url, "--node", "http://127.0.0.1:1"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("unreachable"));
    let err = fails(&cirrus(h, &["call", "getdbhash", "--node", "gopher://x"]));
    assert!(err.contains("gopher://x"), "{err}");
}

#[test]
fn cache_size_flag_is_accepted_and_bad_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start_with(dir.path(), &["--cache-size", "8"]);
    assert_eq!(node.db()["records"], 0);
    node.stop();

    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "cache-size = 0\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    let data = dir.path().join("e");
    let data = data.to_str().unwrap();
    for (args, needle) in [
        (&["--cache-size", "0"][..], "cache-size"),
        (&["--cache-size", "64MiB"][..], "--cache-size"),
        (&["--cache-size=-1"][..], "--cache-size"),
        (&["--cache-size", "18446744073709551615"][..], "cache-size"),
        (&["--config", cfg][..], "cache-size"),
    ] {
        let err = must_not_start(&[args, &["--data-dir", data]].concat());
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// `keygen --out FILE` writes the key there (mode 0600) and prints its public key;
/// `--identity FILE` signs with it; `compare` prints every column SPEC names.
#[test]
fn keygen_out_identity_and_every_column_of_compare() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let net = TestNet::start(2, &[]);
    let (n1, n2) = (net.node(0), net.node(1));
    let key = h.join("keys").join("mine.key");
    let key = key.to_str().unwrap();

    let out = cirrus(h, &["keygen", "--out", key]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let author = stdout(&out).trim().to_string();
    assert_eq!(author.len(), 64, "{author}");
    let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key file is private");
    assert!(
        !h.join(".cirrus").exists(),
        "nothing went to the default place"
    );
    fails(&cirrus(h, &["keygen", "--out", key]));
    assert!(
        cirrus(h, &["keygen", "--out", key, "--force"])
            .status
            .success()
    );
    let author = {
        let out = cirrus(h, &["keygen", "--out", key, "--force"]);
        stdout(&out).trim().to_string()
    };

    let out = cirrus(
        h,
        &[
            "rate",
            "thing",
            "3",
            "--identity",
            key,
            "--node",
            &n1.url,
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["record"]["author"],
        author.as_str(),
        "signed with --identity"
    );
    // Without --identity and no default key: a clear error.
    let err = fails(&cirrus(h, &["put", "k", "v", "--node", &n1.url]));
    assert!(err.contains("keygen"), "{err}");

    // compare: NODE, PEER ID, RECORDS, RATINGS SUM, ROOT, one row per node.
    wait_converged(&[n1, n2], &n1.db(), "the rating reaches node 2");
    let out = cirrus(h, &["compare", "--node", &n1.url, "--node", &n2.url]);
    assert!(out.status.success(), "{}", stdout(&out));
    let table = stdout(&out);
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .split("  ")
        .filter(|c| !c.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        ["NODE", "PEER ID", "RECORDS", "RATINGS SUM", "ROOT"],
        "{table}"
    );
    let root = n1.db()["root"].as_str().unwrap().to_string();
    for (node, line) in [n1, n2].iter().zip(lines.by_ref()) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                node.url.as_str(),
                node.peer_id.as_str(),
                "1",
                "3",
                root.as_str()
            ],
            "{table}"
        );
    }
    assert_eq!(lines.next(), Some("all 2 nodes agree"), "{table}");
}

/// `compact` refuses the database of a running node; once the node stops, it
/// returns the file to its live size, and the node starts again with every record.
#[test]
fn compact_refuses_a_running_node_and_shrinks_a_stopped_ones_file() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut node = TestNode::start(dir.path());
    let a = author(3);
    // Large values, then every one replaced by a small one: the large ones' pages
    // are free but stay in the file.
    for (seq, len) in [(1, 8000), (2, 10)] {
        for chunk in 0..4 {
            let recs: Vec<_> = (0..100)
                .map(|i| doc(&a, &format!("k{chunk}-{i}"), seq, &"x".repeat(len)))
                .collect();
            put_all_applied(&node, &recs);
        }
    }
    let hash = node.db();
    // What an operator sees before compacting: the file's size, and the disk's room.
    let file = dir.path().join("cirrus.redb");
    let size = std::fs::metadata(&file).unwrap().len() as f64;
    assert_eq!(node.metric("cirrus_store_file_bytes", &[]), size);
    assert!(node.metric("cirrus_store_disk_free_bytes", &[]) > 0.0);
    let err = fails(&cirrus(home.path(), &["compact", "--data-dir", data]));
    assert!(err.contains("stop the node"), "{err}");

    terminate(&mut node.child);
    let before = std::fs::metadata(&file).unwrap().len();
    let out = cirrus(home.path(), &["compact", "--data-dir", data]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("400 records"), "{}", stdout(&out));
    let after = std::fs::metadata(&file).unwrap().len();
    assert!(
        after * 2 < before,
        "{before} bytes before compaction, {after} after"
    );
    let again = TestNode::start(dir.path());
    assert_eq!(again.db(), hash);
}
