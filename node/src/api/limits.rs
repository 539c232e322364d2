//! Limits where input enters the API: a per-IP request rate shared by every
//! transport, and connection caps (total and per IP) for the TCP listeners.
//!
//! Loopback is exempt by default, so local testnets and benchmarks are not
//! throttled; `limit-loopback` turns that off (the tests do, to exercise the limits).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// Sustained requests per second per source IP (a batch counts each request).
    pub rate: f64,
    /// Requests a source may send at once before the rate applies.
    pub burst: f64,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Apply the limits to loopback sources too.
    pub limit_loopback: bool,
}

/// Token buckets per source IP.
pub struct RateLimiter {
    cfg: LimitsConfig,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

/// Buckets kept before full (idle) ones are dropped.
const MAX_BUCKETS: usize = 100_000;

impl RateLimiter {
    pub fn new(cfg: LimitsConfig) -> Self {
        RateLimiter {
            cfg,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.cfg
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        ip.is_loopback() && !self.cfg.limit_loopback
    }

    /// Take `cost` tokens for `ip`; false when the source is over its rate.
    pub fn allow(&self, ip: IpAddr, cost: usize) -> bool {
        if self.exempt(ip) {
            return true;
        }
        let now = Instant::now();
        let mut b = self.buckets.lock().expect("rate limiter lock");
        if b.len() >= MAX_BUCKETS {
            let (rate, burst) = (self.cfg.rate, self.cfg.burst);
            b.retain(|_, (t, at)| *t + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = b.entry(ip).or_insert((self.cfg.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.cfg.rate).min(self.cfg.burst);
        *at = now;
        if *tokens >= cost as f64 {
            *tokens -= cost as f64;
            true
        } else {
            false
        }
    }
}

/// Open connections, total and per IP, shared by the listeners that use it.
#[derive(Clone)]
pub struct ConnectionCounter {
    inner: Arc<Mutex<(usize, HashMap<IpAddr, usize>)>>,
    limiter: Arc<RateLimiter>,
}

impl ConnectionCounter {
    pub fn new(limiter: Arc<RateLimiter>) -> Self {
        ConnectionCounter {
            inner: Arc::default(),
            limiter,
        }
    }

    fn admit(&self, ip: IpAddr) -> Option<Slot> {
        let cfg = self.limiter.config();
        let exempt = self.limiter.exempt(ip);
        let mut g = self.inner.lock().expect("connection counter lock");
        let per_ip = g.1.get(&ip).copied().unwrap_or(0);
        if !exempt && (g.0 >= cfg.max_connections || per_ip >= cfg.max_connections_per_ip) {
            return None;
        }
        g.0 += 1;
        *g.1.entry(ip).or_insert(0) += 1;
        Some(Slot {
            counter: self.inner.clone(),
            ip,
        })
    }
}

/// Held by an open connection; frees its place when dropped.
pub struct Slot {
    counter: Arc<Mutex<(usize, HashMap<IpAddr, usize>)>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self.counter.lock().expect("connection counter lock");
        g.0 = g.0.saturating_sub(1);
        if let Some(n) = g.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                g.1.remove(&self.ip);
            }
        }
    }
}

/// A TCP listener that closes connections over the caps right after accepting them.
pub struct LimitedListener {
    inner: TcpListener,
    counter: ConnectionCounter,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, counter: ConnectionCounter) -> Self {
        LimitedListener { inner, counter }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (LimitedStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => match self.counter.admit(addr.ip()) {
                    Some(slot) => {
                        return (
                            LimitedStream {
                                stream,
                                _slot: slot,
                            },
                            addr,
                        );
                    }
                    None => tracing::debug!(%addr, "connection refused: over the connection limit"),
                },
                // Out of file descriptors and the like: wait a little, as axum does.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

pub struct LimitedStream {
    stream: TcpStream,
    _slot: Slot,
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The remote address of a connection, for handlers (`ConnectInfo<ClientAddr>`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, LimitedListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, LimitedListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}
