//! HTTP transport: `POST /` with a JSON-RPC request or batch, answered by the
//! dispatcher. Bodies over the limit get HTTP 413 with a JSON-RPC error; a message of
//! notifications only gets 204.

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::ConnectInfo;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cirrus_proto::jsonrpc::{ErrorObject, Response as RpcResponse, TOO_LARGE};

use super::limits::{ClientAddr, LimitedListener};
use tokio_util::sync::CancellationToken;

use super::Dispatcher;

#[derive(Clone)]
struct HttpState {
    dispatcher: Dispatcher,
    max_body: usize,
}

pub fn router(dispatcher: Dispatcher, max_body: usize) -> Router {
    Router::new().route("/", post(rpc)).with_state(HttpState {
        dispatcher,
        max_body,
    })
}

pub async fn serve(
    listener: LimitedListener,
    dispatcher: Dispatcher,
    max_body: usize,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(dispatcher, max_body).into_make_service_with_connect_info::<ClientAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn rpc(
    State(st): State<HttpState>,
    ConnectInfo(ClientAddr(from)): ConnectInfo<ClientAddr>,
    body: Body,
) -> Response {
    let bytes = match to_bytes(body, st.max_body).await {
        Ok(b) => b,
        Err(_) => {
            let e = ErrorObject::new(
                TOO_LARGE,
                format!(
                    "request body is over the limit of {} bytes (or was cut off)",
                    st.max_body
                ),
            );
            let body = serde_json::to_vec(&RpcResponse::err(serde_json::Value::Null, e))
                .expect("serializes");
            return (StatusCode::PAYLOAD_TOO_LARGE, json(body)).into_response();
        }
    };
    match st.dispatcher.handle_from(from.ip(), &bytes).await {
        Ok(Some(out)) => (StatusCode::OK, json(out)).into_response(),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(limited) => (StatusCode::TOO_MANY_REQUESTS, json(limited)).into_response(),
    }
}

fn json(body: Vec<u8>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], body)
}
