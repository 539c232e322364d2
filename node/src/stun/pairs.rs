//! Starts a client pair for each connected peer once its STUN server address is
//! known, and stops it when the peer leaves.
//!
//! The server's port comes from the peer's announcement (its hello answer, or
//! gossip); its IP from the addresses the peer listens on (identify), not from the
//! connection: a connection's remote address is wherever the peer's dial left from,
//! which on a multi-homed host (or a loopback testnet) need not be an address the
//! peer's STUN server listens on.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use libp2p::PeerId;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::client::{ClientCtx, spawn_pair};

#[derive(Debug)]
pub enum PeerEvent {
    /// Connected; `remote` is the connection's remote IP.
    Up {
        peer: PeerId,
        remote: IpAddr,
    },
    /// The IPs the peer says it listens on (identify).
    Listen {
        peer: PeerId,
        ips: Vec<IpAddr>,
    },
    StunPort {
        peer: PeerId,
        port: u16,
    },
    Down {
        peer: PeerId,
    },
}

#[derive(Default)]
struct PeerStun {
    remote: Option<IpAddr>,
    listen: Vec<IpAddr>,
    port: Option<u16>,
    running: Option<(SocketAddr, CancellationToken)>,
}

/// Where to ask a peer's STUN server: the connection's remote IP when the peer
/// listens there, else a listen address of the same family and scope (loopback,
/// private, global), else the remote IP (behind NAT the remote is the NAT's
/// address, which the peer does not list, and its private address is of no use to
/// us).
pub fn server_ip(remote: IpAddr, listen: &[IpAddr]) -> IpAddr {
    if listen.contains(&remote) {
        return remote;
    }
    listen
        .iter()
        .find(|ip| {
            !ip.is_unspecified() && ip.is_ipv4() == remote.is_ipv4() && scope(ip) == scope(&remote)
        })
        .copied()
        .unwrap_or(remote)
}

#[derive(PartialEq, Eq)]
enum Scope {
    Loopback,
    Private,
    Global,
}

fn scope(ip: &IpAddr) -> Scope {
    match ip {
        _ if ip.is_loopback() => Scope::Loopback,
        IpAddr::V4(v4) if v4.is_private() || v4.is_link_local() => Scope::Private,
        // Shared address space (RFC 6598) sits behind carrier-grade NAT.
        IpAddr::V4(v4) if v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 => Scope::Private,
        IpAddr::V6(v6) if v6.is_unique_local() || v6.is_unicast_link_local() => Scope::Private,
        _ => Scope::Global,
    }
}

pub async fn run(
    ctx: ClientCtx,
    servers: watch::Sender<Vec<SocketAddr>>,
    mut events: mpsc::Receiver<PeerEvent>,
    shutdown: CancellationToken,
) {
    let mut peers: HashMap<PeerId, PeerStun> = HashMap::new();
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => break,
            ev = events.recv() => match ev { Some(ev) => ev, None => break },
        };
        match ev {
            PeerEvent::Up { peer, remote } => peers.entry(peer).or_default().remote = Some(remote),
            PeerEvent::Listen { peer, ips } => peers.entry(peer).or_default().listen = ips,
            PeerEvent::StunPort { peer, port } => peers.entry(peer).or_default().port = Some(port),
            PeerEvent::Down { peer } => {
                if let Some((_, stop)) = peers.remove(&peer).and_then(|p| p.running) {
                    stop.cancel();
                }
            }
        }
        for (peer, p) in peers.iter_mut() {
            let (Some(remote), Some(port)) = (p.remote, p.port) else {
                continue;
            };
            let server =
                crate::sockets::canonical(SocketAddr::new(server_ip(remote, &p.listen), port));
            if p.running.as_ref().is_some_and(|(s, _)| *s == server) {
                continue;
            }
            if let Some((_, old)) = p.running.take() {
                old.cancel();
            }
            let stop = shutdown.child_token();
            spawn_pair(ctx.clone(), *peer, server, stop.clone());
            p.running = Some((server, stop));
        }
        let list: Vec<SocketAddr> = peers
            .values()
            .filter_map(|p| p.running.as_ref().map(|(s, _)| *s))
            .collect();
        servers.send_replace(list);
    }
    for p in peers.into_values() {
        if let Some((_, stop)) = p.running {
            stop.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::server_ip;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_server_is_asked_where_the_peer_listens() {
        // A loopback testnet: the dial left from 127.0.0.1, the peer listens on .11.
        assert_eq!(
            server_ip(ip("127.0.0.1"), &[ip("127.0.0.11")]),
            ip("127.0.0.11")
        );
        // The remote address is one the peer listens on: keep it.
        let listen = [ip("10.0.0.5"), ip("192.0.2.7")];
        assert_eq!(server_ip(ip("192.0.2.7"), &listen), ip("192.0.2.7"));
        // Behind NAT the remote is the NAT's address, listed nowhere, and the
        // peer's private address is of no use: the remote it is.
        assert_eq!(
            server_ip(ip("198.51.100.1"), &[ip("10.0.0.5")]),
            ip("198.51.100.1")
        );
        // A multi-homed peer: the listen address of the remote's scope.
        let listen = [ip("10.0.0.5"), ip("198.18.0.9")];
        assert_eq!(server_ip(ip("198.18.0.1"), &listen), ip("198.18.0.9"));
        assert_eq!(
            server_ip(ip("198.51.100.1"), &[ip("0.0.0.0")]),
            ip("198.51.100.1")
        );
        assert_eq!(server_ip(ip("198.51.100.1"), &[]), ip("198.51.100.1"));
        // Never across families.
        assert_eq!(
            server_ip(ip("192.0.2.1"), &[ip("2001:db8::1")]),
            ip("192.0.2.1")
        );
    }
}
