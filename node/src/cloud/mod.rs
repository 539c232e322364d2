//! The network as one cloud, from a client's side (SPEC "Sessions", "Verified
//! reads"; docs/client.md): start from one or more node URLs, learn the others
//! from `getpeerinfo`, spread calls over healthy nodes, carry the session token on
//! every call, move on to another node when one fails, times out or is behind the
//! session, and read with proofs checked against the root a majority reports.
//!
//! The browser client (`clients/js/`) behaves the same way.

pub mod health;
mod verify;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cirrus_proto::api::{NodeInfo, PeerInfo, PutResult};
use cirrus_proto::jsonrpc::{
    BEHIND, ErrorObject, INTERNAL_ERROR, RATE_LIMITED, STORAGE_UNAVAILABLE,
};
use cirrus_proto::record::Record;
use serde_json::{Value, json};

pub use health::{NodeHealth, Penalty, Snapshot};
pub use verify::{Majority, VerifiedRead};

use crate::client::{Client, ClientError};

/// Errors of a node that another node may not have: try the next one.
const MOVE_ON: &[i64] = &[BEHIND, RATE_LIMITED, INTERNAL_ERROR, STORAGE_UNAVAILABLE];

#[derive(Debug, Clone)]
pub struct CloudConfig {
    /// Per call, on top of the session's `wait`.
    pub timeout: Duration,
    /// The `wait` sent with a session (ms); `None`: the node's default (2000).
    pub wait: Option<u64>,
    /// Learn nodes from `getpeerinfo` before the first call.
    pub discover: bool,
    /// Nodes tried for one call before giving up.
    pub max_attempts: usize,
    /// Nodes asked for their root in a verified read.
    pub verify_nodes: usize,
    /// How long a verified read asks again while roots differ (writes spreading).
    pub settle: Duration,
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            timeout: Duration::from_secs(10),
            wait: None,
            discover: true,
            max_attempts: 4,
            verify_nodes: 5,
            settle: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("no node to ask")]
    NoNodes,
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The request's own fault: another node would say the same.
    #[error("{node}: error {}: {}", .error.code, .error.message)]
    Rpc { node: String, error: ErrorObject },
    #[error("{method}: every node tried failed: {}", list(.errors))]
    AllFailed {
        method: String,
        errors: Vec<(String, String)>,
    },
    /// No root has a strict majority of the nodes asked.
    #[error("no strict majority: {0}")]
    Split(String),
    #[error("verified read: {0}")]
    Unverified(String),
}

fn list(errors: &[(String, String)]) -> String {
    let each: Vec<String> = errors.iter().map(|(n, e)| format!("{n}: {e}")).collect();
    each.join("; ")
}

struct CloudNode {
    url: String,
    client: Client,
    health: Mutex<NodeHealth>,
}

pub struct Cloud {
    nodes: Mutex<Vec<Arc<CloudNode>>>,
    session: Mutex<Option<String>>,
    cfg: CloudConfig,
    /// Where the next call starts among the healthy nodes, to spread them.
    next: AtomicUsize,
}

impl Cloud {
    /// A cloud of the nodes at `urls` (HTTP, WebSocket or UDP URLs), and, with
    /// `discover`, of their peers.
    pub async fn connect(urls: &[String], cfg: CloudConfig) -> Result<Cloud, CloudError> {
        let cloud = Cloud {
            nodes: Mutex::default(),
            session: Mutex::default(),
            cfg,
            next: AtomicUsize::new(0),
        };
        for u in urls {
            cloud.add(u)?;
        }
        if cloud.urls().is_empty() {
            return Err(CloudError::NoNodes);
        }
        if cloud.cfg.discover {
            cloud.discover().await;
        }
        Ok(cloud)
    }

