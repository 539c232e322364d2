//! STUN codec: RFC 5769 test vectors, round trips, the Binding server and client,
//! and the peer-id signature.

use std::net::SocketAddr;

use cirrus_proto::stun::{
    self, Attribute, Class, Message, StunError, attr, binding_request, handle_binding,
    parse_binding_response,
};
use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.split_whitespace().collect::<String>()).unwrap()
}

const TXID: &str = "b7e7a701 bc34d686 fa87dfae";

// RFC 5769 §2.1: a request with SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME,
// MESSAGE-INTEGRITY and FINGERPRINT.
const RFC5769_REQUEST: &str = "00010058 2112a442 b7e7a701 bc34d686 fa87dfae
    80220010 5354554e 20746573 7420636c 69656e74 00240004 6e0001ff 80290008 932ff9b1
    51263b36 00060009 6576746a 3a683676 59202020 00080014 9aeaa70c bfd8cb56 781ef2b5
    b2d3f249 c1b571a2 80280004 e57a3bcf";
// §2.2: IPv4 response, XOR-MAPPED-ADDRESS 192.0.2.1:32853.
const RFC5769_V4: &str = "0101003c 2112a442 b7e7a701 bc34d686 fa87dfae 8022000b 74657374
    20766563 746f7220 00200008 0001a147 e112a643 00080014 2b91f599 fd9e90c3 8c7489f9
    2af9ba53 f06be7d7 80280004 c07d4c96";
// §2.3: IPv6 response, 2001:db8:1234:5678:11:2233:4455:6677 port 32853.
const RFC5769_V6: &str = "01010048 2112a442 b7e7a701 bc34d686 fa87dfae 8022000b 74657374
    20766563 746f7220 00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9 00080014
    a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41 80280004 c8fb0b4c";

fn txid() -> [u8; 12] {
    unhex(TXID).try_into().unwrap()
}

#[test]
fn rfc5769_request() {
    let m = Message::decode(&unhex(RFC5769_REQUEST)).unwrap();
    assert_eq!((m.class, m.method), (Class::Request, stun::BINDING));
    assert_eq!(m.transaction_id, txid());
    assert_eq!(
        m.get(attr::SOFTWARE),
        Some(&Attribute::Software("STUN test client".into()))
    );
    // USERNAME (0x0006) and MESSAGE-INTEGRITY (0x0008) are comprehension-required and
    // not implemented: the server refuses with 420 listing them.
    let answer = handle_binding(
        &unhex(RFC5769_REQUEST),
        "192.0.2.1:32853".parse().unwrap(),
        "t",
    );
    let reply = Message::decode(&answer.reply.unwrap()).unwrap();
    assert_eq!(reply.class, Class::Error);
    assert!(matches!(
        reply.get(attr::ERROR_CODE),
        Some(Attribute::ErrorCode { code: 420, .. })
    ));
    let Some(Attribute::UnknownAttributes(u)) = reply.get(attr::UNKNOWN_ATTRIBUTES) else {
        panic!()
    };
    assert!(u.contains(&0x0006) && u.contains(&0x0008) && u.contains(&0x0024));
}

#[test]
fn rfc5769_responses() {
    let v4: SocketAddr = "192.0.2.1:32853".parse().unwrap();
    let v6: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .unwrap();
    assert_eq!(parse_binding_response(&unhex(RFC5769_V4), &txid()), Ok(v4));
    assert_eq!(parse_binding_response(&unhex(RFC5769_V6), &txid()), Ok(v6));
    let m = Message::decode(&unhex(RFC5769_V4)).unwrap();
    assert_eq!(
        m.get(attr::SOFTWARE),
        Some(&Attribute::Software("test vector".into()))
    );
    // A flipped bit anywhere before FINGERPRINT is caught.
    let mut bad = unhex(RFC5769_V4);
    bad[30] ^= 1;
    assert_eq!(Message::decode(&bad), Err(StunError::Fingerprint));
    assert_eq!(
        parse_binding_response(&unhex(RFC5769_V4), &[0; 12]),
        Err(StunError::WrongTransaction)
    );
}

