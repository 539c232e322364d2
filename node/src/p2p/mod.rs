//! The libp2p swarm, as the rest of the node sees it: a cloneable [`Network`]
//! handle of commands, and a stream of [`Event`]s that the node answers (the
//! rust-libp2p file-sharing shape). One task ([`event_loop`]) owns the `Swarm`,
//! its channels and the requests in flight, and what libp2p itself tells about
//! connections; what peers *say* (their announcements, their records) is the
//! node's business (`crate::peers`), as is answering their requests.
//!
//! The loop also keeps the node connected: it remembers peers it learns (by
//! identify and peer exchange, within limits), redials them while it has too few,
//! and answers peer exchange itself.

mod behaviour;
mod codec;
mod connections;
mod event_loop;
mod exchange;
mod start;
mod transport;

use cirrus_proto::{peer, sync};
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

pub use behaviour::{
    Behaviour, BehaviourEvent, PEER_PROTOCOL, PeerCodec, SYNC_PROTOCOL, SyncCodec, announce_topic,
    build_swarm, records_topic,
};
pub use codec::{CborCodec, Inbound};
pub use connections::{Connection, usable};
pub use start::{Started, start};

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

/// The gossip topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Records,
    Announce,
}

/// What the swarm tells the node. Requests carry the channel to answer on
/// ([`Network::respond_sync`], [`Network::respond_peer`]); gossip messages wait for
/// [`Network::validated`].
#[derive(Debug)]
pub enum Event {
    /// The first connection to a peer is up.
    PeerUp {
        peer: PeerId,
        /// The connection's remote address.
        remote: Multiaddr,
        /// We dialed it.
        dialer: bool,
    },
    /// The last connection to a peer closed.
    PeerDown { peer: PeerId },
    /// Identify told the addresses the peer listens on.
    Identified {
        peer: PeerId,
        listen: Vec<Multiaddr>,
    },
    Gossip {
        topic: Topic,
        id: MessageId,
        source: PeerId,
        data: Vec<u8>,
    },
    InboundSync {
        peer: PeerId,
        request: sync::Request,
        channel: ResponseChannel<sync::Response>,
    },
    /// Hello, relay or punch (the loop answers peer exchange itself).
    InboundPeer {
        peer: PeerId,
        request: peer::Request,
        channel: ResponseChannel<peer::Response>,
    },
}

/// What the node asks of the swarm.
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
    RespondSync {
        channel: ResponseChannel<sync::Response>,
        response: sync::Response,
    },
    RespondPeer {
        channel: ResponseChannel<peer::Response>,
        response: peer::Response,
    },
    Publish {
        topic: Topic,
        data: Vec<u8>,
    },
    Validated {
        id: MessageId,
        source: PeerId,
        acceptance: MessageAcceptance,
    },
    Connections {
        reply: oneshot::Sender<Vec<Connection>>,
    },
    Listen {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Dial {
        addr: Multiaddr,
    },
    /// A peer broke a protocol: disconnect it.
    Misbehaved {
        peer: PeerId,
        why: String,
    },
    /// Peers may reach us at this address (STUN found it).
    External {
        addr: Multiaddr,
    },
}

/// Cloneable handle to the swarm task.
#[derive(Clone)]
pub struct Network {
    commands: mpsc::Sender<Command>,
    pub local_peer_id: PeerId,
}

impl Network {
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

    async fn tell(&self, cmd: Command) {
        // After the swarm stopped there is nobody to tell.
        let _ = self.commands.send(cmd).await;
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

    /// Send a peer request (hello, relay, punch) and wait for the response.
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

    pub async fn respond_sync(
        &self,
        channel: ResponseChannel<sync::Response>,
        response: sync::Response,
    ) {
        self.tell(Command::RespondSync { channel, response }).await
    }

    pub async fn respond_peer(
        &self,
        channel: ResponseChannel<peer::Response>,
        response: peer::Response,
    ) {
        self.tell(Command::RespondPeer { channel, response }).await
    }

    pub async fn publish(&self, topic: Topic, data: Vec<u8>) {
        self.tell(Command::Publish { topic, data }).await
    }

    /// A gossip message was checked: forward it, or drop it and penalise its sender.
    pub async fn validated(&self, id: MessageId, source: PeerId, acceptance: MessageAcceptance) {
        self.tell(Command::Validated {
            id,
            source,
            acceptance,
        })
        .await
    }

    /// The connections as libp2p knows them, one per connected peer.
    pub async fn connections(&self) -> Result<Vec<Connection>, P2pError> {
        self.ask(|reply| Command::Connections { reply }).await
    }

    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, P2pError> {
        self.ask(|reply| Command::Listen { reply }).await
    }

    pub async fn dial(&self, addr: Multiaddr) -> Result<(), P2pError> {
        self.commands
            .send(Command::Dial { addr })
            .await
            .map_err(|_| P2pError::Stopped)
    }

    pub async fn misbehaved(&self, peer: PeerId, why: String) {
        self.tell(Command::Misbehaved { peer, why }).await
    }

    pub async fn external_address(&self, addr: Multiaddr) {
        self.tell(Command::External { addr }).await
    }
}

/// The IP of a multiaddr, if it has one.
pub fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => Some(ip.into()),
        libp2p::multiaddr::Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}

/// A uniformly random index below `n` (for picking one of several peers).
pub fn random_index(n: usize) -> usize {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    (u64::from_le_bytes(b) % n.max(1) as u64) as usize
}
