//! A libp2p peer inside the test process that speaks the node's protocols (or
//! sends raw bytes on them), to play a misbehaving peer. It is driven in short
//! slices ([`Rogue::pump`]) between the blocking HTTP calls to the nodes, so the
//! tests need no async HTTP client.

use std::collections::HashSet;
use std::io;
use std::time::{Duration, Instant};

use cirrus_node::p2p::{BehaviourEvent, SYNC_PROTOCOL, build_swarm, records_topic};
use cirrus_proto::sync::Response;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::gossipsub::PublishError;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, noise, tcp, yamux};

use super::{POLL, TIMEOUT, TestNode, entry_for};

/// What a rogue does with its swarm's behaviour events; it keeps the responses the
/// test wants to look at.
pub type Chores<B> = dyn FnMut(&mut Swarm<B>, <B as NetworkBehaviour>::ToSwarm, &mut Vec<Vec<u8>>);

/// A libp2p peer inside the test process, driven in short slices between HTTP calls.
pub struct Rogue<B: NetworkBehaviour> {
    rt: tokio::runtime::Runtime,
    pub swarm: Swarm<B>,
    /// Answers what the node asks of us, and keeps what the test wants to look at.
    on_event: Box<Chores<B>>,
    /// Responses to our own requests, in arrival order.
    pub responses: Vec<Vec<u8>>,
    pub connected: HashSet<PeerId>,
    /// Peers whose last connection to us closed.
    pub closed: HashSet<PeerId>,
    /// Peers we were connected to at some point.
    pub met: HashSet<PeerId>,
}

impl<B: NetworkBehaviour> Rogue<B> {
    pub fn new(
        build: impl FnOnce() -> Swarm<B>,
        on_event: impl FnMut(&mut Swarm<B>, B::ToSwarm, &mut Vec<Vec<u8>>) + 'static,
    ) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // The transports register with the runtime they are built in.
        let swarm = rt.block_on(async { build() });
        Rogue {
            rt,
            swarm,
            on_event: Box::new(on_event),
            responses: Vec::new(),
            connected: HashSet::new(),
            closed: HashSet::new(),
            met: HashSet::new(),
        }
    }

    /// Run the swarm for `dur`.
    pub fn pump(&mut self, dur: Duration) {
        let Rogue {
            rt,
            swarm,
            on_event,
            responses,
            connected,
            closed,
            met,
        } = self;
        rt.block_on(async {
            let deadline = tokio::time::sleep(dur);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    ev = swarm.select_next_some() => match ev {
                        SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                            connected.insert(peer_id);
                            met.insert(peer_id);
                            closed.remove(&peer_id);
                        }
                        SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                            connected.remove(&peer_id);
                            closed.insert(peer_id);
                        }
                        SwarmEvent::Behaviour(ev) => on_event(swarm, ev, responses),
                        _ => {}
                    },
                    _ = &mut deadline => break,
                }
            }
        });
    }

    /// Like [`wait_until`], with the swarm running while it waits.
    pub fn wait_until<T>(
        &mut self,
        what: &str,
        mut check: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match check(self) {
                Ok(v) => return v,
                Err(state) if Instant::now() > deadline => {
                    panic!("timed out after {TIMEOUT:?} waiting until {what}; last state: {state}")
                }
                Err(_) => self.pump(POLL),
            }
        }
    }

    /// Dial a node's `/p2p/`-terminated multiaddr; returns its peer id once connected.
    pub fn connect(&mut self, addr: &str) -> PeerId {
        let addr: Multiaddr = addr.parse().unwrap();
        let Some(Protocol::P2p(peer)) = addr.iter().last() else {
            panic!("{addr} does not end in /p2p/<id>")
        };
        let swarm = &mut self.swarm;
        self.rt
            .block_on(async { swarm.dial(addr.clone()) })
            .unwrap();
        self.wait_until(&format!("connected to {addr}"), |r| {
            // (It may have been closed again already, by a node that did not like us.)
            if r.met.contains(&peer) {
                Ok(())
            } else {
                Err(format!("connected to {:?}", r.connected))
            }
        });
        peer
    }

    pub fn id(&self) -> String {
        self.swarm.local_peer_id().to_string()
    }
}

