//! Node configuration: built once from flags, environment, an optional TOML file and
//! defaults (in that order of precedence), then passed down.
//!
//! Every setting has a flag (`--http-port`), an environment variable
//! (`CIRRUS_HTTP_PORT`) and a config-file key (`http-port`). Unknown file keys are an
//! error, so a typo never silently falls back to a default.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use libp2p::Multiaddr;
use serde::Deserialize;
use std::time::Duration;

pub const DEFAULT_P2P_PORT: u16 = 38080;
pub const DEFAULT_HTTP_PORT: u16 = 38081;
pub const DEFAULT_WS_PORT: u16 = 38082;
pub const DEFAULT_UDP_PORT: u16 = 38083;
pub const DEFAULT_STUN_PORT: u16 = 38084;
/// Under Linux conntrack's 30 s timeout for one-way UDP flows, so mappings stay open.
pub const DEFAULT_STUN_KEEPALIVE_SECS: u64 = 20;
pub const DEFAULT_MAX_PEERS: u32 = 50;
pub const DEFAULT_SYNC_INTERVAL_SECS: u64 = 10;
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
pub const DEFAULT_MAX_BATCH: usize = 1000;
pub const DEFAULT_RATE_LIMIT: f64 = 200.0;
pub const DEFAULT_RATE_BURST: f64 = 1000.0;
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 64;
/// redb's own default is 1 GiB, far more than a small daemon should hold; pages
/// that fall out of this cache are still served by the OS page cache.
pub const DEFAULT_CACHE_SIZE_MIB: u64 = 64;

