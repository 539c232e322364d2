//! What the STUN server and clients learn: our mappings per client socket (and so
//! our external address and NAT behaviour), and the addresses of peers that proved
//! their identity in a request ("seen").

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use cirrus_proto::api::{Mapping, Seen, StunInfo, Transport};
use cirrus_proto::stun::nat::{Observation, classify};
use libp2p::PeerId;

/// Most "seen" entries kept. Anyone can make a new ed25519 key and prove it, so
/// without a bound a stranger could grow the map (and `getnodeinfo`) without end;
/// when full, the entry heard from longest ago makes room.
pub const MAX_SEEN: usize = 1024;

#[derive(Default)]
struct Inner {
    mappings: HashMap<(PeerId, Transport), (SocketAddr, SocketAddr, u64)>, // local, mapped, when
    /// Ports the gateway forwards to us (port mapping): local, external, when.
    forwarded: HashMap<Transport, (SocketAddr, SocketAddr, u64)>,
    observations: HashMap<(SocketAddr, SocketAddr), SocketAddr>, // (local, server) -> mapped
    /// (observed, unix seconds, order heard)
    seen: HashMap<(PeerId, Transport), (SocketAddr, u64, u64)>,
    heard: u64,
    version: u64,
}

/// Shared STUN knowledge of this node.
#[derive(Default)]
pub struct StunState {
    inner: Mutex<Inner>,
}

impl StunState {
    /// A client socket for `via` got an answer from `server`.
    pub fn record(
        &self,
        via: PeerId,
        t: Transport,
        local: SocketAddr,
        server: SocketAddr,
        mapped: SocketAddr,
        primary: bool,
    ) {
        let mut g = self.inner.lock().expect("stun state lock");
        let now = crate::clock::unix_secs();
        if g.observations.insert((local, server), mapped) != Some(mapped) {
            g.version += 1;
        }
        if primary {
            let old = g.mappings.insert((via, t), (local, mapped, now));
            if old.map(|(l, m, _)| (l, m)) != Some((local, mapped)) {
                g.version += 1;
            }
        }
    }

    /// The client pair for `via` is gone: forget its mappings.
    pub fn forget(&self, via: &PeerId, t: Transport, local: Option<SocketAddr>) {
        let mut g = self.inner.lock().expect("stun state lock");
        if g.mappings.remove(&(*via, t)).is_some() {
            g.version += 1;
        }
        if let Some(local) = local {
            g.observations.retain(|(l, _), _| *l != local);
        }
    }

    /// The gateway forwards `external` to our `local` socket (port mapping, made or
    /// renewed now).
    pub fn forwarded(&self, t: Transport, local: SocketAddr, external: SocketAddr) {
        let mut g = self.inner.lock().expect("stun state lock");
        let now = crate::clock::unix_secs();
        let old = g.forwarded.insert(t, (local, external, now));
        if old.map(|(l, e, _)| (l, e)) != Some((local, external)) {
            g.version += 1;
        }
    }

    /// The gateway no longer forwards anything to us.
    pub fn unforwarded(&self) {
        let mut g = self.inner.lock().expect("stun state lock");
        if !g.forwarded.is_empty() {
            g.forwarded.clear();
            g.version += 1;
        }
    }

    /// Our server answered a request whose peer signature verified.
    pub fn saw(&self, peer: PeerId, t: Transport, observed: SocketAddr) {
        let mut g = self.inner.lock().expect("stun state lock");
        let key = (peer, t);
        if g.seen.len() >= MAX_SEEN
            && !g.seen.contains_key(&key)
            && let Some(oldest) = g
                .seen
                .iter()
                .min_by_key(|(_, (_, _, n))| *n)
                .map(|(k, _)| *k)
        {
            g.seen.remove(&oldest);
        }
        g.heard += 1;
        let n = g.heard;
        g.seen.insert(key, (observed, crate::clock::unix_secs(), n));
    }

    /// Bumped whenever our mappings change, so the swarm knows when to announce.
    pub fn version(&self) -> u64 {
        self.inner.lock().expect("stun state lock").version
    }

    pub fn info(&self, with_seen: bool) -> StunInfo {
        let g = self.inner.lock().expect("stun state lock");
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let mut latest: Option<(u64, SocketAddr)> = None;
        let stun = g
            .mappings
            .iter()
            .map(|((via, t), m)| (via.to_string(), t, m));
        let forwarded = g
            .forwarded
            .iter()
            .map(|(t, m)| (crate::portmap::VIA.to_string(), t, m));
        for (via, t, (local, mapped, when)) in stun.chain(forwarded) {
            let v = Mapping {
                port: mapped.port(),
                local_port: local.port(),
                via,
                last_seen: *when,
                address: mapped.ip(),
            };
            if latest.is_none_or(|(w, _)| *when > w) {
                latest = Some((*when, *mapped));
            }
            match t {
                Transport::Udp => udp.push(v),
                Transport::Tcp => tcp.push(v),
            }
        }
        udp.sort_by(|a, b| a.via.cmp(&b.via));
        tcp.sort_by(|a, b| a.via.cmp(&b.via));
        let obs: Vec<Observation> = g
            .observations
            .iter()
            .map(|((local, server), mapped)| Observation {
                local: *local,
                server: *server,
                mapped: *mapped,
            })
            .collect();
        let mut seen: Vec<Seen> = if with_seen {
            g.seen
                .iter()
                .map(|((p, t), (addr, when, _))| Seen {
                    peer_id: p.to_string(),
                    transport: *t,
                    observed: *addr,
                    last_seen: *when,
                })
                .collect()
        } else {
            Vec::new()
        };
        seen.sort_by(|a, b| (&a.peer_id, a.transport).cmp(&(&b.peer_id, b.transport)));
        StunInfo {
            address: latest.map(|(_, m)| m.ip()),
            nat: classify(&obs),
            udp,
            tcp,
            seen,
        }
    }
}
