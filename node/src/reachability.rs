//! What went through this node on clients' behalf: the last punch and relay calls,
//! as rendezvous node or as target, and the path each took as far as this node can
//! tell (`getreachability`, the dashboard's reachability panel).
//!
//! The rendezvous node learns that a punch failed when the same client then asks to
//! relay to the same peer; the target learns that it worked when a request comes
//! from the client's address while the punch is recent. Neither sees the other's
//! side, so a punch that neither saw end is `unknown` once it is old.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cirrus_proto::api::{Method, ReachEvent, ReachKind, ReachPath, ReachRole, Transport};

/// Events kept; the oldest goes when a new one comes.
pub const KEEP: usize = 64;
/// How long a punch stays pending: the punch itself runs 5 s, a client falls back
/// to the relay after 4.
const PENDING_FOR: Duration = Duration::from_secs(10);

struct Entry {
    event: ReachEvent,
    since: Instant,
    /// The client's IP, to match later requests against.
    client: Option<IpAddr>,
}

#[derive(Default)]
pub struct Reachability {
    entries: Mutex<VecDeque<Entry>>,
    /// Pending punches, so that the check on every request is one atomic read
    /// when there are none.
    pending: AtomicUsize,
}

impl Reachability {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, entry: Entry) {
        let mut e = self.lock();
        Self::expire(&mut e, &self.pending);
        if e.len() >= KEEP
            && let Some(old) = e.pop_back()
            && old.event.path == ReachPath::Pending
        {
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
        if entry.event.path == ReachPath::Pending {
            self.pending.fetch_add(1, Ordering::Relaxed);
        }
        e.push_front(entry);
    }

    /// Pending punches that are too old become `unknown`.
    fn expire(e: &mut VecDeque<Entry>, pending: &AtomicUsize) {
        for x in e.iter_mut() {
            if x.event.path == ReachPath::Pending && x.since.elapsed() > PENDING_FOR {
                x.event.path = ReachPath::Unknown;
                pending.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// A punch toward `endpoint`: asked of us as rendezvous (to reach `peer`) or as
    /// target (by the rendezvous node `peer`).
    pub fn punch(&self, role: ReachRole, peer: String, endpoint: SocketAddr, transport: Transport) {
        self.push(Entry {
            event: ReachEvent {
                at: crate::clock::unix_millis(),
                kind: ReachKind::Punch,
                role,
                peer_id: peer,
                client: Some(endpoint.to_string()),
                transport: Some(transport),
                method: None,
                path: ReachPath::Pending,
            },
            since: Instant::now(),
            client: Some(endpoint.ip()),
        });
    }

    /// A relay of `request`: asked of us by a client at `client` to reach `peer`
    /// (rendezvous), or by the rendezvous node `peer` (target; the client is not
    /// named). The client's pending punches toward that peer went nowhere.
    pub fn relay(&self, role: ReachRole, peer: String, client: Option<IpAddr>, request: &[u8]) {
        if role == ReachRole::Rendezvous && self.pending.load(Ordering::Relaxed) > 0 {
            let mut e = self.lock();
            for x in e.iter_mut() {
                if x.event.path == ReachPath::Pending
                    && x.event.role == ReachRole::Rendezvous
                    && x.event.peer_id == peer
                    && x.client == client
                {
                    x.event.path = ReachPath::Relay;
                    self.pending.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        self.push(Entry {
            event: ReachEvent {
                at: crate::clock::unix_millis(),
                kind: ReachKind::Relay,
                role,
                peer_id: peer,
                client: client.map(|ip| ip.to_string()),
                transport: None,
                method: Some(method_of(request).to_string()),
                path: ReachPath::Relay,
            },
            since: Instant::now(),
            client,
        });
    }

    /// A client request arrived from `ip`: a punch toward it that we made as
    /// target worked.
    pub fn client_seen(&self, ip: IpAddr) {
        if self.pending.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut e = self.lock();
        Self::expire(&mut e, &self.pending);
        for x in e.iter_mut() {
            if x.event.path == ReachPath::Pending
                && x.event.role == ReachRole::Target
                && x.client == Some(ip)
            {
                x.event.path = ReachPath::Direct;
                self.pending.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Newest first.
    pub fn events(&self) -> Vec<ReachEvent> {
        let mut e = self.lock();
        Self::expire(&mut e, &self.pending);
        e.iter().map(|x| x.event.clone()).collect()
    }
}

/// The method of a single request, as the API names it: never the sender's text.
fn method_of(request: &[u8]) -> &'static str {
    #[derive(serde::Deserialize)]
    struct Named<'a> {
        #[serde(borrow)]
        method: std::borrow::Cow<'a, str>,
    }
    serde_json::from_slice::<Named>(request)
        .ok()
        .and_then(|r| Method::from_name(&r.method))
        .map_or("unknown", Method::name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_relay_after_a_punch_marks_it_relayed_and_a_request_marks_it_direct() {
        let r = Reachability::default();
        let ep: SocketAddr = "198.51.100.7:4000".parse().unwrap();
        r.punch(ReachRole::Rendezvous, "target".into(), ep, Transport::Udp);
        r.punch(ReachRole::Target, "rv".into(), ep, Transport::Tcp);
        // Another client's relay changes nothing of ours.
        r.relay(
            ReachRole::Rendezvous,
            "target".into(),
            Some(ip("198.51.100.8")),
            br#"{"jsonrpc":"2.0","id":1,"method":"getdbhash"}"#,
        );
        assert!(
            r.events()
                .iter()
                .filter(|e| e.kind == ReachKind::Punch)
                .all(|e| e.path == ReachPath::Pending)
        );
        r.relay(
            ReachRole::Rendezvous,
            "target".into(),
            Some(ep.ip()),
            b"<b>not json</b>",
        );
        r.client_seen(ep.ip());
        let ev = r.events();
        assert_eq!(ev.len(), 4);
        let methods: Vec<_> = ev.iter().filter_map(|e| e.method.as_deref()).collect();
        assert_eq!(
            methods,
            ["unknown", "getdbhash"],
            "newest first; never the sender's text"
        );
        let punch = |role| {
            ev.iter()
                .find(|e| e.kind == ReachKind::Punch && e.role == role)
                .unwrap()
                .path
        };
        assert_eq!(punch(ReachRole::Rendezvous), ReachPath::Relay);
        assert_eq!(punch(ReachRole::Target), ReachPath::Direct);
        assert_eq!(r.pending.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_log_is_bounded_and_keeps_the_count_of_pending_right() {
        let r = Reachability::default();
        let ep: SocketAddr = "198.51.100.7:4000".parse().unwrap();
        for _ in 0..KEEP * 3 {
            r.punch(ReachRole::Target, "rv".into(), ep, Transport::Udp);
        }
        assert_eq!(r.events().len(), KEEP);
        assert_eq!(r.pending.load(Ordering::Relaxed), KEEP);
        r.client_seen(ep.ip());
        assert_eq!(r.pending.load(Ordering::Relaxed), 0);
    }
}
