//! Any bytes as a gossip batch, as a peer sends it on the records topic:
//! `Batch::split` must not panic and must hold its limits; whatever splits is
//! exactly what encodes to the same bytes (so a batch has one byte form); each
//! part goes through `Record::decode` as the node would; and the parts pushed
//! through an `Outbox` come out, in order, in batches that split again.
#![no_main]

use std::time::{Duration, Instant};

use cirrus_proto::gossip::{BATCH_BUDGET, Batch, MAX_BATCH_BYTES, MAX_BATCH_RECORDS, Outbox};
use cirrus_proto::record::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(parts) = Batch::split(data) else {
        return;
    };
    assert!(!parts.is_empty() && parts.len() <= MAX_BATCH_RECORDS);
    assert!(parts.iter().map(|p| p.len()).sum::<usize>() <= BATCH_BUDGET);
    assert!(data.len() <= MAX_BATCH_BYTES);
    let serial = u64::from_be_bytes(data[1..9].try_into().unwrap());
    assert_eq!(Batch::encode(serial, parts.iter().copied()), data);
    for p in &parts {
        let _ = Record::decode(p);
    }
    let t0 = Instant::now();
    let mut outbox = Outbox::new(Duration::from_millis(10), [data[1]; 32]);
    let mut out: Vec<Vec<u8>> = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        out.extend(outbox.push(t0 + Duration::from_millis(i as u64), p.to_vec()));
    }
    out.extend(outbox.flush());
    let again: Vec<Vec<u8>> = out
        .iter()
        .flat_map(|b| Batch::split(b).expect("an outbox batch splits"))
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(again, parts.iter().map(|p| p.to_vec()).collect::<Vec<_>>());
});
