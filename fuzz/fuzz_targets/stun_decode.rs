//! Any bytes through every STUN entry point a peer or a stranger can reach: the
//! decoder, TCP framing, the server's answer, the client's reading of an answer.
//! None may panic; whatever decodes must survive an encode/decode round trip, and
//! every reply the server makes must itself decode.
#![no_main]

use std::net::SocketAddr;

use cirrus_proto::stun::{self, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = stun::is_stun(data);
    if let Ok(Some(len)) = stun::frame_len(data) {
        assert!(len >= stun::HEADER_LEN && len <= stun::MAX_MESSAGE);
    }
    if let Ok(msg) = Message::decode(data) {
        // Re-encoding what we decoded gives a message that decodes to the same (when
        // the added FINGERPRINT keeps it within the size limit).
        for fingerprint in [false, true] {
            let bytes = msg.encode(fingerprint);
            if bytes.len() <= stun::MAX_MESSAGE {
                let again = Message::decode(&bytes).expect("our own encoding decodes");
                assert_eq!(again, msg);
            }
        }
        let txid = msg.transaction_id;
        let _ = stun::parse_binding_response(data, &txid);
    }
    for from in [
        SocketAddr::from(([198, 18, 0, 1], 40000)),
        SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 1)),
    ] {
        let answer = stun::handle_binding(data, from, "cirrus/fuzz");
        if let Some(reply) = answer.reply {
            assert!(reply.len() <= stun::MAX_MESSAGE, "reply of {} bytes", reply.len());
            let m = Message::decode(&reply).expect("the server's reply decodes");
            if m.class == stun::Class::Success {
                assert_eq!(stun::parse_binding_response(&reply, &m.transaction_id), Ok(from));
            }
        }
    }
    let _ = stun::parse_binding_response(data, &[0; 12]);
});
