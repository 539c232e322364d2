//! The trie walk (`proto::sync::walk`) over the swarm: after the symbol exchange
//! left the roots apart, or for a difference too large to code.

use cirrus_proto::sync::{self as proto, Item, Request, Response};
use libp2p::PeerId;
use serde_bytes::ByteBuf;

use super::{Local, SyncError, SyncStats, ask, blocking, take};
use crate::p2p::Network;

/// Items per reconciliation request; a longer message goes as several requests.
const ITEMS_PER_REQUEST: usize = 2048;

/// Walk the tries with `peer` until a round finds nothing that differs.
pub(super) async fn run(
    p2p: &Network,
    node: &Local<'_>,
    peer: PeerId,
    st: &mut SyncStats,
) -> Result<(), SyncError> {
    let mut msg = blocking(node.store, proto::opening).await?;
    let mut walked = 0;
    while !msg.is_empty() {
        walked += 1;
        st.rounds += 1;
        if walked > proto::MAX_ROUNDS {
            return Err(SyncError::Protocol("reconciliation did not end".into()));
        }
        let mut reply = Vec::new();
        for chunk in msg.chunks(ITEMS_PER_REQUEST) {
            match ask(p2p, peer, Request::Reconcile(chunk.to_vec()), st).await? {
                Response::Reconcile(items) => reply.extend(items),
                _ => return Err(SyncError::Protocol("unexpected answer to reconcile".into())),
            }
        }
        msg = receive(node, reply, st).await?;
    }
    Ok(())
}

/// Answer one message of a peer's walk.
pub(super) async fn answer(node: &Local<'_>, items: Vec<Item>) -> Result<Response, SyncError> {
    if items.len() > ITEMS_PER_REQUEST {
        return Err(SyncError::Protocol(format!(
            "{} items in one request",
            items.len()
        )));
    }
    let answer = receive(node, items, &mut SyncStats::default()).await?;
    Ok(Response::Reconcile(answer))
}

/// Apply the records a message carries, then answer it from our trie.
async fn receive(
    node: &Local<'_>,
    items: Vec<Item>,
    st: &mut SyncStats,
) -> Result<Vec<Item>, SyncError> {
    let raw = proto::carried(&items)
        .into_iter()
        .map(|r| ByteBuf::from(r.to_vec()))
        .collect();
    let lost = take(node, raw, st).await?;
    blocking(node.store, move |snap| proto::answer(snap, &items, &lost)).await
}
