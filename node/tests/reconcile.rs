//! Anti-entropy by coded symbols between real nodes: two stores that missed each
//! other's writes settle without the trie walk, and a peer that lies in its
//! symbols, its answers or its records can neither make a node store anything
//! unsigned nor lose anything it holds.

mod support;

use std::sync::{Arc, Mutex};

use cirrus_proto::Kind;
use cirrus_proto::sync::{self, Request, Response};
use libp2p::request_response::{self, Message};
use serde_bytes::ByteBuf;
use serde_json::json;
use support::rogue::*;
use support::*;

/// Only the connection's own reconciliation runs (no periodic one beside it).
const QUIET: &[&str] = &["--sync-interval-secs", "3600"];

#[test]
fn two_nodes_that_missed_each_others_writes_settle_by_symbols_alone() {
    let mut net = TestNet::unstarted(2, QUIET);
    let (a, b) = (author(70), author(71));
    net.up(0, &[]);
    let on_first: Vec<_> = (0..300)
        .map(|k| doc(&a, &format!("a-{k}"), 1, "v"))
        .collect();
    put_all_applied(net.node(0), &on_first);
    net.up(1, &[]);
    let mut on_second: Vec<_> = (0..200)
        .map(|k| doc(&b, &format!("b-{k}"), 1, "v"))
        .collect();
    // The same slot on both: the second holds the newer version.
    on_second.push(doc(&a, "a-0", 2, "newer"));
    put_all_applied(net.node(1), &on_second);

    // Restarted with the first as bootstrap, the second dials and reconciles.
    net.stop(1);
    let boot = net.boot();
    net.up(1, &["--bootstrap", &boot]);
    let want = json!({"records": 500, "ratings": {"count": 0, "sum": 0}});
    wait_converged(&net.nodes(), &want, "after one reconciliation");
    for n in net.nodes() {
        assert_eq!(
            get_record(n, &a.verifying_key().to_bytes(), "a-0", Kind::Doc)["value"],
            "newer"
        );
    }

    let second = net.node(1);
    assert_eq!(
        second.metric("cirrus_syncs_total", &[("result", "done")]),
        1.0
    );
    assert_eq!(
        second.metric("cirrus_sync_walks_total", &[]),
        0.0,
        "the symbols found the whole difference"
    );
    // Probe, the sized sketch, and one exchange for what the first lacked.
    let rounds = second.metric("cirrus_sync_rounds_total", &[]);
    assert!(rounds <= 4.0, "{rounds} round trips");
    assert_eq!(
        second.metric("cirrus_sync_records_total", &[]),
        299.0,
        "exactly the records the second lacked"
    );
}

type RawEvent = request_response::Event<Vec<u8>, Vec<u8>>;

/// How the rogue answers the node's sync requests.
#[derive(Clone, Copy)]
enum Lie {
    /// A decoded difference that hands over a record with a broken signature.
    ForgedRecord,
    /// Asks for everything the node holds and then owes ever more prefixes.
    EndlessOwed,
    /// Symbols that peel into nothing, then "send me fewer".
    ShrinkingNeed,
}

fn liar(
    lie: Lie,
    forged: Vec<u8>,
    asked: Arc<Mutex<usize>>,
) -> impl FnMut(&mut libp2p::Swarm<RawBehaviour>, RawEvent, &mut Vec<Vec<u8>>) {
    move |swarm, ev, responses| {
        let request_response::Event::Message { message, .. } = ev else {
            return;
        };
        let (request, channel) = match message {
            Message::Request {
                request, channel, ..
            } => (request, channel),
            Message::Response { response, .. } => {
                responses.push(response);
                return;
            }
        };
        *asked.lock().unwrap() += 1;
        let req: Request = cbor4ii::serde::from_slice(&request).expect("the node sends cbor");
        let every_prefix = ByteBuf::from(vec![0u8; sync::PREFIX * 8]);
        let answer = match (lie, req) {
            (Lie::ForgedRecord, Request::Sketch { .. }) => Response::Decoded {
                root: ByteBuf::from(vec![7u8; 32]),
                records: vec![ByteBuf::from(forged.clone())],
                owed: ByteBuf::new(),
                want: ByteBuf::new(),
            },
            (Lie::EndlessOwed, Request::Sketch { .. }) => Response::Decoded {
                root: ByteBuf::from(vec![7u8; 32]),
                records: Vec::new(),
                owed: every_prefix,
                want: ByteBuf::from(vec![0u8; sync::PREFIX]),
            },
            (Lie::EndlessOwed, Request::Exchange { .. }) => Response::Exchanged {
                root: ByteBuf::from(vec![7u8; 32]),
                records: Vec::new(),
                owed: every_prefix,
            },
            (Lie::ShrinkingNeed, Request::Sketch { .. }) => Response::Need(1),
            (_, Request::Reconcile(_)) => Response::Reconcile(Vec::new()),
            _ => Response::Refused("not serving".into()),
        };
        let _ = swarm.behaviour_mut().send_response(channel, cbor(&answer));
    }
}

