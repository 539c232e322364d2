//! Starting and stopping a node: open the store, load the identity, bind the
//! listeners, serve until the shutdown token fires (or the store fails for good),
//! then stop in order: listeners and connections first (requests in flight finish),
//! then the swarm, then the writer, which commits what is queued before the store
//! closes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cirrus_proto::api::Ports;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use libp2p_identity::PeerId;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::limits::{ConnectionCounter, LimitedListener, Slots};
use crate::api::serve::Timeouts;
use crate::api::session::Sessions;
use crate::api::udp::UdpApi;
use crate::api::ws::WsLimits;
use crate::api::{self, Answer, Context, Dispatcher, DynamicPorts, Origin, http};
use crate::config::Config;
use crate::identity::{self, IdentityError};
use crate::metrics::Metrics;
use crate::p2p::{self, Network, P2pError};
use crate::peers::{self, InboundRelay, PeerTable, Peers, StunLink};
use crate::portmap::PortMapper;
use crate::rate::RateLimiter;
use crate::reachability::Reachability;
use crate::sockets::{Binds, tcp_listen, udp_bind};
use crate::store::writer::{Writer, WriterConfig};
use crate::store::{Store, StoreError};
use crate::stun::{self, StunState, client::ClientCtx, punch::Punchers};
use crate::sync::schedule::{self, Scheduler};
use cirrus_proto::api::ReachRole;

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
    Config(#[from] crate::config::ConfigError),
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
    #[error("the database failed and could not be reopened: {0}")]
    StoreFailed(String),
}

pub struct Node {
    pub peer_id: PeerId,
    pub http: SocketAddr,
    pub ws: SocketAddr,
    pub udp: SocketAddr,
    /// Swarm listen addresses, with `/p2p/<peer id>` so they can be dialed as is.
    pub listen: Vec<Multiaddr>,
    shutdown: CancellationToken,
    /// The listeners, the STUN server and clients, the relay server, the peers
    /// loop and anti-entropy.
    services: JoinSet<Result<(), NodeError>>,
    /// Connections, UDP answers and other short tasks the services start.
    tasks: TaskTracker,
    swarm: TaskTracker,
    swarm_stop: CancellationToken,
    writer_thread: std::thread::JoinHandle<()>,
    network: Network,
    store: Arc<Store>,
    writer: Writer,
    metrics: Metrics,
}

