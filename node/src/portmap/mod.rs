//! Port mapping: ask the LAN's gateway (UPnP IGD, found at our default route's
//! next hop) to forward an external port to our UDP API and one to our WebSocket
//! API. A forwarded port lets in whatever comes to it, as a full-cone NAT does, so
//! a client behind any NAT (a symmetric one too) reaches us directly without a
//! punch. The mappings appear in `getnodeinfo.stun` with `via: "upnp"` and travel
//! in our announcements like the STUN-found ones; they are renewed at half their
//! lease and removed at shutdown. A node that crashes leaves them for at most
//! [`LEASE_SECS`].
//!
//! A node bound to a loopback address looks for a gateway only where
//! `--port-mapping-gateway` names one; `--no-port-mapping` turns it all off
//! (docs/nat.md, "Port mapping").

mod igd;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use igd_next::PortMappingProtocol;
use igd_next::aio::Gateway;
use tokio_util::sync::CancellationToken;

pub use igd::{FindError, MAX_BODY, SSDP_PORT};

use crate::metrics::Metrics;
use crate::sockets::local_ip_towards;
use crate::stun::{StunState, Transport};

/// `via` of a forwarded port in `stun`.
pub const VIA: &str = "upnp";
/// Lease asked for each mapping, in seconds (UPnP IGD 2.0 asks control points for
/// a finite one; an IGD 1 device may keep it forever, and the shutdown removes it).
pub const LEASE_SECS: u32 = 3600;
const DESCRIPTION: &str = "cirrus node";
/// First wait after a failed search or mapping; it doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(30);
const RETRY_MAX: Duration = Duration::from_secs(30 * 60);
/// How long the removal at shutdown may take.
const REMOVE_FOR: Duration = Duration::from_secs(2);

/// What the port mapper needs.
pub struct PortMapper {
    pub state: Arc<StunState>,
    pub metrics: Metrics,
    /// The address our sockets are bound to.
    pub bind: IpAddr,
    /// The gateway's SSDP endpoint; `None`: our default route's next hop, port
    /// [`SSDP_PORT`].
    pub gateway: Option<SocketAddr>,
    /// Local ports of the UDP and WebSocket API.
    pub udp: u16,
    pub ws: u16,
}

/// One mapping the gateway holds for us.
struct Held {
    t: Transport,
    local: SocketAddr,
    external: u16,
}

impl PortMapper {
    /// The gateway to ask, or why there is none.
    fn gateway(&self) -> Option<SocketAddr> {
        if self.gateway.is_some() {
            return self.gateway;
        }
        // A node on loopback has no gateway to reach (and tests stay off the host's
        // network).
        if self.bind.is_loopback() {
            return None;
        }
        default_gateway().map(|ip| SocketAddr::new(ip.into(), SSDP_PORT))
    }

    /// Keep our mappings until `stop`, then remove them.
    pub async fn run(self, stop: CancellationToken) {
        let bind = self.bind;
        igd::bound(bind, self.keep(stop)).await;
    }

