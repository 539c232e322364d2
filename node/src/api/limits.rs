//! Limits where input enters the API: a request rate per source shared by every
//! transport, and connection slots (total and per source) for the TCP listeners.
//!
//! A source is an IPv4 address, an IPv6 /64 (one subscriber's whole prefix, which
//! it can rotate through at will), or a peer that relays requests to us. The rate
//! table is an LRU of bounded size, so a flood of new sources costs O(1) per request
//! and never more memory. Loopback is exempt by default, so local testnets and
//! benchmarks are not throttled; `limit-loopback` turns that off (the tests do).
//!
//! Connection slots: a source at its own cap is refused; when every slot is taken,
//! the oldest connection of the source holding the most gives way to the newcomer
//! (unless the newcomer's source is that one), so a flood from a few addresses
//! pushes out its own connections first and never locks others out.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hashlink::LruCache;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// Sustained requests per second per source (a batch counts each request).
    pub rate: f64,
    /// Requests a source may send at once before the rate applies.
    pub burst: f64,
    /// Sustained requests per second a peer may relay to us (for all its clients).
    pub relay_rate: f64,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Apply the limits to loopback sources too.
    pub limit_loopback: bool,
}

/// Who is charged for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(u32),
    /// The upper 64 bits: the /64 prefix.
    V6(u64),
    /// A peer relaying requests (hash of its peer id).
    Peer(u64),
}

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(u32::from(v4)),
                None => Source::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }

    pub fn peer(id: &[u8]) -> Source {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        Source::Peer(h.finish())
    }
}

/// Rate buckets kept; the least recently used goes when a new source arrives.
pub const MAX_BUCKETS: usize = 100_000;

/// Token buckets per source.
pub struct RateLimiter {
    cfg: LimitsConfig,
    buckets: Mutex<LruCache<Source, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(cfg: LimitsConfig) -> Self {
        RateLimiter {
            cfg,
            buckets: Mutex::new(LruCache::new(MAX_BUCKETS)),
        }
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.cfg
    }

    pub fn exempt(&self, ip: IpAddr) -> bool {
        ip.is_loopback() && !self.cfg.limit_loopback
    }

    /// Take `cost` tokens for a client at `ip`; false when it is over its rate.
    pub fn allow(&self, ip: IpAddr, cost: usize) -> bool {
        self.exempt(ip) || self.take(Source::of(ip), cost, self.cfg.rate)
    }

    /// Take `cost` tokens for requests relayed by a peer.
    pub fn allow_relayed(&self, peer: &[u8], cost: usize) -> bool {
        self.take(Source::peer(peer), cost, self.cfg.relay_rate)
    }

    fn take(&self, source: Source, cost: usize, rate: f64) -> bool {
        let burst = self.cfg.burst.max(rate);
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let entry = match b.get_mut(&source) {
            Some(e) => e,
            None => {
                b.insert(source, (burst, now));
                b.get_mut(&source).expect("just inserted")
            }
        };
        let (tokens, at) = entry;
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= cost as f64 {
            *tokens -= cost as f64;
            true
        } else {
            false
        }
    }

    /// Buckets held now (for tests of the bound).
    pub fn buckets(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Open connections of one counter: per source, by opening order.
#[derive(Default)]
struct Table {
    next: u64,
    /// id -> (source, closer)
    open: HashMap<u64, (Source, CancellationToken)>,
    /// source -> ids, oldest first
    by_source: HashMap<Source, BTreeMap<u64, ()>>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<CancellationToken> {
        let (source, token) = self.open.remove(&id)?;
        if let Some(ids) = self.by_source.get_mut(&source) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_source.remove(&source);
            }
        }
        Some(token)
    }
}

/// Open connections, total and per source, shared by the listeners that use it.
#[derive(Clone)]
pub struct ConnectionCounter {
    table: Arc<Mutex<Table>>,
    limiter: Arc<RateLimiter>,
    metrics: crate::metrics::Metrics,
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its source holds `max-connections-per-ip` already.
    SourceFull,
    /// Every slot is taken and its own source holds the most.
    Full,
}

impl ConnectionCounter {
    pub fn new(limiter: Arc<RateLimiter>, metrics: crate::metrics::Metrics) -> Self {
        ConnectionCounter {
            table: Arc::default(),
            limiter,
            metrics,
        }
    }

    /// A slot for a connection from `ip`, `listener` naming where (for metrics).
    pub fn admit(&self, ip: IpAddr, listener: &'static str) -> Result<Slot, Refused> {
        let cfg = self.limiter.config();
        let exempt = self.limiter.exempt(ip);
        let source = Source::of(ip);
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !exempt {
            let mine = t.by_source.get(&source).map_or(0, BTreeMap::len);
            if mine >= cfg.max_connections_per_ip {
                return Err(Refused::SourceFull);
            }
            if t.open.len() >= cfg.max_connections {
                // The busiest source gives way, unless it is the newcomer's.
                let busiest = t
                    .by_source
                    .iter()
                    .max_by_key(|(_, ids)| ids.len())
                    .map(|(s, ids)| (*s, ids.len()));
                match busiest {
                    Some((s, n)) if s != source && n > mine => {
                        let oldest = *t.by_source[&s].keys().next().expect("non-empty");
                        if let Some(token) = t.remove(oldest) {
                            token.cancel();
                        }
                        self.metrics
                            .evictions
                            .get_or_create(&crate::metrics::ByListener { listener })
                            .inc();
                    }
                    _ => return Err(Refused::Full),
                }
            }
        }
        t.next += 1;
        let id = t.next;
        let token = CancellationToken::new();
        t.open.insert(id, (source, token.clone()));
        t.by_source.entry(source).or_default().insert(id, ());
        Ok(Slot {
            table: self.table.clone(),
            id,
            evicted: token,
        })
    }

