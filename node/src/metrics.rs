//! The node's Prometheus metrics: one registry, built at start, whose handles the
//! modules that count hold (cheap clones of atomics). `GET /metrics` encodes it
//! ([`Metrics::encode`]), after refreshing the gauges that are read rather than
//! counted (records, peers, mappings, NAT type).
//!
//! Names start with `cirrus_`; libp2p's own metrics (swarm, gossipsub, identify,
//! ping, bandwidth) are registered under `cirrus_libp2p_`. Labels have few values
//! and never name a peer or an address. docs/metrics.md lists every metric.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Request {
    pub transport: &'static str,
    pub method: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByTransport {
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByResult {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByDirection {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByTransportResult {
    pub transport: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByListener {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByNat {
    pub nat: &'static str,
}

/// Durations from 100 µs to about 26 s, doubling.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// Every metric the node keeps. Fields are cheap handles; clone what a module needs.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<std::sync::RwLock<Registry>>,
    // The database and the peers, read at scrape time.
    pub records: Gauge,
    pub store_file: Gauge,
    pub disk_free: Gauge,
    pub ratings_count: Gauge,
    pub ratings_sum: Gauge,
    pub peers: Gauge,
    pub stun_mappings: Family<ByTransport, Gauge>,
    pub port_mapped: Family<ByTransport, Gauge>,
    pub nat: Family<ByNat, Gauge>,
    // The API.
    pub api_requests: Family<Request, Counter>,
    pub api_seconds: Family<ByTransport, Histogram, fn() -> Histogram>,
    pub rate_limited: Family<ByTransport, Counter>,
    pub evictions: Family<ByListener, Counter>,
    pub udp_datagrams: Family<ByResult, Counter>,
    pub udp_unvalidated_bytes: Counter,
    pub guess_probes: Counter,
    pub guess_sockets: Counter,
    pub guess_sockets_open: Gauge,
    // Records from peers.
    pub gossip_records: Family<ByResult, Counter>,
    pub gossip_batches: Family<ByDirection, Counter>,
    pub sync_rounds: Counter,
    pub sync_walks: Counter,
    pub sync_records: Counter,
    pub syncs: Family<ByResult, Counter>,
    pub sync_long_sketches: Family<ByResult, Counter>,
    // The store.
    pub commit_seconds: Histogram,
    pub commit_records: Histogram,
    // STUN and reachability.
    pub stun_bindings: Family<ByTransportResult, Counter>,
    pub punches: Family<ByTransportResult, Counter>,
    pub relays: Family<ByResult, Counter>,
    pub port_mappings: Family<ByResult, Counter>,
    // What peers say.
    pub peer_exchange: Family<ByResult, Counter>,
    pub known_peers: Gauge,
    pub peers_let_go: Counter,
    pub announcements: Family<ByResult, Counter>,
    pub verified: Family<ByOrigin, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByOrigin {
    pub origin: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut root = Registry::with_prefix("cirrus");
        let m = Metrics {
            registry: Arc::default(),
            records: Gauge::default(),
            store_file: Gauge::default(),
            disk_free: Gauge::default(),
            ratings_count: Gauge::default(),
            ratings_sum: Gauge::default(),
            peers: Gauge::default(),
            stun_mappings: Family::default(),
            port_mapped: Family::default(),
            nat: Family::default(),
            api_requests: Family::default(),
            api_seconds: Family::new_with_constructor(seconds),
            rate_limited: Family::default(),
            evictions: Family::default(),
            udp_datagrams: Family::default(),
            udp_unvalidated_bytes: Counter::default(),
            guess_probes: Counter::default(),
            guess_sockets: Counter::default(),
            guess_sockets_open: Gauge::default(),
            gossip_records: Family::default(),
            gossip_batches: Family::default(),
            sync_rounds: Counter::default(),
            sync_walks: Counter::default(),
            sync_records: Counter::default(),
            syncs: Family::default(),
            sync_long_sketches: Family::default(),
            commit_seconds: seconds(),
            commit_records: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            stun_bindings: Family::default(),
            punches: Family::default(),
            relays: Family::default(),
            port_mappings: Family::default(),
            peer_exchange: Family::default(),
            known_peers: Gauge::default(),
            peers_let_go: Counter::default(),
            announcements: Family::default(),
            verified: Family::default(),
        };
        let r = &mut root;
        r.register(
            "records",
            "Slots held, tombstones included",
            m.records.clone(),
        );
        r.register_with_unit(
            "store_file",
            "Size of the database file, free pages included (cirrus compact returns them)",
            Unit::Bytes,
            m.store_file.clone(),
        );
        r.register_with_unit(
            "store_disk_free",
            "Bytes free for the node on the file system holding the database (writes stop under min-free-disk)",
            Unit::Bytes,
            m.disk_free.clone(),
        );
        r.register("ratings", "Live ratings", m.ratings_count.clone());
        r.register(
            "ratings_score",
            "Sum of the scores of all live ratings (getdbhash.ratings.sum)",
            m.ratings_sum.clone(),
        );
        r.register("peers", "Connected peers", m.peers.clone());
        r.register(
            "stun_mappings",
            "STUN client mappings held, by transport",
            m.stun_mappings.clone(),
        );
        r.register(
            "nat",
            "This node's NAT behaviour as its STUN clients found it: 1 for the current one",
            m.nat.clone(),
        );
        r.register(
            "api_requests",
            "JSON-RPC requests answered, by transport, method and outcome (ok or the error)",
            m.api_requests.clone(),
        );
        r.register_with_unit(
            "api_request_duration",
            "Time to answer one API message (a request or a batch), by transport",
            Unit::Seconds,
            m.api_seconds.clone(),
        );
        r.register(
            "rate_limited",
            "API messages refused because their source was over its rate, by transport",
            m.rate_limited.clone(),
        );
        r.register(
            "connection_evictions",
            "Connections closed to make room for a newcomer when every slot was taken",
            m.evictions.clone(),
        );
        r.register(
            "udp_datagrams",
            "Datagrams received on the UDP API ports, each counted once its answer (if any) is sent: answered, cookie, silent, dropped, stun, stun_silent, stun_response",
            m.udp_datagrams.clone(),
        );
        r.register_with_unit(
            "udp_unvalidated_sent",
            "Bytes the UDP API sent to sources that had not shown they receive there",
            Unit::Bytes,
            m.udp_unvalidated_bytes.clone(),
        );
        r.register(
            "punch_guess_probes",
            "Packets sent to random ports of a requester's address for port guessing",
            m.guess_probes.clone(),
        );
        r.register(
            "punch_guess_sockets",
            "Sockets opened toward a requester for port guessing",
            m.guess_sockets.clone(),
        );
        r.register(
            "punch_guess_sockets_open",
            "Sockets opened for port guessing that are open now",
            m.guess_sockets_open.clone(),
        );
        r.register(
            "gossip_records",
            "Records received by gossip, by result (applied, duplicate, stale, invalid)",
            m.gossip_records.clone(),
        );
        r.register(
            "gossip_batches",
            "Gossip batches of records, by direction (sent, received)",
            m.gossip_batches.clone(),
        );
        r.register(
            "sync_rounds",
            "Round trips of anti-entropy reconciliations this node started",
            m.sync_rounds.clone(),
        );
        r.register(
            "sync_walks",
            "Reconciliations this node started that fell back to the trie walk",
            m.sync_walks.clone(),
        );
        r.register(
            "sync_records",
            "Records received by anti-entropy",
            m.sync_records.clone(),
        );
        r.register(
            "syncs",
            "Anti-entropy reconciliations this node started, by result",
            m.syncs.clone(),
        );
        r.register(
            "sync_long_sketches",
            "Peers' sketches longer than the symbols kept in memory (each costs a scan of every record), served or refused",
            m.sync_long_sketches.clone(),
        );
        r.register_with_unit(
            "store_commit_duration",
            "Time of one database commit (group commit)",
            Unit::Seconds,
            m.commit_seconds.clone(),
        );
        r.register(
            "store_commit_records",
            "Records in one database commit",
            m.commit_records.clone(),
        );
        r.register(
            "stun_bindings",
            "STUN messages to this node's server, by transport and result (answered, limited, ignored)",
            m.stun_bindings.clone(),
        );
        r.register(
            "punches",
            "Punch requests, by transport and result",
            m.punches.clone(),
        );
        r.register("relays", "Relayed requests, by result", m.relays.clone());
        r.register(
            "port_mapped",
            "Ports the LAN gateway forwards to this node (port mapping), by transport",
            m.port_mapped.clone(),
        );
        r.register(
            "port_mappings",
            "Port-mapping rounds with the gateway, by result (mapped, failed, lost)",
            m.port_mappings.clone(),
        );
        r.register(
            "peer_exchange",
            "Peer-exchange entries taken and dropped (over the limit, or an address this node may not dial), and dials they led to",
            m.peer_exchange.clone(),
        );
        r.register(
            "known_peers",
            "Peers this node has heard of (bounded by max-known-peers)",
            m.known_peers.clone(),
        );
        r.register(
            "peers_let_go",
            "Peers disconnected because more than max-peers were connected",
            m.peers_let_go.clone(),
        );
        r.register(
            "announcements",
            "Announcements by gossip: taken, ignored (over a peer's budget, not newer, or not the sender's own) or invalid",
            m.announcements.clone(),
        );
        r.register(
            "records_verified",
            "Record signatures checked, by where the record came from (api, gossip, sync)",
            m.verified.clone(),
        );
        *m.registry.write().expect("fresh lock") = root;
        m
    }

    /// Register more metrics (libp2p's) under `cirrus_`.
    pub fn with_registry<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        f(&mut self.registry.write().unwrap_or_else(|e| e.into_inner()))
    }

    /// The registry in Prometheus text format 0.0.4, which `promtool check metrics`
    /// reads. (prometheus-client writes OpenMetrics, whose counters name their
    /// family without `_total`; the classic format wants the sample's name.)
    pub fn encode_text(&self) -> String {
        to_prometheus_text(&self.encode_openmetrics())
    }

    /// The registry in OpenMetrics text format.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &reg)
            .expect("encoding to a String does not fail");
        out
    }

    pub fn request(&self, transport: &'static str, method: &'static str, outcome: &'static str) {
        self.api_requests
            .get_or_create(&Request {
                transport,
                method,
                outcome,
            })
            .inc();
    }

    pub fn udp(&self, result: &'static str) {
        self.udp_datagrams.get_or_create(&ByResult { result }).inc();
    }

    pub fn gossip(&self, result: &'static str) {
        self.gossip_n(result, 1);
    }

    pub fn gossip_n(&self, result: &'static str, n: u64) {
        self.gossip_records
            .get_or_create(&ByResult { result })
            .inc_by(n);
    }

    /// One gossip batch `sent` or `received`.
    pub fn gossip_batch(&self, direction: &'static str) {
        self.gossip_batches
            .get_or_create(&ByDirection { direction })
            .inc();
    }

    pub fn punch(&self, transport: &'static str, result: &'static str) {
        self.punches
            .get_or_create(&ByTransportResult { transport, result })
            .inc();
    }

    pub fn port_mapping(&self, result: &'static str) {
        self.port_mappings.get_or_create(&ByResult { result }).inc();
    }

    pub fn verified(&self, origin: &'static str, n: u64) {
        self.verified.get_or_create(&ByOrigin { origin }).inc_by(n);
    }

    pub fn exchange(&self, result: &'static str, n: u64) {
        self.peer_exchange
            .get_or_create(&ByResult { result })
            .inc_by(n);
    }

    pub fn announcement(&self, result: &'static str) {
        self.announcements.get_or_create(&ByResult { result }).inc();
    }

    pub fn relay(&self, result: &'static str) {
        self.relays.get_or_create(&ByResult { result }).inc();
    }

    /// The `nat` gauge of `current` to 1, the others to 0.
    pub fn set_nat(&self, current: &'static str) {
        for nat in [
            "none",
            "endpoint-independent",
            "endpoint-dependent",
            "unknown",
        ] {
            self.nat
                .get_or_create(&ByNat { nat })
                .set(i64::from(nat == current));
        }
    }
}

/// OpenMetrics text to Prometheus text format 0.0.4: counters' `# HELP` and
/// `# TYPE` lines take the `_total` name of their samples, and `# UNIT` and `# EOF`
/// (which 0.0.4 does not have) go.
pub fn to_prometheus_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + 16 * counters.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|kw| line.strip_prefix(kw).map(|rest| (kw, rest)));
        if let Some((kw, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(kw);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(tail);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_total_name_in_the_classic_format() {
        let m = Metrics::new();
        m.request("http", "getdbhash", "ok");
        m.udp_unvalidated_bytes.inc_by(7);
        let text = m.encode_text();
        assert!(
            text.contains("# TYPE cirrus_api_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "cirrus_api_requests_total{transport=\"http\",method=\"getdbhash\",outcome=\"ok\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE cirrus_udp_unvalidated_sent_bytes_total counter\n"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        // Gauges and histograms are untouched.
        assert!(text.contains("# TYPE cirrus_records gauge\n"), "{text}");
    }
}