#[test]
fn server_answers_binding_with_both_addresses_and_fingerprint() {
    let from: SocketAddr = "198.18.0.7:40000".parse().unwrap();
    let req = binding_request([7; 12], "client", None);
    assert!(stun::is_stun(&req));
    let answer = handle_binding(&req, from, "cirrus-test");
    assert!(answer.peer.is_none());
    let reply = answer.reply.unwrap();
    assert_eq!(parse_binding_response(&reply, &[7; 12]), Ok(from));
    let m = Message::decode(&reply).unwrap();
    assert_eq!(
        m.get(attr::MAPPED_ADDRESS),
        Some(&Attribute::MappedAddress(from))
    );
    assert_eq!(
        m.get(attr::SOFTWARE),
        Some(&Attribute::Software("cirrus-test".into()))
    );
    assert_eq!(
        &reply[reply.len() - 8..reply.len() - 6],
        &attr::FINGERPRINT.to_be_bytes()
    );

    // Indications, responses and other methods get no answer: a server that
    // answered unknown methods would reflect whatever a spoofed source sends.
    assert!(
        handle_binding(&stun::binding_indication([1; 12]), from, "x")
            .reply
            .is_none()
    );
    assert!(handle_binding(&reply, from, "x").reply.is_none());
    let other = Message::new(Class::Request, 0x003, [2; 12]).encode(false);
    assert!(handle_binding(&other, from, "x").reply.is_none());
}

#[test]
fn no_answer_is_more_than_three_times_its_request() {
    let v4: SocketAddr = "198.18.0.7:40000".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
    let software = "a rather long software name, as some servers have";
    // The smallest request there is (a header) and requests that grow from it.
    let mut requests = vec![Message::new(Class::Request, stun::BINDING, [3; 12]).encode(false)];
    for n in [1, 8, 40, 200] {
        requests.push(binding_request([4; 12], &"s".repeat(n), None));
    }
    requests.push(unhex(RFC5769_REQUEST)); // answered with 420
    for req in &requests {
        for from in [v4, v6] {
            let reply = handle_binding(req, from, software)
                .reply
                .expect("an answer");
            assert!(
                reply.len() <= stun::AMPLIFICATION * req.len(),
                "{} bytes for a {}-byte request",
                reply.len(),
                req.len()
            );
            if Message::decode(&reply).unwrap().class == Class::Success {
                // The address is always there, and the answer always reads.
                assert_eq!(
                    parse_binding_response(&reply, &Message::decode(req).unwrap().transaction_id),
                    Ok(from)
                );
            }
        }
    }
    // A stock client's request has room for everything.
    let stock = binding_request([5; 12], "STUN test client", None);
    let m = Message::decode(&handle_binding(&stock, v6, software).reply.unwrap()).unwrap();
    assert!(m.get(attr::SOFTWARE).is_some() && m.get(attr::MAPPED_ADDRESS).is_some());
}

fn peer_id_of(key: &SigningKey) -> Vec<u8> {
    [
        &[0x00, 0x24, 0x08, 0x01, 0x12, 0x20][..],
        &key.verifying_key().to_bytes(),
    ]
    .concat()
}

#[test]
fn peer_signature_proves_the_peer_and_forgeries_prove_nothing() {
    let key = SigningKey::from_bytes(&[5; 32]);
    let id = peer_id_of(&key);
    let txid = [9u8; 12];
    let sig = key.sign(&stun::peer_signing_message(&txid)).to_bytes();
    let from: SocketAddr = "10.0.0.2:5000".parse().unwrap();
    let good = handle_binding(&binding_request(txid, "c", Some((&id, &sig))), from, "s");
    assert_eq!(good.peer.unwrap().peer_id, id);

    // Signature for another transaction, by another key, or over garbage: answered
    // (any client gets its mapping) but nothing is proven.
    let other_key = SigningKey::from_bytes(&[6; 32]);
    let forged = [
        key.sign(&stun::peer_signing_message(&[8; 12])).to_bytes(),
        other_key
            .sign(&stun::peer_signing_message(&txid))
            .to_bytes(),
        [0u8; 64],
    ];
    for sig in forged {
        let a = handle_binding(&binding_request(txid, "c", Some((&id, &sig))), from, "s");
        assert!(a.reply.is_some());
        assert!(a.peer.is_none());
    }
}

