//! What the event loop knows about each connected peer, for `getpeerinfo` and for
//! choosing whom to reconcile with.

use std::time::Duration;

use cirrus_proto::api::{Direction, PeerInfo, StunInfo};
use cirrus_proto::merkle::Hash;
use libp2p::core::ConnectedPoint;
use libp2p::{Multiaddr, PeerId};

pub struct Connected {
    pub addr: Multiaddr,
    pub inbound: bool,
    pub since: u64,
    pub connections: usize,
    pub ping: Option<Duration>,
    pub agent: Option<String>,
    pub listen: Vec<Multiaddr>,
    pub db_root: Option<Hash>,
    /// `at` of the newest announcement taken from the peer: an older one (a replay,
    /// or one overtaken on the way) changes nothing.
    pub announced_at: Option<u64>,
    pub stun: Option<StunInfo>,
    /// The peer's STUN server port, from its announcements.
    pub stun_port: Option<u16>,
    /// When the peer last sent us a sync request (it is reconciling with us).
    pub inbound_sync: Option<std::time::Instant>,
}

impl Connected {
    pub fn new(endpoint: &ConnectedPoint, since: u64) -> Self {
        Connected {
            addr: endpoint.get_remote_address().clone(),
            inbound: endpoint.is_listener(),
            since,
            connections: 1,
            ping: None,
            agent: None,
            listen: Vec::new(),
            db_root: None,
            announced_at: None,
            stun: None,
            stun_port: None,
            inbound_sync: None,
        }
    }

    pub fn info(&self, peer: &PeerId, score: Option<f64>) -> PeerInfo {
        PeerInfo {
            peer_id: peer.to_string(),
            addr: self.addr.to_string(),
            direction: if self.inbound {
                Direction::Inbound
            } else {
                Direction::Outbound
            },
            connected_since: self.since,
            ping_ms: self.ping.map(|d| d.as_secs_f64() * 1000.0),
            agent: self.agent.clone(),
            stun: self.stun.clone(),
            db_root: self.db_root,
            score,
        }
    }
}
