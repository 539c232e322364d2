//! HTTP transport: `POST /` with a JSON-RPC request or batch, answered by the
//! dispatcher; `GET /metrics` (Prometheus), `GET /health`; CORS for the public API
//! (SPEC "HTTP endpoints besides POST /").
//!
//! A body over the limit gets HTTP 413 with a JSON-RPC error; a message of
//! notifications only gets 204; a source over its rate gets 429. A body must arrive
//! within the body timeout (a client trickling bytes cannot hold a slot).

use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::ConnectInfo;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use super::error::ApiError;
use super::limits::ClientAddr;
use super::{Answer, ApiTransport, Dispatcher, Origin};
use crate::config::CorsOrigins;

#[derive(Clone)]
struct HttpState {
    dispatcher: Dispatcher,
    max_body: usize,
    body_timeout: Duration,
}

pub fn router(
    dispatcher: Dispatcher,
    max_body: usize,
    body_timeout: Duration,
    cors: &CorsOrigins,
) -> Router {
    // The API is public and holds no credentials (admin needs a token the page does
    // not have), so any origin may read it unless the operator says otherwise.
    let allow: AllowOrigin = match cors {
        CorsOrigins::Any => Any.into(),
        CorsOrigins::List(list) => AllowOrigin::list(
            list.iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        ),
    };
    let cors = CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::POST, Method::GET, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600));
    Router::new()
        .route("/", post(rpc).get(super::dashboard::page))
        .route("/dashboard.css", get(super::dashboard::css))
        .route("/dashboard.js", get(super::dashboard::js))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .layer(cors)
        .with_state(HttpState {
            dispatcher,
            max_body,
            body_timeout,
        })
}

async fn rpc(
    State(st): State<HttpState>,
    ConnectInfo(ClientAddr(from)): ConnectInfo<ClientAddr>,
    body: Body,
) -> Response {
    let read = tokio::time::timeout(st.body_timeout, to_bytes(body, st.max_body)).await;
    let bytes = match read {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            let body = ApiError::TooLarge(format!(
                "request body is over the limit of {} bytes (or was cut off)",
                st.max_body
            ))
            .response(serde_json::Value::Null);
            return (StatusCode::PAYLOAD_TOO_LARGE, json(body)).into_response();
        }
        Err(_) => return StatusCode::REQUEST_TIMEOUT.into_response(),
    };
    let origin = Origin::client(from.ip(), ApiTransport::Http);
    match st.dispatcher.handle(origin, &bytes).await {
        Answer::Reply(out) => (StatusCode::OK, json(out)).into_response(),
        Answer::Nothing | Answer::NeedsCookie { .. } => StatusCode::NO_CONTENT.into_response(),
        Answer::Limited(limited) => (StatusCode::TOO_MANY_REQUESTS, json(limited)).into_response(),
    }
}

/// Prometheus text format 0.0.4, or OpenMetrics when the scraper asks for it.
async fn metrics(State(st): State<HttpState>, headers: HeaderMap) -> Response {
    let ctx = st.dispatcher.context();
    ctx.refresh_gauges().await;
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if openmetrics {
        let ct = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        (
            [(header::CONTENT_TYPE, ct)],
            ctx.metrics.encode_openmetrics(),
        )
            .into_response()
    } else {
        let ct = "text/plain; version=0.0.4; charset=utf-8";
        ([(header::CONTENT_TYPE, ct)], ctx.metrics.encode_text()).into_response()
    }
}

/// 200 while the node serves reads and writes; 503 with the reason otherwise.
async fn health(State(st): State<HttpState>) -> Response {
    let h = st.dispatcher.context().health().await;
    let status = if h.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, json(serde_json::to_vec(&h).expect("serializes"))).into_response()
}

fn json(body: Vec<u8>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], body)
}
