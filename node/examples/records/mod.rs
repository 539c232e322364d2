//! Record and request builders shared by the examples and by the `root_update`
//! bench (which includes this file with `#[path]`), so that what they measure is
//! built one way.

#![allow(dead_code)] // each example uses its own subset

use std::ops::Range;

use cirrus_node::store::Stored;
use cirrus_proto::record::{Kind, Record};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

/// Authors the signed records are spread over.
pub const AUTHORS: usize = 64;

/// `count` signed doc records with distinct slots `{prefix}/{i:010}`, spread over
/// [`AUTHORS`] keys derived from `seed`; signed on every core, as the large runs
/// sign a million. Record `i` is the same whatever `count` is.
pub fn sign_records(count: usize, seed: u8, prefix: &str) -> Vec<Stored> {
    let keys: Vec<SigningKey> = (0..AUTHORS)
        .map(|a| {
            let mut bytes = [seed; 32];
            bytes[..8].copy_from_slice(&(a as u64).to_be_bytes());
            SigningKey::from_bytes(&bytes)
        })
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = count.div_ceil(threads).max(1);
    let mut out: Vec<Stored> = Vec::with_capacity(count);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..count)
            .step_by(chunk)
            .map(|start| {
                let keys = &keys;
                s.spawn(move || {
                    (start..(start + chunk).min(count))
                        .map(|i| {
                            let record = Record::sign(
                                &keys[i % AUTHORS],
                                Kind::Doc,
                                format!("{prefix}/{i:010}"),
                                1,
                                Some(format!("value of record {i}, about forty bytes")),
                            );
                            let id = record.id();
                            Stored { record, id }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            out.extend(h.join().expect("signing thread"));
        }
    });
    out
}

/// The JSON-RPC batch body that puts doc records `ids` (keys `load/{i:010}`, each
/// signed by `keys[i % keys.len()]` with `value`).
pub fn put_batch_body(keys: &[SigningKey], ids: Range<usize>, value: &str) -> Vec<u8> {
    let reqs: Vec<Value> = ids
        .map(|i| {
            let record = Record::sign(
                &keys[i % keys.len()],
                Kind::Doc,
                format!("load/{i:010}"),
                1,
                Some(value.to_string()),
            );
            json!({"jsonrpc": "2.0", "id": i, "method": "put", "params": {"record": record}})
        })
        .collect();
    serde_json::to_vec(&reqs).expect("serializes")
}
