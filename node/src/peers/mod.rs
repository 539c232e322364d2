//! The node's dealings with its peers: it answers the swarm's [`Event`]s. Records
//! that come by gossip are checked and stored; announcements are checked and kept
//! ([`PeerTable`]); a new connection is greeted (hello) so both learn each other's
//! root and STUN server at once; the node's own announcement goes out when it
//! changes; peers' requests go to whoever answers them (anti-entropy, the relay
//! dispatcher, the punchers); and what the STUN clients and anti-entropy need to
//! know of peers coming and going is passed on.
//!
//! One task runs this ([`run`]); slow work (signature checks, store reads, punches)
//! runs in tasks of its tracker, so the loop never waits on it.

pub mod announce;
mod gossip;
pub mod table;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cirrus_proto::gossip::{MAX_BATCH_RECORDS, Outbox, Seen};
use cirrus_proto::peer;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock;
use crate::metrics::Metrics;
use crate::p2p::{Event, Network, Topic, ip_of};
use crate::store::writer::Writer;
use crate::store::{KnownPeer, Store};
use crate::stun::StunState;
use crate::stun::pairs::PeerEvent;
use crate::stun::punch::Punchers;
use crate::sync::schedule::SyncEvent;

pub use table::{PeerNotice, PeerTable};

/// Re-announce an unchanged root this often, so new peers learn it.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(30);
/// How often to check whether our root or STUN data changed since we announced.
const ANNOUNCE_CHECK: Duration = Duration::from_millis(250);
/// How often changes to known peers are saved (in one transaction).
const SAVE_EVERY: Duration = Duration::from_secs(10);
/// Peers' batches whose new records wait for the outbox: a few, each of at most
/// `MAX_BATCH_RECORDS`.
const FORWARD_QUEUE: usize = 4;

/// A JSON-RPC request relayed to this node by a peer; answer on `reply`.
pub struct InboundRelay {
    pub from: PeerId,
    pub request: Vec<u8>,
    pub reply: oneshot::Sender<Vec<u8>>,
}

/// Where the STUN side of the node is reached.
pub struct StunLink {
    pub state: Arc<StunState>,
    /// Our STUN server's port, which our announcements name.
    pub port: u16,
    pub events: mpsc::Sender<PeerEvent>,
    pub punchers: Arc<Punchers>,
}

/// What [`run`] works with.
pub struct Peers {
    pub network: Network,
    pub table: Arc<PeerTable>,
    pub store: Arc<Store>,
    pub writer: Writer,
    /// Signs our announcements.
    pub key: Keypair,
    pub stun: StunLink,
    pub sync: mpsc::UnboundedSender<SyncEvent>,
    pub relays: mpsc::Sender<InboundRelay>,
    /// The swarm's listen addresses, to offer at our external IP.
    pub listen: Vec<Multiaddr>,
    pub max_known_peers: usize,
    /// How long a record from a peer waits for company (`gossip-linger-ms`).
    pub linger: Duration,
    pub metrics: Metrics,
    pub tasks: TaskTracker,
    /// Punches asked of us as target, for `getreachability`.
    pub reach: Arc<crate::reachability::Reachability>,
    /// Announcements each peer passed us this second.
    pub announces: HashMap<PeerId, (tokio::time::Instant, u32)>,
}

/// What a hello task brings back.
struct Hello {
    peer: PeerId,
    sealed: Vec<u8>,
}

