//! Verified reads (SPEC "Verified reads") on real processes: a node partitioned
//! from the rest, so that its root differs, is named as disagreeing by `cirrus get
//! --verify` and by the Rust cloud client, which read through the majority and
//! check the proof; with no majority (a 2-2 split) both say so and fail; a node
//! that serves a record its proof does not name is caught.

mod support;

use std::net::SocketAddr;

use cirrus_node::cloud::{Cloud, CloudConfig, CloudError};
use cirrus_proto::record::{Kind, Slot};
use serde_json::{Value, json};
use support::*;

fn cloud(rt: &tokio::runtime::Runtime, urls: &[String]) -> Cloud {
    let cfg = CloudConfig {
        discover: false,
        ..CloudConfig::default()
    };
    rt.block_on(Cloud::connect(urls, cfg)).unwrap()
}

fn slot_of(r: &cirrus_proto::record::Record) -> Slot {
    Slot {
        author: r.author,
        kind: Kind::Doc,
        key: r.key.clone(),
    }
}

fn verify_cli(nodes: &[&str], r: &cirrus_proto::record::Record) -> std::process::Output {
    let author = hex::encode(r.author);
    let mut args = vec!["get", author.as_str(), r.key.as_str(), "--verify"];
    for n in nodes {
        args.extend(["--node", n]);
    }
    cirrus(&args)
}

#[test]
fn a_partitioned_node_is_named_and_the_read_goes_through_the_majority() {
    let net = TestNet::start(4, &[]);
    net.wait_mesh();
    let dir = tempfile::tempdir().unwrap();
    let odd = TestNode::start_with(dir.path(), &["--no-redial"]);
    let r = doc(&author(61), "verified/1", 1, "the majority's");
    put_all_applied(net.node(0), std::slice::from_ref(&r));
    // The partitioned node holds something else, so its root differs.
    odd.put(&doc(&author(62), "elsewhere", 1, "only here"));
    wait_converged(&net.nodes(), &net.node(0).db(), "the four hold the record");

    let mut urls: Vec<String> = net.nodes().iter().map(|n| n.url.clone()).collect();
    urls.push(odd.url.clone());
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let out = verify_cli(&refs, &r);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let got: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(got["value"], "the majority's", "{stdout}");
    assert!(stderr.contains("verified: 4 of 5 nodes"), "{stderr}");
    assert!(
        stderr.contains(&format!("disagreeing: {}", odd.url)),
        "{stderr}"
    );

    // One node given: the others come from its getpeerinfo (the odd one is not
    // among its peers), and all of them agree.
    let out = verify_cli(&[&net.node(1).url], &r);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("verified: 4 of 4 nodes"), "{stderr}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = cloud(&rt, &urls);
    let read = rt.block_on(c.verified_get(&slot_of(&r))).unwrap();
    assert_eq!(read.record.unwrap().record, r);
    assert_eq!(read.majority.agreed.len(), 4);
    assert_eq!(read.majority.disagreed.len(), 1);
    assert_eq!(read.majority.disagreed[0].0, odd.url);
    let odd_health = c
        .health()
        .into_iter()
        .find(|(u, _)| *u == odd.url)
        .unwrap()
        .1;
    assert!(
        odd_health.avoided.is_some(),
        "the disagreeing node is avoided: {odd_health:?}"
    );
}

#[test]
fn with_no_majority_the_read_says_so_and_fails() {
    let left = TestNet::start(2, &[]);
    let right = TestNet::start(2, &[]);
    let r = doc(&author(63), "split/1", 1, "left");
    put_all_applied(left.node(0), std::slice::from_ref(&r));
    put_all_applied(right.node(0), &[doc(&author(63), "split/1", 2, "right")]);
    wait_converged(&left.nodes(), &left.node(0).db(), "left agrees");
    wait_converged(&right.nodes(), &right.node(0).db(), "right agrees");
    let urls: Vec<String> = left
        .nodes()
        .iter()
        .chain(right.nodes().iter())
        .map(|n| n.url.clone())
        .collect();
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let out = verify_cli(&refs, &r);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "a 2-2 split must fail: {stderr}");
    assert!(stderr.contains("no strict majority"), "{stderr}");
    assert_ne!(
        out.status.code(),
        Some(101),
        "an error, not a panic: {stderr}"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = rt.block_on(cloud(&rt, &urls).verified_get(&slot_of(&r)));
    assert!(matches!(e, Err(CloudError::Split(_))), "{e:?}");
}

/// A node that forwards to an honest one but changes the record it serves: its
/// root agrees, its proof checks against that root, but the record is not the one
/// the proof names. It is caught and penalised, and the read comes from another.
#[test]
fn a_node_serving_a_record_its_proof_does_not_name_is_caught() {
    let net = TestNet::start(2, &[]);
    net.wait_mesh();
    let r = doc(&author(64), "liar/1", 1, "true value");
    put_all_applied(net.node(0), std::slice::from_ref(&r));
    wait_converged(&net.nodes(), &net.node(0).db(), "both hold it");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let liar = rt.block_on(lying_proxy(net.node(0).url.clone()));
    let liar_url = format!("http://{liar}");
    // The liar first, so that it is asked for the proof first.
    let urls = vec![
        liar_url.clone(),
        net.node(0).url.clone(),
        net.node(1).url.clone(),
    ];
    let c = cloud(&rt, &urls);
    let read = rt.block_on(c.verified_get(&slot_of(&r))).unwrap();
    assert_eq!(
        read.record.unwrap().record.value.as_deref(),
        Some("true value")
    );
    assert_ne!(read.served_by, liar_url);
    assert_eq!(read.caught.len(), 1, "{:?}", read.caught);
    assert_eq!(read.caught[0].0, liar_url);
    let liar_health = c
        .health()
        .into_iter()
        .find(|(u, _)| *u == liar_url)
        .unwrap()
        .1;
    assert!(liar_health.avoided.unwrap().contains("penalised"));
}

/// An HTTP front for `upstream` that answers everything as it does, except that a
/// `get` result's record gets another value.
async fn lying_proxy(upstream: String) -> SocketAddr {
    use axum::body::Bytes;
    let http = reqwest::Client::new();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: Bytes| {
            let (http, upstream) = (http.clone(), upstream.clone());
            async move {
                let is_get =
                    serde_json::from_slice::<Value>(&body).is_ok_and(|v| v["method"] == "get");
                let answer = http
                    .post(&upstream)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                let mut v: Value = serde_json::from_slice(&answer).unwrap();
                if is_get && v["result"]["record"].is_object() {
                    v["result"]["record"]["value"] = json!("forged value");
                }
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    serde_json::to_vec(&v).unwrap(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