#[test]
fn tcp_framing() {
    let req = binding_request([3; 12], "c", None);
    assert_eq!(stun::frame_len(&req[..10]), Ok(None));
    assert_eq!(stun::frame_len(&req), Ok(Some(req.len())));
    assert!(stun::frame_len(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_err());
}

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
    ]
}

fn arb_attr() -> impl Strategy<Value = Attribute> {
    prop_oneof![
        arb_addr().prop_map(Attribute::MappedAddress),
        arb_addr().prop_map(Attribute::XorMappedAddress),
        "[a-z ]{0,40}".prop_map(Attribute::Software),
        (300u16..700, "[a-z]{0,20}")
            .prop_map(|(code, reason)| Attribute::ErrorCode { code, reason }),
        prop::collection::vec(any::<u16>(), 0..6).prop_map(Attribute::UnknownAttributes),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Attribute::PeerId),
        prop::collection::vec(any::<u8>(), 0..70).prop_map(Attribute::PeerSignature),
        (0x8030u16..0xc000, prop::collection::vec(any::<u8>(), 0..33))
            .prop_map(|(typ, value)| Attribute::Other { typ, value }),
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips(
        class in prop_oneof![Just(Class::Request), Just(Class::Indication), Just(Class::Success), Just(Class::Error)],
        // Methods up to 0xff: above that the first byte passes 3 and RFC 7983
        // demultiplexing (which every STUN socket here relies on) no longer holds.
        method in 0u16..0x100,
        txid in any::<[u8; 12]>(),
        attrs in prop::collection::vec(arb_attr(), 0..8),
        fingerprint in any::<bool>(),
    ) {
        let m = Message { class, method, transaction_id: txid, attributes: attrs };
        let bytes = m.encode(fingerprint);
        prop_assert!(stun::is_stun(&bytes));
        prop_assert_eq!(bytes.len() % 4, 0);
        prop_assert_eq!(Message::decode(&bytes), Ok(m));
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300), from in arb_addr()) {
        let _ = Message::decode(&bytes);
        let _ = stun::frame_len(&bytes);
        let _ = handle_binding(&bytes, from, "s");
        let _ = parse_binding_response(&bytes, &[0; 12]);
    }

    #[test]
    fn mutated_requests_never_panic(pos in 0usize..64, val in any::<u8>(), cut in 0usize..64) {
        let mut req = binding_request([1; 12], "client", Some((&[0, 36, 8, 1, 18, 32], &[0; 64])));
        let p = pos % req.len();
        req[p] = val;
        req.truncate(req.len() - cut.min(req.len()));
        let _ = handle_binding(&req, "1.2.3.4:5".parse().unwrap(), "s");
    }
}

#[test]
fn nat_classification() {
    use cirrus_proto::stun::nat::{Nat, Observation, classify};
    let a = |s: &str| s.parse::<SocketAddr>().unwrap();
    let o = |local, server, mapped| Observation {
        local: a(local),
        server: a(server),
        mapped: a(mapped),
    };
    assert_eq!(classify(&[]), Nat::Unknown);
    assert_eq!(
        classify(&[o("10.0.0.2:5000", "198.18.0.1:3478", "198.18.1.1:6000")]),
        Nat::Unknown
    );
    assert_eq!(
        classify(&[o("198.18.0.9:5000", "198.18.0.1:3478", "198.18.0.9:5000")]),
        Nat::None
    );
    let eim = [
        o("10.0.0.2:5000", "198.18.0.1:3478", "198.18.1.1:6000"),
        o("10.0.0.2:5000", "198.18.0.2:3478", "198.18.1.1:6000"),
    ];
    assert_eq!(classify(&eim), Nat::EndpointIndependent);
    let edm = [
        o("10.0.0.2:5000", "198.18.0.1:3478", "198.18.1.1:6000"),
        o("10.0.0.2:5000", "198.18.0.2:3478", "198.18.1.1:6001"),
    ];
    assert_eq!(classify(&edm), Nat::EndpointDependent);
}