/// Answer the swarm's events until `stop`, then save what is pending.
pub async fn run(
    mut p: Peers,
    mut events: mpsc::UnboundedReceiver<Event>,
    stop: CancellationToken,
) {
    let (hellos_tx, mut hellos) = mpsc::channel::<Hello>(64);
    let mut client_writes = p.writer.client_writes();
    // Often enough that peers learn our root (and with it which session writes
    // they hold) soon after a write; an announcement goes out only on a change.
    let mut announce_tick = tokio::time::interval(ANNOUNCE_CHECK);
    let mut save_tick = tokio::time::interval(SAVE_EVERY);
    let mut state = Announcing::default();
    let mut dirty: HashMap<PeerId, KnownPeer> = HashMap::new();
    let (forward, mut to_send) = mpsc::channel::<Vec<Vec<u8>>>(FORWARD_QUEUE);
    let mut gossiping = gossip::Gossiping {
        seen: Seen::default(),
        forward,
    };
    let mut outbox = Outbox::new(p.linger, outbox_key(&p.key));
    let mut writes = Vec::with_capacity(MAX_BATCH_RECORDS);
    loop {
        let due = outbox.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = stop.cancelled() => break,
            ev = events.recv() => match ev {
                Some(ev) => p.on_event(ev, &hellos_tx, &mut dirty, &mut gossiping).await,
                None => break,
            },
            Some(h) = hellos.recv() => p.on_hello(h.peer, &h.sealed, &mut dirty).await,
            // Records to send to our mesh peers: those clients wrote here, and
            // those new to us from a peer (records from sync reached us because a
            // peer held them: nobody hands us those). A client's write does not
            // linger but is hurried, with whatever waits and the other writes of
            // its call: a client that reads it on another node waits one hop, not
            // a hop and a linger (BENCHMARKS.md 3.1, "A client's write at once").
            1.. = client_writes.recv_many(&mut writes, MAX_BATCH_RECORDS) => {
                let records = writes.drain(..).map(|a| {
                    gossiping.seen.first(&a.stored.id);
                    a.stored.record.encode()
                });
                let records: Vec<Vec<u8>> = records.collect();
                p.queue(&mut outbox, records).await;
                p.send_batch(outbox.hurry(Instant::now())).await;
            }
            Some(records) = to_send.recv() => p.queue(&mut outbox, records).await,
            _ = sleep_until_some(due) => {
                let batch = outbox.handle_timeout(Instant::now());
                p.send_batch(batch).await;
            }
            _ = announce_tick.tick() => p.announce(&mut state).await,
            _ = save_tick.tick() => p.save(&mut dirty),
        }
    }
    p.send_batch(outbox.flush()).await;
    p.save(&mut dirty);
}

/// The secret that makes our batches' serials: random, or if the system cannot
/// give randomness, derived from our key and the time (still distinct per node
/// and per start; only foreseeable by someone who holds our key).
fn outbox_key(key: &Keypair) -> [u8; 32] {
    let mut out = [0u8; 32];
    if getrandom::fill(&mut out).is_ok() {
        return out;
    }
    tracing::warn!("no randomness for the gossip serials; deriving them from the node key");
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    if let Ok(secret) = key.clone().try_into_ed25519() {
        h.update(secret.secret().as_ref());
    }
    h.update(clock::unix_millis().to_be_bytes());
    h.finalize().into()
}

/// Sleep until `at`, or forever.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What was last announced, to tell when to announce again.
#[derive(Default)]
struct Announcing {
    root: Option<cirrus_proto::merkle::Hash>,
    at: Option<tokio::time::Instant>,
    stun_version: Option<u64>,
}

impl Peers {
    async fn on_event(
        &mut self,
        ev: Event,
        hellos: &mpsc::Sender<Hello>,
        dirty: &mut HashMap<PeerId, KnownPeer>,
        gossiping: &mut gossip::Gossiping,
    ) {
        match ev {
            Event::PeerUp {
                peer,
                remote,
                dialer,
            } => {
                self.table.up(peer, remote.to_string());
                if let Some(remote) = ip_of(&remote) {
                    let _ = self.stun.events.try_send(PeerEvent::Up { peer, remote });
                }
                let _ = self.sync.send(SyncEvent::Up { peer, dialer });
                // Its root and STUN port now, rather than whenever gossip brings them.
                let (network, hellos) = (self.network.clone(), hellos.clone());
                self.tasks.spawn(async move {
                    match network.ask_peer(peer, peer::Request::Hello).await {
                        Ok(peer::Response::Hello(sealed)) => {
                            let sealed = sealed.into_vec();
                            let _ = hellos.send(Hello { peer, sealed }).await;
                        }
                        Ok(other) => tracing::debug!(%peer, ?other, "peer did not answer hello"),
                        Err(e) => tracing::debug!(%peer, error = %e, "hello failed"),
                    }
                });
            }
            Event::PeerDown { peer } => {
                self.table.down(&peer);
                let _ = self.stun.events.try_send(PeerEvent::Down { peer });
                let _ = self.sync.send(SyncEvent::Down { peer });
            }
            Event::Identified { peer, listen } => {
                let ips = listen.iter().filter_map(ip_of).collect();
                let _ = self.stun.events.try_send(PeerEvent::Listen { peer, ips });
                if !listen.is_empty() {
                    let stun = self.table.said(&peer).and_then(|s| s.stun);
                    dirty.insert(peer, known(peer, &listen, stun));
                }
            }
            Event::Gossip {
                topic: Topic::Records,
                id,
                source,
                data,
            } => {
                if let Some(verdict) = gossip::records(self, gossiping, id.clone(), source, data) {
                    self.network.validated(id, source, verdict).await;
                }
            }
            Event::Gossip {
                topic: Topic::Announce,
                id,
                source,
                data,
            } => {
                let acceptance = if self.announce_budget(source) {
                    gossip::announcement(self, source, &data, dirty)
                } else {
                    self.metrics.announcement("ignored");
                    libp2p::gossipsub::MessageAcceptance::Ignore
                };
                self.network.validated(id, source, acceptance).await;
            }
            Event::InboundSync {
                peer,
                request,
                channel,
            } => {
                let _ = self.sync.send(SyncEvent::Inbound {
                    peer,
                    request,
                    channel,
                });
            }
            Event::InboundPeer {
                peer,
                request,
                channel,
            } => self.on_peer_request(peer, request, channel).await,
        }
    }

