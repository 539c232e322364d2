//! Serving the HTTP and WebSocket routers over our own accept loop rather than
//! `axum::serve`, which has no timeouts at all: hyper's HTTP/1 with a header-read
//! timeout (in hyper 1 it runs from the moment a connection, or a keep-alive
//! connection between requests, waits for a request head, so it is also the idle
//! timeout), a slot per connection that an eviction can take back, the write-stall
//! timeout of [`LimitedStream`], and graceful shutdown. Connections made by a TCP
//! punch are served the same way ([`serve_connection`]).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::limits::{ClientAddr, LimitedListener, LimitedStream};

/// How long a connection may wait for a whole request head (first byte included).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub header: Duration,
}

/// Closes the connection it belongs to: its slot was taken for a newcomer.
#[derive(Clone)]
pub struct Evicted(pub CancellationToken);

/// Accept and serve until `stop`; connection tasks belong to `tracker`.
pub async fn serve(
    listener: LimitedListener,
    router: Router,
    timeouts: Timeouts,
    stop: CancellationToken,
    tracker: TaskTracker,
) -> std::io::Result<()> {
    loop {
        let (stream, remote) = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            c = listener.accept() => c,
        };
        tracker.spawn(serve_connection(
            stream,
            remote,
            router.clone(),
            timeouts,
            stop.clone(),
        ));
    }
}

/// Serve one admitted connection until it ends, is evicted, or `stop` (then the
/// request in flight finishes first, for a few seconds at most).
pub async fn serve_connection(
    stream: LimitedStream,
    remote: SocketAddr,
    router: Router,
    timeouts: Timeouts,
    stop: CancellationToken,
) {
    let evicted = stream.slot.evicted.clone();
    let service = TowerToHyperService::new(
        router
            .layer(axum::Extension(ConnectInfo(ClientAddr(remote))))
            .layer(axum::Extension(Evicted(evicted.clone()))),
    );
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    let conn = http
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%remote, error = %e, timeout = e.is_timeout(), "connection ended");
            }
            return;
        }
        _ = evicted.cancelled() => {
            tracing::debug!(%remote, "connection evicted to make room");
            return;
        }
        _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
}
