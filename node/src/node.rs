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

use crate::api::limits::{ConnectionCounter, LimitedListener, RateLimiter};
use crate::api::udp::UdpApi;
use crate::api::{self, Context, Dispatcher, DynamicPorts, http};
use crate::config::Config;
use crate::identity::{self, IdentityError};
use crate::p2p::{self, InboundRelay, P2pConfig, P2pError, P2pHandle, StunLink};
use crate::store::writer::Writer;
use crate::store::{Store, StoreError};
use crate::stun::{self, StunState, client::ClientCtx, punch::Punchers};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

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
    #[error(transparent)]
    P2p(#[from] P2pError),
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
    pub ws: SocketAddr,
    pub udp: SocketAddr,
    /// Swarm listen addresses, with `/p2p/<peer id>` so they can be dialed as is.
    pub listen: Vec<Multiaddr>,
    shutdown: CancellationToken,
    tasks: JoinSet<Result<(), NodeError>>,
    writer_thread: std::thread::JoinHandle<()>,
    p2p: P2pHandle,
    store: Arc<Store>,
    writer: Writer,
}

impl Node {
    pub async fn start(cfg: &Config) -> Result<Node, NodeError> {
        create_private_dir(&cfg.data_dir).map_err(|source| NodeError::DataDir {
            path: cfg.data_dir.clone(),
            source,
        })?;
        let key = identity::load_or_create(&cfg.data_dir)?;
        let peer_id = key.public().to_peer_id();
        let store = Arc::new(Store::open_cached(&cfg.data_dir.join(DB_FILE), cfg.cache)?);
        let (writer, writer_thread) = Writer::spawn(store.clone());
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();

        // STUN first: the swarm announces the server's port.
        let stun_state = Arc::new(StunState::default());
        let (stun_udp, stun_tcp) = bind_stun(cfg.bind, cfg.stun_port).await?;
        let stun_port = stun_udp.local_addr().map_or(cfg.stun_port, |a| a.port());
        let (stun_events, stun_events_rx) = mpsc::channel(256);
        let (stun_servers, stun_servers_rx) = watch::channel(Vec::new());
        let punchers = Arc::new(Punchers::default());
        let stun_link = StunLink {
            state: stun_state.clone(),
            port: stun_port,
            events: stun_events,
            punchers: punchers.clone(),
        };
        let p2p_cfg = P2pConfig {
            bind: cfg.bind,
            port: cfg.p2p_port,
            bootstrap: cfg.bootstrap.clone(),
            max_peers: cfg.max_peers,
            redial: cfg.redial,
            sync_interval: cfg.sync_interval,
        };
        let p2p = p2p::start(
            key.clone(),
            p2p_cfg,
            store.clone(),
            writer.clone(),
            stun_link,
            shutdown.child_token(),
        )
        .await?;
        let listen: Vec<Multiaddr> = p2p
            .listen
            .iter()
            .map(|a| a.clone().with(Protocol::P2p(peer_id)))
            .collect();

        let sockets = ApiSockets::bind(cfg).await?;
        let (http, ws, udp) = sockets.addrs();
        let limiter = Arc::new(RateLimiter::new(cfg.limits.clone()));
        let connections = ConnectionCounter::new(limiter.clone());
        let ctx = Arc::new(Context {
            limiter,
            admin_token: admin_token(&cfg.data_dir)?,
            shutdown: shutdown.clone(),
            store: store.clone(),
            writer: writer.clone(),
            peer_id: peer_id.to_string(),
            started: Instant::now(),
            ports: Ports {
                http: Some(http.port()),
                p2p: tcp_port(&p2p.listen),
                stun: Some(stun_port),
                ws: Some(ws.port()),
                udp: Some(udp.port()),
            },
            max_batch: cfg.max_batch,
            p2p: p2p.handle.clone(),
            stun: stun_state.clone(),
        });
        let handle = p2p.handle.clone();
        let dispatcher = Dispatcher::new(ctx);
        let udp_api = UdpApi::new(dispatcher.clone());
        let ws_router = api::ws::router(dispatcher.clone(), cfg.max_body_bytes);

        // The API on its own ports.
        let (token, conns) = (shutdown.clone(), connections.clone());
        let ws_listener = LimitedListener::new(sockets.ws, conns);
        let router = ws_router.clone();
        serve(&mut tasks, "websocket api", async move {
            api::ws::serve(ws_listener, router, token).await
        });
        let (token, api) = (shutdown.clone(), udp_api.clone());
        serve(&mut tasks, "udp api", async move {
            api.serve(Arc::new(sockets.udp), None, token).await;
            Ok(())
        });
        let (max_body, token) = (cfg.max_body_bytes, shutdown.clone());
        let http_listener = LimitedListener::new(sockets.http, connections.clone());
        let http_dispatcher = dispatcher.clone();
        serve(&mut tasks, "http api", async move {
            http::serve(http_listener, http_dispatcher, max_body, token).await
        });

        // STUN: the server, and a client pair per peer that also serves the API.
        let (token, state) = (shutdown.clone(), stun_state.clone());
        serve(&mut tasks, "stun udp", async move {
            stun::server::serve_udp(stun_udp, state, token).await
        });
        let (token, state) = (shutdown.clone(), stun_state.clone());
        serve(&mut tasks, "stun tcp", async move {
            stun::server::serve_tcp(stun_tcp, state, token).await
        });
        let stun_clients = ClientCtx {
            state: stun_state,
            key,
            bind: cfg.bind,
            keepalive: cfg.stun_keepalive,
            servers: stun_servers_rx,
            punchers,
            api: Arc::new(DynamicPorts {
                connections,
                udp: udp_api,
                ws: ws_router,
            }),
        };
        let token = shutdown.clone();
        serve(&mut tasks, "stun clients", async move {
            stun::manager::run(stun_clients, stun_servers, stun_events_rx, token).await;
            Ok(())
        });

        // The swarm, and the requests peers relay to us.
        tasks.spawn(serve_relays(p2p.relays, dispatcher.without_relay()));
        let swarm_task = p2p.task;
        serve(&mut tasks, "swarm", async move {
            swarm_task.await.map_err(std::io::Error::other)
        });

        tracing::info!(%peer_id, %http, data_dir = %cfg.data_dir.display(), "node started");
        Ok(Node {
            peer_id,
            http,
            ws,
            udp,
            listen,
            shutdown,
            tasks,
            writer_thread,
            p2p: handle,
            store,
            writer,
        })
    }