#[test]
fn a_lying_peer_cannot_plant_unsigned_records_or_make_a_node_lose_any() {
    let mut net = TestNet::unstarted(1, &["--sync-interval-secs", "1"]);
    net.up(0, &[]);
    let node = net.node(0);
    let held: Vec<_> = (0..50)
        .map(|k| doc(&author(72), &format!("held-{k}"), 1, "v"))
        .collect();
    put_all_applied(node, &held);
    let before = node.db();
    let mut forged = doc(&author(73), "forged", 1, "planted").encode();
    let last = forged.len() - 1;
    forged[last] ^= 1;

    for lie in [Lie::ForgedRecord, Lie::EndlessOwed, Lie::ShrinkingNeed] {
        let asked = Arc::new(Mutex::new(0));
        let mut rogue = Rogue::new(raw_swarm, liar(lie, forged.clone(), asked.clone()));
        let id = rogue.connect(&node.listen[0]);
        // The rogue announces no root, so the node's next tick reconciles with it.
        let done = |n: &TestNode| {
            n.metric("cirrus_syncs_total", &[("result", "done")])
                + n.metric("cirrus_syncs_total", &[("result", "failed")])
        };
        let started = done(node);
        rogue.wait_until("the node ends a reconciliation with the rogue", |r| {
            if done(node) > started || r.closed.contains(&id) {
                Ok(())
            } else {
                Err(format!("{} requests so far", asked.lock().unwrap()))
            }
        });
        match lie {
            // A record that does not verify is a protocol violation.
            Lie::ForgedRecord => {
                rogue.wait_until("the node drops the forger", |r| {
                    if r.closed.contains(&id) {
                        Ok(())
                    } else {
                        Err("still connected".into())
                    }
                });
            }
            // Bounded: the exchange is cut off, not run forever.
            Lie::EndlessOwed => {
                rogue.wait_until("the node gives up on the endless exchange", |r| {
                    if r.closed.contains(&id) {
                        Ok(())
                    } else {
                        Err(format!("{} requests", asked.lock().unwrap()))
                    }
                });
                let n = *asked.lock().unwrap();
                assert!(n <= 1 + 1024 + 1, "{n} requests answered");
            }
            Lie::ShrinkingNeed => {}
        }
        assert!(
            get_record(
                node,
                &author(73).verifying_key().to_bytes(),
                "forged",
                Kind::Doc
            )
            .is_null(),
            "the forged record was stored"
        );
        assert_eq!(node.db(), before, "the node's database changed");
    }
}