    /// Connections held now.
    pub fn open(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .len()
    }
}

/// Held by an open connection; frees its place when dropped. `evicted` fires when
/// the connection must close to make room.
pub struct Slot {
    table: Arc<Mutex<Table>>,
    id: u64,
    pub evicted: CancellationToken,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(self.id);
    }
}

/// A TCP listener whose connections each hold a [`Slot`]; those over the caps are
/// closed right after accepting them.
pub struct LimitedListener {
    inner: TcpListener,
    counter: ConnectionCounter,
    name: &'static str,
    write_stall: Duration,
}

impl LimitedListener {
    pub fn new(
        inner: TcpListener,
        counter: ConnectionCounter,
        name: &'static str,
        write_stall: Duration,
    ) -> Self {
        LimitedListener {
            inner,
            counter,
            name,
            write_stall,
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The next admitted connection.
    pub async fn accept(&self) -> (LimitedStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    match LimitedStream::admit(
                        stream,
                        addr,
                        &self.counter,
                        self.name,
                        self.write_stall,
                    ) {
                        Ok(s) => return (s, addr),
                        Err(why) => tracing::debug!(%addr, ?why, "connection refused"),
                    }
                }
                // Out of file descriptors and the like: wait a little, as axum does.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// An admitted connection. A write that makes no progress for `write_stall` fails,
/// so a client that stops reading cannot hold its slot (or our buffers) forever.
pub struct LimitedStream {
    stream: TcpStream,
    pub slot: Slot,
    write_stall: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl LimitedStream {
    pub fn admit(
        stream: TcpStream,
        addr: SocketAddr,
        counter: &ConnectionCounter,
        listener: &'static str,
        write_stall: Duration,
    ) -> Result<LimitedStream, Refused> {
        let slot = counter.admit(addr.ip(), listener)?;
        let _ = stream.set_nodelay(true);
        Ok(LimitedStream {
            stream,
            slot,
            write_stall,
            stalled: None,
        })
    }

    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stall = self.write_stall;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client has not read for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
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
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => match self.poll_stall(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Pending,
            },
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.stream).poll_flush(cx) {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => match self.poll_stall(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Pending,
            },
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The remote address of a connection, for handlers (`ConnectInfo<ClientAddr>`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max: usize, per_ip: usize) -> LimitsConfig {
        LimitsConfig {
            rate: 10.0,
            burst: 20.0,
            relay_rate: 50.0,
            max_connections: max,
            max_connections_per_ip: per_ip,
            limit_loopback: true,
        }
    }

    fn counter(max: usize, per_ip: usize) -> ConnectionCounter {
        let limiter = Arc::new(RateLimiter::new(cfg(max, per_ip)));
        ConnectionCounter::new(limiter, crate::metrics::Metrics::new())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_sources_are_their_slash_64() {
        assert_eq!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Source::of(ip("::ffff:192.0.2.1")),
            Source::of(ip("192.0.2.1"))
        );
    }

    #[test]
    fn the_rate_table_is_bounded_and_charges_the_whole_cost() {
        let l = RateLimiter::new(cfg(1, 1));
        assert!(l.allow(ip("192.0.2.1"), 20));
        assert!(!l.allow(ip("192.0.2.1"), 1), "the burst is spent");
        assert!(
            !l.allow(ip("192.0.2.2"), 21),
            "a cost over the burst never fits"
        );
        for i in 0..(MAX_BUCKETS as u32 + 1000) {
            l.allow(IpAddr::V4(i.into()), 1);
        }
        assert_eq!(l.buckets(), MAX_BUCKETS);
    }

    #[test]
    fn a_full_table_evicts_the_oldest_of_the_busiest_source() {
        let c = counter(4, 3);
        let a1 = c.admit(ip("192.0.2.1"), "t").unwrap();
        let a2 = c.admit(ip("192.0.2.1"), "t").unwrap();
        let a3 = c.admit(ip("192.0.2.1"), "t").unwrap();
        assert_eq!(
            c.admit(ip("192.0.2.1"), "t").err(),
            Some(Refused::SourceFull)
        );
        let b1 = c.admit(ip("192.0.2.2"), "t").unwrap();
        // Full: a newcomer from a third source takes a1's place.
        let _c1 = c.admit(ip("192.0.2.3"), "t").unwrap();
        assert!(a1.evicted.is_cancelled());
        assert!(!a2.evicted.is_cancelled() && !b1.evicted.is_cancelled());
        assert_eq!(c.open(), 4);
        drop(a1); // its task closes; the count does not go down twice
        assert_eq!(c.open(), 4);
        // The busiest source itself cannot push others out.
        drop((a2, a3));
        let _a4 = c.admit(ip("192.0.2.1"), "t").unwrap();
        let _a5 = c.admit(ip("192.0.2.1"), "t").unwrap();
        assert_eq!(c.admit(ip("192.0.2.1"), "t").err(), Some(Refused::Full));
        assert!(!b1.evicted.is_cancelled());
    }
}
