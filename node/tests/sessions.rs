//! Sessions (SPEC "Sessions", docs/sessions.md) on real processes: a client that
//! carries its token from node to node reads its own writes; a node that cannot get
//! them says so (-32011) within `wait`, and the Rust cloud client then reads from a
//! node that has them; bad and forged tokens are invalid params; a session longer
//! than the token's exact list still reads its oldest writes.

mod support;

use cirrus_node::cloud::{Cloud, CloudConfig};
use serde_json::{Value, json};
use support::*;

fn get_params(r: &cirrus_proto::record::Record) -> Value {
    json!({"author": hex::encode(r.author), "key": r.key, "kind": r.kind})
}

fn seq_of(got: &Value) -> Option<u64> {
    got["record"]["seq"].as_u64()
}

/// 500 writes, each read at once on another node: with the token every read sees
/// its write; without it, how often one does not is printed (it depends on timing,
/// so it is reported, not asserted).
#[test]
fn every_read_with_the_token_sees_its_write_on_another_node() {
    let net = TestNet::start(3, &[]);
    net.wait_mesh();
    let key = author(51);
    let mut missed_without = 0;
    let rounds = 500;
    for k in 0..rounds {
        let (i, j) = (k % 3, (k + 1) % 3);
        let r = doc(&key, &format!("rw/{k}"), 1, "written");
        let put = net.node(i).put(&r);
        let token = put["session"]
            .as_str()
            .expect("a put carries a session")
            .to_string();
        assert!(token.len() <= 1024, "{} chars", token.len());
        let mut with = get_params(&r);
        with["session"] = token.into();
        let got = net.node(j).ok("get", with);
        assert_eq!(
            seq_of(&got),
            Some(1),
            "round {k}: node {} did not show node {}'s write: {got}",
            j + 1,
            i + 1
        );
        let k2 = (k + 2) % 3;
        if seq_of(&net.node(k2).ok("get", get_params(&r))).is_none() {
            missed_without += 1;
        }
    }
    eprintln!(
        "reads on a third node right after the write, without the token: {missed_without} of {rounds} did not see it"
    );
}

/// A node cut off from the writer answers -32011 with what it misses, within
/// `wait`; the cloud client moves on to a node that holds the write.
#[test]
fn a_node_without_the_write_is_behind_and_the_cloud_reads_elsewhere() {
    let net = TestNet::start(2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let alone = TestNode::start_with(dir.path(), &["--no-redial"]);
    let r = doc(&author(52), "behind/1", 1, "v");
    let token = net.node(0).put(&r)["session"].as_str().unwrap().to_string();

    let mut asked = get_params(&r);
    asked["session"] = token.clone().into();
    asked["wait"] = 300.into();
    let answer = alone.call("get", asked.clone());
    assert_eq!(error_code(&answer), -32011, "{answer}");
    assert!(
        answer["error"]["data"]["missing"].as_u64().unwrap() >= 1,
        "{answer}"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let got = rt.block_on(async {
        let cfg = CloudConfig {
            discover: false,
            wait: Some(300),
            ..CloudConfig::default()
        };
        let cloud = Cloud::connect(&[alone.url.clone(), net.node(1).url.clone()], cfg)
            .await
            .unwrap();
        cloud.set_session(Some(token));
        let (got, from) = cloud.call_with_node("get", get_params(&r)).await.unwrap();
        let health = cloud.health();
        (got, from, health)
    });
    let (got, from, health) = got;
    assert_eq!(
        from,
        net.node(1).url,
        "read from the node that has the write"
    );
    assert_eq!(seq_of(&got), Some(1), "{got}");
    let alone_health = &health.iter().find(|(u, _)| *u == alone.url).unwrap().1;
    assert!(
        alone_health.failed > 0.0,
        "the behind node's failure is counted: {alone_health:?}"
    );
}

#[test]
fn bad_forged_and_oversized_tokens_are_invalid_params_and_wait_is_capped() {
    let net = TestNet::start(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let alone = TestNode::start_with(dir.path(), &["--no-redial"]);
    let r = doc(&author(53), "tokens/1", 1, "v");
    let token = net.node(0).put(&r)["session"].as_str().unwrap().to_string();
    // The last characters hold the signature: flip one.
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    for (what, session, wait) in [
        ("garbage", json!("not a token"), json!(null)),
        ("forged", json!(forged), json!(null)),
        ("over 1 KiB", json!("A".repeat(1100)), json!(null)),
        ("not a string", json!(17), json!(null)),
        ("a negative wait", json!(token.clone()), json!(-5)),
        (
            "a wait that is not a number",
            json!(token.clone()),
            json!("soon"),
        ),
    ] {
        let mut p = get_params(&r);
        p["session"] = session;
        p["wait"] = wait;
        let answer = alone.call("get", p);
        assert_eq!(error_code(&answer), -32602, "{what}: {answer}");
    }
    // A wait far over the cap is cut to 10 s: the answer comes (-32011), the node
    // does not hold the request for a day. The HTTP client gives up after 30 s.
    let mut p = get_params(&r);
    p["session"] = token.into();
    p["wait"] = json!(86_400_000u64);
    let answer = alone.call("get", p);
    assert_eq!(error_code(&answer), -32011, "{answer}");
}

/// A session of more writes than the token names exactly: its oldest writes are
/// covered by the floor, which other nodes hold once their root has equalled the
/// issuer's. Every write reads back on every node with the final token.
#[test]
fn a_long_session_across_nodes_reads_its_oldest_writes() {
    let net = TestNet::start(3, &[]);
    net.wait_mesh();
    let key = author(54);
    let mut token: Option<String> = None;
    let mut written = Vec::new();
    for k in 0..20 {
        let r = doc(&key, &format!("long/{k}"), 1, "v");
        let mut p = json!({ "record": r });
        if let Some(t) = &token {
            p["session"] = t.clone().into();
        }
        let put = net.node(k % 3).ok("put", p);
        token = Some(put["session"].as_str().unwrap().to_string());
        written.push(r);
    }
    let token = token.unwrap();
    for n in net.nodes() {
        for r in &written {
            let mut p = get_params(r);
            p["session"] = token.clone().into();
            assert_eq!(seq_of(&n.ok("get", p)), Some(1), "{} on {}", r.key, n.url);
        }
    }
}

/// The session holds through `relay` and over UDP and WebSocket too.
#[test]
fn the_session_is_honoured_through_relay_and_on_every_transport() {
    let net = TestNet::start(2, &[]);
    net.wait_mesh();
    let r = doc(&author(55), "relay/1", 1, "v");
    let token = net.node(0).put(&r)["session"].as_str().unwrap().to_string();
    let mut inner = json!({"jsonrpc": "2.0", "id": 9, "method": "get", "params": get_params(&r)});
    inner["params"]["session"] = token.clone().into();
    let relayed = net.node(0).ok(
        "relay",
        json!({"peerId": net.node(1).peer_id, "request": inner}),
    );
    assert_eq!(relayed["result"]["record"]["seq"], 1, "{relayed}");
    let mut p = get_params(&r);
    p["session"] = token.into();
    for url in [net.node(1).ws.clone(), format!("udp://{}", net.node(1).udp)] {
        let out = cirrus(&["call", "get", &p.to_string(), "--node", &url]);
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["record"]["seq"], 1, "{url}: {v}");
    }
}