#[test]
fn hostile_sketches_get_a_clear_answer_or_a_disconnect_and_change_nothing() {
    let mut net = TestNet::unstarted(1, QUIET);
    net.up(0, &[]);
    let node = net.node(0);
    let held: Vec<_> = (0..40)
        .map(|k| doc(&author(74), &format!("held-{k}"), 1, "v"))
        .collect();
    put_all_applied(node, &held);
    let before = node.db();
    let mut rogue = Rogue::new(raw_swarm, raw_chores);
    let id = rogue.connect(&node.listen[0]);
    let ask = |rogue: &mut Rogue<RawBehaviour>, req: &Request| -> Response {
        rogue.responses.clear();
        rogue.swarm.behaviour_mut().send_request(&id, cbor(req));
        let raw = rogue.wait_until("an answer", |r| r.responses.pop().ok_or("none".into()));
        cbor4ii::serde::from_slice(&raw).expect("a cbor response")
    };

    // Random symbols, every size up to a few thousand: an answer each, never a
    // record the node does not hold, never a change.
    let mut seed = 1u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 33) as u8
            })
            .collect()
    };
    for symbols in [0usize, 1, 16, 300, 5000] {
        let req = Request::Sketch {
            root: ByteBuf::from(random(32)),
            records: 12345,
            symbols: ByteBuf::from(random(symbols * sync::SYMBOL_BYTES)),
            buckets: ByteBuf::from(random(if symbols == 16 { 256 } else { 0 })),
        };
        match ask(&mut rogue, &req) {
            Response::Need(n) => assert!(n as usize > symbols && n as usize <= sync::MAX_SYMBOLS),
            Response::Decoded { records, .. } => {
                for r in records {
                    let r = cirrus_proto::Record::decode(&r).expect("a record");
                    assert_eq!(r.author, author(74).verifying_key().to_bytes());
                }
            }
            other => panic!("{symbols} random symbols: {other:?}"),
        }
    }
    assert!(
        rogue.connected.contains(&id),
        "honest-shaped requests are served"
    );
    assert_eq!(node.db(), before);

    // The same root as the node's: settled in one answer, nothing sent.
    let root = hex::decode(before["root"].as_str().unwrap()).unwrap();
    let same = Request::Sketch {
        root: ByteBuf::from(root),
        records: 40,
        symbols: ByteBuf::new(),
        buckets: ByteBuf::new(),
    };
    let Response::Decoded { records, want, .. } = ask(&mut rogue, &same) else {
        panic!("equal roots")
    };
    assert!(records.is_empty() && want.is_empty());

    // An exchange that asks by prefix gets the node's records under it, nothing
    // else, and changes nothing.
    let prefix = held[0].slot().hash()[..sync::PREFIX].to_vec();
    let exchange = Request::Exchange {
        records: Vec::new(),
        want: ByteBuf::from(prefix),
    };
    let Response::Exchanged { records, owed, .. } = ask(&mut rogue, &exchange) else {
        panic!("an exchange is answered by an exchange")
    };
    assert_eq!(records, vec![ByteBuf::from(held[0].encode())]);
    assert!(owed.is_empty());
    assert_eq!(node.db(), before);

    // Each of these is a protocol violation that stores nothing: too many
    // prefixes in one exchange, a pushed record whose signature is broken, a torn
    // prefix list.
    let mut forged = doc(&author(75), "pushed", 1, "planted").encode();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    for bad in [
        Request::Exchange {
            records: Vec::new(),
            want: ByteBuf::from(vec![0u8; sync::PREFIX * 16_385]),
        },
        Request::Exchange {
            records: vec![ByteBuf::from(forged.clone())],
            want: ByteBuf::new(),
        },
        Request::Exchange {
            records: Vec::new(),
            want: ByteBuf::from(vec![0u8; sync::PREFIX + 1]),
        },
    ] {
        let mut other = Rogue::new(raw_swarm, raw_chores);
        let other_id = other.connect(&node.listen[0]);
        other
            .swarm
            .behaviour_mut()
            .send_request(&other_id, cbor(&bad));
        other.wait_until("the node drops the peer", |r| {
            if r.closed.contains(&other_id) {
                Ok(())
            } else {
                Err("connected".into())
            }
        });
    }
    assert!(
        get_record(
            node,
            &author(75).verifying_key().to_bytes(),
            "pushed",
            Kind::Doc
        )
        .is_null(),
        "the forged push was stored"
    );
    assert_eq!(node.db(), before);

    // A torn symbol list is a protocol violation.
    rogue.swarm.behaviour_mut().send_request(
        &id,
        cbor(&Request::Sketch {
            root: ByteBuf::from(vec![0u8; 32]),
            records: 0,
            symbols: ByteBuf::from(vec![0u8; sync::SYMBOL_BYTES + 1]),
            buckets: ByteBuf::new(),
        }),
    );
    rogue.wait_until("the node drops the peer", |r| {
        if r.closed.contains(&id) {
            Ok(())
        } else {
            Err("connected".into())
        }
    });
    assert_eq!(node.db(), before);
}
