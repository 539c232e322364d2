//! Reaching a node behind NAT through a rendezvous node (Ford, Srisuresh and Kegel):
//! learn the target's STUN-found endpoints and our own mapping from the rendezvous
//! node, ask it to have the target punch toward us, talk to the target directly, and
//! relay through the rendezvous node while there is no direct path.
//!
//! [`PeerLink`] keeps a path to one target for many requests: the first goes over
//! the relay at once (as ICE and iroh start), the punch runs beside it, and later
//! requests take the direct path once it opens; when it dies, the relay carries
//! them again while the link punches anew. [`call_peer`] is one request on a link.
//! Used by `cirrus call --peer X --rendezvous URL [--repeat N]`.

mod link;
mod tcp;
mod udp;

use std::net::SocketAddr;
use std::time::Duration;

use cirrus_proto::api::{Guess, NodeInfo, PeerInfo, Transport};
use cirrus_proto::stun::nat::Nat;
use cirrus_proto::udp::CallError;
use serde_json::{Value, json};

pub use link::{LinkEvent, PeerLink, Via};

use crate::client::{Client, ClientError};
use crate::stun::probe::ProbeError;

/// How long one punch is tried before the link says it failed (and tries again
/// later); the relay carries the requests meanwhile.
pub const DIRECT_FOR: Duration = Duration::from_secs(4);

pub use cirrus_proto::punch::OPENING_TTL;

/// Why a call through a rendezvous node failed.
#[derive(Debug, thiserror::Error)]
pub enum RendezvousError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("peer {0} is not connected to the rendezvous node")]
    NotConnected(String),
    #[error("the peer's answer is not JSON-RPC: {0}")]
    BadAnswer(String),
}

/// Why the direct path did not open, or closed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DirectError {
    #[error("the rendezvous node lists no {0} endpoints for the peer")]
    NoEndpoints(Transport),
    #[error("the rendezvous node shows no STUN port")]
    NoStunPort,
    #[error("the peer's {0} endpoints are in no address family the rendezvous URL has")]
    NoFamily(Transport),
    #[error(transparent)]
    Request(#[from] CallError),
    #[error("no local socket: {0}")]
    Socket(String),
    #[error("no STUN answer from {server}: {why}")]
    Stun { server: SocketAddr, why: String },
    #[error("punch failed: {0}")]
    Punch(String),
    #[error("no answer from {} (our mapping {mine})", list(.tried))]
    NoAnswer {
        tried: Vec<SocketAddr>,
        mine: SocketAddr,
    },
    #[error("the direct path answered as {0}, not the peer")]
    WrongPeer(String),
    #[error("the direct path stopped answering: {0}")]
    Lost(String),
    #[error("the rendezvous node: {0}")]
    Rendezvous(String),
}

fn list(addrs: &[SocketAddr]) -> String {
    let each: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    each.join(", ")
}

/// One request's answer, the path it took, and what became of the direct path by
/// the time this returned.
#[derive(Debug)]
pub struct Reached {
    pub via: Via,
    /// The target's whole JSON-RPC response object.
    pub response: Value,
    /// How long the answer took.
    pub answered_after: Duration,
    /// The direct path, once settled: open at this endpoint after this long, or why
    /// not.
    pub direct: Result<(SocketAddr, Duration), DirectError>,
}

/// Send `request` (a JSON-RPC request object) to `peer` through the rendezvous node
/// at once, punching beside it; waits for the punch to settle before returning, so
/// that `direct` says whether a direct path opened.
pub async fn call_peer(
    rendezvous: &str,
    peer: &str,
    transport: Transport,
    request: Value,
    timeout: Duration,
) -> Result<Reached, RendezvousError> {
    let link = PeerLink::open(rendezvous, peer, transport, timeout)?;
    let started = std::time::Instant::now();
    let (response, via) = link.call(&request).await?;
    let answered_after = started.elapsed();
    let direct = link.settled().await;
    Ok(Reached {
        via,
        response,
        answered_after,
        direct,
    })
}

/// What the client needs to punch toward `peer` in one address family: its
/// endpoints of that family as the rendezvous node lists them (and the local port
/// of the socket behind each), how its NAT maps, and the rendezvous node's STUN
/// server at an address of that family.
struct Plan {
    targets: Vec<SocketAddr>,
    local_ports: Vec<u16>,
    /// The target's NAT as the choice of opening sees it: a forwarded port counts
    /// as no NAT, since whatever reaches it is let in. Unknown over IPv6, which
    /// has no port guessing.
    nat: Nat,
    stun: SocketAddr,
    /// A second port of the rendezvous node that answers STUN (its UDP API), so
    /// that we can tell how our own NAT maps.
    stun_other: Option<SocketAddr>,
    /// The rendezvous node at its address of this family: the punch must come
    /// from our address of the endpoint's family (SPEC's punch rule).
    via: Client,
}