/// Flags of `cirrus run`. Every field is optional so that unset flags fall through
/// to the file and the defaults.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// TOML config file (keys as the long flags, e.g. `http-port = 38081`).
    #[arg(long, env = "CIRRUS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory holding the database, the node key and other state.
    #[arg(long, env = "CIRRUS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address every listener binds.
    #[arg(long, env = "CIRRUS_BIND")]
    pub bind: Option<IpAddr>,
    /// Swarm port, TCP and UDP/QUIC (0 picks a free port).
    #[arg(long, env = "CIRRUS_P2P_PORT")]
    pub p2p_port: Option<u16>,
    /// HTTP JSON-RPC port (0 picks a free port).
    #[arg(long, env = "CIRRUS_HTTP_PORT")]
    pub http_port: Option<u16>,
    /// STUN server port, UDP and TCP (0 picks a free port).
    #[arg(long, env = "CIRRUS_STUN_PORT")]
    pub stun_port: Option<u16>,
    /// Seconds between STUN requests of each per-peer client socket.
    #[arg(long, env = "CIRRUS_STUN_KEEPALIVE_SECS")]
    pub stun_keepalive_secs: Option<u64>,
    /// Multiaddr of a node to join through, e.g. /ip4/127.0.0.11/tcp/38080 (repeatable;
    /// comma-separated in the environment).
    #[arg(long, env = "CIRRUS_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// Do not dial the peers remembered in the data dir, at start or later; join
    /// only through --bootstrap (peers met in this run are still remembered).
    #[arg(long, env = "CIRRUS_NO_REDIAL")]
    pub no_redial: bool,
    /// Most peers to stay connected to.
    #[arg(long, env = "CIRRUS_MAX_PEERS")]
    pub max_peers: Option<u32>,
    /// Seconds between anti-entropy rounds with a peer whose root differs.
    #[arg(long, env = "CIRRUS_SYNC_INTERVAL_SECS")]
    pub sync_interval_secs: Option<u64>,
    /// WebSocket JSON-RPC port (0 picks a free port).
    #[arg(long, env = "CIRRUS_WS_PORT")]
    pub ws_port: Option<u16>,
    /// UDP JSON-RPC port (0 picks a free port).
    #[arg(long, env = "CIRRUS_UDP_PORT")]
    pub udp_port: Option<u16>,
    /// Largest accepted request body (HTTP) or message (WebSocket), in bytes.
    #[arg(long, env = "CIRRUS_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Sustained API requests per second per source IP (every transport; a batch
    /// counts each request).
    #[arg(long, env = "CIRRUS_RATE_LIMIT")]
    pub rate_limit: Option<f64>,
    /// Requests a source IP may send in a burst before the rate applies.
    #[arg(long, env = "CIRRUS_RATE_BURST")]
    pub rate_burst: Option<f64>,
    /// Open HTTP and WebSocket connections, in total.
    #[arg(long, env = "CIRRUS_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Open HTTP and WebSocket connections per source IP.
    #[arg(long, env = "CIRRUS_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Apply the rate and connection limits to loopback sources too (exempt by default).
    #[arg(long, env = "CIRRUS_LIMIT_LOOPBACK")]
    pub limit_loopback: bool,
    /// Most requests in one JSON-RPC batch.
    #[arg(long, env = "CIRRUS_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// Database page cache, in MiB (read cache and write buffer together).
    #[arg(long, env = "CIRRUS_CACHE_SIZE", value_name = "MIB")]
    pub cache_size: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    data_dir: Option<PathBuf>,
    bind: Option<IpAddr>,
    p2p_port: Option<u16>,
    http_port: Option<u16>,
    ws_port: Option<u16>,
    udp_port: Option<u16>,
    stun_port: Option<u16>,
    stun_keepalive_secs: Option<u64>,
    #[serde(default)]
    bootstrap: Vec<String>,
    no_redial: Option<bool>,
    max_peers: Option<u32>,
    sync_interval_secs: Option<u64>,
    max_body_bytes: Option<usize>,
    max_batch: Option<usize>,
    rate_limit: Option<f64>,
    rate_burst: Option<f64>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    limit_loopback: Option<bool>,
    cache_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub bind: IpAddr,
    pub p2p_port: u16,
    pub http_port: u16,
    pub ws_port: u16,
    pub udp_port: u16,
    pub stun_port: u16,
    pub stun_keepalive: Duration,
    pub bootstrap: Vec<Multiaddr>,
    /// Dial the peers remembered in the data dir (`no-redial` turns it off).
    pub redial: bool,
    pub max_peers: u32,
    pub sync_interval: Duration,
    pub max_body_bytes: usize,
    pub max_batch: usize,
    pub limits: crate::api::limits::LimitsConfig,
    /// redb page cache, in bytes (`cache-size` is given in MiB).
    pub cache: usize,
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
    #[error("bootstrap address {0:?} is not a multiaddr (e.g. /ip4/127.0.0.11/tcp/38080)")]
    Bootstrap(String),
    #[error("no data dir given and $HOME is not set; pass --data-dir")]
    NoDataDir,
    #[error("cache-size {0} MiB is more than this machine can address")]
    CacheTooLarge(u64),
}

