//! Punching our NAT open toward a client, from every STUN client socket.
//!
//! The sockets are registered here rather than told by message, because a punch must
//! not wait for a client loop that is busy asking an unreachable STUN server (up to
//! several seconds of retransmissions). Timing matters: the client starts sending to
//! our mapped port as soon as the rendezvous answers `punch`. If one of its packets
//! reaches our NAT before our first punch packet leaves, conntrack holds that flow,
//! and masquerade gives our punch another port, which the client does not know. So
//! the first UDP round goes out before [`Punchers::punch`] returns, and the swarm
//! answers the rendezvous only after that.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use cirrus_proto::punch::{Rounds, Tries};
use cirrus_proto::stun;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{DynamicApi, Transport, transaction_id};
use crate::metrics::Metrics;
use crate::rate::{RateLimiter, Rates};
use crate::sockets::connect_from;

/// Most punches under way at once, so a flood of `punch` requests cannot start
/// unbounded tasks.
const MAX_RUNNING: usize = 64;
/// Port-guessing attempts one IP may start (`guess.rs`): one every 5 s, four at
/// once.
const GUESSES_PER_SEC: f64 = 0.2;
const GUESS_BURST: f64 = 4.0;

/// A STUN client UDP socket we can send from, and the API that serves it.
pub(super) struct UdpPort {
    pub(super) sock: Arc<UdpSocket>,
    pub(super) api: Arc<dyn DynamicApi>,
}

/// A STUN client TCP port we can connect out from.
struct TcpPort {
    bind: IpAddr,
    api: Arc<dyn DynamicApi>,
}

pub struct Punchers {
    /// By local port.
    pub(super) udp: Mutex<HashMap<u16, UdpPort>>,
    tcp: Mutex<HashMap<u16, TcpPort>>,
    /// Punches under way.
    running: Mutex<Vec<(SocketAddr, Transport)>>,
    /// Packets (and connection attempts) per second toward one IP.
    per_ip: RateLimiter,
    pub(super) metrics: Metrics,
    /// The punches' own tasks, which the node waits for on shutdown.
    pub(super) tasks: TaskTracker,
    /// Port guessing under way, by the requester's address (one each).
    pub(super) guessing: Mutex<Vec<IpAddr>>,
    /// Port-guessing attempts per second from one IP.
    pub(super) guesses_per_ip: RateLimiter,
    /// Sockets open for port guessing.
    pub(super) guess_sockets: std::sync::atomic::AtomicUsize,
    /// The node's shutdown: sockets opened for guessing close with it.
    pub(super) stop: CancellationToken,
}

impl Punchers {
    /// `rate`: packets per second this node sends toward one IP, whatever asks.
    pub fn new(
        rate: f64,
        metrics: Metrics,
        tasks: TaskTracker,
        stop: CancellationToken,
    ) -> Punchers {
        Punchers {
            udp: Mutex::default(),
            tcp: Mutex::default(),
            running: Mutex::default(),
            per_ip: RateLimiter::new(Rates::per_second(rate, rate, true)),
            metrics,
            tasks,
            guessing: Mutex::default(),
            guess_sockets: Default::default(),
            stop,
            guesses_per_ip: RateLimiter::new(Rates::per_second(GUESSES_PER_SEC, GUESS_BURST, true)),
        }
    }
}

/// Removes its socket from [`Punchers`] when the client that owns it stops.
pub struct Registration {
    punchers: Arc<Punchers>,
    port: u16,
    transport: Transport,
}