    async fn keep(self, stop: CancellationToken) {
        let Some(at) = self.gateway() else {
            tracing::debug!("no gateway to ask for port mapping");
            return;
        };
        let mut retry = RETRY_MIN;
        while !stop.is_cancelled() {
            // A slow gateway does not hold up the node's shutdown.
            let mapped = tokio::select! {
                _ = stop.cancelled() => return,
                m = self.map(at) => m,
            };
            match mapped {
                Ok((gw, held)) => {
                    self.metrics.port_mapping("mapped");
                    retry = RETRY_MIN;
                    self.hold(&gw, &held, &stop).await;
                    self.state.unforwarded();
                    if stop.is_cancelled() {
                        let _ = tokio::time::timeout(REMOVE_FOR, remove(&gw, &held)).await;
                        return;
                    }
                }
                Err(why) => {
                    self.metrics.port_mapping("failed");
                    tracing::info!(gateway = %at, "no port mapping: {why}");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Renew `held` at half its lease until `stop`, or until a renewal fails.
    async fn hold(&self, gw: &Gateway<igd::Bounded>, held: &[Held], stop: &CancellationToken) {
        let half_lease = Duration::from_secs(u64::from(LEASE_SECS / 2));
        loop {
            let renewed = tokio::select! {
                _ = stop.cancelled() => return,
                r = async {
                    tokio::time::sleep(half_lease).await;
                    renew_all(gw, held).await
                } => r,
            };
            match renewed {
                Ok(ip) => self.publish(held, ip),
                Err(why) => {
                    self.metrics.port_mapping("lost");
                    tracing::info!("port mapping lost: {why}");
                    return;
                }
            }
        }
    }

    /// List `held` in `stun`, at the gateway's external address `ip`.
    fn publish(&self, held: &[Held], ip: IpAddr) {
        for h in held {
            self.state
                .forwarded(h.t, h.local, SocketAddr::new(ip, h.external));
        }
    }

    /// Find the gateway and map both ports.
    async fn map(&self, at: SocketAddr) -> Result<(Gateway<igd::Bounded>, Vec<Held>), MapError> {
        let gw = igd::find(self.bind, at).await?;
        let local_ip = local_ip_towards(self.bind, at).await;
        let external_ip = external_ip(&gw).await?;
        let mut held = Vec::new();
        for (t, port) in [(Transport::Udp, self.udp), (Transport::Tcp, self.ws)] {
            let local = SocketAddr::new(local_ip, port);
            let p = protocol(t);
            // The same port outside when it is free (easier to read in `stun`),
            // any port the gateway picks otherwise.
            let external = match gw.add_port(p, port, local, LEASE_SECS, DESCRIPTION).await {
                Ok(()) => Ok(port),
                Err(_) => gw.add_any_port(p, local, LEASE_SECS, DESCRIPTION).await,
            };
            match external {
                Ok(external) => held.push(Held { t, local, external }),
                Err(e) => {
                    // Not half a mapping: what the gateway already holds goes.
                    let _ = tokio::time::timeout(REMOVE_FOR, remove(&gw, &held)).await;
                    return Err(MapError::gateway(e));
                }
            }
        }
        for h in &held {
            tracing::info!(transport = ?h.t, local = %h.local, external = %SocketAddr::new(external_ip, h.external), "port mapped by the gateway");
        }
        self.publish(&held, external_ip);
        Ok((gw, held))
    }
}

/// Why the gateway gave no mapping.
#[derive(Debug, thiserror::Error)]
enum MapError {
    #[error(transparent)]
    Find(#[from] FindError),
    #[error("the gateway refused: {0}")]
    Gateway(String),
    #[error("the gateway's external address {0} is not a public one (a NAT beyond it)")]
    NotPublic(IpAddr),
}

impl MapError {
    fn gateway(e: impl std::fmt::Display) -> MapError {
        MapError::Gateway(e.to_string())
    }
}

fn protocol(t: Transport) -> PortMappingProtocol {
    match t {
        Transport::Udp => PortMappingProtocol::UDP,
        Transport::Tcp => PortMappingProtocol::TCP,
    }
}

/// Renew every mapping; the gateway's external address as it stands.
async fn renew_all(gw: &Gateway<igd::Bounded>, held: &[Held]) -> Result<IpAddr, MapError> {
    for h in held {
        gw.add_port(protocol(h.t), h.external, h.local, LEASE_SECS, DESCRIPTION)
            .await
            .map_err(MapError::gateway)?;
    }
    external_ip(gw).await
}

/// The gateway's external address, if a mapping there could be reached.
async fn external_ip(gw: &Gateway<igd::Bounded>) -> Result<IpAddr, MapError> {
    let ip = gw.get_external_ip().await.map_err(MapError::gateway)?;
    if routable(ip) {
        Ok(ip)
    } else {
        Err(MapError::NotPublic(ip))
    }
}

async fn remove(gw: &Gateway<igd::Bounded>, held: &[Held]) {
    for h in held {
        if let Err(e) = gw.remove_port(protocol(h.t), h.external).await {
            tracing::debug!("removing port mapping {}: {e}", h.external);
        }
    }
}

/// Whether a mapping on `ip` could be reached from the Internet: not a private,
/// shared (carrier-grade NAT), loopback, link-local or unspecified address.
fn routable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let shared = v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64;
            !(v4.is_private()
                || shared
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => !(v6.is_loopback() || v6.is_unspecified()),
    }
}

/// The next hop of the IPv4 default route (Linux: /proc/net/route).
fn default_gateway() -> Option<Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    parse_default_gateway(&table)
}

fn parse_default_gateway(table: &str) -> Option<Ipv4Addr> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (dest, gw, flags) = (f.get(1)?, f.get(2)?, f.get(3)?);
        let flags = u32::from_str_radix(flags, 16).ok()?;
        if *dest != "00000000" || flags & (RTF_UP | RTF_GATEWAY) != RTF_UP | RTF_GATEWAY {
            return None;
        }
        // The kernel prints the address as a native-endian u32.
        let gw = u32::from_str_radix(gw, 16).ok()?;
        Some(Ipv4Addr::from(gw.to_ne_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_from_proc() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                     eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n\
                     eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n";
        if cfg!(target_endian = "little") {
            assert_eq!(
                parse_default_gateway(table),
                Some(Ipv4Addr::new(192, 0, 2, 1))
            );
        }
        assert_eq!(parse_default_gateway("Iface\tDestination\n"), None);
        assert_eq!(parse_default_gateway("h\neth0 00000000 zz 0003\n"), None);
    }

    #[test]
    fn only_public_external_addresses() {
        for ip in [
            "10.0.0.1",
            "192.168.1.1",
            "172.16.0.1",
            "100.64.0.1",
            "169.254.0.1",
        ] {
            assert!(!routable(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["198.18.13.2", "203.0.113.9", "100.128.0.1"] {
            assert!(routable(ip.parse().unwrap()), "{ip}");
        }
    }
}
