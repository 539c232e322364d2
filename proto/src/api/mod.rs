//! Parameters and results of the API methods (SPEC "JSON-RPC"). Field names are
//! camelCase on the wire; hashes, keys and signatures are lowercase hex.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::merkle::{Hash, Proof};
use crate::record::{Id, Kind, Record};

mod method;
pub mod openrpc;

pub use method::Method;

pub const LIST_DEFAULT_LIMIT: usize = 100;
pub const LIST_MAX_LIMIT: usize = 1000;

/// A record as the API returns it: the record's fields plus its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecordView {
    #[serde(flatten)]
    pub record: Record,
    #[serde(with = "crate::hexser")]
    #[schemars(with = "crate::hexser::Hex<32>")]
    pub id: Id,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PutStatus {
    /// The record now occupies its slot.
    Applied,
    /// The slot holds a record that wins the conflict rule; nothing changed.
    Stale,
    /// The slot already holds exactly this record.
    Duplicate,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PutParams {
    pub record: Record,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PutResult {
    #[serde(with = "crate::hexser")]
    #[schemars(with = "crate::hexser::Hex<32>")]
    pub id: Id,
    pub status: PutStatus,
    /// The session token after this write: pass it as `session` to any node
    /// (SPEC "Sessions", docs/sessions.md).
    pub session: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetParams {
    #[serde(with = "crate::hexser")]
    #[schemars(with = "crate::hexser::Hex<32>")]
    pub author: [u8; 32],
    pub key: String,
    #[serde(default = "default_kind")]
    pub kind: Kind,
    #[serde(default)]
    pub proof: bool,
}

fn default_kind() -> Kind {
    Kind::Doc
}

/// `get` result. `root` and `proof` are present when the request asked for a proof;
/// the proof is for the slot hash of `(author, kind, key)` against `root`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GetResult {
    pub record: Option<RecordView>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_hex")]
    #[schemars(with = "Option<crate::hexser::Hex<32>>")]
    pub root: Option<Hash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<Proof>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[serde(default, with = "opt_hex")]
    #[schemars(with = "Option<crate::hexser::Hex<32>>")]
    pub author: Option<[u8; 32]>,
    pub kind: Option<Kind>,
    pub prefix: Option<String>,
    /// Opaque cursor from a previous page's `next`.
    pub after: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ListResult {
    pub records: Vec<RecordView>,
    pub next: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetRatingParams {
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RatingResult {
    pub target: String,
    pub count: u64,
    pub sum: u64,
    /// `sum / count`, or null when nothing rates the target.
    pub average: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct RatingTotals {
    pub count: u64,
    pub sum: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DbHash {
    #[serde(with = "crate::hexser")]
    #[schemars(with = "crate::hexser::Hex<32>")]
    pub root: Hash,
    /// Slots held, tombstones included.
    pub records: u64,
    /// Live ratings.
    pub ratings: RatingTotals,
}

/// The ports the node actually listens on (after binding, so port 0 shows the port
/// the system picked). Services that are not running are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Ports {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p2p: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stun: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub peer_id: String,
    pub version: String,
    /// Seconds since the node started.
    pub uptime: u64,
    pub ports: Ports,
    /// Multiaddrs the swarm listens on.
    pub listen: Vec<String>,
    /// Connected peers.
    pub peers: usize,
    /// This node's STUN data (docs/stun.md).
    pub stun: StunInfo,
    pub db: DbHash,
}

/// One connected peer, as `getpeerinfo` reports it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerInfo {
    pub peer_id: String,
    /// Remote multiaddr of the connection.
    pub addr: String,
    pub direction: Direction,
    /// Unix seconds when the connection was established.
    pub connected_since: u64,
    /// Last ping round trip, in milliseconds, once one was measured.
    pub ping_ms: Option<f64>,
    /// The peer's agent string from identify, once received.
    pub agent: Option<String>,
    /// The peer's STUN data, once it announced any.
    pub stun: Option<StunInfo>,
    /// The last database root the peer announced.
    #[serde(default, with = "opt_hex")]
    #[schemars(with = "Option<crate::hexser::Hex<32>>")]
    pub db_root: Option<Hash>,
    /// The peer's gossipsub score as this node sees it (negative: misbehaving).
    pub score: Option<f64>,
}

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The peer dialed us.
    Inbound,
    Outbound,
}

/// The two transports that punching, STUN and the dynamic API ports come in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "udp" => Ok(Transport::Udp),
            "tcp" => Ok(Transport::Tcp),
            other => Err(format!("transport must be udp or tcp, not {other:?}")),
        }
    }
}

/// One STUN client socket's mapping, as SPEC's `stun` object lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mapping {
    /// External port the peer's server saw.
    pub port: u16,
    pub local_port: u16,
    /// The peer whose server saw it.
    pub via: String,
    /// Unix seconds of the last answer.
    pub last_seen: u64,
    /// External address the peer's server saw.
    pub address: std::net::IpAddr,
}

impl Mapping {
    pub fn endpoint(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.address, self.port)
    }
}

/// A peer that proved its id in a request to our STUN server, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Seen {
    pub peer_id: String,
    pub transport: Transport,
    pub observed: std::net::SocketAddr,
    pub last_seen: u64,
}

