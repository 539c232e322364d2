//! Connection slots (total and per source, a source as in [`crate::rate`]) for the
//! API's TCP listeners, and a write-stall bound on every connection.
//!
//! Slots: a source at its own cap is refused; when every slot is taken,
//! the oldest connection of the source holding the most gives way to the newcomer
//! (unless the newcomer's source is that one), so a flood from a few addresses
//! pushes out its own connections first and never locks others out.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::rate::Source;

/// Connection slots, total and per source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    pub max: usize,
    pub per_source: usize,
    /// Count loopback sources too.
    pub limit_loopback: bool,
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
    slots: Slots,
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
    pub fn new(slots: Slots, metrics: crate::metrics::Metrics) -> Self {
        ConnectionCounter {
            table: Arc::default(),
            slots,
            metrics,
        }
    }

    /// A slot for a connection from `ip`, `listener` naming where (for metrics).
    pub fn admit(&self, ip: IpAddr, listener: &'static str) -> Result<Slot, Refused> {
        let cfg = self.slots;
        let exempt = ip.is_loopback() && !cfg.limit_loopback;
        let source = Source::of(ip);
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !exempt {
            let mine = t.by_source.get(&source).map_or(0, BTreeMap::len);
            if mine >= cfg.per_source {
                return Err(Refused::SourceFull);
            }
            if t.open.len() >= cfg.max {
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
                    let addr = crate::sockets::canonical(addr);
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

    /// A write's result as it leaves: progress resets the stall timer; no progress
    /// for `write_stall` fails the write.
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
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
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch(cx, r)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.stream).poll_flush(cx);
        self.watch(cx, r)
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

    fn counter(max: usize, per_source: usize) -> ConnectionCounter {
        let slots = Slots {
            max,
            per_source,
            limit_loopback: true,
        };
        ConnectionCounter::new(slots, crate::metrics::Metrics::new())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
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
