//! The coded-symbol exchange of `proto::sync` over the swarm: the initiator's side
//! ([`settle`]) and the responder's ([`answer`], [`exchange`]).
//!
//! The responder keeps nothing between requests. What it sends is bounded by
//! [`ANSWER_BUDGET`] per answer; what did not fit it names by prefix (`owed`), and
//! the initiator asks for those in later exchanges.

use std::collections::VecDeque;

use cirrus_proto::merkle::Hash;
use cirrus_proto::sync::{
    self as proto, MAX_SYMBOLS, Outcome, PREFIX, PROBE, Replica, Request, Response, riblt,
};
use libp2p::PeerId;
use serde_bytes::ByteBuf;

use super::{Local, SyncError, SyncStats, ask, blocking, take};
use crate::p2p::Network;
use crate::store::Symbols;

/// Prefixes asked for in one exchange.
const WANT_PER_REQUEST: usize = 16_384;
/// Record bytes one answer carries at most (responses may be 16 MiB).
const ANSWER_BUDGET: usize = 12 << 20;
/// Record bytes one exchange request carries at most (requests may be 8 MiB).
const PUSH_BUDGET: usize = 6 << 20;
/// Sketch requests before the difference is left to the trie walk.
const MAX_ASKS: usize = 4;
/// Exchanges before a peer that keeps naming more is cut off.
const MAX_EXCHANGES: usize = 1024;

/// Find and settle the difference with `peer`. `Ok(true)`: the roots agreed at the
/// end; `Ok(false)`: the walk must finish the job.
pub(super) async fn settle(
    p2p: &Network,
    node: &Local<'_>,
    peer: PeerId,
    st: &mut SyncStats,
) -> Result<bool, SyncError> {
    let mut n = PROBE;
    let mut asks = 0;
    let (mut their_root, records, owed, want) = loop {
        asks += 1;
        let root = node.store.db_hash()?.root;
        let mine = our_symbols(node, n).await?;
        let req = Request::Sketch {
            root: ByteBuf::from(root.to_vec()),
            records: mine.records,
            symbols: ByteBuf::from(proto::encode_symbols(&mine.symbols)),
            buckets: ByteBuf::from(if asks == 1 {
                proto::encode_buckets(&mine.buckets)
            } else {
                Vec::new()
            }),
        };
        st.rounds += 1;
        let answer = match ask(p2p, peer, req, st).await {
            // A longer sketch than the peer will scan for: the walk finds it.
            Err(SyncError::Refused(_)) if asks > 1 => return Ok(false),
            other => other?,
        };
        match answer {
            Response::Need(m) => {
                let m = m as usize;
                if m <= n || m > MAX_SYMBOLS || asks >= MAX_ASKS {
                    return Ok(false);
                }
                n = m;
            }
            Response::Decoded {
                root,
                records,
                owed,
                want,
            } => break (root, records, owed, want),
            _ => return Err(SyncError::Protocol("unexpected answer to sketch".into())),
        }
    };
    let mut owed: VecDeque<[u8; PREFIX]> = prefixes(&owed)?.into();
    let mut want: VecDeque<[u8; PREFIX]> = prefixes(&want)?.into();
    let mut won: VecDeque<Hash> = take(node, records, st).await?.into();
    let mut exchanges = 0;
    while !(owed.is_empty() && want.is_empty() && won.is_empty()) {
        exchanges += 1;
        if exchanges > MAX_EXCHANGES {
            return Err(SyncError::Protocol("the exchange did not end".into()));
        }
        let (push, _) = collect(node, &mut want, &mut won, PUSH_BUDGET).await?;
        let ask_for: Vec<u8> = owed
            .drain(..owed.len().min(WANT_PER_REQUEST))
            .flatten()
            .collect();
        st.rounds += 1;
        let req = Request::Exchange {
            records: push,
            want: ByteBuf::from(ask_for),
        };
        let Response::Exchanged {
            root,
            records,
            owed: more,
        } = ask(p2p, peer, req, st).await?
        else {
            return Err(SyncError::Protocol("unexpected answer to exchange".into()));
        };
        their_root = root;
        owed.extend(prefixes(&more)?);
        won.extend(take(node, records, st).await?);
    }
    Ok(node.store.db_hash()?.root.as_slice() == their_root.as_slice())
}

