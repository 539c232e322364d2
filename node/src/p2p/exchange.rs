//! Staying connected, and not to too many: redial remembered peers (and, when
//! alone, the bootstrap peers) while too few are connected, ask a connected one
//! whom it knows (peer exchange), answer others who ask us, and let peers go over
//! `max-peers`. What a peer tells is bounded: so many entries, usable addresses
//! only, so many dials.

use cirrus_proto::peer::{self, PeerEntry};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::ResponseChannel;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};

use super::codec::Inbound;
use super::connections::{ADDRS_PER_PEER, EXCHANGE_ENTRIES, usable};
use super::event_loop::EventLoop;
use super::random_index;
use crate::clock;

/// Keep dialing known peers while fewer than this many are connected.
const TARGET_PEERS: usize = 8;
/// Dial peers that an exchange names only while fewer than this many are
/// connected: a node keeps a mesh of about this degree (plus whoever dials it, up
/// to `max-peers`), not a connection to everyone it hears of.
const DIAL_UP_TO: usize = 12;
/// A peer connected for less than this is not let go: time enough for it to ask
/// us whom we know and to dial them.
const GRACE_SECS: u64 = 20;

impl EventLoop {
    /// Keep enough peers: dial known ones, and ask a connected one whom it knows.
    pub(super) fn maintain(&mut self) {
        self.metrics.peers.set(self.connected.len() as i64);
        // Peers let go last round whose memory was not handed back yet (others
        // connected meanwhile): now.
        if std::mem::take(&mut self.let_go_some) {
            release_freed_memory();
        }
        self.let_go();
        if self.connected.len() >= TARGET_PEERS.min(self.keep()) {
            return;
        }
        if self.connected.is_empty() {
            // Alone: the bootstrap peers again, which may have been down, or full
            // (at four times max-peers connections) when we started.
            for addr in self.cfg.bootstrap.clone() {
                let _ = self.swarm.dial(bootstrap_dial(addr));
            }
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

    /// Over `max-peers`, disconnect peers until three quarters of it remain: inbound
    /// ones, those connected longest first, then our own dials beyond
    /// [`DIAL_UP_TO`] (several in flight at once can overshoot), never one in its
    /// first [`GRACE_SECS`]. Whoever dials us may learn our peers, not stay: every
    /// node of a 50-node testnet dials the bootstrap node, which kept all 49, and
    /// memory grows with peers (about 0.27 MB each). The dials we chose are never
    /// let go for others, or a flood of fresh inbound connections (all within
    /// their grace) could push out every peer we picked.
    fn let_go(&mut self) {
        if self.connected.len() <= self.cfg.max_peers as usize {
            return;
        }
        let excess = self.connected.len() - self.keep();
        let now = clock::unix_secs();
        let settled = |since: u64| now.saturating_sub(since) >= GRACE_SECS;
        let (mut inbound, mut dials): (Vec<_>, Vec<_>) = self
            .connected
            .values()
            .map(|c| (c.facts.inbound, c.facts.since, c.facts.peer))
            .partition(|(inbound, _, _)| *inbound);
        inbound.sort();
        // The oldest dials, up to the number we aim for, stay.
        dials.sort();
        let spare = dials.into_iter().skip(DIAL_UP_TO.min(self.keep()));
        let go = inbound
            .into_iter()
            .chain(spare)
            .filter(|(_, since, _)| settled(*since));
        for (_, _, peer) in go.take(excess) {
            if self.swarm.disconnect_peer_id(peer).is_ok() {
                tracing::debug!(%peer, "over max-peers: letting a peer go");
                self.metrics.peers_let_go.inc();
                self.let_go_some = true;
            }
        }
    }

    /// A peer is gone: if it was the last of those let go, hand their memory back
    /// to the system.
    pub(super) fn released(&mut self) {
        if self.let_go_some && self.connected.len() <= self.keep() {
            self.let_go_some = false;
            release_freed_memory();
        }
    }

    /// Peers kept after letting some go. Dialing stops there too, so that a small
    /// `max-peers` does not have nodes redial the peers that just let them go.
    fn keep(&self) -> usize {
        (self.cfg.max_peers as usize * 3 / 4).max(1)
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
                && self.connected.len() < DIAL_UP_TO.min(self.keep())
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

/// A dial of a bootstrap address that is skipped while that peer is connected or
/// being dialed, when the address names it.
fn bootstrap_dial(addr: Multiaddr) -> DialOpts {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => DialOpts::peer_id(peer)
            .addresses(vec![addr])
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build(),
        _ => addr.into(),
    }
}

/// Hand the memory of peers let go back to the system. glibc keeps freed memory
/// in its arenas unless it sits at the top of one: without this, a bootstrap node
/// that had let 25 of its 49 peers go still held 31.2 MB (BENCHMARKS.md 3.3).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