impl Node {
    pub async fn start(cfg: &Config) -> Result<Node, NodeError> {
        // The addresses as this host allows them, found once: the swarm reads them
        // from the config too.
        let binds = cfg.binds();
        let cfg = Arc::new(Config {
            bind: binds.all().to_vec(),
            ..cfg.clone()
        });
        create_private_dir(&cfg.data_dir).map_err(|source| NodeError::DataDir {
            path: cfg.data_dir.clone(),
            source,
        })?;
        let key = identity::load_or_create(&cfg.data_dir)?;
        let peer_id = key.public().to_peer_id();
        let metrics = Metrics::new();
        let store = Arc::new(Store::open_cached(
            &cfg.data_dir.join(DB_FILE),
            cfg.cache_bytes()?,
        )?);
        let (writer, writer_thread) = Writer::spawn(
            store.clone(),
            WriterConfig {
                min_free: cfg.min_free_disk_bytes(),
                metrics: metrics.clone(),
            },
        );
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut services = JoinSet::new();

        // STUN first: the swarm announces the server's port.
        let stun_state = Arc::new(StunState::default());
        let binds = cfg.binds();
        let stun_sockets = bind_stun(&binds, cfg.stun_port).await?;
        let stun_port = stun_sockets[0]
            .0
            .local_addr()
            .map_or(cfg.stun_port, |a| a.port());
        let (stun_events, stun_events_rx) = mpsc::channel(256);
        let (stun_servers, stun_servers_rx) = watch::channel(Vec::new());
        let punchers = Arc::new(Punchers::new(
            cfg.punch_rate_limit,
            metrics.clone(),
            tasks.clone(),
            shutdown.clone(),
        ));
        // The swarm stops after the API, so requests in flight can still reach it.
        let swarm_stop = CancellationToken::new();
        let remembered = if cfg.redial() {
            peers::remembered(&store)
        } else {
            // Without redial only peers met in this run (through the bootstrap
            // list) are dialed; the remembered ones stay for a later start.
            Vec::new()
        };
        let p2p = p2p::start(
            key.clone(),
            cfg.clone(),
            remembered,
            metrics.clone(),
            swarm_stop.clone(),
        )
        .await?;
        let network = p2p.network.clone();
        let listen: Vec<Multiaddr> = p2p
            .listen
            .iter()
            .map(|a| a.clone().with(Protocol::P2p(peer_id)))
            .collect();
        let table = Arc::new(PeerTable::default());

        let sockets = ApiSockets::bind(&cfg, &binds)?;
        let (http, ws, udp) = sockets.addrs();
        let limiter = Arc::new(RateLimiter::new(cfg.rates()));
        let slots = Slots {
            max: cfg.max_connections,
            per_source: cfg.max_connections_per_ip,
            limit_loopback: cfg.limit_loopback,
        };
        let connections = ConnectionCounter::new(slots, metrics.clone());
        let reach = Arc::new(Reachability::default());
        let sessions = Arc::new(Sessions::new(
            key.clone(),
            store.clone(),
            writer.clone(),
            table.clone(),
        ));
        let (s, token) = (sessions.clone(), shutdown.clone());
        services.spawn(async move {
            s.observe(token).await;
            Ok(())
        });
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
            max_answer_bytes: cfg.max_answer_bytes,
            network: network.clone(),
            peers: table.clone(),
            stun: stun_state.clone(),
            reach: reach.clone(),
            sessions,
            metrics: metrics.clone(),
        });
        let dispatcher = Dispatcher::new(ctx);
        let udp_api = UdpApi::new(dispatcher.clone(), cfg.udp_unvalidated_rate, tasks.clone());
        let ws_limits = WsLimits {
            max_message: cfg.max_body_bytes,
            in_flight: cfg.ws_max_in_flight,
            queue_bytes: cfg.ws_queue_bytes,
            send_timeout: cfg.write_timeout(),
        };
        let ws_router = api::ws::router(dispatcher.clone(), ws_limits, shutdown.clone());
        let http_router = http::router(
            dispatcher.clone(),
            cfg.max_body_bytes,
            Duration::from_secs(cfg.http_body_timeout_secs),
            &cfg.cors(),
        );
        let timeouts = Timeouts {
            header: Duration::from_secs(cfg.http_header_timeout_secs),
        };

        // The API on its own ports.
        let listeners = (sockets
            .ws
            .into_iter()
            .map(|l| ("websocket api", l, ws_router.clone())))
        .chain(
            sockets
                .http
                .into_iter()
                .map(|l| ("http api", l, http_router.clone())),
        );
        for (what, listener, router) in listeners {
            let listener = LimitedListener::new(
                listener,
                connections.clone(),
                if what == "http api" { "http" } else { "ws" },
                cfg.write_timeout(),
            );
            let (stop, tasks) = (shutdown.clone(), tasks.clone());
            serve(&mut services, what, async move {
                api::serve::serve(listener, router, timeouts, stop, tasks).await
            });
        }
        for sock in sockets.udp {
            let (token, api) = (shutdown.clone(), udp_api.clone());
            serve(&mut services, "udp api", async move {
                api.serve(Arc::new(sock), None, None, token).await;
                Ok(())
            });
        }

        // STUN: the server, and a client pair per peer that also serves the API.
        let server = Arc::new(stun::server::Server::new(
            stun_state.clone(),
            cfg.stun_rate_limit,
            cfg.limit_loopback,
            metrics.clone(),
        ));
        for (stun_udp, stun_tcp) in stun_sockets {
            let (token, srv) = (shutdown.clone(), server.clone());
            serve(&mut services, "stun udp", async move {
                stun::server::serve_udp(stun_udp, srv, token).await
            });
            let (token, srv, t) = (shutdown.clone(), server.clone(), tasks.clone());
            serve(&mut services, "stun tcp", async move {
                stun::server::serve_tcp(stun_tcp, srv, token, t).await
            });
        }
        // UPnP IGD maps IPv4 ports: from the IPv4 address bound, if any.
        let mapping_from = binds.towards(std::net::Ipv4Addr::UNSPECIFIED.into());
        if !cfg.no_port_mapping
            && let Some(bind) = mapping_from
        {
            let mapper = PortMapper {
                state: stun_state.clone(),
                metrics: metrics.clone(),
                bind,
                gateway: cfg.port_mapping_gateway().ok().flatten(),
                udp: udp.port(),
                ws: ws.port(),
            };
            // A task, not a service: it ends at once where there is no gateway.
            tasks.spawn(mapper.run(shutdown.clone()));
        }
        let (stun_link_state, stun_punchers) = (stun_state.clone(), punchers.clone());
        let stun_clients = ClientCtx {
            state: stun_state,
            key: key.clone(),
            binds: binds.clone(),
            keepalive: cfg.stun_keepalive(),
            servers: stun_servers_rx,
            punchers,
            tasks: tasks.clone(),
            api: Arc::new(DynamicPorts {
                connections,
                udp: udp_api,
                ws: ws_router,
                timeouts,
                write_stall: cfg.write_timeout(),
                stop: shutdown.clone(),
                tasks: tasks.clone(),
            }),
        };
        let token = shutdown.clone();
        serve(&mut services, "stun clients", async move {
            stun::pairs::run(stun_clients, stun_servers, stun_events_rx, token).await;
            Ok(())
        });

        // Anti-entropy, and the node's answers to the swarm's events.
        let (sync_tx, sync_rx) = tokio::sync::mpsc::unbounded_channel();
        let scheduler = Scheduler {
            network: network.clone(),
            store: store.clone(),
            writer: writer.clone(),
            metrics: metrics.clone(),
            interval: cfg.sync_interval(),
            timeout: cfg.sync_timeout(),
        };
        let token = shutdown.clone();
        services.spawn(async move {
            schedule::run(scheduler, sync_rx, token).await;
            Ok(())
        });
        let (relays_tx, relays_rx) = mpsc::channel(64);
        let peers = Peers {
            network: network.clone(),
            table,
            store: store.clone(),
            writer: writer.clone(),
            key,
            stun: StunLink {
                state: stun_link_state,
                port: stun_port,
                events: stun_events,
                punchers: stun_punchers,
            },
            sync: sync_tx,
            relays: relays_tx,
            listen: p2p.listen.clone(),
            max_known_peers: cfg.max_known_peers,
            linger: std::time::Duration::from_millis(cfg.gossip_linger_ms),
            metrics: metrics.clone(),
            tasks: tasks.clone(),
            reach: reach.clone(),
            announces: Default::default(),
        };
        let (events, token) = (p2p.events, shutdown.clone());
        services.spawn(async move {
            peers::run(peers, events, token).await;
            Ok(())
        });
        // The requests peers relay to us.
        let (d, t, stop) = (dispatcher, tasks.clone(), shutdown.clone());
        services.spawn(serve_relays(relays_rx, d, reach, t, stop));

        tracing::info!(%peer_id, %http, data_dir = %cfg.data_dir.display(), "node started");
        Ok(Node {
            peer_id,
            http,
            ws,
            udp,
            listen,
            shutdown,
            services,
            tasks,
            swarm: p2p.tasks,
            swarm_stop,
            writer_thread,
            network,
            store,
            writer,
            metrics,
        })
    }

    /// The swarm handle, store and writer, for programs that embed a node and drive
    /// parts of it themselves (e.g. a benchmark calling [`crate::sync::reconcile`]).
    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Fire this to stop the node.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serve until shut down (or until a listener or the store fails), then stop
    /// cleanly, and return once every task has ended and the store is closed.
    pub async fn run(mut self) -> Result<(), NodeError> {
        let fatal = self.writer.fatal();
        let mut result = tokio::select! {
            _ = self.shutdown.cancelled() => Ok(()),
            _ = fatal.cancelled() => Err(NodeError::StoreFailed(
                self.writer.unavailable().unwrap_or_else(|| "see the log".into()),
            )),
            Some(done) = self.services.join_next() => match done {
                Ok(Err(e)) => Err(e),
                _ => Ok(()),
            },
        };
        // Any of these means the node is going down: take the rest with it.
        self.shutdown.cancel();
        while let Some(done) = self.services.join_next().await {
            if let Ok(Err(e)) = done
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        self.tasks.close();
        self.tasks.wait().await;
        self.swarm_stop.cancel();
        self.swarm.wait().await;
        // The swarm and the API held the last writer handles; the writer now drains
        // and exits, and the store closes with the last of its handles.
        drop(self.network);
        drop(self.writer);
        let writer = self.writer_thread;
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        tracing::info!("node stopped");
        result
    }
}