/// Answer a sketch: peel it against ours, or ask for more symbols.
pub(super) async fn answer(
    node: &Local<'_>,
    root: &[u8],
    records: u64,
    symbols: &[u8],
    buckets: &[u8],
) -> Result<Response, SyncError> {
    let theirs = proto::decode_symbols(symbols)
        .ok_or_else(|| SyncError::Protocol("malformed symbols".into()))?;
    if !(buckets.is_empty() || buckets.len() == riblt::BUCKETS) || root.len() != 32 {
        return Err(SyncError::Protocol("malformed sketch".into()));
    }
    let my_root = node.store.db_hash()?.root;
    let root_buf = ByteBuf::from(my_root.to_vec());
    if root == my_root.as_slice() {
        return Ok(Response::Decoded {
            root: root_buf,
            records: Vec::new(),
            owed: ByteBuf::new(),
            want: ByteBuf::new(),
        });
    }
    let mine = our_symbols(node, theirs.len()).await?;
    match proto::respond(
        &theirs,
        &mine.symbols,
        (buckets, &mine.buckets),
        (records, mine.records),
    ) {
        Outcome::Need(n) => Ok(Response::Need(n as u32)),
        Outcome::Decoded(d) => {
            let mut lacking: VecDeque<_> = d.ours.iter().map(|&i| proto::prefix(i)).collect();
            let (records, owed) = answer_from(node, &mut lacking, &mut VecDeque::new()).await?;
            let want: Vec<u8> = d.theirs.iter().flat_map(|&i| proto::prefix(i)).collect();
            Ok(Response::Decoded {
                root: root_buf,
                records,
                owed: ByteBuf::from(owed),
                want: ByteBuf::from(want),
            })
        }
    }
}

/// Take the records a peer pushes; send those it asks for, and ours where ours won.
pub(super) async fn exchange(
    node: &Local<'_>,
    records: Vec<ByteBuf>,
    want: &[u8],
) -> Result<Response, SyncError> {
    let mut want: VecDeque<_> = prefixes(want)?.into();
    if want.len() > WANT_PER_REQUEST {
        return Err(SyncError::Protocol(format!(
            "{} prefixes in one exchange",
            want.len()
        )));
    }
    let mut won: VecDeque<Hash> = take(node, records, &mut SyncStats::default()).await?.into();
    let (records, owed) = answer_from(node, &mut want, &mut won).await?;
    Ok(Response::Exchanged {
        root: ByteBuf::from(node.store.db_hash()?.root.to_vec()),
        records,
        owed: ByteBuf::from(owed),
    })
}

async fn our_symbols(node: &Local<'_>, n: usize) -> Result<Symbols, SyncError> {
    let store = node.store.clone();
    tokio::task::spawn_blocking(move || store.symbols(n))
        .await
        .map_err(|e| SyncError::Protocol(format!("sketch task failed: {e}")))?
        .map_err(SyncError::Store)
}

/// An answer's records from the queues, up to [`ANSWER_BUDGET`]; everything not
/// sent is owed.
async fn answer_from(
    node: &Local<'_>,
    want: &mut VecDeque<[u8; PREFIX]>,
    won: &mut VecDeque<Hash>,
) -> Result<(Vec<ByteBuf>, Vec<u8>), SyncError> {
    let (records, mut owed) = collect(node, want, won, ANSWER_BUDGET).await?;
    owed.extend(want.drain(..).flatten());
    owed.extend(won.drain(..).flat_map(|slot| slot[..PREFIX].to_vec()));
    Ok((records, owed))
}

/// Our records under the prefixes in `want` and in the slots of `won`, taken from
/// the front until `budget` bytes; the prefixes whose records did not fit are
/// returned (concatenated), and whatever was not reached stays in the queues.
async fn collect(
    node: &Local<'_>,
    want: &mut VecDeque<[u8; PREFIX]>,
    won: &mut VecDeque<Hash>,
    budget: usize,
) -> Result<(Vec<ByteBuf>, Vec<u8>), SyncError> {
    if want.is_empty() && won.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let (mut w, mut s) = (std::mem::take(want), std::mem::take(won));
    let (records, owed, w, s) = blocking(node.store, move |snap| {
        let (mut out, mut owed, mut bytes) = (Vec::new(), Vec::new(), 0);
        while let Some(slot) = s.front() {
            match snap.record(slot).map_err(proto::SyncError::Replica)? {
                Some(r) if bytes + r.len() > budget => break,
                Some(r) => {
                    bytes += r.len();
                    out.push(ByteBuf::from(r));
                }
                None => {}
            }
            s.pop_front();
        }
        while let Some(p) = w.front() {
            if bytes >= budget {
                break;
            }
            let path = proto::prefix_path(p);
            match snap
                .records_under(&path, budget - bytes)
                .map_err(proto::SyncError::Replica)?
            {
                Some(rs) => {
                    for (_, r) in rs {
                        bytes += r.len();
                        out.push(ByteBuf::from(r));
                    }
                }
                None => owed.extend_from_slice(p),
            }
            w.pop_front();
        }
        Ok((out, owed, w, s))
    })
    .await?;
    *want = w;
    *won = s;
    Ok((records, owed))
}

fn prefixes(bytes: &[u8]) -> Result<Vec<[u8; PREFIX]>, SyncError> {
    proto::prefixes(bytes).ok_or_else(|| SyncError::Protocol("malformed prefix list".into()))
}
