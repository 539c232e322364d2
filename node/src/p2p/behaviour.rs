//! The swarm's behaviour: stock libp2p behaviours composed with the derive macro, and
//! how the swarm is built (TCP and QUIC, noise, yamux).

use std::time::Duration;

use cirrus_proto::gossip::MAX_BATCH_BYTES;
use cirrus_proto::{peer, sync};
use libp2p::core::Transport as _;
use libp2p::core::upgrade::Version;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    StreamProtocol, Swarm, SwarmBuilder, connection_limits, identify, noise, ping, tcp, yamux,
};
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};

use super::P2pError;
use super::codec::CborCodec;
use super::transport::BoundTcp;
use tokio_util::task::TaskTracker;

/// Version 2: without the summary request, and with the other node-to-node
/// messages moved to [`PEER_PROTOCOL`].
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/cirrus/sync/3");
pub const PEER_PROTOCOL: StreamProtocol = StreamProtocol::new("/cirrus/peer/1");
/// A sync request carries at most one answer's records (`sync::RECORD_BUDGET`) and
/// the items around them; a response the same.
const SYNC_REQUEST_MAX: u64 = 8 << 20;
const SYNC_RESPONSE_MAX: u64 = 16 << 20;
/// A relayed request is one API message; its answer is one API answer.
const PEER_REQUEST_MAX: u64 = 2 << 20;
const PEER_RESPONSE_MAX: u64 = 8 << 20;
/// Streams at once per connection (inbound and outbound together).
const SYNC_STREAMS: usize = 4;
const PEER_STREAMS: usize = 16;
pub const IDENTIFY_PROTOCOL: &str = "/cirrus/id/1";
/// Version 3: a message is a batch of records (`cirrus_proto::gossip`) that each
/// node sends its own mesh peers, never forwarded by gossipsub; version 2 carried
/// one record a message, forwarded. Version 2 made messages anonymous.
pub const RECORDS_TOPIC: &str = "cirrus/records/3";
pub const ANNOUNCE_TOPIC: &str = "cirrus/announce/3";
/// Most message ids in one IHAVE or IWANT list. libp2p-gossipsub 0.50 sends lists of
/// up to 5000 ids by default, but refuses an RPC whose control part is over 16 KiB
/// (`max_control_message_size`) by failing the stream, and five failed streams
/// disable gossip on that connection for good. One of our ids (32 bytes) costs 34
/// bytes there, so 16 KiB holds at most 481; a node that sees more than about 230
/// records a second has more than that in its three gossip windows.
const GOSSIP_MAX_IDS: usize = 400;

pub type SyncCodec = CborCodec<sync::Request, sync::Response>;
pub type PeerCodec = CborCodec<peer::Request, peer::Response>;

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub limits: connection_limits::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub gossipsub: gossipsub::Behaviour,
    pub sync: request_response::Behaviour<SyncCodec>,
    pub peer: request_response::Behaviour<PeerCodec>,
}

pub fn agent() -> String {
    format!("cirrus/{}", env!("CARGO_PKG_VERSION"))
}

pub fn records_topic() -> IdentTopic {
    IdentTopic::new(RECORDS_TOPIC)
}

pub fn announce_topic() -> IdentTopic {
    IdentTopic::new(ANNOUNCE_TOPIC)
}

/// TCP (dialing from `--bind`, see [`BoundTcp`]) and QUIC, with noise and yamux;
/// libp2p's metrics (bandwidth, gossipsub) go into `registry`.
pub fn build_swarm(
    key: Keypair,
    cfg: &crate::config::Config,
    tasks: TaskTracker,
    registry: &mut Registry,
) -> Result<Swarm<Behaviour>, P2pError> {
    let binds = cfg.binds();
    let swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_quic()
        .with_other_transport(|key| {
            let noise = noise::Config::new(key).map_err(Box::new)?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                BoundTcp::new(tcp::Config::default().nodelay(true), &binds)
                    .upgrade(Version::V1Lazy)
                    .authenticate(noise)
                    .multiplex(yamux::Config::default()),
            )
        })
        .map_err(|e| P2pError::Build(e.to_string()))?
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key| behaviour(key, cfg, registry).map_err(Into::into))
        .map_err(|e| P2pError::Build(e.to_string()))?
        // Connection tasks go to `tasks`, so that stopping the node waits for them.
        .with_swarm_config(|_| {
            libp2p::swarm::Config::with_executor(move |task| {
                tasks.spawn(task);
            })
            .with_idle_connection_timeout(Duration::from_secs(300))
            // A request on a new stream goes out with its protocol's name instead
            // of a round trip after it (multistream-select's lazy dialer, on every
            // outbound stream: the last protocol proposed is assumed, so sync,
            // peer and relayed requests go at once and gossipsub's oldest version
            // is lazy). A relayed call is one round trip between the nodes, not
            // two. Against a peer without the protocol the stream fails only after
            // the request is sent, as an I/O error (docs/network.md).
            .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
        })
        .build();
    Ok(swarm)
}