/// Run a service of the node whose I/O error stops the node, named in the error.
fn serve(
    services: &mut JoinSet<Result<(), NodeError>>,
    what: &'static str,
    task: impl std::future::Future<Output = std::io::Result<()>> + Send + 'static,
) {
    services.spawn(async move {
        task.await
            .map_err(|source| NodeError::Serve { what, source })
    });
}

/// The client API's own listeners (HTTP, WebSocket, UDP).
struct ApiSockets {
    http: Vec<TcpListener>,
    ws: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
}

impl ApiSockets {
    /// One of each on every bound address, each kind on one port number (with port
    /// 0, the one the first address got; taken on another address, all start over).
    fn bind(cfg: &Config, binds: &Binds) -> Result<ApiSockets, NodeError> {
        let any = cfg.http_port == 0 || cfg.ws_port == 0 || cfg.udp_port == 0;
        for _ in 0..20 {
            match Self::bind_once(cfg, binds) {
                Err(NodeError::Bind { source, .. })
                    if any && source.kind() == std::io::ErrorKind::AddrInUse => {}
                done => return done,
            }
        }
        Self::bind_once(cfg, binds)
    }

    fn bind_once(cfg: &Config, binds: &Binds) -> Result<ApiSockets, NodeError> {
        let err = |what, addr| move |source| NodeError::Bind { what, addr, source };
        let v6_only = binds.v6_only();
        let mut s = ApiSockets {
            http: Vec::new(),
            ws: Vec::new(),
            udp: Vec::new(),
        };
        let (mut http, mut ws, mut udp) = (cfg.http_port, cfg.ws_port, cfg.udp_port);
        for ip in binds.all() {
            let at = |port| SocketAddr::new(*ip, port);
            let l = tcp_listen(at(http), v6_only).map_err(err("http", at(http)))?;
            http = l.local_addr().map_or(http, |a| a.port());
            s.http.push(l);
            let l = tcp_listen(at(ws), v6_only).map_err(err("websocket", at(ws)))?;
            ws = l.local_addr().map_or(ws, |a| a.port());
            s.ws.push(l);
            let u = udp_bind(at(udp), v6_only).map_err(err("udp api", at(udp)))?;
            udp = u.local_addr().map_or(udp, |a| a.port());
            s.udp.push(u);
        }
        Ok(s)
    }

