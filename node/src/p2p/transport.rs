//! The swarm's TCP transport: libp2p's, except that dials leave from the `--bind`
//! address when that is a specific one.
//!
//! libp2p's TCP transport binds a dial to the unspecified address (with the listen
//! port when it reuses ports), so the kernel picks the source address. On a
//! multi-homed host, or a local testnet on 127.0.0.11, .12, ..., the peer then sees
//! the connection come from another address than the one we listen on
//! (127.0.0.1 for every loopback node), which is wrong in `getpeerinfo` and was the
//! address our STUN clients were asked at. Binding the dial to our own address
//! makes the source what we announce.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::core::{Multiaddr, Transport};
use libp2p::multiaddr::Protocol;
use libp2p::tcp;

/// [`tcp::tokio::Transport`] whose dials bind the `--bind` address of the target's
/// family first.
pub struct BoundTcp {
    inner: tcp::tokio::Transport,
    /// The specific addresses bound; an unspecified one leaves the choice to libp2p
    /// (and the kernel).
    binds: Vec<IpAddr>,
}

impl BoundTcp {
    pub fn new(config: tcp::Config, binds: &crate::sockets::Binds) -> Self {
        BoundTcp {
            inner: tcp::tokio::Transport::new(config),
            binds: binds
                .all()
                .iter()
                .filter(|ip| !ip.is_unspecified())
                .copied()
                .collect(),
        }
    }
}

fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) if ip.is_none() => ip = Some(IpAddr::V4(a)),
            Protocol::Ip6(a) if ip.is_none() => ip = Some(IpAddr::V6(a)),
            Protocol::Tcp(n) if ip.is_some() && port.is_none() => port = Some(n),
            Protocol::P2p(_) => {}
            _ => return None,
        }
    }
    Some(SocketAddr::new(ip?, port?))
}

/// Connect to `to` from `from` (any port), without blocking.
async fn connect_from(from: IpAddr, to: SocketAddr) -> io::Result<tokio::net::TcpStream> {
    let socket = crate::sockets::tcp_socket(SocketAddr::new(from, 0), to.is_ipv4(), false)?;
    socket.set_nodelay(true)?;
    socket.connect(to).await
}

impl Transport for BoundTcp {
    type Output = tcp::tokio::TcpStream;
    type Error = io::Error;
    type ListenerUpgrade = <tcp::tokio::Transport as Transport>::ListenerUpgrade;
    type Dial = BoxFuture<'static, io::Result<tcp::tokio::TcpStream>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<io::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<io::Error>> {
        let target = socket_addr(&addr);
        let bind = target.and_then(|t| {
            let t = t.ip().to_canonical();
            self.binds
                .iter()
                .find(|b| b.is_ipv4() == t.is_ipv4())
                .copied()
        });
        match (bind, target) {
            // Only to the same family, and never from a loopback address to another
            // host (it could not answer).
            (Some(from), Some(to))
                if from.is_ipv4() == to.is_ipv4()
                    && (!from.is_loopback() || to.ip().is_loopback())
                    && to.port() != 0
                    && !to.ip().is_unspecified() =>
            {
                Ok(Box::pin(async move {
                    connect_from(from, to).await.map(tcp::tokio::TcpStream)
                }))
            }
            _ => {
                let dial = self.inner.dial(addr, opts)?;
                Ok(Box::pin(dial))
            }
        }
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, io::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_tcp_addresses_are_dialed_from_the_bind_address() {
        let a: Multiaddr =
            "/ip4/127.0.0.12/tcp/38080/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
                .parse()
                .unwrap();
        assert_eq!(socket_addr(&a), Some("127.0.0.12:38080".parse().unwrap()));
        let quic: Multiaddr = "/ip4/127.0.0.12/udp/38080/quic-v1".parse().unwrap();
        assert_eq!(socket_addr(&quic), None);
        let ws: Multiaddr = "/ip4/127.0.0.12/tcp/1/ws".parse().unwrap();
        assert_eq!(socket_addr(&ws), None);
    }

    #[tokio::test]
    async fn a_dial_leaves_from_the_bind_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.31:0").await.unwrap();
        let to = listener.local_addr().unwrap();
        let binds = crate::sockets::Binds::new(&["127.0.0.32".parse().unwrap()]);
        let mut t = BoundTcp::new(tcp::Config::default(), &binds);
        let addr: Multiaddr = format!("/ip4/{}/tcp/{}", to.ip(), to.port())
            .parse()
            .unwrap();
        let opts = DialOpts {
            role: libp2p::core::Endpoint::Dialer,
            port_use: libp2p::core::transport::PortUse::Reuse,
        };
        let dial = t.dial(addr, opts).unwrap();
        let (accepted, dialed) = tokio::join!(listener.accept(), dial);
        let (_, from) = accepted.unwrap();
        dialed.unwrap();
        assert_eq!(from.ip().to_string(), "127.0.0.32");
    }
}