    fn add(&self, url: &str) -> Result<Arc<CloudNode>, ClientError> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = nodes.iter().find(|n| n.url == url) {
            return Ok(n.clone());
        }
        let node = Arc::new(CloudNode {
            url: url.to_string(),
            client: Client::connect(url, self.call_timeout())?,
            health: Mutex::new(NodeHealth::new(Instant::now())),
        });
        nodes.push(node.clone());
        Ok(node)
    }

    fn call_timeout(&self) -> Duration {
        // A node may hold a call up to `wait` for the session.
        self.cfg.timeout + Duration::from_millis(self.cfg.wait.unwrap_or(2000))
    }

    /// The nodes known, in the order they were added.
    pub fn urls(&self) -> Vec<String> {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.iter().map(|n| n.url.clone()).collect()
    }

    /// Every node's health now.
    pub fn health(&self) -> Vec<(String, Snapshot)> {
        let now = Instant::now();
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes
            .iter()
            .map(|n| (n.url.clone(), lock(&n.health).snapshot(now)))
            .collect()
    }

    /// The session token carried on every call (none before the first put).
    pub fn session(&self) -> Option<String> {
        lock(&self.session).clone()
    }

    /// Carry on a session from elsewhere (a token saved earlier).
    pub fn set_session(&self, token: Option<String>) {
        *lock(&self.session) = token;
    }

    /// Ask every known node for its peers and add those that answer at the address
    /// the connection came from, on the HTTP port they report. Returns how many
    /// were added.
    pub async fn discover(&self) -> usize {
        let mut added = 0;
        for url in self.urls() {
            let Ok(peers) = self.call_on(&url, "getpeerinfo", json!({})).await else {
                continue;
            };
            let Ok(peers) = serde_json::from_value::<Vec<PeerInfo>>(peers) else {
                continue;
            };
            for p in peers {
                let Some(host) = host_of(&p.addr) else {
                    continue;
                };
                // The peer's HTTP port, from itself, through the node that knows it.
                let ask = json!({"peerId": p.peer_id, "request": {"jsonrpc": "2.0", "id": 1, "method": "getnodeinfo"}});
                let Ok(answer) = self.call_on(&url, "relay", ask).await else {
                    continue;
                };
                let Ok(info) = serde_json::from_value::<NodeInfo>(answer["result"].clone()) else {
                    continue;
                };
                let Some(port) = info.ports.http else {
                    continue;
                };
                let candidate = match host {
                    IpAddr::V6(ip) => format!("http://[{ip}]:{port}"),
                    IpAddr::V4(ip) => format!("http://{ip}:{port}"),
                };
                if self.urls().contains(&candidate) {
                    continue;
                }
                // Only a node that answers there as that peer.
                let Ok(probe) = Client::connect(&candidate, self.cfg.timeout) else {
                    continue;
                };
                let answers_as_peer = probe
                    .call_as::<NodeInfo>("getnodeinfo", json!({}))
                    .await
                    .is_ok_and(|i| i.peer_id == p.peer_id);
                if answers_as_peer && self.add(&candidate).is_ok() {
                    added += 1;
                }
            }
        }
        added
    }

    /// Nodes to try, healthy ones first (starting at a different one each time, to
    /// spread the load), then the avoided ones from least to most bad.
    fn order(&self) -> Vec<Arc<CloudNode>> {
        let now = Instant::now();
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (mut healthy, mut avoided): (Vec<_>, Vec<_>) = nodes
            .into_iter()
            .partition(|n| lock(&n.health).avoided(now).is_none());
        if !healthy.is_empty() {
            let start = self.next.fetch_add(1, Ordering::Relaxed) % healthy.len();
            healthy.rotate_left(start);
        }
        avoided.sort_by(|a, b| {
            let (x, y) = (lock(&a.health).badness(now), lock(&b.health).badness(now));
            x.total_cmp(&y)
        });
        healthy.extend(avoided);
        healthy
    }

    /// One call on one node, the session attached, its outcome counted in the
    /// node's health.
    async fn attempt(
        &self,
        node: &CloudNode,
        method: &str,
        params: &Value,
    ) -> Result<Value, ClientError> {
        let mut p = params.clone();
        if let (Some(obj), Some(token)) = (p.as_object_mut(), self.session()) {
            obj.insert("session".into(), token.into());
            if let Some(w) = self.cfg.wait {
                obj.insert("wait".into(), w.into());
            }
        }
        let t0 = Instant::now();
        let r = node.client.call(method, p).await;
        let now = Instant::now();
        match &r {
            Ok(_) => lock(&node.health).success(now, now - t0),
            Err(ClientError::Rpc(e)) if !MOVE_ON.contains(&e.code) => {
                lock(&node.health).success(now, now - t0);
            }
            Err(e) => lock(&node.health).failure(now, e.to_string()),
        }
        r
    }

    /// Call a method on one given node only (no failover), session attached.
    pub async fn call_on(
        &self,
        url: &str,
        method: &str,
        params: Value,
    ) -> Result<Value, ClientError> {
        let node = self.add(url)?;
        self.attempt(&node, method, &params).await
    }

    /// Call a method on the cloud: the next node on a transport error, a timeout,
    /// or an error another node may not have (behind the session, rate limited,
    /// internal, storage). Returns the result and the node that gave it.
    pub async fn call_with_node(
        &self,
        method: &str,
        params: Value,
    ) -> Result<(Value, String), CloudError> {
        let mut errors = Vec::new();
        for node in self.order().into_iter().take(self.cfg.max_attempts.max(1)) {
            match self.attempt(&node, method, &params).await {
                Ok(v) => return Ok((v, node.url.clone())),
                Err(ClientError::Rpc(e)) if !MOVE_ON.contains(&e.code) => {
                    return Err(CloudError::Rpc {
                        node: node.url.clone(),
                        error: e,
                    });
                }
                Err(e) => errors.push((node.url.clone(), e.to_string())),
            }
        }
        Err(CloudError::AllFailed {
            method: method.into(),
            errors,
        })
    }

    pub async fn call(&self, method: &str, params: Value) -> Result<Value, CloudError> {
        Ok(self.call_with_node(method, params).await?.0)
    }

    /// Write a signed record; its session token becomes ours. Writes of one cloud
    /// go one after the other, each carrying the token of the one before.
    pub async fn put(&self, record: &Record) -> Result<PutResult, CloudError> {
        let v = self.call("put", json!({ "record": record })).await?;
        let result: PutResult = serde_json::from_value(v).map_err(|e| {
            CloudError::Client(ClientError::BadResponse {
                url: "put".into(),
                why: e.to_string(),
            })
        })?;
        self.set_session(Some(result.session.clone()));
        Ok(result)
    }

    fn penalize(&self, url: &str, penalty: Penalty, why: String) {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = nodes.iter().find(|n| n.url == url) {
            lock(&n.health).penalize(Instant::now(), penalty, why);
        }
    }

    /// The nodes a verified read asks: up to `verify_nodes`, healthy ones first.
    fn pick(&self) -> Vec<String> {
        self.order()
            .into_iter()
            .take(self.cfg.verify_nodes.max(1))
            .map(|n| n.url.clone())
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The IP of a multiaddr.
fn host_of(addr: &str) -> Option<IpAddr> {
    let m: libp2p::Multiaddr = addr.parse().ok()?;
    crate::p2p::ip_of(&m)
}
