//! The libp2p swarm: who we are connected to, gossip of records and announcements,
//! and the request-response protocol that anti-entropy, peer exchange and `relay`
//! use.
//!
//! One task ([`event_loop`]) owns the `Swarm`; everything else holds a cloneable
//! [`P2pHandle`] and sends it commands, with answers on oneshot channels (the
//! rust-libp2p file-sharing pattern). Slow work (signature checks, store reads,
//! reconciliation) runs in spawned tasks that report back through the same command
//! channel, so the loop itself never waits.

mod announce;
mod behaviour;
mod codec;
mod event_loop;
mod gossip;
mod peers;
mod requests;
mod transport;

use cirrus_proto::api::PeerInfo;
use cirrus_proto::{peer, sync};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

pub use behaviour::{
    Behaviour, BehaviourEvent, PEER_PROTOCOL, PeerCodec, SYNC_PROTOCOL, SyncCodec, announce_topic,
    build_swarm, records_topic,
};
pub use codec::{CborCodec, Inbound};
pub use event_loop::{Started, StunLink, start};

#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    #[error("cannot build the swarm: {0}")]
    Build(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("bad multiaddr {0:?}")]
    Addr(String),
    #[error("peer {0} is not connected")]
    NotConnected(PeerId),
    #[error("request to {peer} failed: {reason}")]
    Request { peer: PeerId, reason: String },
    #[error("the swarm has stopped")]
    Stopped,
}

/// What the rest of the node (and the loop's own tasks) may ask of the swarm.
pub(crate) enum Command {
    Sync {
        peer: PeerId,
        request: sync::Request,
        reply: oneshot::Sender<Result<sync::Response, P2pError>>,
    },
    Ask {
        peer: PeerId,
        request: peer::Request,
        reply: oneshot::Sender<Result<peer::Response, P2pError>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    Listen {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Dial {
        addr: Multiaddr,
    },
    /// A gossip message was checked: forward it, or drop it and penalise its sender.
    Validated {
        id: libp2p::gossipsub::MessageId,
        source: PeerId,
        acceptance: libp2p::gossipsub::MessageAcceptance,
    },
    /// The answer to an inbound sync request is ready.
    RespondSync {
        channel: libp2p::request_response::ResponseChannel<sync::Response>,
        response: sync::Response,
    },
    /// The answer to an inbound peer request is ready.
    RespondPeer {
        channel: libp2p::request_response::ResponseChannel<peer::Response>,
        response: peer::Response,
    },
    /// A peer broke the protocol: disconnect it.
    Misbehaved {
        peer: PeerId,
        why: String,
    },
    /// Peers learned by peer exchange.
    Learned {
        entries: Vec<peer::PeerEntry>,
    },
    SyncDone {
        peer: PeerId,
    },
    /// A peer answered our hello with its signed announcement.
    Hello {
        peer: PeerId,
        sealed: Vec<u8>,
    },
}

/// A JSON-RPC request relayed to this node by a peer; answer on `reply`.
pub struct InboundRelay {
    pub from: PeerId,
    pub request: Vec<u8>,
    pub reply: oneshot::Sender<Vec<u8>>,
}

/// Cloneable handle to the swarm task.
#[derive(Clone)]
pub struct P2pHandle {
    commands: mpsc::Sender<Command>,
    pub local_peer_id: PeerId,
    peer_events: tokio::sync::broadcast::Sender<serde_json::Value>,
}

impl P2pHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, P2pError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| P2pError::Stopped)?;
        rx.await.map_err(|_| P2pError::Stopped)
    }

    /// Send a sync request to a connected peer and wait for its response.
    pub async fn request(
        &self,
        peer: PeerId,
        request: sync::Request,
    ) -> Result<sync::Response, P2pError> {
        self.ask(|reply| Command::Sync {
            peer,
            request,
            reply,
        })
        .await?
    }

    /// Send a peer request (relay, punch, peer exchange) and wait for the response.
    pub async fn ask_peer(
        &self,
        peer: PeerId,
        request: peer::Request,
    ) -> Result<peer::Response, P2pError> {
        self.ask(|reply| Command::Ask {
            peer,
            request,
            reply,
        })
        .await?
    }

    pub async fn peers(&self) -> Result<Vec<PeerInfo>, P2pError> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, P2pError> {
        self.ask(|reply| Command::Listen { reply }).await
    }

    /// Peers connecting and leaving: `{"peerId", "event": "connected"|"disconnected", "addr"}`.
    pub fn peer_events(&self) -> tokio::sync::broadcast::Receiver<serde_json::Value> {
        self.peer_events.subscribe()
    }

    pub async fn dial(&self, addr: Multiaddr) -> Result<(), P2pError> {
        self.commands
            .send(Command::Dial { addr })
            .await
            .map_err(|_| P2pError::Stopped)
    }
}
