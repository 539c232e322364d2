//! What the event loop knows about connections and peers: the facts of each
//! connected peer (for `getpeerinfo`), the peers it has heard of (a bounded LRU),
//! and which addresses a peer may make us dial.
//!
//! A peer's word is not enough to make us dial: peer exchange gives at most
//! [`EXCHANGE_ENTRIES`] entries per answer, of which at most `exchange-dials` new
//! peers are dialed; libp2p caps the dials in progress (`max-pending-dials`); and an
//! address of a class this node cannot use is dropped, so a hostile peer cannot
//! aim our dials at a private network or at ourselves ([`usable`]).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hashlink::LruCache;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use super::ip_of;

/// Entries taken from one peer-exchange answer.
pub const EXCHANGE_ENTRIES: usize = 64;
/// Addresses kept per peer.
pub const ADDRS_PER_PEER: usize = 8;

/// A connected peer, as libp2p tells of it.
#[derive(Debug, Clone)]
pub struct Connection {
    pub peer: PeerId,
    pub addr: Multiaddr,
    pub inbound: bool,
    /// Unix seconds.
    pub since: u64,
    pub ping: Option<Duration>,
    pub agent: Option<String>,
    pub listen: Vec<Multiaddr>,
    /// The peer's gossipsub score here.
    pub score: Option<f64>,
}

/// The loop's own state of a connected peer.
pub(super) struct Connected {
    pub facts: Connection,
    pub connections: usize,
}

impl Connected {
    pub fn new(peer: PeerId, endpoint: &ConnectedPoint, since: u64) -> Self {
        Connected {
            facts: Connection {
                peer,
                addr: endpoint.get_remote_address().clone(),
                inbound: endpoint.is_listener(),
                since,
                ping: None,
                agent: None,
                listen: Vec::new(),
                score: None,
            },
            connections: 1,
        }
    }
}

/// Peers heard of, least recently heard of first out.
pub(super) struct Known {
    peers: LruCache<PeerId, (Vec<Multiaddr>, Instant)>,
}

impl Known {
    pub fn new(cap: usize) -> Self {
        Known {
            peers: LruCache::new(cap),
        }
    }

    /// Remember `peer` at `addrs`; true if it is new.
    pub fn learn(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) -> bool {
        let new = !self.peers.contains_key(&peer);
        self.peers.insert(peer, (addrs, Instant::now()));
        new
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Up to `n` known peers that `skip` rejects not, least recently heard first.
    pub fn candidates(
        &self,
        n: usize,
        skip: impl Fn(&PeerId) -> bool,
    ) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.peers
            .iter()
            .filter(|(p, _)| !skip(p))
            .take(n)
            .map(|(p, (a, _))| (*p, a.clone()))
            .collect()
    }
}

/// How far this node reaches: what it listens on decides which addresses a peer
/// may hand it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// Bound to loopback: a local testnet; only loopback is reachable.
    pub loopback_only: bool,
    /// Listens on (or is seen at) a global address: private ranges are someone
    /// else's network, not ours to probe.
    pub public: bool,
}

impl Reach {
    pub fn of(loopback_only: bool, listen: &[Multiaddr]) -> Reach {
        Reach {
            loopback_only,
            public: listen
                .iter()
                .filter_map(ip_of)
                .any(|ip| scope(&ip) == Scope::Global),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Scope {
    Loopback,
    Private,
    Global,
    Never,
}

fn scope(ip: &IpAddr) -> Scope {
    match ip {
        _ if ip.is_unspecified() || ip.is_multicast() => Scope::Never,
        _ if ip.is_loopback() => Scope::Loopback,
        IpAddr::V4(v4) if v4.is_broadcast() => Scope::Never,
        IpAddr::V4(v4) if v4.is_private() || v4.is_link_local() => Scope::Private,
        IpAddr::V4(v4) if v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 => Scope::Private,
        IpAddr::V6(v6) if v6.is_unique_local() || v6.is_unicast_link_local() => Scope::Private,
        _ => Scope::Global,
    }
}

/// Whether this node may dial `addr` when a peer hands it over: a TCP or QUIC
/// address with an IP and a port, of a scope the node reaches (loopback only on a
/// loopback node; private ranges only on a node that is not public).
pub fn usable(reach: Reach, addr: &Multiaddr) -> bool {
    let Some(ip) = ip_of(addr) else {
        return false;
    };
    let port = addr.iter().find_map(|p| match p {
        Protocol::Tcp(p) | Protocol::Udp(p) => Some(p),
        _ => None,
    });
    if port.is_none_or(|p| p == 0) {
        return false;
    }
    match scope(&ip) {
        Scope::Never => false,
        Scope::Loopback => reach.loopback_only,
        Scope::Private => !reach.loopback_only && !reach.public,
        Scope::Global => !reach.loopback_only,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_public_node_dials_no_private_or_loopback_address() {
        let public = Reach::of(false, &[a("/ip4/198.51.100.7/tcp/38080")]);
        assert!(public.public);
        assert!(usable(public, &a("/ip4/203.0.113.9/tcp/38080")));
        for bad in [
            "/ip4/10.0.0.1/tcp/22",
            "/ip4/192.168.1.1/tcp/80",
            "/ip4/127.0.0.1/tcp/38080",
            "/ip4/0.0.0.0/tcp/1",
            "/ip4/224.0.0.1/udp/5353/quic-v1",
            "/ip4/203.0.113.9/tcp/0",
            "/dns4/example.org/tcp/1",
        ] {
            assert!(!usable(public, &a(bad)), "{bad}");
        }
        // A node behind NAT reaches its own private network.
        let private = Reach::of(false, &[a("/ip4/10.0.0.5/tcp/38080")]);
        assert!(usable(private, &a("/ip4/10.0.0.1/tcp/38080")));
        assert!(!usable(private, &a("/ip4/127.0.0.1/tcp/38080")));
        // A loopback testnet reaches loopback only.
        let lo = Reach::of(true, &[a("/ip4/127.0.0.11/tcp/38080")]);
        assert!(usable(lo, &a("/ip4/127.0.0.12/tcp/38080")));
        assert!(!usable(lo, &a("/ip4/203.0.113.9/tcp/38080")));
    }

    #[test]
    fn the_known_peers_are_bounded() {
        let mut k = Known::new(3);
        for _ in 0..10 {
            k.learn(PeerId::random(), vec![a("/ip4/127.0.0.1/tcp/1")]);
        }
        assert_eq!(k.len(), 3);
    }
}