    async fn on_peer_request(
        &mut self,
        peer: PeerId,
        request: peer::Request,
        channel: libp2p::request_response::ResponseChannel<peer::Response>,
    ) {
        let network = self.network.clone();
        match request {
            peer::Request::Hello => {
                let response = match self.announcement() {
                    Some(sealed) => peer::Response::Hello(sealed.into()),
                    None => peer::Response::Refused("the store cannot be read".into()),
                };
                network.respond_peer(channel, response).await;
            }
            // The swarm answers peer exchange itself.
            peer::Request::Peers => {
                let refused = peer::Response::Refused("not here".into());
                network.respond_peer(channel, refused).await;
            }
            peer::Request::Punch {
                endpoint,
                transport,
                guess,
            } => {
                tracing::info!(%peer, %endpoint, %transport, ?guess, "punching toward a client");
                self.reach.punch(
                    cirrus_proto::api::ReachRole::Target,
                    peer.to_string(),
                    endpoint,
                    transport,
                );
                let punchers = self.stun.punchers.clone();
                // Answer only once our first packets are out: the client starts
                // sending when it has the answer (see stun::punch).
                self.tasks.spawn(async move {
                    let response = match guess {
                        None => {
                            let sockets = punchers.punch(endpoint, transport).await;
                            tracing::debug!(%endpoint, sockets, "punch under way");
                            peer::Response::Punching
                        }
                        Some(guess) => match punchers.guess(endpoint, guess).await {
                            Ok(()) => peer::Response::Punching,
                            Err(why) => peer::Response::Refused(why.to_string()),
                        },
                    };
                    network.respond_peer(channel, response).await;
                });
            }
            peer::Request::Relay(bytes) => {
                let (tx, rx) = oneshot::channel();
                let relay = InboundRelay {
                    from: peer,
                    request: bytes.into_vec(),
                    reply: tx,
                };
                if self.relays.try_send(relay).is_err() {
                    self.metrics.relay("busy");
                    let busy = peer::Response::Refused("relay queue is full".into());
                    network.respond_peer(channel, busy).await;
                    return;
                }
                self.tasks.spawn(async move {
                    let response = match rx.await {
                        Ok(bytes) => peer::Response::Relay(bytes.into()),
                        Err(_) => peer::Response::Refused("the node is shutting down".into()),
                    };
                    network.respond_peer(channel, response).await;
                });
            }
        }
    }

    /// A peer's answer to our hello: its announcement, signed by itself.
    async fn on_hello(
        &mut self,
        peer: PeerId,
        sealed: &[u8],
        dirty: &mut HashMap<PeerId, KnownPeer>,
    ) {
        match announce::open_from(sealed, &peer) {
            Ok(a) => {
                gossip::take(self, a, dirty);
            }
            Err(e) => {
                self.network
                    .misbehaved(peer, format!("invalid hello: {e}"))
                    .await
            }
        }
    }

    /// Whether `source` may pass us one more announcement this second.
    fn announce_budget(&mut self, source: PeerId) -> bool {
        let now = tokio::time::Instant::now();
        // Only connected peers pass us gossip, so this stays small; a bound anyway.
        if self.announces.len() > 4 * self.max_known_peers {
            self.announces.clear();
        }
        let (since, n) = self.announces.entry(source).or_insert((now, 0));
        if now.duration_since(*since) >= Duration::from_secs(1) {
            (*since, *n) = (now, 0);
        }
        *n += 1;
        *n <= gossip::ANNOUNCES_PER_SOURCE
    }

