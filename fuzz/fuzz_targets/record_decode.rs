//! Any bytes as a canonical record (what gossip and anti-entropy carry):
//! `Record::decode` must not panic, and whatever decodes must be canonical (encoding
//! it gives back exactly the input, so one record has one byte form and one id),
//! within the SPEC limits, and survive the JSON form that clients see.
#![no_main]

use cirrus_proto::record::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(r) = Record::decode(data) else {
        return;
    };
    assert_eq!(r.encode(), data, "decode then encode is the identity");
    r.check_limits().expect("a decoded record is within the limits");
    let _ = r.verify();
    let _ = r.rating();
    let _ = r.slot().hash();
    let json = serde_json::to_string(&r).expect("serializes");
    let back: Record = serde_json::from_str(&json).expect("its JSON parses");
    assert_eq!(back, r);
    assert_eq!(back.id(), r.id());
});