/// The node's own swarm, used against it: answer its requests with a refusal (a
/// well-formed answer, so it has no reason to drop us for that).
pub fn gossiper_chores(
    swarm: &mut Swarm<cirrus_node::p2p::Behaviour>,
    ev: BehaviourEvent,
    _: &mut Vec<Vec<u8>>,
) {
    use request_response::{Event, Message};
    match ev {
        BehaviourEvent::Sync(Event::Message {
            message: Message::Request { channel, .. },
            ..
        }) => {
            let refusal = Response::Refused("not serving".into());
            let _ = swarm.behaviour_mut().sync.send_response(channel, refusal);
        }
        BehaviourEvent::Peer(Event::Message {
            message: Message::Request { channel, .. },
            ..
        }) => {
            let refusal = cirrus_proto::peer::Response::Refused("not serving".into());
            let _ = swarm.behaviour_mut().peer.send_response(channel, refusal);
        }
        _ => {}
    }
}

impl Rogue<cirrus_node::p2p::Behaviour> {
    /// Publish one record (its canonical bytes) on the records topic, as a batch
    /// of one, retrying while the node's subscription has not reached us yet.
    pub fn publish(&mut self, record: Vec<u8>) {
        self.publish_batch(&[record])
    }

    /// Publish these records as one batch.
    pub fn publish_batch(&mut self, records: &[Vec<u8>]) {
        // A new serial each time, so that the same records make a new message.
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let batch = cirrus_proto::gossip::Batch::encode(serial, records.iter().map(Vec::as_slice));
        self.publish_on(records_topic(), batch)
    }

    pub fn publish_on(&mut self, topic: libp2p::gossipsub::IdentTopic, data: Vec<u8>) {
        self.wait_until("the topic accepts a publish", |r| {
            match r
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(topic.clone(), data.clone())
            {
                Ok(_) => Ok(()),
                Err(e @ PublishError::NoPeersSubscribedToTopic) => Err(e.to_string()),
                Err(e) => panic!("publish failed: {e}"),
            }
        });
    }
}

pub fn score_of(node: &TestNode, peer: &str) -> Result<f64, String> {
    let entry = entry_for(node, peer).ok_or("not listed")?;
    entry["score"]
        .as_f64()
        .ok_or_else(|| format!("no score: {entry}"))
}

/// A request-response codec that sends whatever bytes it is given.
#[derive(Clone, Default)]
pub struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::new();
        io.take(1 << 20).read_to_end(&mut buf).await?;
        Ok(buf)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::new();
        io.take(32 << 20).read_to_end(&mut buf).await?;
        Ok(buf)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&res).await
    }
}

pub type RawBehaviour = request_response::Behaviour<RawCodec>;

/// The node's own swarm (its behaviours and protocols), for a test peer.
pub fn rogue_swarm(key: Keypair) -> Swarm<cirrus_node::p2p::Behaviour> {
    let args = cirrus_node::config::RunArgs {
        data_dir: Some("/nonexistent".into()),
        bind: Some(vec!["127.0.0.1".parse().unwrap()]),
        ..Default::default()
    };
    let cfg = cirrus_node::config::Config::build(&args).unwrap();
    // Its connection tasks are detached: the rogue lives as long as its test.
    build_swarm(
        key,
        &cfg,
        tokio_util::task::TaskTracker::new(),
        &mut prometheus_client::registry::Registry::default(),
    )
    .unwrap()
}

pub fn cbor<T: serde::Serialize>(v: &T) -> Vec<u8> {
    cbor4ii::serde::to_vec(Vec::new(), v).unwrap()
}

pub fn raw_swarm() -> Swarm<RawBehaviour> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                RawCodec,
                [(SYNC_PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default(),
            )
        })
        .unwrap()
        // Stay connected while idle: only the node may end this connection.
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build()
}

/// Answer the node's requests (peer exchange, summaries) with a well-formed refusal;
/// keep the responses to our own requests.
pub fn raw_chores(
    swarm: &mut Swarm<RawBehaviour>,
    ev: request_response::Event<Vec<u8>, Vec<u8>>,
    responses: &mut Vec<Vec<u8>>,
) {
    use request_response::{Event, Message};
    match ev {
        Event::Message {
            message: Message::Request { channel, .. },
            ..
        } => {
            let refusal = cbor(&Response::Refused("not serving".into()));
            let _ = swarm.behaviour_mut().send_response(channel, refusal);
        }
        Event::Message {
            message: Message::Response { response, .. },
            ..
        } => responses.push(response),
        _ => {}
    }
}
