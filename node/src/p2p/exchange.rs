//! Staying connected: redial remembered peers while too few are connected, ask a
//! connected one whom it knows (peer exchange), and answer others who ask us. What
//! a peer tells is bounded: so many entries, usable addresses only, so many dials.

use cirrus_proto::peer::{self, PeerEntry};
use libp2p::request_response::ResponseChannel;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId};

use super::codec::Inbound;
use super::connections::{ADDRS_PER_PEER, EXCHANGE_ENTRIES, usable};
use super::event_loop::EventLoop;
use super::random_index;

/// Keep dialing known peers while fewer than this many are connected.
const TARGET_PEERS: usize = 8;
/// Dial peers that an exchange names only while fewer than this many are
/// connected: a node keeps a mesh of about this degree (plus whoever dials it, up
/// to `max-peers`), not a connection to everyone it hears of.
const DIAL_UP_TO: usize = 12;

impl EventLoop {
    /// Keep enough peers: dial known ones, and ask a connected one whom it knows.
    pub(super) fn maintain(&mut self) {
        self.metrics.peers.set(self.connected.len() as i64);
        if self.connected.len() >= TARGET_PEERS.min(self.cfg.max_peers as usize) {
            return;
        }
        let local = *self.swarm.local_peer_id();
        let connected = &self.connected;
        for (peer, addrs) in self
            .known
            .candidates(2, |p| *p == local || connected.contains_key(p))
        {
            let _ = self
                .swarm
                .dial(DialOpts::peer_id(peer).addresses(addrs).build());
        }
        let peers: Vec<PeerId> = self.connected.keys().copied().collect();
        if !peers.is_empty() {
            self.exchange_peers(peers[random_index(peers.len())]);
        }
    }

    pub(super) fn exchange_peers(&mut self, peer: PeerId) {
        let id = self
            .swarm
            .behaviour_mut()
            .peer
            .send_request(&peer, Inbound::Valid(peer::Request::Peers));
        self.exchanges.insert(id);
    }

    /// Take a peer-exchange answer: a bounded number of entries, usable addresses
    /// only, and a bounded number of new dials.
    pub(super) fn learn(&mut self, entries: Vec<PeerEntry>) {
        let local = *self.swarm.local_peer_id();
        let mut dials = 0;
        let over = entries.len().saturating_sub(EXCHANGE_ENTRIES);
        self.metrics.exchange("dropped", over as u64);
        for e in entries.into_iter().take(EXCHANGE_ENTRIES) {
            let Ok(peer) = PeerId::from_bytes(&e.peer) else {
                continue;
            };
            let addrs: Vec<Multiaddr> = e
                .addrs
                .iter()
                .filter_map(|a| Multiaddr::try_from(a.to_vec()).ok())
                .filter(|a| usable(self.reach, a))
                .take(ADDRS_PER_PEER)
                .collect();
            if peer == local || addrs.is_empty() {
                self.metrics.exchange("dropped", 1);
                continue;
            }
            self.metrics.exchange("taken", 1);
            let new = self.known.learn(peer, addrs.clone());
            if new
                && dials < self.cfg.exchange_dials
                && !self.connected.contains_key(&peer)
                && self.connected.len() < DIAL_UP_TO.min(self.cfg.max_peers as usize)
            {
                dials += 1;
                self.metrics.exchange("dialed", 1);
                let _ = self
                    .swarm
                    .dial(DialOpts::peer_id(peer).addresses(addrs).build());
            }
        }
        self.metrics.known_peers.set(self.known.len() as i64);
    }

    /// Answer peer exchange: connected peers other than the asker, with the
    /// addresses they listen on.
    pub(super) fn answer_exchange(
        &mut self,
        peer: PeerId,
        channel: ResponseChannel<peer::Response>,
    ) {
        let entries = self
            .connected
            .values()
            .filter(|c| c.facts.peer != peer && !c.facts.listen.is_empty())
            .take(EXCHANGE_ENTRIES)
            .map(|c| PeerEntry {
                peer: c.facts.peer.to_bytes().into(),
                addrs: c.facts.listen.iter().map(|a| a.to_vec().into()).collect(),
            })
            .collect();
        let _ = self
            .swarm
            .behaviour_mut()
            .peer
            .send_response(channel, peer::Response::Peers(entries));
    }
}
