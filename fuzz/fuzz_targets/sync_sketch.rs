//! A peer's coded symbols, as anti-entropy's responder meets them (docs/network.md):
//! `sync::decode_symbols`, then `sync::respond` against a small local set. The first
//! byte picks whether bucket counts come along (the next 256 bytes) and the claimed
//! set size; the rest is the symbol list. Nothing may panic; a torn list is refused;
//! a "need" asks for more symbols than were sent and no more than the limit; a
//! decoded difference names at most one item per symbol.
#![no_main]

use cirrus_proto::sync::{self, Outcome, riblt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (buckets, symbols) = if flags & 1 == 1 && rest.len() >= riblt::BUCKETS {
        rest.split_at(riblt::BUCKETS)
    } else {
        (&[][..], rest)
    };
    let Some(theirs) = sync::decode_symbols(symbols) else {
        assert!(
            symbols.len() % sync::SYMBOL_BYTES != 0
                || symbols.len() / sync::SYMBOL_BYTES > sync::MAX_SYMBOLS
        );
        return;
    };
    let mine = riblt::Sketch::new(
        (0..100u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        theirs.len(),
    );
    let claimed = u64::from(flags) << 56 | symbols.len() as u64;
    match sync::respond(
        &theirs,
        mine.prefix(theirs.len()),
        (buckets, mine.buckets()),
        (claimed, 100),
    ) {
        Outcome::Need(n) => assert!(n > theirs.len() && n <= sync::MAX_SYMBOLS),
        Outcome::Decoded(d) => assert!(d.len() <= theirs.len()),
    }
});