fn behaviour(
    key: &Keypair,
    cfg: &crate::config::Config,
    registry: &mut Registry,
) -> Result<Behaviour, P2pError> {
    let limits = connection_limits::ConnectionLimits::default()
        // Room above max-peers for newcomers to ask whom we know before peers
        // over it are let go (p2p/exchange.rs): at twice, the late joiners of a
        // 50-node testnet were refused by the bootstrap node and waited 20 s.
        .with_max_established(Some(cfg.max_peers.saturating_mul(4)))
        .with_max_established_per_peer(Some(2))
        .with_max_pending_incoming(Some(64))
        .with_max_pending_outgoing(Some(cfg.max_pending_dials));
    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public()).with_agent_version(agent()),
    );
    // A few streams per connection: each may hold a request of up to the codec's
    // limit while it is served, and a peer may open two connections.
    let sync = request_response::Behaviour::with_codec(
        SyncCodec::new(SYNC_REQUEST_MAX, SYNC_RESPONSE_MAX),
        [(SYNC_PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(Duration::from_secs(60))
            .with_max_concurrent_streams(SYNC_STREAMS),
    );
    let peer = request_response::Behaviour::with_codec(
        PeerCodec::new(PEER_REQUEST_MAX, PEER_RESPONSE_MAX),
        [(PEER_PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(Duration::from_secs(30))
            .with_max_concurrent_streams(PEER_STREAMS),
    );
    Ok(Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        identify,
        ping: ping::Behaviour::new(ping::Config::new()),
        gossipsub: gossipsub(cfg.max_peers as usize, registry)?,
        sync,
        peer,
    })
}

fn gossipsub(max_peers: usize, registry: &mut Registry) -> Result<gossipsub::Behaviour, P2pError> {
    // Every connected peer is in the announcement mesh (connections go up to four
    // times max-peers), so what a node publishes there reaches all its peers.
    let everyone = 4 * max_peers.max(6);
    let config = gossipsub::ConfigBuilder::default()
        // No gossipsub author or signature: a record is signed by its author, an
        // announcement by its node (`announce`), and checking an envelope signature
        // on every copy of every record cost a third of a node's CPU. The
        // application decides what goes on: a node sends the records new to it, in
        // batches of its own, and reports every message as ignored (see `gossip`).
        .validation_mode(ValidationMode::Anonymous)
        .validate_messages()
        .message_id_fn(|m| gossipsub::MessageId::from(Sha256::digest(&m.data).to_vec()))
        .max_transmit_size(MAX_BATCH_BYTES + 4096)
        .heartbeat_interval(Duration::from_millis(700))
        .max_control_messages_sent(GOSSIP_MAX_IDS)
        // A node's batches go to its mesh peers only; announcements to all peers,
        // through the announcement mesh above.
        .flood_publish(false)
        .mesh_n_high_for_topic(everyone, announce_topic().hash())
        .mesh_n_for_topic(everyone, announce_topic().hash())
        .mesh_n_low_for_topic(everyone, announce_topic().hash())
        // No IHAVE gossip: each batch is one node's own, so every peer that heard
        // of it would ask for it (IWANT), a second copy of every record. What the
        // mesh misses, anti-entropy repairs. Nor IDONTWANT: nobody else sends the
        // same batch.
        .gossip_lazy(0)
        .gossip_factor(0.0)
        .idontwant_message_size_threshold(usize::MAX)
        .build()
        .map_err(|e| P2pError::Build(e.to_string()))?;
    let mut gs = gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, config)
        .map_err(|e| P2pError::Build(e.to_string()))?
        .with_metrics(
            registry.sub_registry_with_prefix("libp2p_gossipsub"),
            gossipsub::MetricsConfig::default(),
        );
    gs.with_peer_score(score_params(), gossipsub::PeerScoreThresholds::default())
        .map_err(|e| P2pError::Build(e.to_string()))?;
    Ok(gs)
}

/// Peer scoring: invalid messages (bad signatures, unparseable records) cost a lot and
/// decay slowly; three put a peer under the graylist threshold, four if it is in our
/// records mesh (time there earns up to +36). Being quiet costs nothing: a node with
/// nothing to write is not a bad peer. Many peers behind one IP is normal here (NAT,
/// local testnets), so IP colocation is not penalised.
fn score_params() -> gossipsub::PeerScoreParams {
    let topic = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_cap: 50.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.99,
        ..Default::default()
    };
    let mut params = gossipsub::PeerScoreParams {
        ip_colocation_factor_weight: 0.0,
        ..Default::default()
    };
    params.topics.insert(records_topic().hash(), topic.clone());
    // Every peer is in the announcement mesh, so time there says nothing of it.
    let announce = gossipsub::TopicScoreParams {
        time_in_mesh_weight: 0.0,
        ..topic
    };
    params.topics.insert(announce_topic().hash(), announce);
    params
}
