//! The STUN server on the STUN port, UDP and TCP. It answers any Binding request
//! (stock clients included), never with more than three times the request's bytes
//! and at most `stun-rate-limit` times a second per source; a request that proves a
//! peer id is also remembered in [`StunState`]. Anything that is not a Binding
//! request gets no answer; a TCP stream that is not STUN is closed.
//!
//! TCP slots are bounded, so a stranger could try to hold them all with connections
//! that send nothing, or send slowly. Four rules keep them free for honest
//! clients: a connection that delivers no whole message for [`TCP_IDLE`] is closed,
//! a message once begun must be whole within [`TCP_MESSAGE`], one address (an IPv6
//! /64, which one subscriber holds whole, as the rate limits count it) holds at
//! most [`MAX_TCP_PER_IP`] (its next connection takes the slot of its own quietest
//! one), and when every slot is taken a newcomer takes the slot of the quietest
//! connection of the address holding the most ([`IdleTable`]). An honest peer needs
//! one connection, so a flood from a few addresses pushes out its own first.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cirrus_proto::stun;
use libp2p::PeerId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{SOFTWARE, StunState, Transport};
use crate::metrics::Metrics;
use crate::rate::{RateLimiter, Rates, Source};
use tokio_util::task::TaskTracker;

/// TCP connections served at once; when all are taken, a newcomer evicts the
/// connection quiet longest.
const MAX_TCP: usize = 256;
/// TCP connections one address holds at once. Each peer node keeps one; this leaves
/// room for a few dozen nodes behind one NAT.
const MAX_TCP_PER_IP: usize = 32;
/// A TCP connection that delivers no whole message for this long is closed. Three
/// of our clients' keepalive intervals at the default 20 s: a live peer sends well
/// within it, and one that has stopped reconnects when it asks again.
const TCP_IDLE: Duration = Duration::from_secs(60);
/// A message whose first byte has arrived must be whole this soon, and an answer
/// must be taken this soon. At most 2048 bytes: a live link needs far less, even
/// with a few TCP retransmissions; this stops a sender that trickles bytes (or a
/// reader that never reads) from holding a slot.
const TCP_MESSAGE: Duration = Duration::from_secs(10);

/// What the server shares between its UDP and TCP sides.
pub struct Server {
    pub state: Arc<StunState>,
    /// Answers per second per source: a source that asks faster (or a flood of
    /// spoofed requests in one victim's name) gets silence.
    pub per_source: RateLimiter,
    pub metrics: Metrics,
}

impl Server {
    pub fn new(state: Arc<StunState>, rate: f64, limit_loopback: bool, metrics: Metrics) -> Self {
        Server {
            state,
            per_source: RateLimiter::new(Rates::per_second(rate, rate * 2.0, limit_loopback)),
            metrics,
        }
    }

    /// What to send back for one message (counted: answered, limited, or ignored
    /// when it is not a Binding request).
    fn answer(&self, bytes: &[u8], from: SocketAddr, t: Transport) -> Option<Vec<u8>> {
        let count = |result| {
            self.metrics
                .stun_bindings
                .get_or_create(&crate::metrics::ByTransportResult {
                    transport: t.as_str(),
                    result,
                })
                .inc();
        };
        let a = stun::handle_binding(bytes, from, SOFTWARE);
        if a.reply.is_none() {
            count("ignored");
            return None;
        }
        if !self.per_source.allow(from.ip(), 1) {
            count("limited");
            return None;
        }
        if let Some(p) = a.peer
            && let Ok(peer) = PeerId::from_bytes(&p.peer_id)
        {
            self.state.saw(peer, t, p.observed);
        }
        count("answered");
        a.reply
    }
}

