//! Shutdown, seen from inside the process: two nodes in one tokio runtime, busy with
//! everything that starts tasks (a peer connection with its STUN client pair and
//! the API on that pair's ports, gossip, sync, a WebSocket subscription, UDP and
//! HTTP requests), are stopped; `Node::run` must return having waited for its
//! tasks, leaving none in the runtime, and with the databases closed.

mod support;

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use cirrus_node::client::Client;
use cirrus_node::config::{Config, RunArgs};
use cirrus_node::node::Node;
use cirrus_node::store::Store;
use serde_json::{Value, json};
use support::{author, doc, wait_until};

fn config(dir: &Path, ip: IpAddr, bootstrap: Vec<libp2p::Multiaddr>) -> Config {
    Config::build(&RunArgs {
        data_dir: Some(dir.to_path_buf()),
        bind: Some(vec![ip]),
        p2p_port: Some(0),
        http_port: Some(0),
        ws_port: Some(0),
        udp_port: Some(0),
        stun_port: Some(0),
        stun_keepalive_secs: Some(1),
        bootstrap: Some(bootstrap),
        ..RunArgs::default()
    })
    .expect("a valid config")
}

/// Calls from a runtime of their own, so the client's tasks never count against
/// the nodes' runtime.
fn call(url: String, method: &'static str, params: Value) -> Value {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = Client::connect(&url, Duration::from_secs(10)).unwrap();
            c.call(method, params).await.unwrap()
        })
    })
    .join()
    .unwrap()
}

#[test]
fn shutdown_leaves_no_task_and_closes_the_database() {
    let octet = (std::process::id() % 200 + 20) as u8;
    let ip = |i| IpAddr::from([127, 253, octet, i]);
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let a = rt
        .block_on(Node::start(&config(a_dir.path(), ip(1), vec![])))
        .unwrap();
    let boot = format!("{}/p2p/{}", a.listen[0], a.peer_id)
        .parse()
        .unwrap();
    let b = rt
        .block_on(Node::start(&config(b_dir.path(), ip(2), vec![boot])))
        .unwrap();
    let (a_http, b_http) = (format!("http://{}", a.http), format!("http://{}", b.http));
    let (a_udp, b_ws) = (format!("udp://{}", a.udp), format!("ws://{}", b.ws));
    let stops = [a.shutdown_token(), b.shutdown_token()];
    let runs = [rt.spawn(a.run()), rt.spawn(b.run())];

    // A subscription held open on B until the end.
    let subscriber = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = Client::connect(&b_ws, Duration::from_secs(10)).unwrap();
            let _ = c.subscribe(&["records".into()], || {}, |_| {}).await;
        })
    });

    // Each node runs a STUN client pair toward the other.
    wait_until("each node has UDP and TCP mappings via the other", || {
        for url in [&a_http, &b_http] {
            let stun = call(url.clone(), "getnodeinfo", json!({}))["stun"].clone();
            if stun["udp"].as_array().is_none_or(Vec::is_empty)
                || stun["tcp"].as_array().is_none_or(Vec::is_empty)
            {
                return Err(stun.to_string());
            }
        }
        Ok(())
    });
    let r = doc(&author(41), "shutdown/1", 1, "v");
    let put = call(a_http.clone(), "put", json!({ "record": r }));
    assert_eq!(put["status"], "applied", "{put}");
    let root = call(a_udp, "getdbhash", json!({}));
    wait_until("B holds A's record", || {
        let b_root = call(b_http.clone(), "getdbhash", json!({}));
        if b_root == root {
            Ok(())
        } else {
            Err(b_root.to_string())
        }
    });

    for stop in &stops {
        stop.cancel();
    }
    for run in runs {
        rt.block_on(run).unwrap().expect("a clean stop");
    }
    // The subscriber sees its connection end with the node.
    subscriber.join().unwrap();

    // Every task the nodes spawned, libp2p's connection tasks included, has ended
    // when `run` returns. The QUIC endpoint drivers are quinn's, spawned on the
    // runtime outside the swarm's executor; they end once their endpoint is gone,
    // which the swarm's drop has set in motion. A task left running for good fails.
    wait_until("no task is left in the runtime", || {
        match rt.metrics().num_alive_tasks() {
            0 => Ok(()),
            n => Err(format!("{n} alive")),
        }
    });
    // redb holds an exclusive lock on an open file: opening it again proves it closed.
    for dir in [&a_dir, &b_dir] {
        let db = dir.path().join("cirrus.redb");
        assert!(db.exists(), "{}", db.display());
        Store::open(&db).expect("the database was closed");
    }
}