    /// The swarm handle, store and writer, for programs that embed a node and drive
    /// parts of it themselves (e.g. a benchmark calling [`crate::sync::reconcile`]).
    pub fn p2p(&self) -> &P2pHandle {
        &self.p2p
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
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
        // The listeners and this handle held the last writer handles; the writer now
        // drains and exits.
        drop(self.writer);
        let writer = self.writer_thread;
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        tracing::info!("node stopped");
        result
    }
}

/// Run a task of the node whose I/O error stops the node, named in the error.
fn serve(
    tasks: &mut JoinSet<Result<(), NodeError>>,
    what: &'static str,
    task: impl std::future::Future<Output = std::io::Result<()>> + Send + 'static,
) {
    tasks.spawn(async move {
        task.await
            .map_err(|source| NodeError::Serve { what, source })
    });
}

/// The client API's own listeners (HTTP, WebSocket, UDP).
struct ApiSockets {
    http: TcpListener,
    ws: TcpListener,
    udp: UdpSocket,
}

impl ApiSockets {
    async fn bind(cfg: &Config) -> Result<ApiSockets, NodeError> {
        let at = |port| SocketAddr::new(cfg.bind, port);
        let err = |what, addr| move |source| NodeError::Bind { what, addr, source };
        let (http, ws, udp) = (at(cfg.http_port), at(cfg.ws_port), at(cfg.udp_port));
        Ok(ApiSockets {
            http: TcpListener::bind(http).await.map_err(err("http", http))?,
            ws: TcpListener::bind(ws).await.map_err(err("websocket", ws))?,
            udp: UdpSocket::bind(udp).await.map_err(err("udp api", udp))?,
        })
    }

    fn addrs(&self) -> (SocketAddr, SocketAddr, SocketAddr) {
        let bound = "bound socket has an address";
        (
            self.http.local_addr().expect(bound),
            self.ws.local_addr().expect(bound),
            self.udp.local_addr().expect(bound),
        )
    }
}

/// The swarm's TCP port, for `getnodeinfo.ports.p2p`.
fn tcp_port(listen: &[Multiaddr]) -> Option<u16> {
    listen.iter().find_map(|a| {
        a.iter().find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
    })
}

/// The STUN server's UDP socket and TCP listener, on one port number (with port 0,
/// the first free UDP port that is also free for TCP).
async fn bind_stun(ip: std::net::IpAddr, port: u16) -> Result<(UdpSocket, TcpListener), NodeError> {
    let bind_err = |what, source| NodeError::Bind {
        what,
        addr: SocketAddr::new(ip, port),
        source,
    };
    for _ in 0..20 {
        let udp = UdpSocket::bind(SocketAddr::new(ip, port))
            .await
            .map_err(|e| bind_err("stun udp", e))?;
        let actual = udp.local_addr().map_err(|e| bind_err("stun udp", e))?;
        match TcpListener::bind(actual).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if port == 0 && e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(bind_err("stun tcp", e)),
        }
    }
    Err(bind_err(
        "stun",
        std::io::Error::other("no port free for both UDP and TCP"),
    ))
}

/// Answer JSON-RPC requests that peers relay to us. Ends when the swarm stops.
async fn serve_relays(
    mut relays: mpsc::Receiver<InboundRelay>,
    dispatcher: Dispatcher,
) -> Result<(), NodeError> {
    while let Some(r) = relays.recv().await {
        let dispatcher = dispatcher.clone();
        tokio::spawn(async move {
            tracing::debug!(from = %r.from, "relayed request");
            let answer = dispatcher.handle(&r.request).await.unwrap_or_default();
            let _ = r.reply.send(answer);
        });
    }
    Ok(())
}

/// The admin token in `<data-dir>/admin.token` (mode 0600), made on first start.
fn admin_token(dir: &std::path::Path) -> Result<String, NodeError> {
    let path = dir.join("admin.token");
    let io = |source| NodeError::DataDir {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {} // empty: make a new one
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let token = hex::encode(b);
    crate::identity::write_private(&path, format!("{token}\n").as_bytes()).map_err(io)?;
    Ok(token)
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}