pub async fn serve_udp(
    sock: UdpSocket,
    server: Arc<Server>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; stun::MAX_MESSAGE + 1];
    loop {
        let (n, from) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // ICMP errors from earlier sends surface here on some systems; not fatal.
                Err(e) => { tracing::debug!(error = %e, "STUN UDP receive error"); continue; }
            },
        };
        if n > stun::MAX_MESSAGE {
            continue;
        }
        let from = crate::sockets::canonical(from);
        if let Some(reply) = server.answer(&buf[..n], from, Transport::Udp) {
            let _ = sock.send_to(&reply, from).await;
        }
    }
}

/// Open TCP connections, each with its address and the time it last delivered a
/// whole message (or was accepted), as a counter rather than a clock so the order is
/// exact. At most a few hundred entries, so plain scans do.
struct IdleTable<K, T> {
    clock: u64,
    /// id -> (tick last heard, key, value)
    conns: HashMap<u64, (u64, K, T)>,
}

impl<K, T> Default for IdleTable<K, T> {
    fn default() -> Self {
        IdleTable {
            clock: 0,
            conns: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone, T> IdleTable<K, T> {
    /// A new connection from `key`, heard now. Returns its id.
    fn open(&mut self, key: K, value: T) -> u64 {
        self.clock += 1;
        self.conns.insert(self.clock, (self.clock, key, value));
        self.clock
    }

    /// Connection `id` delivered a whole message.
    fn heard(&mut self, id: u64) {
        self.clock += 1;
        if let Some(e) = self.conns.get_mut(&id) {
            e.0 = self.clock;
        }
    }

    fn close(&mut self, id: u64) {
        self.conns.remove(&id);
    }

    fn count(&self, key: &K) -> usize {
        self.conns.values().filter(|(_, k, _)| k == key).count()
    }

    /// Removes the connection of `key` heard from longest ago and returns its value.
    fn evict_from(&mut self, key: &K) -> Option<T> {
        let (&id, _) = self
            .conns
            .iter()
            .filter(|(_, (_, k, _))| k == key)
            .min_by_key(|(_, (tick, _, _))| *tick)?;
        self.conns.remove(&id).map(|(_, _, v)| v)
    }

    /// Removes the quietest connection of the key holding the most connections (of
    /// those, the one whose quietest is quietest) and returns its value.
    fn evict_crowded(&mut self) -> Option<T> {
        let mut per_key: HashMap<&K, (usize, u64)> = HashMap::new();
        for (tick, k, _) in self.conns.values() {
            let e = per_key.entry(k).or_insert((0, u64::MAX));
            e.0 += 1;
            e.1 = e.1.min(*tick);
        }
        let (key, _) = per_key
            .into_iter()
            .max_by_key(|(_, (n, oldest))| (*n, std::cmp::Reverse(*oldest)))?;
        let key = key.clone();
        self.evict_from(&key)
    }
}

type Table = Mutex<IdleTable<Source, (CancellationToken, SocketAddr)>>;

pub async fn serve_tcp(
    listener: TcpListener,
    server: Arc<Server>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) -> std::io::Result<()> {
    // The table picks whom to close; the semaphore makes the newcomer wait until
    // that one has really closed, so no more than MAX_TCP are ever served.
    let slots = Arc::new(Semaphore::new(MAX_TCP));
    let table: Arc<Table> = Arc::default();
    loop {
        let (stream, from) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => { tracing::debug!(error = %e, "STUN TCP accept error"); continue; }
            },
        };
        let from = crate::sockets::canonical(from);
        let source = Source::of(from.ip());
        let victim = {
            let mut t = table.lock().expect("stun tcp table lock");
            if t.count(&source) >= MAX_TCP_PER_IP {
                t.evict_from(&source)
            } else if slots.available_permits() == 0 {
                t.evict_crowded()
            } else {
                None
            }
        };
        if let Some((conn, addr)) = victim {
            tracing::debug!(%addr, newcomer = %from, "STUN TCP slots full; closing a quiet connection");
            conn.cancel();
        }
        // Only this loop takes permits, so after an eviction the wait ends when the
        // evicted connection has closed.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            p = slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
        };
        let conn = shutdown.child_token();
        let id = table
            .lock()
            .expect("stun tcp table lock")
            .open(source, (conn.clone(), from));
        let (server, table) = (server.clone(), table.clone());
        tasks.spawn(async move {
            tokio::select! {
                _ = conn.cancelled() => {}
                _ = serve_stream(stream, from, &server, &table, id) => {}
            }
            table.lock().expect("stun tcp table lock").close(id);
            drop(permit);
        });
    }
}