impl Drop for Registration {
    fn drop(&mut self) {
        match self.transport {
            Transport::Udp => lock(&self.punchers.udp).remove(&self.port).map(drop),
            Transport::Tcp => lock(&self.punchers.tcp).remove(&self.port).map(drop),
        };
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Punchers {
    pub fn register_udp(
        self: &Arc<Self>,
        sock: Arc<UdpSocket>,
        api: Arc<dyn DynamicApi>,
    ) -> Option<Registration> {
        let port = sock.local_addr().ok()?.port();
        lock(&self.udp).insert(port, UdpPort { sock, api });
        Some(Registration {
            punchers: self.clone(),
            port,
            transport: Transport::Udp,
        })
    }

    pub fn register_tcp(
        self: &Arc<Self>,
        bind: IpAddr,
        port: u16,
        api: Arc<dyn DynamicApi>,
    ) -> Registration {
        lock(&self.tcp).insert(port, TcpPort { bind, api });
        Registration {
            punchers: self.clone(),
            port,
            transport: Transport::Tcp,
        }
    }

    /// Start punching toward `endpoint` from every socket of the transport and return
    /// how many sockets take part. For UDP the first packet from each socket has been
    /// sent when this returns; the rest run in the background for [`PUNCH_FOR`]. A
    /// punch toward an endpoint that one already runs toward adds nothing.
    pub async fn punch(self: &Arc<Self>, endpoint: SocketAddr, transport: Transport) -> usize {
        // Only sockets of the endpoint's family have a mapping toward it.
        let endpoint = crate::sockets::canonical(endpoint);
        let family = |local: IpAddr| local.is_ipv4() == endpoint.is_ipv4();
        {
            let mut running = lock(&self.running);
            if running.contains(&(endpoint, transport)) || running.len() >= MAX_RUNNING {
                self.metrics.punch(transport.as_str(), "refused");
                return 0;
            }
            running.push((endpoint, transport));
        }
        self.metrics.punch(transport.as_str(), "started");
        if transport == Transport::Udp {
            let socks: Vec<_> = lock(&self.udp)
                .values()
                .filter(|u| u.sock.local_addr().is_ok_and(|a| family(a.ip())))
                .map(|u| u.sock.clone())
                .collect();
            let mut rounds = Rounds::new(std::time::Instant::now());
            if rounds.poll_round(std::time::Instant::now()) {
                self.round(&socks, endpoint).await;
            }
            let (me, n) = (self.clone(), socks.len());
            self.tasks.spawn(async move {
                while let Some(next) = rounds.poll_timeout() {
                    tokio::time::sleep_until(next.into()).await;
                    if rounds.poll_round(std::time::Instant::now()) {
                        me.round(&socks, endpoint).await;
                    }
                }
                me.finished(endpoint, Transport::Udp);
                me.metrics.punch("udp", "done");
            });
            n
        } else {
            let ports: Vec<_> = lock(&self.tcp)
                .iter()
                .filter(|(_, p)| family(p.bind))
                .map(|(port, p)| (*port, p.bind, p.api.clone()))
                .collect();
            let me = self.clone();
            let n = ports.len();
            self.tasks.spawn(async move {
                let mut tries = tokio::task::JoinSet::new();
                for (port, bind, api) in ports {
                    tries.spawn(punch_tcp(me.clone(), api, bind, port, endpoint));
                }
                while tries.join_next().await.is_some() {}
                me.finished(endpoint, Transport::Tcp);
                me.metrics.punch("tcp", "done");
            });
            n
        }
    }

    fn finished(&self, endpoint: SocketAddr, transport: Transport) {
        lock(&self.running).retain(|r| *r != (endpoint, transport));
    }

    /// One packet from each socket toward `endpoint`, as far as the per-IP rate
    /// allows.
    async fn round(&self, socks: &[Arc<UdpSocket>], endpoint: SocketAddr) {
        for s in socks {
            if !self.per_ip.allow(endpoint.ip(), 1) {
                self.metrics.punch("udp", "throttled");
                return;
            }
            send_indication(s, endpoint).await;
        }
    }
}

async fn send_indication(sock: &UdpSocket, endpoint: SocketAddr) {
    let _ = sock
        .send_to(&stun::binding_indication(transaction_id()), endpoint)
        .await;
}

/// TCP simultaneous open toward a client, from a STUN client's port, on the
/// schedule of `cirrus_proto::punch::Tries`: the first connection that forms is
/// served as WebSocket (with a connection slot, like any).
async fn punch_tcp(
    punchers: Arc<Punchers>,
    api: Arc<dyn DynamicApi>,
    bind: IpAddr,
    port: u16,
    endpoint: SocketAddr,
) {
    let mut tries = Tries::new(std::time::Instant::now());
    while let Some(at) = tries.poll_timeout() {
        tokio::time::sleep_until(at.into()).await;
        let Some(limit) = tries.poll_try(std::time::Instant::now()) else {
            break;
        };
        if !punchers.per_ip.allow(endpoint.ip(), 1) {
            punchers.metrics.punch("tcp", "throttled");
        } else if let Ok(Ok(stream)) =
            tokio::time::timeout(limit, connect_from(bind, port, endpoint)).await
        {
            tracing::info!(%endpoint, "punched TCP connection up");
            api.serve_tcp_stream(stream);
            return;
        }
        tries.failed(std::time::Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The punch tests send only; nothing serves the sockets.
    struct Unserved;
    impl DynamicApi for Unserved {
        fn serve_udp(
            &self,
            _: Arc<UdpSocket>,
            _: tokio::sync::mpsc::Sender<(Vec<u8>, SocketAddr)>,
            _: CancellationToken,
        ) {
        }
        fn serve_guessed_udp(
            &self,
            _: Arc<UdpSocket>,
            _: Arc<std::sync::atomic::AtomicU64>,
            _: CancellationToken,
        ) {
        }
        fn serve_tcp(&self, _: tokio::net::TcpListener, _: CancellationToken) {}
        fn serve_tcp_stream(&self, _: tokio::net::TcpStream) {}
    }

    fn unserved() -> Arc<dyn DynamicApi> {
        Arc::new(Unserved)
    }

    fn punchers() -> Arc<Punchers> {
        Arc::new(Punchers::new(
            100.0,
            Metrics::new(),
            TaskTracker::new(),
            CancellationToken::new(),
        ))
    }

    async fn socket() -> Arc<UdpSocket> {
        Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap())
    }

    /// A plain non-blocking socket: a read asks the kernel, not tokio's readiness.
    fn receiver() -> std::net::UdpSocket {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        s
    }

    /// Punch toward `client`, which must be punched from exactly one socket: the
    /// address that socket's packet came from.
    async fn punched_once(punchers: &Arc<Punchers>, client: &std::net::UdpSocket) -> SocketAddr {
        let to = client.local_addr().unwrap();
        assert_eq!(punchers.punch(to, Transport::Udp).await, 1);
        let mut buf = [0u8; 64];
        client.recv_from(&mut buf).expect("a punch packet").1
    }

    /// A node bound to both families has STUN client sockets of each: a punch
    /// goes only from those of the endpoint's family, which hold a mapping toward it.
    #[tokio::test]
    async fn a_punch_leaves_only_from_sockets_of_the_endpoints_family() {
        let punchers = punchers();
        let v4 = socket().await;
        let v6 = Arc::new(UdpSocket::bind("[::1]:0").await.unwrap());
        let _r4 = punchers.register_udp(v4.clone(), unserved()).unwrap();
        let _r6 = punchers.register_udp(v6.clone(), unserved()).unwrap();
        let client6 = std::net::UdpSocket::bind("[::1]:0").unwrap();
        client6.set_nonblocking(true).unwrap();
        let client4 = receiver();
        assert_eq!(
            punched_once(&punchers, &client6).await,
            v6.local_addr().unwrap()
        );
        assert_eq!(
            punched_once(&punchers, &client4).await,
            v4.local_addr().unwrap()
        );
    }

    #[tokio::test]
    async fn first_packets_are_out_when_punch_returns() {
        let punchers = punchers();
        let (a, b) = (socket().await, socket().await);
        let _ra = punchers.register_udp(a.clone(), unserved()).unwrap();
        let rb = punchers.register_udp(b.clone(), unserved()).unwrap();
        let client = receiver();
        let to = client.local_addr().unwrap();

        assert_eq!(punchers.punch(to, Transport::Udp).await, 2);
        // On loopback a sent datagram is in the receiver's buffer when send returns,
        // so both are readable without waiting.
        let mut buf = [0u8; 64];
        let mut from = Vec::new();
        for _ in 0..2 {
            let (n, addr) = client.recv_from(&mut buf).expect("a punch packet");
            assert!(stun::is_stun(&buf[..n]));
            from.push(addr);
        }
        from.sort();
        let mut expected = vec![a.local_addr().unwrap(), b.local_addr().unwrap()];
        expected.sort();
        assert_eq!(from, expected);

        // A second punch toward the same endpoint while the first runs adds nothing.
        assert_eq!(punchers.punch(to, Transport::Udp).await, 0);
        // A stopped client's socket is no longer punched from.
        drop(rb);
        assert_eq!(
            punched_once(&punchers, &receiver()).await,
            a.local_addr().unwrap()
        );
    }
}
