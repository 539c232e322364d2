//! Any datagrams through the UDP API's framing (docs/udp.md) as a client meets it:
//! `parse_fragment` on each, and a `Reassembler` fed the whole sequence. The input
//! is split into datagrams by a one-byte length prefix each. Nothing may panic; a
//! reassembled message is never longer than the datagrams it came from; and any
//! message that `datagrams` splits (with fragments interleaved with the fuzzed ones)
//! comes back whole.
#![no_main]

use cirrus_proto::udp::{self, FRAGMENT_HEADER, FRAGMENT_TAG, MAX_PLAIN, Reassembler};
use libfuzzer_sys::fuzz_target;

/// Split `data` into datagrams: a length byte, then that many bytes (or the rest).
fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = (len as usize).min(tail.len());
        out.push(&tail[..n]);
        rest = &tail[n..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let datagrams = split(data);
    let total: usize = datagrams.iter().map(|d| d.len()).sum();
    let mut r = Reassembler::default();
    for d in &datagrams {
        if let Some(f) = udp::parse_fragment(d) {
            assert!(f.count > 0 && f.index < f.count);
            assert_eq!(f.data.len(), d.len() - FRAGMENT_HEADER);
        }
        if let Some(msg) = r.push(d) {
            assert!(msg.len() <= total, "{} bytes out of {total} in", msg.len());
            if d.first() != Some(&FRAGMENT_TAG) {
                assert_eq!(&msg[..], *d, "a plain datagram comes back as it is");
            }
        }
    }

    // Our own fragments survive fuzzed ones interleaved (other message numbers).
    // A plain answer never starts with the fragment tag: JSON starts with { or [.
    if data.first() == Some(&FRAGMENT_TAG) {
        return;
    }
    let ours = udp::datagrams(u32::MAX, data);
    assert!(ours.iter().all(|d| d.len() <= MAX_PLAIN));
    let mut r = Reassembler::default();
    let mut got = None;
    for (i, d) in ours.iter().enumerate().rev() {
        if let Some(noise) = datagrams.get(i) {
            let noise_no = udp::parse_fragment(noise).map(|f| f.message_no);
            if noise_no != Some(u32::MAX) && noise.first() == Some(&FRAGMENT_TAG) {
                let _ = r.push(noise); // may complete a message of its own
            }
        }
        if let Some(m) = r.push(d) {
            got = Some(m);
        }
    }
    assert_eq!(got.as_deref(), Some(data), "{} datagrams", ours.len());
});
