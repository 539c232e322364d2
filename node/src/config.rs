//! Node configuration: built once from flags, environment, an optional TOML file and
//! defaults (in that order of precedence), then passed down.
//!
//! Every setting has a flag (`--http-port`), an environment variable
//! (`CIRRUS_HTTP_PORT`) and a config-file key (`http-port`), and is written once, in
//! the [`settings!`] list below: the macro makes the flags-and-file struct
//! ([`RunArgs`], every field optional so that unset flags fall through to the file)
//! and the resolved [`Config`]. Unknown file keys are an error, so a typo never
//! silently falls back to a default.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::Multiaddr;
use serde::Deserialize as _;

/// `NAME: TYPE = DEFAULT, "ENV" [, clap attributes];` per setting, its doc comment
/// the help text.
macro_rules! settings {
    ($( $(#[doc = $doc:literal])+ $name:ident : $ty:ty = $default:expr, $env:literal $(, $extra:meta)*; )*) => {
        /// Flags of `cirrus run`, and the keys of its config file.
        #[derive(Debug, Clone, Default, clap::Args, serde::Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        pub struct RunArgs {
            /// TOML config file (keys as the long flags, e.g. `http-port = 38081`).
            #[arg(long, env = "CIRRUS_CONFIG")]
            #[serde(skip)]
            pub config: Option<PathBuf>,
            $(
                $(#[doc = $doc])+
                #[arg(long, env = $env $(, $extra)*)]
                pub $name: Option<$ty>,
            )*
        }

        /// The resolved settings.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Config {
            $( $(#[doc = $doc])+ pub $name: $ty, )*
        }

        impl RunArgs {
            /// Flags over `file`, over the defaults.
            fn over(self, file: RunArgs) -> Config {
                Config {
                    $( $name: self.$name.or(file.$name).unwrap_or_else(|| $default), )*
                }
            }
        }
    };
}

settings! {
    /// Directory holding the database, the node key and other state
    /// (default ~/.cirrus/node).
    data_dir: PathBuf = PathBuf::new(), "CIRRUS_DATA_DIR";
    /// Address every listener binds (repeatable; comma-separated in the environment).
    /// By default 0.0.0.0 and ::, IPv4 and IPv6 (:: is left out where the host has no
    /// IPv6). :: alone takes both families on one socket each.
    bind: Vec<IpAddr> = vec![IpAddr::from([0, 0, 0, 0]), IpAddr::from([0u16; 8])], "CIRRUS_BIND", value_delimiter = ',';
    /// Swarm port, TCP and UDP/QUIC (0 picks a free port).
    p2p_port: u16 = 38080, "CIRRUS_P2P_PORT";
    /// HTTP JSON-RPC port (0 picks a free port).
    http_port: u16 = 38081, "CIRRUS_HTTP_PORT";
    /// WebSocket JSON-RPC port (0 picks a free port).
    ws_port: u16 = 38082, "CIRRUS_WS_PORT";
    /// UDP JSON-RPC port (0 picks a free port).
    udp_port: u16 = 38083, "CIRRUS_UDP_PORT";
    /// STUN server port, UDP and TCP (0 picks a port free for both).
    stun_port: u16 = 38084, "CIRRUS_STUN_PORT";
    /// Seconds between STUN requests of each per-peer client socket (under Linux
    /// conntrack's 30 s timeout for one-way UDP flows, so mappings stay open).
    stun_keepalive_secs: u64 = 20, "CIRRUS_STUN_KEEPALIVE_SECS";
    /// Multiaddr of a node to join through, e.g. /ip4/127.0.0.11/tcp/38080
    /// (repeatable; comma-separated in the environment).
    bootstrap: Vec<Multiaddr> = Vec::new(), "CIRRUS_BOOTSTRAP", value_delimiter = ',';
    /// Do not dial the peers remembered in the data dir, at start or later; join
    /// only through --bootstrap (peers met in this run are still remembered).
    no_redial: bool = false, "CIRRUS_NO_REDIAL", num_args = 0..=1, default_missing_value = "true";
    /// Most peers to stay connected to: above it, peers are let go (those that
    /// dialed us, connected longest first, and only our own dials beyond 12; none in
    /// its first 20 s) until three quarters of it remain. At most four times this many connections. A public node that many
    /// nodes behind NAT use as their relay may want more.
    max_peers: u32 = 24, "CIRRUS_MAX_PEERS";
    /// Seconds between anti-entropy rounds with a peer whose root differs.
    sync_interval_secs: u64 = 10, "CIRRUS_SYNC_INTERVAL_SECS";
    /// Longest one anti-entropy reconciliation may take, in seconds.
    sync_timeout_secs: u64 = 300, "CIRRUS_SYNC_TIMEOUT_SECS";
    /// Database page cache, in MiB (read cache and write buffer together; redb
    /// alone would take 1 GiB).
    cache_size: u64 = 64, "CIRRUS_CACHE_SIZE";
    /// Free space, in MiB, below which the node refuses writes (reads go on).
    min_free_disk: u64 = 64, "CIRRUS_MIN_FREE_DISK";
    /// Largest accepted request body (HTTP) or message (WebSocket), in bytes.
    max_body_bytes: usize = 1 << 20, "CIRRUS_MAX_BODY_BYTES";
    /// Most requests in one JSON-RPC batch.
    max_batch: usize = 1000, "CIRRUS_MAX_BATCH";
    /// Bytes the answer to one message may take; requests past it get an error.
    max_answer_bytes: usize = 4 << 20, "CIRRUS_MAX_ANSWER_BYTES";
    /// Sustained API requests per second per source (an IPv4 address or an IPv6
    /// /64; every transport; a batch counts each request, a relay what it carries).
    rate_limit: f64 = 200.0, "CIRRUS_RATE_LIMIT";
    /// Requests a source may send in a burst before the rate applies.
    rate_burst: f64 = 1000.0, "CIRRUS_RATE_BURST";
    /// Sustained requests per second a peer may relay to this node.
    relay_rate_limit: f64 = 1000.0, "CIRRUS_RELAY_RATE_LIMIT";
    /// Requests per second from UDP sources that have not shown they receive at
    /// their address, all such sources together.
    udp_unvalidated_rate: f64 = 1000.0, "CIRRUS_UDP_UNVALIDATED_RATE";
    /// STUN answers per second per source.
    stun_rate_limit: f64 = 20.0, "CIRRUS_STUN_RATE_LIMIT";
    /// Punch packets per second this node sends toward one IP.
    punch_rate_limit: f64 = 20.0, "CIRRUS_PUNCH_RATE_LIMIT";
    /// Open HTTP and WebSocket connections, in total.
    max_connections: usize = 1024, "CIRRUS_MAX_CONNECTIONS";
    /// Open HTTP and WebSocket connections per source.
    max_connections_per_ip: usize = 64, "CIRRUS_MAX_CONNECTIONS_PER_IP";
    /// Apply the rate and connection limits to loopback sources too (exempt by
    /// default).
    limit_loopback: bool = false, "CIRRUS_LIMIT_LOOPBACK", num_args = 0..=1,
        default_missing_value = "true";
    /// Seconds an HTTP connection may take to send a request head, and may stay
    /// idle between requests.
    http_header_timeout_secs: u64 = 15, "CIRRUS_HTTP_HEADER_TIMEOUT_SECS";
    /// Seconds an HTTP request body may take to arrive.
    http_body_timeout_secs: u64 = 30, "CIRRUS_HTTP_BODY_TIMEOUT_SECS";
    /// Seconds a write to a client may make no progress before the connection
    /// closes (a client that does not read).
    write_timeout_secs: u64 = 10, "CIRRUS_WRITE_TIMEOUT_SECS";
    /// Requests running at once on one WebSocket connection.
    ws_max_in_flight: usize = 8, "CIRRUS_WS_MAX_IN_FLIGHT";
    /// Bytes of answers and notifications one WebSocket connection may have
    /// waiting to be sent.
    ws_queue_bytes: usize = 4 << 20, "CIRRUS_WS_QUEUE_BYTES";
    /// Origins whose web pages may use the HTTP API (`*`: any; comma-separated).
    cors_origins: Vec<String> = vec!["*".into()], "CIRRUS_CORS_ORIGINS", value_delimiter = ',';
    /// Peers remembered in the data dir (least recently seen forgotten first).
    max_known_peers: usize = 1000, "CIRRUS_MAX_KNOWN_PEERS";
    /// Milliseconds a record new to this node (from a peer) may wait for others
    /// to share its gossip batch; a client's write does not wait for it.
    gossip_linger_ms: u64 = cirrus_proto::gossip::LINGER.as_millis() as u64, "CIRRUS_GOSSIP_LINGER_MS";
    /// New peers dialed per peer-exchange answer.
    exchange_dials: usize = 4, "CIRRUS_EXCHANGE_DIALS";
    /// Outgoing dials in progress at once.
    max_pending_dials: u32 = 16, "CIRRUS_MAX_PENDING_DIALS";
    /// Do not ask the LAN's gateway (UPnP IGD) to forward a port to the UDP and
    /// the WebSocket API.
    no_port_mapping: bool = false, "CIRRUS_NO_PORT_MAPPING", num_args = 0..=1,
        default_missing_value = "true";
    /// The gateway's SSDP endpoint for port mapping, ip:port (default: the default
    /// route's next hop, port 1900).
    port_mapping_gateway: String = String::new(), "CIRRUS_PORT_MAPPING_GATEWAY";
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("no data dir given and $HOME is not set; pass --data-dir")]
    NoDataDir,
    #[error("cache-size {0} MiB is more than this machine can address")]
    CacheTooLarge(u64),
    #[error("port-mapping-gateway: {0:?} is not ip:port")]
    Gateway(String),
    #[error("cors-origins: {0:?} is not an origin (e.g. https://app.example.org, or *)")]
    Origin(String),
}

impl Config {
    /// The addresses to bind, without `::` where the host has no IPv6 and another
    /// address is bound.
    pub fn binds(&self) -> crate::sockets::Binds {
        crate::sockets::Binds::new(&self.bind)
    }

    pub fn build(args: &RunArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => RunArgs::default(),
        };
        let mut cfg = args.clone().over(file);
        if cfg.data_dir.as_os_str().is_empty() {
            cfg.data_dir = default_data_dir().ok_or(ConfigError::NoDataDir)?;
        }
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let positive = |x: f64| x > 0.0 && x.is_finite();
        let nonzero: &[(bool, &'static str)] = &[
            (self.cache_size > 0, "cache-size (MiB)"),
            (!self.bind.is_empty(), "bind (at least one address)"),
            (
                positive(self.rate_limit) && self.rate_burst >= 1.0 && self.rate_burst.is_finite(),
                "rate-limit and rate-burst (burst at least 1)",
            ),
            (positive(self.relay_rate_limit), "relay-rate-limit"),
            (positive(self.udp_unvalidated_rate), "udp-unvalidated-rate"),
            (positive(self.stun_rate_limit), "stun-rate-limit"),
            (positive(self.punch_rate_limit), "punch-rate-limit"),
            (
                self.max_connections > 0 && self.max_connections_per_ip > 0,
                "max-connections and max-connections-per-ip",
            ),
            (self.max_body_bytes > 0, "max-body-bytes"),
            (self.max_answer_bytes > 0, "max-answer-bytes"),
            (self.max_peers > 0, "max-peers"),
            (self.stun_keepalive_secs > 0, "stun-keepalive-secs"),
            (self.sync_interval_secs > 0, "sync-interval-secs"),
            (self.sync_timeout_secs > 0, "sync-timeout-secs"),
            (self.max_batch > 0, "max-batch"),
            (
                self.http_header_timeout_secs > 0,
                "http-header-timeout-secs",
            ),
            (self.http_body_timeout_secs > 0, "http-body-timeout-secs"),
            (self.write_timeout_secs > 0, "write-timeout-secs"),
            (self.ws_max_in_flight > 0, "ws-max-in-flight"),
            (self.ws_queue_bytes > 0, "ws-queue-bytes"),
            (self.max_known_peers > 0, "max-known-peers"),
            (self.gossip_linger_ms > 0, "gossip-linger-ms"),
            (self.max_pending_dials > 0, "max-pending-dials"),
        ];
        if let Some((_, what)) = nonzero.iter().find(|(ok, _)| !ok) {
            return Err(ConfigError::Zero(what));
        }
        self.cache_bytes()?;
        self.port_mapping_gateway()?;
        for o in &self.cors_origins {
            let ok = o == "*"
                || (o.starts_with("http://") || o.starts_with("https://"))
                    && axum::http::HeaderValue::from_str(o).is_ok();
            if !ok {
                return Err(ConfigError::Origin(o.clone()));
            }
        }
        Ok(())
    }

    /// The page cache in bytes (`cache-size` is given in MiB).
    pub fn cache_bytes(&self) -> Result<usize, ConfigError> {
        self.cache_size
            .checked_mul(1 << 20)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or(ConfigError::CacheTooLarge(self.cache_size))
    }

    /// The gateway to ask for port mapping, when one is given.
    pub fn port_mapping_gateway(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        if self.port_mapping_gateway.is_empty() {
            return Ok(None);
        }
        self.port_mapping_gateway
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::Gateway(self.port_mapping_gateway.clone()))
    }

    pub fn redial(&self) -> bool {
        !self.no_redial
    }

    pub fn stun_keepalive(&self) -> Duration {
        Duration::from_secs(self.stun_keepalive_secs)
    }

    pub fn sync_interval(&self) -> Duration {
        Duration::from_secs(self.sync_interval_secs)
    }

    pub fn sync_timeout(&self) -> Duration {
        Duration::from_secs(self.sync_timeout_secs)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_secs)
    }

    pub fn min_free_disk_bytes(&self) -> u64 {
        self.min_free_disk.saturating_mul(1 << 20)
    }

    pub fn rates(&self) -> crate::rate::Rates {
        crate::rate::Rates {
            rate: self.rate_limit,
            burst: self.rate_burst,
            relay_rate: self.relay_rate_limit,
            limit_loopback: self.limit_loopback,
        }
    }

    pub fn cors(&self) -> CorsOrigins {
        if self.cors_origins.iter().any(|o| o == "*") {
            CorsOrigins::Any
        } else {
            CorsOrigins::List(self.cors_origins.clone())
        }
    }
}