async fn serve_stream(
    mut stream: TcpStream,
    from: SocketAddr,
    server: &Server,
    table: &Table,
    id: u64,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let mut deadline = Instant::now() + TCP_IDLE;
    loop {
        let len = match stun::frame_len(&buf) {
            Ok(Some(len)) if buf.len() >= len => len,
            Ok(_) => {
                let mut chunk = [0u8; 1024];
                match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => {
                        if buf.is_empty() {
                            deadline = Instant::now() + TCP_MESSAGE;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        continue;
                    }
                    _ => return, // closed, error, idle or too slow
                }
            }
            Err(_) => return, // not STUN: close
        };
        let frame: Vec<u8> = buf.drain(..len).collect();
        table.lock().expect("stun tcp table lock").heard(id);
        deadline = Instant::now()
            + if buf.is_empty() {
                TCP_IDLE
            } else {
                TCP_MESSAGE
            };
        if let Some(reply) = server.answer(&frame, from, Transport::Tcp) {
            match tokio::time::timeout(TCP_MESSAGE, stream.write_all(&reply)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{IdleTable, Source};

    #[test]
    fn evicts_the_connection_heard_from_longest_ago() {
        let mut t = IdleTable::default();
        let a = t.open(1, "a");
        t.open(2, "b");
        let c = t.open(3, "c");
        t.heard(a);
        assert_eq!(t.evict_crowded(), Some("b"));
        t.heard(c);
        assert_eq!(t.evict_crowded(), Some("a"));
        t.close(c);
        assert_eq!(t.evict_crowded(), None);
    }

    #[test]
    fn a_closed_or_evicted_connection_is_not_heard_again() {
        let mut t = IdleTable::default();
        let a = t.open(1, 1);
        let b = t.open(2, 2);
        t.close(a);
        t.heard(a); // its task may still finish a message after eviction
        assert_eq!(t.evict_crowded(), Some(2));
        t.heard(b);
        assert_eq!(t.evict_crowded(), None);
    }

    /// Addresses of one IPv6 /64 share one address's share: rotating through a
    /// subscriber's prefix buys no more slots.
    #[test]
    fn one_ipv6_64_is_one_address() {
        let mut t = IdleTable::default();
        let ip = |s: &str| Source::of(s.parse().unwrap());
        for i in 0..5 {
            t.open(ip(&format!("2001:db8:1:2::{i:x}")), i);
        }
        t.open(ip("2001:db8:1:3::1"), 9);
        assert_eq!(t.count(&ip("2001:db8:1:2:ffff::1")), 5);
        assert_eq!(t.evict_crowded(), Some(0));
        // IPv4 addresses, and their mapped form, stay one each.
        t.open(ip("192.0.2.1"), 10);
        assert_eq!(t.count(&ip("::ffff:192.0.2.1")), 1);
    }

    #[test]
    fn the_address_holding_most_loses_first_and_only_its_own() {
        let mut t = IdleTable::default();
        let honest = t.open("honest", "h"); // quietest of all
        t.open("flood", "f1");
        t.open("flood", "f2");
        t.open("other", "o1");
        assert_eq!(t.count(&"flood"), 2);
        assert_eq!(t.evict_crowded(), Some("f1"));
        // Now every address holds one: the quietest goes.
        assert_eq!(t.evict_crowded(), Some("h"));
        t.close(honest);
        assert_eq!(t.evict_from(&"other"), Some("o1"));
        assert_eq!(t.evict_from(&"other"), None);
        assert_eq!(t.count(&"flood"), 1);
    }
}