    /// Records for our mesh peers, into the outbox; a batch they fill goes now.
    async fn queue(&self, outbox: &mut Outbox, records: impl IntoIterator<Item = Vec<u8>>) {
        let now = Instant::now();
        for record in records {
            let full = outbox.push(now, record);
            self.send_batch(full).await;
        }
    }

    async fn send_batch(&self, batch: Option<Vec<u8>>) {
        if let Some(batch) = batch {
            self.metrics.gossip_batch("sent");
            self.network.publish(Topic::Records, batch).await;
        }
    }

    /// Our announcement as of now: signed, as gossip carries it and hello answers.
    fn announcement(&self) -> Option<Vec<u8>> {
        // The position first: the root read after it holds at least those writes.
        let position = self.writer.next_seq();
        let db = self.store.db_hash().ok()?;
        let body = announce::Body {
            root: db.root,
            records: db.records,
            epoch: self.writer.epoch(),
            position,
            at: clock::unix_millis(),
            stun_port: self.stun.port,
            stun: self.stun.state.info(false),
        };
        Some(announce::seal(&self.key, body))
    }

    async fn announce(&mut self, last: &mut Announcing) {
        let Ok(db) = self.store.db_hash() else { return };
        let stun_version = self.stun.state.version();
        let fresh = last.at.is_some_and(|at| at.elapsed() < ANNOUNCE_EVERY);
        if last.root == Some(db.root) && last.stun_version == Some(stun_version) && fresh {
            return;
        }
        let Some(sealed) = self.announcement() else {
            return;
        };
        if last.stun_version != Some(stun_version) {
            self.offer_external_address().await;
        }
        self.network.publish(Topic::Announce, sealed).await;
        *last = Announcing {
            root: Some(db.root),
            at: Some(tokio::time::Instant::now()),
            stun_version: Some(stun_version),
        };
    }

    /// Behind NAT, peers reach our swarm (if at all) at the external address STUN
    /// found: offer it, with our swarm ports, as an external address candidate
    /// (identify then tells peers about it).
    async fn offer_external_address(&self) {
        let Some(ip) = self.stun.state.info(false).address else {
            return;
        };
        if self.listen.iter().any(|a| ip_of(a) == Some(ip)) {
            return; // not behind NAT: our listen address is what peers see
        }
        for a in &self.listen {
            let rewritten: Multiaddr = a
                .iter()
                .map(|p| match p {
                    Protocol::Ip4(_) | Protocol::Ip6(_) => match ip {
                        std::net::IpAddr::V4(v4) => Protocol::Ip4(v4),
                        std::net::IpAddr::V6(v6) => Protocol::Ip6(v6),
                    },
                    other => other,
                })
                .collect();
            self.network.external_address(rewritten).await;
        }
    }

    /// Save changes to known peers in one transaction, off the async threads.
    fn save(&self, dirty: &mut HashMap<PeerId, KnownPeer>) {
        if dirty.is_empty() {
            return;
        }
        let batch: Vec<KnownPeer> = dirty.drain().map(|(_, k)| k).collect();
        let (store, max) = (self.store.clone(), self.max_known_peers);
        self.tasks.spawn_blocking(move || {
            if let Err(e) = store.save_peers(&batch, max) {
                tracing::warn!(error = %e, "cannot save known peers");
            }
        });
    }
}

fn known(
    peer: PeerId,
    listen: &[Multiaddr],
    stun: Option<cirrus_proto::api::StunInfo>,
) -> KnownPeer {
    KnownPeer {
        peer: peer.to_bytes(),
        addrs: listen.iter().map(ToString::to_string).collect(),
        last_seen: clock::unix_secs(),
        stun,
    }
}

/// The known peers remembered in the store, to redial at start.
pub fn remembered(store: &Store) -> Vec<(PeerId, Vec<Multiaddr>)> {
    let peers = store.known_peers().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read known peers");
        Vec::new()
    });
    let mut out: Vec<(u64, PeerId, Vec<Multiaddr>)> = peers
        .into_iter()
        .filter_map(|p| {
            let peer = PeerId::from_bytes(&p.peer).ok()?;
            let addrs: Vec<Multiaddr> = p.addrs.iter().filter_map(|a| a.parse().ok()).collect();
            (!addrs.is_empty()).then_some((p.last_seen, peer, addrs))
        })
        .collect();
    // Most recently seen last, so the LRU keeps them longest.
    out.sort_by_key(|(seen, _, _)| *seen);
    out.into_iter().map(|(_, p, a)| (p, a)).collect()
}