/// SPEC's `stun` object (plus, for the node's own, `seen`). The same type is
/// announced to peers, so what a peer may send is bounded by [`StunInfo::MAX_MAPPINGS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StunInfo {
    pub address: Option<std::net::IpAddr>,
    pub nat: crate::stun::nat::Nat,
    pub udp: Vec<Mapping>,
    pub tcp: Vec<Mapping>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<Seen>,
}

impl StunInfo {
    /// Most mappings per transport a node lists (one per connected peer; a peer that
    /// announces more is refused).
    pub const MAX_MAPPINGS: usize = 256;

    pub fn unknown() -> StunInfo {
        StunInfo {
            address: None,
            nat: crate::stun::nat::Nat::Unknown,
            udp: Vec::new(),
            tcp: Vec::new(),
            seen: Vec::new(),
        }
    }

    pub fn mappings(&self, t: Transport) -> &[Mapping] {
        match t {
            Transport::Udp => &self.udp,
            Transport::Tcp => &self.tcp,
        }
    }

    /// The external endpoints of one transport's mappings.
    pub fn endpoints(&self, t: Transport) -> Vec<std::net::SocketAddr> {
        self.mappings(t).iter().map(Mapping::endpoint).collect()
    }
}

/// `punch`: ask `peer_id` (through this node) to open its NAT toward `endpoint`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PunchParams {
    pub peer_id: String,
    /// The client's mapped endpoint, "ip:port", as a STUN server saw it.
    pub endpoint: std::net::SocketAddr,
    pub transport: Transport,
    /// Port guessing, for a pair where one NAT maps per destination (UDP only;
    /// docs/nat.md, "Port guessing"). Absent: a plain punch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guess: Option<Guess>,
}

/// The two halves of the birthday search (after Tailscale's NAT traversal): the
/// side whose NAT maps per destination opens many sockets toward the other's one
/// endpoint; the other side probes random ports of its address. With 256 sockets
/// open and 1,024 probes, one probe hits an open mapping about 98% of the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum Guess {
    /// The requester's NAT maps per destination and it has opened many sockets
    /// toward the target's mapping of its STUN socket on `localPort`: the target
    /// probes random ports of the requester's address from that socket.
    Probe { local_port: u16 },
    /// The target's NAT maps per destination: it opens many sockets toward
    /// `endpoint`, which serve the API, and the requester probes random ports of
    /// the target's address.
    Open,
}

impl Guess {
    /// Sockets the side that opens them opens.
    pub const SOCKETS: usize = 256;
    /// Probes the probing side sends, to random ports of 1024..=65535.
    pub const PROBES: usize = 1024;
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelayParams {
    pub peer_id: String,
    /// A JSON-RPC request object to run on that peer.
    pub request: serde_json::Value,
}

/// `addpeer`: dial a multiaddr (admin).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddPeerParams {
    /// A libp2p multiaddr, ending in `/p2p/<peer id>`.
    pub addr: String,
    /// The token from `<data-dir>/admin.token`.
    pub token: String,
}

/// The params of an admin method that takes nothing else (`shutdown`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminParams {
    /// The token from `<data-dir>/admin.token`.
    pub token: String,
}

/// A method that does what it was asked and has nothing more to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Done {
    /// Always true.
    pub ok: bool,
}

impl Done {
    pub const OK: Done = Done { ok: true };
}

/// What a WebSocket connection can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Topic {
    /// Every record this node applies, as a `record` notification (a [`RecordView`]).
    Records,
    /// Peers as they come and go, as a `peer` notification.
    Peers,
}

/// `subscribe` and `unsubscribe` (WebSocket only).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeParams {
    pub topics: Vec<Topic>,
}

/// The topics the connection is subscribed to afterwards.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Subscribed {
    pub topics: Vec<Topic>,
}

/// Which way a reachability event went through this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReachKind {
    Punch,
    Relay,
}

/// This node's part in a reachability event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReachRole {
    /// A client asked this node to reach one of its peers.
    Rendezvous,
    /// A peer asked this node, on a client's behalf, to punch or to answer.
    Target,
}

/// The path a client's traffic took, as far as this node can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReachPath {
    /// The client's packets reached the target directly (seen by the target).
    Direct,
    /// The client fell back to `relay` (seen by the rendezvous node), or this was a
    /// relayed request.
    Relay,
    /// The punch is still under way.
    Pending,
    /// The punch ended and this node saw neither.
    Unknown,
}

/// One `punch` or `relay` that went through this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReachEvent {
    /// Unix milliseconds.
    pub at: u64,
    pub kind: ReachKind,
    pub role: ReachRole,
    /// The target (for the rendezvous node) or the rendezvous peer (for the target).
    pub peer_id: String,
    /// The client's endpoint for a punch, its address for a relay; null when a
    /// relayed request does not say.
    pub client: Option<String>,
    /// The punch's transport; null for a relay.
    pub transport: Option<Transport>,
    /// A relayed request's method (`unknown` for a name the API does not have, a
    /// batch or garbage); null for a punch.
    pub method: Option<String>,
    pub path: ReachPath,
}

/// `getreachability`: the most recent punch and relay events, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Reachability {
    pub events: Vec<ReachEvent>,
}

mod opt_hex {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer, const N: usize>(
        v: &Option<[u8; N]>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<Option<[u8; N]>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => crate::hexser::decode_array(&s)
                .map(Some)
                .map_err(D::Error::custom),
        }
    }
}
