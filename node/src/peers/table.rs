//! What this node knows about each connected peer beyond what libp2p tells: the
//! last announcement it took from it (root, STUN data), and the notices that
//! WebSocket subscribers of `peers` get when peers come and go.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use cirrus_proto::api::{Direction, PeerInfo, StunInfo};
use cirrus_proto::merkle::Hash;
use libp2p::PeerId;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::p2p::{Connection, Network, P2pError};

/// A peer arriving or leaving, as `peer` notifications carry it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerNotice {
    pub peer_id: String,
    pub event: PeerChange,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerChange {
    Connected,
    Disconnected,
}

/// What a peer said of itself last.
#[derive(Debug, Clone, Default)]
pub struct Said {
    /// `at` of the newest announcement taken: an older one (a replay, or one
    /// overtaken on the way) changes nothing.
    pub at: Option<u64>,
    pub root: Option<Hash>,
    /// The peer's run and count of applied writes when it read `root`.
    pub position: Option<(u32, u64)>,
    pub stun: Option<StunInfo>,
    pub stun_port: Option<u16>,
    /// When an announcement from it was last taken.
    pub taken: Option<Instant>,
}

pub struct PeerTable {
    said: Mutex<HashMap<PeerId, Said>>,
    notices: broadcast::Sender<PeerNotice>,
    /// Bumped whenever an announcement is taken.
    announced: tokio::sync::watch::Sender<u64>,
}

impl Default for PeerTable {
    fn default() -> Self {
        PeerTable {
            said: Mutex::default(),
            notices: broadcast::channel(256).0,
            announced: tokio::sync::watch::channel(0).0,
        }
    }
}

impl PeerTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, Said>> {
        self.said.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn up(&self, peer: PeerId, addr: String) {
        self.lock().insert(peer, Said::default());
        let _ = self.notices.send(PeerNotice {
            peer_id: peer.to_string(),
            event: PeerChange::Connected,
            addr: Some(addr),
        });
    }

    pub fn down(&self, peer: &PeerId) {
        self.lock().remove(peer);
        let _ = self.notices.send(PeerNotice {
            peer_id: peer.to_string(),
            event: PeerChange::Disconnected,
            addr: None,
        });
    }

    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.lock().contains_key(peer)
    }

    /// Take what `peer` announced if it is newer than what we have; returns what
    /// it said before, or `None` if nothing was taken.
    pub fn take(&self, peer: &PeerId, a: &crate::peers::announce::Body) -> Option<Said> {
        let mut g = self.lock();
        let s = g.get_mut(peer)?;
        if s.at.is_some_and(|old| old >= a.at) {
            return None;
        }
        let before = s.clone();
        *s = Said {
            at: Some(a.at),
            root: Some(a.root),
            position: Some((a.epoch, a.position)),
            stun: Some(a.stun.clone()),
            stun_port: Some(a.stun_port),
            taken: Some(Instant::now()),
        };
        drop(g);
        self.announced.send_modify(|n| *n += 1);
        Some(before)
    }

    /// Wakes whenever an announcement is taken.
    pub fn announced(&self) -> tokio::sync::watch::Receiver<u64> {
        self.announced.subscribe()
    }

    /// Each connected peer's last announced root with its position.
    pub fn positions(&self) -> Vec<(PeerId, Hash, (u32, u64))> {
        self.lock()
            .iter()
            .filter_map(|(p, s)| Some((*p, s.root?, s.position?)))
            .collect()
    }

    pub fn said(&self, peer: &PeerId) -> Option<Said> {
        self.lock().get(peer).cloned()
    }

    /// Peers arriving and leaving from now on.
    pub fn notices(&self) -> broadcast::Receiver<PeerNotice> {
        self.notices.subscribe()
    }

    /// `getpeerinfo`: libp2p's view of each connection with what the peer said.
    pub async fn info(&self, network: &Network) -> Result<Vec<PeerInfo>, P2pError> {
        let connections = network.connections().await?;
        let g = self.lock();
        Ok(connections
            .into_iter()
            .map(|c| {
                let said = g.get(&c.peer).cloned();
                view(c, said.as_ref())
            })
            .collect())
    }
}

fn view(c: Connection, said: Option<&Said>) -> PeerInfo {
    PeerInfo {
        peer_id: c.peer.to_string(),
        addr: c.addr.to_string(),
        direction: if c.inbound {
            Direction::Inbound
        } else {
            Direction::Outbound
        },
        connected_since: c.since,
        ping_ms: c.ping.map(|d| d.as_secs_f64() * 1000.0),
        agent: c.agent,
        stun: said.and_then(|s| s.stun.clone()),
        db_root: said.and_then(|s| s.root),
        score: c.score,
    }
}
