//! Record signing bytes, id, validation and the conflict rule.

use cirrus_proto::record::{Kind, MAX_KEY_BYTES, MAX_VALUE_BYTES, Record, RecordError};
use ed25519_dalek::SigningKey;

fn author() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

/// The message is spelled out field by field from SPEC. The signature and id were
/// pinned once and cross-checked with Python's `cryptography` package (Ed25519 over
/// the same message) and `hashlib.sha256`, so they do not just echo this code.
#[test]
fn signing_bytes_match_the_pinned_vector() {
    let r = Record::sign(&author(), Kind::Doc, "hello", 1, Some("world".into()));
    let expected_msg = [
        hex::encode(b"cirrus-record-v1"),
        "00".into(),
        hex::encode(author().verifying_key().to_bytes()),
        "0005".into(),
        hex::encode(b"hello"),
        "0000000000000001".into(),
        "01".into(),
        "00000005".into(),
        hex::encode(b"world"),
    ]
    .concat();
    assert_eq!(hex::encode(r.signed_message()), expected_msg);
    assert_eq!(hex::encode(r.sig), PINNED_SIG);
    assert_eq!(hex::encode(r.id()), PINNED_ID);
    r.verify().unwrap();
}

const PINNED_SIG: &str = "7d320aea3bb6c6eaa599282e8c6c105402066eced5f8550338ba09e96a3d1d567cfbd01186371df4ff1c184c8173b7481ed2e403adb1ecb03da66246ecf9380e";
const PINNED_ID: &str = "036fc83984ce94072c8015a8198430e405d0308b0e00ea06f241bb8f70b82cbb";

#[test]
fn tombstone_and_rating_bytes() {
    let t = Record::sign(&author(), Kind::Rating, "x", 258, None);
    let msg = t.signed_message();
    assert_eq!(msg[16], 1, "rating kind byte");
    assert_eq!(&msg[49..51], &[0, 1]);
    assert_eq!(&msg[52..60], &258u64.to_be_bytes());
    assert_eq!(&msg[60..], &[0], "null value is a single 0 byte");
    t.verify().unwrap();
}

#[test]
fn encode_decode_round_trip_and_id_is_hash_of_encoding() {
    use sha2::{Digest, Sha256};
    let r = Record::sign(&author(), Kind::Doc, "k", 9, Some("v".repeat(1000)));
    let bytes = r.encode();
    assert_eq!(Record::decode(&bytes).unwrap(), r);
    assert_eq!(r.id(), <[u8; 32]>::from(Sha256::digest(&bytes)));
    for cut in [0, 10, 17, 50, bytes.len() - 1] {
        assert!(Record::decode(&bytes[..cut]).is_err(), "truncated at {cut}");
    }
    let mut long = bytes.clone();
    long.push(0);
    assert!(Record::decode(&long).is_err());
}

#[test]
fn tampering_breaks_the_signature() {
    let r = Record::sign(&author(), Kind::Doc, "k", 1, Some("v".into()));
    for mutate in [
        (|r: &mut Record| r.seq += 1) as fn(&mut Record),
        |r| r.key.push('x'),
        |r| r.value = None,
        |r| r.kind = Kind::Rating,
        |r| r.sig[5] ^= 1,
        |r| r.author[0] ^= 1,
    ] {
        let mut bad = r.clone();
        mutate(&mut bad);
        let err = bad.verify().unwrap_err();
        assert!(
            matches!(
                err,
                RecordError::Signature | RecordError::Author | RecordError::RatingValue(_)
            ),
            "{err:?}"
        );
    }
}

#[test]
fn limits() {
    let k = author();
    let ok_key = "k".repeat(MAX_KEY_BYTES);
    Record::sign(
        &k,
        Kind::Doc,
        ok_key.clone(),
        1,
        Some("v".repeat(MAX_VALUE_BYTES)),
    )
    .verify()
    .unwrap();
    let cases = [
        (Record::sign(&k, Kind::Doc, "", 1, None), "key"),
        (Record::sign(&k, Kind::Doc, ok_key + "k", 1, None), "key"),
        (Record::sign(&k, Kind::Doc, "a\nb", 1, None), "control"),
        (
            Record::sign(&k, Kind::Doc, "k", 1, Some("v".repeat(MAX_VALUE_BYTES + 1))),
            "value",
        ),
        (
            Record::sign(&k, Kind::Rating, "k", 1, Some("6".into())),
            "rating",
        ),
        (
            Record::sign(&k, Kind::Rating, "k", 1, Some("05".into())),
            "rating",
        ),
        (
            Record::sign(&k, Kind::Rating, "k", 1, Some("".into())),
            "rating",
        ),
    ];
    for (r, what) in cases {
        let err = r.verify().unwrap_err();
        assert!(err.to_string().contains(what), "{what}: {err}");
    }
    for score in 1..=5 {
        let r = Record::sign(&k, Kind::Rating, "film", 1, Some(score.to_string()));
        assert_eq!(r.rating(), Some(score));
    }
}

#[test]
fn conflict_rule_orders_by_seq_then_id() {
    let k = author();
    let a = Record::sign(&k, Kind::Doc, "k", 2, Some("a".into()));
    let b = Record::sign(&k, Kind::Doc, "k", 1, Some("b".into()));
    let c = Record::sign(&k, Kind::Doc, "k", 2, Some("c".into()));
    assert!(a.supersedes(&a.id(), &b, &b.id()));
    assert!(!b.supersedes(&b.id(), &a, &a.id()));
    let (hi, lo) = if a.id() > c.id() { (&a, &c) } else { (&c, &a) };
    assert!(hi.supersedes(&hi.id(), lo, &lo.id()));
    assert!(!lo.supersedes(&lo.id(), hi, &hi.id()));
    assert!(
        !a.supersedes(&a.id(), &a, &a.id()),
        "a record does not supersede itself"
    );
}

#[test]
fn json_form_is_spec_shaped() {
    let r = Record::sign(&author(), Kind::Rating, "film", 3, Some("4".into()));
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["kind"], "rating");
    assert_eq!(v["seq"], 3);
    assert_eq!(v["author"].as_str().unwrap().len(), 64);
    assert_eq!(v["sig"].as_str().unwrap().len(), 128);
    let back: Record = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(back, r);
    let mut bad = v;
    bad["author"] = "zz".into();
    assert!(serde_json::from_value::<Record>(bad).is_err());
}
