//! Starts a client pair for each connected peer once its STUN server address is
//! known (the peer's IP from the connection, its STUN port from its announcement),
//! and stops it when the peer leaves.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use libp2p::PeerId;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::client::{ClientCtx, spawn_pair};

#[derive(Debug)]
pub enum PeerEvent {
    Up { peer: PeerId, ip: IpAddr },
    StunPort { peer: PeerId, port: u16 },
    Down { peer: PeerId },
}

#[derive(Default)]
struct PeerStun {
    ip: Option<IpAddr>,
    port: Option<u16>,
    running: Option<(SocketAddr, CancellationToken)>,
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
            PeerEvent::Up { peer, ip } => peers.entry(peer).or_default().ip = Some(ip),
            PeerEvent::StunPort { peer, port } => peers.entry(peer).or_default().port = Some(port),
            PeerEvent::Down { peer } => {
                if let Some((_, stop)) = peers.remove(&peer).and_then(|p| p.running) {
                    stop.cancel();
                }
            }
        }
        for (peer, p) in peers.iter_mut() {
            let (Some(ip), Some(port)) = (p.ip, p.port) else {
                continue;
            };
            let server = SocketAddr::new(ip, port);
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