impl Config {
    pub fn build(args: &RunArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let cache_mib = args
            .cache_size
            .or(file.cache_size)
            .unwrap_or(DEFAULT_CACHE_SIZE_MIB);
        if cache_mib == 0 {
            return Err(ConfigError::Zero("cache-size (MiB)"));
        }
        let cache_bytes = cache_mib
            .checked_mul(1 << 20)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or(ConfigError::CacheTooLarge(cache_mib))?;
        let data_dir = match args.data_dir.clone().or(file.data_dir) {
            Some(d) => d,
            None => default_data_dir().ok_or(ConfigError::NoDataDir)?,
        };
        let cfg = Config {
            data_dir,
            bind: args
                .bind
                .or(file.bind)
                .unwrap_or(IpAddr::from([0, 0, 0, 0])),
            p2p_port: args.p2p_port.or(file.p2p_port).unwrap_or(DEFAULT_P2P_PORT),
            http_port: args
                .http_port
                .or(file.http_port)
                .unwrap_or(DEFAULT_HTTP_PORT),
            ws_port: args.ws_port.or(file.ws_port).unwrap_or(DEFAULT_WS_PORT),
            udp_port: args.udp_port.or(file.udp_port).unwrap_or(DEFAULT_UDP_PORT),
            stun_port: args
                .stun_port
                .or(file.stun_port)
                .unwrap_or(DEFAULT_STUN_PORT),
            stun_keepalive: Duration::from_secs(
                args.stun_keepalive_secs
                    .or(file.stun_keepalive_secs)
                    .unwrap_or(DEFAULT_STUN_KEEPALIVE_SECS),
            ),
            bootstrap: parse_bootstrap(if args.bootstrap.is_empty() {
                &file.bootstrap
            } else {
                &args.bootstrap
            })?,
            redial: !(args.no_redial || file.no_redial.unwrap_or(false)),
            max_peers: args
                .max_peers
                .or(file.max_peers)
                .unwrap_or(DEFAULT_MAX_PEERS),
            sync_interval: Duration::from_secs(
                args.sync_interval_secs
                    .or(file.sync_interval_secs)
                    .unwrap_or(DEFAULT_SYNC_INTERVAL_SECS),
            ),
            max_body_bytes: args
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(DEFAULT_MAX_BODY_BYTES),
            max_batch: args
                .max_batch
                .or(file.max_batch)
                .unwrap_or(DEFAULT_MAX_BATCH),
            limits: crate::api::limits::LimitsConfig {
                rate: args
                    .rate_limit
                    .or(file.rate_limit)
                    .unwrap_or(DEFAULT_RATE_LIMIT),
                burst: args
                    .rate_burst
                    .or(file.rate_burst)
                    .unwrap_or(DEFAULT_RATE_BURST),
                max_connections: args
                    .max_connections
                    .or(file.max_connections)
                    .unwrap_or(DEFAULT_MAX_CONNECTIONS),
                max_connections_per_ip: args
                    .max_connections_per_ip
                    .or(file.max_connections_per_ip)
                    .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_IP),
                limit_loopback: args.limit_loopback || file.limit_loopback.unwrap_or(false),
            },
            cache: cache_bytes,
        };
        let l = &cfg.limits;
        if !(l.rate > 0.0 && l.rate.is_finite() && l.burst >= 1.0 && l.burst.is_finite()) {
            return Err(ConfigError::Zero(
                "rate-limit and rate-burst (burst at least 1)",
            ));
        }
        if l.max_connections == 0 || l.max_connections_per_ip == 0 {
            return Err(ConfigError::Zero(
                "max-connections and max-connections-per-ip",
            ));
        }
        if cfg.max_body_bytes == 0 {
            return Err(ConfigError::Zero("max-body-bytes"));
        }
        if cfg.max_peers == 0 {
            return Err(ConfigError::Zero("max-peers"));
        }
        if cfg.stun_keepalive.is_zero() {
            return Err(ConfigError::Zero("stun-keepalive-secs"));
        }
        if cfg.sync_interval.is_zero() {
            return Err(ConfigError::Zero("sync-interval-secs"));
        }
        if cfg.max_batch == 0 {
            return Err(ConfigError::Zero("max-batch"));
        }
        Ok(cfg)
    }
}

fn parse_bootstrap(list: &[String]) -> Result<Vec<Multiaddr>, ConfigError> {
    list.iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| ConfigError::Bootstrap(s.to_string())))
        .collect()
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

/// `$HOME/.cirrus/node`: the node's state, apart from the client identity next to it.
pub fn default_data_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cirrus").join("node"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "http-port = 4000\nmax-batch = 7\ndata-dir = \"/x\"\n",
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
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);

        std::fs::write(&path, "htp-port = 1\n").unwrap();
        let err = Config::build(&args).unwrap_err().to_string();
        assert!(err.contains("htp-port"), "{err}");

        std::fs::write(&path, "max-batch = 0\n").unwrap();
        assert!(Config::build(&args).is_err());
    }

    #[test]
    fn cache_size_is_in_mib_and_checked() {
        let args = RunArgs {
            data_dir: Some("/x".into()),
            ..Default::default()
        };
        let c = Config::build(&args).unwrap();
        assert_eq!(c.cache as u64, DEFAULT_CACHE_SIZE_MIB << 20);
        let c = Config::build(&RunArgs {
            cache_size: Some(16),
            ..args.clone()
        })
        .unwrap();
        assert_eq!(c.cache, 16 << 20);
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