fn read_file(path: &Path) -> Result<RunArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let parse = |source| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    };
    let mut table: toml::Table = toml::from_str(&text).map_err(parse)?;
    // `bind` was one address before it could be several: a string still means one.
    if let Some(one @ toml::Value::String(_)) = table.get("bind").cloned() {
        table.insert("bind".into(), toml::Value::Array(vec![one]));
    }
    RunArgs::deserialize(table).map_err(parse)
}

/// `$HOME/.cirrus/node`: the node's state, apart from the client identity next to it.
pub fn default_data_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cirrus").join("node"))
}

/// Which origins a browser page may read the API from (`cors-origins`; `*` for any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    Any,
    List(Vec<String>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> RunArgs {
        Cli::try_parse_from([&["cirrus"], args].concat())
            .unwrap()
            .run
    }

    #[test]
    fn flags_beat_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "http-port = 4000\nmax-batch = 7\ndata-dir = \"/x\"\nno-redial = true\nbootstrap = [\"/ip4/127.0.0.1/tcp/1\"]\n",
        )
        .unwrap();
        let args = RunArgs {
            config: Some(path.clone()),
            http_port: Some(5000),
            ..Default::default()
        };
        let c = Config::build(&args).unwrap();
        assert_eq!(c.http_port, 5000);
        assert_eq!(c.max_batch, 7);
        assert_eq!(c.data_dir, PathBuf::from("/x"));
        assert!(!c.redial());
        assert_eq!(c.bootstrap.len(), 1);
        assert_eq!(c.max_body_bytes, 1 << 20);

        std::fs::write(&path, "htp-port = 1\n").unwrap();
        let err = Config::build(&args).unwrap_err().to_string();
        assert!(err.contains("htp-port"), "{err}");

        std::fs::write(&path, "max-batch = 0\n").unwrap();
        assert!(Config::build(&args).is_err());
    }

    #[test]
    fn flags_parse_as_the_docs_say() {
        let a = parse(&[
            "--no-redial",
            "--bootstrap",
            "/ip4/127.0.0.1/tcp/1,/ip4/127.0.0.2/tcp/2",
            "--cors-origins",
            "https://a.example,http://b.example:8080",
            "--data-dir",
            "/d",
        ]);
        let c = Config::build(&a).unwrap();
        assert!(!c.redial() && !c.limit_loopback);
        assert_eq!(c.bootstrap.len(), 2);
        assert_eq!(c.cors_origins.len(), 2);
        let a = parse(&["--limit-loopback", "false", "--data-dir", "/d"]);
        assert!(!Config::build(&a).unwrap().limit_loopback);
        assert!(Cli::try_parse_from(["cirrus", "--bootstrap", "not-a-multiaddr"]).is_err());
        let bad = parse(&["--cors-origins", "javascript:x", "--data-dir", "/d"]);
        assert!(Config::build(&bad).is_err());
    }

    /// `bind`: both families by default; repeated, comma-separated, or in the file
    /// as a list or (as before it could be several) one string.
    #[test]
    fn bind_takes_several_addresses_and_the_old_single_one() {
        let both: Vec<IpAddr> = vec!["0.0.0.0".parse().unwrap(), "::".parse().unwrap()];
        let c = Config::build(&parse(&["--data-dir", "/d"])).unwrap();
        assert_eq!(c.bind, both);
        for flags in [
            &["--bind", "0.0.0.0", "--bind", "::"][..],
            &["--bind", "0.0.0.0,::"][..],
        ] {
            let c = Config::build(&parse(&[flags, &["--data-dir", "/d"]].concat())).unwrap();
            assert_eq!(c.bind, both, "{flags:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let from_file = |text: &str| {
            std::fs::write(&path, text).unwrap();
            Config::build(&RunArgs {
                config: Some(path.clone()),
                data_dir: Some("/d".into()),
                ..Default::default()
            })
        };
        let one = from_file("bind = \"127.0.0.9\"\n").unwrap();
        assert_eq!(one.bind, vec!["127.0.0.9".parse::<IpAddr>().unwrap()]);
        let two = from_file("bind = [\"127.0.0.9\", \"::1\"]\n").unwrap();
        assert_eq!(two.bind.len(), 2);
        assert!(from_file("bind = []\n").is_err());
        assert!(from_file("bind = \"not an address\"\n").is_err());
        // Repeats are bound once.
        let c = Config::build(&parse(&["--bind", "::1,::1", "--data-dir", "/d"])).unwrap();
        assert_eq!(c.binds().all().len(), 1);
    }

    #[test]
    fn cache_size_is_in_mib_and_checked() {
        let args = RunArgs {
            data_dir: Some("/x".into()),
            ..Default::default()
        };
        let c = Config::build(&args).unwrap();
        assert_eq!(c.cache_bytes().unwrap() as u64, 64 << 20);
        let c = Config::build(&RunArgs {
            cache_size: Some(16),
            ..args.clone()
        })
        .unwrap();
        assert_eq!(c.cache_bytes().unwrap(), 16 << 20);
        for bad in [0, u64::MAX] {
            let err = Config::build(&RunArgs {
                cache_size: Some(bad),
                ..args.clone()
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains("cache-size"), "{err}");
        }
    }
}