    /// The first address's sockets.
    fn addrs(&self) -> (SocketAddr, SocketAddr, SocketAddr) {
        let bound = "bound socket has an address";
        (
            self.http[0].local_addr().expect(bound),
            self.ws[0].local_addr().expect(bound),
            self.udp[0].local_addr().expect(bound),
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
async fn bind_stun(binds: &Binds, wanted: u16) -> Result<Vec<(UdpSocket, TcpListener)>, NodeError> {
    let v6_only = binds.v6_only();
    // With port 0, a port free for UDP on the first address may be taken for TCP
    // or on another address: then try another.
    let retry = |e: &std::io::Error| wanted == 0 && e.kind() == std::io::ErrorKind::AddrInUse;
    'again: for _ in 0..20 {
        let mut out: Vec<(UdpSocket, TcpListener)> = Vec::new();
        let mut port = wanted;
        for ip in binds.all() {
            let at = SocketAddr::new(*ip, port);
            let bind_err = |what, source| NodeError::Bind {
                what,
                addr: at,
                source,
            };
            let udp = match udp_bind(at, v6_only) {
                Ok(u) => u,
                Err(e) if retry(&e) => continue 'again,
                Err(e) => return Err(bind_err("stun udp", e)),
            };
            let actual = udp.local_addr().map_err(|e| bind_err("stun udp", e))?;
            match tcp_listen(actual, v6_only) {
                Ok(tcp) => out.push((udp, tcp)),
                Err(e) if retry(&e) => continue 'again,
                Err(e) => return Err(bind_err("stun tcp", e)),
            }
            port = actual.port();
        }
        return Ok(out);
    }
    Err(NodeError::Bind {
        what: "stun",
        addr: SocketAddr::new(binds.all()[0], wanted),
        source: std::io::Error::other("no port free for both UDP and TCP"),
    })
}

/// Answer JSON-RPC requests that peers relay to us, until `stop` (or the swarm
/// stops). Each runs as a task of `tasks`.
async fn serve_relays(
    mut relays: mpsc::Receiver<InboundRelay>,
    dispatcher: Dispatcher,
    reach: Arc<Reachability>,
    tasks: TaskTracker,
    stop: CancellationToken,
) -> Result<(), NodeError> {
    loop {
        let r = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = relays.recv() => match r { Some(r) => r, None => return Ok(()) },
        };
        let dispatcher = dispatcher.clone();
        reach.relay(ReachRole::Target, r.from.to_string(), None, &r.request);
        tasks.spawn(async move {
            tracing::debug!(from = %r.from, "relayed request");
            let metrics = dispatcher.context().metrics.clone();
            let answer = match dispatcher
                .handle(Origin::Relayed { peer: r.from }, &r.request)
                .await
            {
                Answer::Reply(b) | Answer::Limited(b) => b,
                Answer::Nothing | Answer::NeedsCookie { .. } => Vec::new(),
            };
            metrics.relay("served");
            let _ = r.reply.send(answer);
        });
    }
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
