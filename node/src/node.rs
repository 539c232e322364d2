//! Starting and stopping a node: open the store, load the identity, bind the
//! listeners, serve until the shutdown token fires, then stop in order (listeners
//! first, then the writer, which commits what is queued before the store closes).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use cirrus_proto::api::Ports;
use libp2p_identity::PeerId;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{Context, Dispatcher, http};
use crate::config::Config;
use crate::identity::{self, IdentityError};
use crate::store::writer::Writer;
use crate::store::{Store, StoreError};

pub const DB_FILE: &str = "cirrus.redb";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot open database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{what} stopped: {source}")]
    Serve {
        what: &'static str,
        source: std::io::Error,
    },
}

pub struct Node {
    pub peer_id: PeerId,
    pub http: SocketAddr,
    shutdown: CancellationToken,
    tasks: JoinSet<Result<(), NodeError>>,
    writer: std::thread::JoinHandle<()>,
}

impl Node {
    pub async fn start(cfg: &Config) -> Result<Node, NodeError> {
        create_private_dir(&cfg.data_dir).map_err(|source| NodeError::DataDir {
            path: cfg.data_dir.clone(),
            source,
        })?;
        let key = identity::load_or_create(&cfg.data_dir)?;
        let peer_id = key.public().to_peer_id();
        let store = Arc::new(Store::open(&cfg.data_dir.join(DB_FILE))?);
        let (writer, writer_thread) = Writer::spawn(store.clone());

        let http_addr = SocketAddr::new(cfg.bind, cfg.http_port);
        let listener = TcpListener::bind(http_addr)
            .await
            .map_err(|source| NodeError::Bind {
                what: "http",
                addr: http_addr,
                source,
            })?;
        let http = listener.local_addr().expect("bound socket has an address");

        let ctx = Arc::new(Context {
            store,
            writer,
            peer_id: peer_id.to_string(),
            started: Instant::now(),
            ports: Ports {
                http: Some(http.port()),
                ..Ports::default()
            },
            max_batch: cfg.max_batch,
        });
        let dispatcher = Dispatcher::new(ctx);
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let (max_body, token) = (cfg.max_body_bytes, shutdown.clone());
        tasks.spawn(async move {
            http::serve(listener, dispatcher, max_body, token)
                .await
                .map_err(|source| NodeError::Serve {
                    what: "http api",
                    source,
                })
        });
        tracing::info!(%peer_id, %http, data_dir = %cfg.data_dir.display(), "node started");
        Ok(Node {
            peer_id,
            http,
            shutdown,
            tasks,
            writer: writer_thread,
        })
    }

    /// Fire this to stop the node.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serve until shut down (or until a listener fails), then stop cleanly.
    pub async fn run(mut self) -> Result<(), NodeError> {
        let mut result = Ok(());
        while let Some(done) = self.tasks.join_next().await {
            // Any task ending means the node is going down: take the rest with it.
            self.shutdown.cancel();
            if let Ok(Err(e)) = done
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        // The listeners held the last writer handles; the writer now drains and exits.
        let writer = self.writer;
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        tracing::info!("node stopped");
        result
    }
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}
