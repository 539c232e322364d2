//! UDP API framing and the anti-amplification cookie.

use cirrus_proto::udp::{self, AmplificationGuard, Reassembler};
use proptest::prelude::*;

proptest! {
    #[test]
    fn fragments_reassemble_in_any_order(len in 0usize..20_000, seed in any::<u64>(), no in any::<u32>()) {
        let json: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        let mut ds = udp::datagrams(no, &json);
        prop_assert!(ds.iter().all(|d| d.len() <= udp::MAX_PLAIN));
        if json.len() <= udp::MAX_PLAIN {
            prop_assert_eq!(ds.len(), 1);
            prop_assert_eq!(&ds[0], &json);
        }
        let mut r = seed;
        for i in (1..ds.len()).rev() {
            r = r.wrapping_mul(6364136223846793005).wrapping_add(1);
            ds.swap(i, (r >> 33) as usize % (i + 1));
        }
        let mut re = Reassembler::default();
        let mut out = None;
        for d in &ds {
            if let Some(m) = re.push(d) { out = Some(m); }
        }
        prop_assert_eq!(out, Some(json));
    }

    #[test]
    fn garbage_never_panics(d in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = udp::parse_fragment(&d);
        let _ = Reassembler::default().push(&d);
    }
}

#[test]
fn cookie_validates_only_its_source_and_expires() {
    let mut g = AmplificationGuard::new([1; 32]);
    let a = "198.18.0.1:4000".parse().unwrap();
    let b = "198.18.0.2:4000".parse().unwrap();
    let now = 1_000_000;
    assert!(!g.validated(&a, None, now));
    let c = g.cookie(&a, now);
    assert!(
        !g.validated(&b, Some(&c), now),
        "a cookie is bound to its source"
    );
    assert!(!g.validated(&a, Some("00"), now));
    assert!(g.validated(&a, Some(&c), now + 100));
    assert!(g.validated(&a, None, now + 200), "validated for a while");
    assert!(!g.validated(&a, None, now + 10_000), "and then no longer");
    assert!(
        !g.validated(&a, Some(&c), now + 10_000),
        "old cookies expire"
    );
}

#[test]
fn unfinished_messages_are_bounded_and_one_under_way_survives_noise() {
    let json: Vec<u8> = (0..5000).map(|i| b'a' + (i % 26) as u8).collect();
    let ours = udp::datagrams(1, &json);
    let mut re = Reassembler::default();
    assert_eq!(re.push(&ours[0]), None);
    assert_eq!(re.push(&ours[1]), None);
    // Many messages that never finish, each one fragment in.
    for no in 100..200u32 {
        let noise = &udp::datagrams(no, &json)[0];
        assert_eq!(re.push(noise), None);
        assert!(re.unfinished() <= udp::fragment::MAX_PARTIAL);
    }
    let mut got = None;
    for d in &ours[2..] {
        got = re.push(d).or(got);
    }
    assert_eq!(got, Some(json));
}
