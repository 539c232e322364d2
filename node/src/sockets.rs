//! Socket set-up shared by the swarm's dials, the STUN clients, punching and the
//! rendezvous client: TCP sockets bound to a chosen local address (and, for hole
//! punching, a port shared by our connects and a listener), and the local address
//! the system picks toward a destination.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

/// The address a packet really came from: a socket bound to `::` serves IPv4 too,
/// and shows an IPv4 peer as `::ffff:a.b.c.d`. Rate limits, STUN answers and the
/// punch rule must see the IPv4 address it is.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The local address to bind toward `to`: a node bound to `::` serves both
/// families, and an IPv4 socket cannot bind `::` (it binds `0.0.0.0`, sharing the
/// port with the dual-stack listener).
pub fn bind_towards(bind: IpAddr, to: SocketAddr) -> IpAddr {
    match bind {
        IpAddr::V6(v6) if v6.is_unspecified() && to.is_ipv4() => Ipv4Addr::UNSPECIFIED.into(),
        b => b,
    }
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
    tcp_socket(
        SocketAddr::new(bind_towards(bind, to), port),
        to.is_ipv4(),
        true,
    )?
    .connect(to)
    .await
}

/// A listener on a shared port.
pub fn listen_on(addr: SocketAddr) -> io::Result<TcpListener> {
    tcp_socket(addr, addr.is_ipv4(), true)?.listen(256)
}

/// The local IP the system would use toward `to` (a socket may be bound to the
/// unspecified address); `bind` itself when it is not unspecified or when the
/// system has no route.
pub async fn local_ip_towards(bind: IpAddr, to: SocketAddr) -> IpAddr {
    let bind = bind_towards(bind, to);
    if !bind.is_unspecified() {
        return bind;
    }
    match UdpSocket::bind(SocketAddr::new(bind, 0)).await {
        Ok(s) if s.connect(to).await.is_ok() => s.local_addr().map_or(bind, |a| a.ip()),
        _ => bind,
    }
}
