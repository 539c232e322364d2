//! Socket set-up shared by the swarm's dials, the STUN clients, punching and the
//! rendezvous client: TCP sockets bound to a chosen local address (and, for hole
//! punching, a port shared by our connects and a listener), and the local address
//! the system picks toward a destination.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

/// The address a packet really came from: a socket bound to `::` serves IPv4 too,
/// and shows an IPv4 peer as `::ffff:a.b.c.d`. Rate limits, STUN answers and the
/// punch rule must see the IPv4 address it is.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The addresses the node's listeners bind (`--bind`), in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binds(Vec<IpAddr>);

impl Binds {
    /// `ips` without repeats; `::` is left out, with a warning, where the host has
    /// no IPv6 and other addresses remain.
    pub fn new(ips: &[IpAddr]) -> Binds {
        let mut out: Vec<IpAddr> = Vec::new();
        for ip in ips {
            if !out.contains(ip) {
                out.push(*ip);
            }
        }
        let any6 = IpAddr::from(Ipv6Addr::UNSPECIFIED);
        if out.len() > 1 && out.contains(&any6) && std::net::UdpSocket::bind((any6, 0)).is_err() {
            tracing::warn!("this host has no IPv6: listening on IPv4 only");
            out.retain(|ip| *ip != any6);
        }
        Binds(out)
    }

    pub fn all(&self) -> &[IpAddr] {
        &self.0
    }

    /// Whether IPv6 sockets take IPv6 only: with an IPv4 address bound too, both
    /// would claim the port's IPv4 traffic. `::` alone is dual-stack.
    pub fn v6_only(&self) -> bool {
        self.0.iter().any(IpAddr::is_ipv4)
    }

    /// `::` alone: one dual-stack socket per port takes IPv4 too.
    pub fn dual_stack(&self) -> bool {
        !self.v6_only() && self.0.contains(&Ipv6Addr::UNSPECIFIED.into())
    }

    /// The bound address to use toward `to`: the first of its family (dual-stack
    /// `::` serves IPv4 as `0.0.0.0`, an IPv4 socket sharing its ports); `None`
    /// when none serves it.
    pub fn towards(&self, to: IpAddr) -> Option<IpAddr> {
        let to = to.to_canonical();
        if let Some(ip) = self.0.iter().find(|b| b.is_ipv4() == to.is_ipv4()) {
            return Some(*ip);
        }
        (self.dual_stack() && to.is_ipv4()).then_some(Ipv4Addr::UNSPECIFIED.into())
    }

    /// Every bound address is a loopback address.
    pub fn loopback_only(&self) -> bool {
        self.0.iter().all(IpAddr::is_loopback)
    }
}

/// A non-blocking socket of `addr`'s family; an IPv6 one takes IPv6 only if
/// `v6_only` (set before it binds).
fn socket_for(addr: SocketAddr, kind: socket2::Type, v6_only: bool) -> io::Result<socket2::Socket> {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), kind, None)?;
    if addr.is_ipv6() {
        s.set_only_v6(v6_only)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// A UDP socket on `addr`.
pub fn udp_bind(addr: SocketAddr, v6_only: bool) -> io::Result<UdpSocket> {
    let s = socket_for(addr, socket2::Type::DGRAM, v6_only)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// A TCP listener on `addr` (SO_REUSEADDR, as tokio's own).
pub fn tcp_listen(addr: SocketAddr, v6_only: bool) -> io::Result<TcpListener> {
    let s = TcpSocket::from_std_stream(socket_for(addr, socket2::Type::STREAM, v6_only)?.into());
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(1024)
}

/// A TCP socket of `v4`'s family bound to `local`. With `shared`, SO_REUSEADDR and
/// SO_REUSEPORT, so our connects and our listener can use one port together.
pub fn tcp_socket(local: SocketAddr, v4: bool, shared: bool) -> io::Result<TcpSocket> {
    let s = if v4 {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if shared {
        s.set_reuseaddr(true)?;
        s.set_reuseport(true)?;
    }
    s.bind(local)?;
    Ok(s)
}

/// Connect to `to` from `bind`:`port` on a shared port (port 0: any). A reconnect
/// then gets the same port, and a listener can share it.
pub async fn connect_from(bind: IpAddr, port: u16, to: SocketAddr) -> io::Result<TcpStream> {
    tcp_socket(SocketAddr::new(bind, port), to.is_ipv4(), true)?
        .connect(to)
        .await
}

/// A listener on a shared port.
pub fn listen_on(addr: SocketAddr) -> io::Result<TcpListener> {
    tcp_socket(addr, addr.is_ipv4(), true)?.listen(256)
}

/// The wildcard address of `towards`'s family: where a socket that talks to it binds.
pub fn any_of_family(towards: SocketAddr) -> IpAddr {
    match towards {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

/// The local IP the system would use toward `to` (a socket may be bound to the
/// unspecified address); `bind` itself when it is not unspecified or when the
/// system has no route.
pub async fn local_ip_towards(bind: IpAddr, to: SocketAddr) -> IpAddr {
    if !bind.is_unspecified() {
        return bind;
    }
    match UdpSocket::bind(SocketAddr::new(bind, 0)).await {
        Ok(s) if s.connect(to).await.is_ok() => s.local_addr().map_or(bind, |a| a.ip()),
        _ => bind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binds(s: &[&str]) -> Binds {
        Binds::new(
            &s.iter()
                .map(|a| a.parse().unwrap())
                .collect::<Vec<IpAddr>>(),
        )
    }

    #[test]
    fn each_target_gets_a_bound_address_of_its_family() {
        let v4: IpAddr = "198.51.100.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let mapped: IpAddr = "::ffff:198.51.100.1".parse().unwrap();
        let both = binds(&["0.0.0.0", "::"]);
        assert!(both.v6_only());
        assert_eq!(both.towards(v4), Some("0.0.0.0".parse().unwrap()));
        assert_eq!(both.towards(mapped), Some("0.0.0.0".parse().unwrap()));
        assert_eq!(both.towards(v6), Some("::".parse().unwrap()));
        // `::` alone is dual-stack: IPv4 targets from 0.0.0.0 on the same ports.
        let dual = binds(&["::"]);
        assert!(!dual.v6_only());
        assert_eq!(dual.towards(v4), Some("0.0.0.0".parse().unwrap()));
        // A specific IPv6 address serves no IPv4 target, and the reverse.
        assert_eq!(binds(&["::1"]).towards(v4), None);
        assert_eq!(binds(&["127.0.0.1"]).towards(v6), None);
        let specific = binds(&["127.0.0.9", "::1"]);
        assert_eq!(specific.towards(v4), Some("127.0.0.9".parse().unwrap()));
        assert!(specific.loopback_only() && !both.loopback_only());
    }

    #[test]
    fn an_ipv4_client_of_a_dual_stack_socket_is_its_ipv4_address() {
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:5000".parse().unwrap();
        assert_eq!(canonical(mapped), "192.0.2.7:5000".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::7]:5000".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }
}