/// A plan per address family that both the rendezvous node's URL and the target's
/// endpoints have, IPv6 first.
async fn plans(
    r: &Client,
    url: &str,
    peer: &str,
    transport: Transport,
) -> Result<Vec<Plan>, DirectError> {
    let rv = |e: ClientError| DirectError::Rendezvous(e.to_string());
    let peers: Vec<PeerInfo> = r.call_as("getpeerinfo", json!({})).await.map_err(rv)?;
    let entry = peers
        .iter()
        .find(|p| p.peer_id == peer)
        .ok_or_else(|| DirectError::Rendezvous(format!("peer {peer} is not connected to it")))?;
    let Some(info) = entry.stun.as_ref() else {
        return Err(DirectError::NoEndpoints(transport));
    };
    let mappings = info.mappings(transport);
    if mappings.is_empty() {
        return Err(DirectError::NoEndpoints(transport));
    }
    let ours: NodeInfo = r.call_as("getnodeinfo", json!({})).await.map_err(rv)?;
    let stun_port = ours.ports.stun.ok_or(DirectError::NoStunPort)?;
    let (scheme, addrs) = rendezvous_addrs(url).await?;
    let mut plans = Vec::new();
    for at in addrs {
        let ip = at.ip();
        let same: Vec<_> = mappings
            .iter()
            .filter(|m| m.address.is_ipv6() == ip.is_ipv6())
            .collect();
        if same.is_empty() {
            continue;
        }
        let forwarded = same.iter().any(|m| m.via == crate::portmap::VIA);
        let nat = match (forwarded, ip.is_ipv6()) {
            (true, _) => Nat::None,
            (false, true) => Nat::Unknown,
            (false, false) => info.nat,
        };
        plans.push(Plan {
            targets: same.iter().map(|m| m.endpoint()).collect(),
            local_ports: same.iter().map(|m| m.local_port).collect(),
            nat,
            stun: SocketAddr::new(ip, stun_port),
            stun_other: ours.ports.udp.map(|p| SocketAddr::new(ip, p)),
            via: Client::connect(&format!("{scheme}://{at}"), DIRECT_FOR).map_err(rv)?,
        });
    }
    if plans.is_empty() {
        return Err(DirectError::NoFamily(transport));
    }
    Ok(plans)
}

/// The rendezvous node's URL scheme and addresses: its host resolved, the first
/// IPv6 address, then the first IPv4 one, as far as the name has them (a literal
/// has one). A punch needs our mapping as the rendezvous node sees us, so each
/// family's plan asks its STUN server, and sends its punch, at the address of that
/// family.
async fn rendezvous_addrs(url: &str) -> Result<(String, Vec<SocketAddr>), DirectError> {
    let bad = |why: String| DirectError::Rendezvous(format!("{url}: {why}"));
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| bad("no port".into()))?;
    let host = parsed.host_str().ok_or_else(|| bad("no host".into()))?;
    // An IPv6 literal comes bracketed.
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match literal.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| bad(e.to_string()))?
            .collect(),
    };
    let v6 = addrs.iter().find(|a| a.is_ipv6());
    let v4 = addrs.iter().find(|a| a.is_ipv4());
    Ok((
        parsed.scheme().to_string(),
        v6.into_iter().chain(v4).copied().collect(),
    ))
}

/// Ask the rendezvous node to have the target punch toward `mine` (or do its half
/// of a port guess).
async fn punch(
    r: &Client,
    peer: &str,
    mine: SocketAddr,
    transport: Transport,
    guess: Option<Guess>,
) -> Result<(), DirectError> {
    let mut params = json!({"peerId": peer, "endpoint": mine.to_string(), "transport": transport});
    if let Some(g) = guess {
        params["guess"] = serde_json::to_value(g).expect("a guess serializes");
    }
    r.call("punch", params)
        .await
        .map_err(|e| DirectError::Punch(e.to_string()))?;
    Ok(())
}

/// The request the direct path is opened with: its answer names the peer.
fn probe_request() -> Value {
    json!({"jsonrpc": "2.0", "id": "cirrus-link", "method": "getnodeinfo"})
}

/// Whether a probe's answer came from `peer`.
fn answers_as(answer: &Value, peer: &str) -> Result<(), DirectError> {
    cirrus_proto::punch::answers_as(answer, peer).map_err(DirectError::WrongPeer)
}

fn stun_error(server: SocketAddr) -> impl Fn(ProbeError) -> DirectError {
    move |why| DirectError::Stun {
        server,
        why: why.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_rendezvous_url_gives_its_scheme_and_an_address_per_family() {
        let (scheme, addrs) = rendezvous_addrs("http://[::1]:38081/").await.unwrap();
        assert_eq!(scheme, "http");
        assert_eq!(addrs, ["[::1]:38081".parse::<SocketAddr>().unwrap()]);
        // No port: the scheme's default; a path and user info are no trouble.
        let (_, addrs) = rendezvous_addrs("http://me@127.0.0.1/x?y").await.unwrap();
        assert_eq!(addrs, ["127.0.0.1:80".parse::<SocketAddr>().unwrap()]);
        // A name: at most one address of each family, IPv6 first.
        let (_, addrs) = rendezvous_addrs("ws://localhost:9").await.unwrap();
        assert!(!addrs.is_empty() && addrs.len() <= 2, "{addrs:?}");
        assert!(addrs.iter().all(|a| a.port() == 9 && a.ip().is_loopback()));
        assert!(addrs.windows(2).all(|w| w[0].is_ipv6() && w[1].is_ipv4()));
        // A scheme without a default port needs one; nonsense is an error.
        for bad in ["udp://127.0.0.1", "not a url", "http://"] {
            assert!(
                matches!(rendezvous_addrs(bad).await, Err(DirectError::Rendezvous(_))),
                "{bad}"
            );
        }
    }
}
