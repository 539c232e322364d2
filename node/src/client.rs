//! Calling a node's JSON-RPC API, for the CLI and for other Rust programs.
//!
//! [`Client::connect`] takes a node URL. `http://` is served here; the WebSocket and
//! UDP transports (`ws://`, `udp://`) are refused with a clear error until the node
//! serves them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cirrus_proto::jsonrpc::{self, ErrorObject, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad node URL {0:?}: expected http://HOST:PORT")]
    Url(String),
    #[error("{url}: transport {scheme}:// is not served by this version; use http://")]
    Unsupported { url: String, scheme: String },
    #[error("{url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    #[error("{url}: not a JSON-RPC response: {why}")]
    BadResponse { url: String, why: String },
    #[error("error {}: {}", .0.code, .0.message)]
    Rpc(ErrorObject),
}

pub struct Client {
    url: String,
    http: reqwest::Client,
    next_id: AtomicU64,
}

impl Client {
    pub fn connect(url: &str, timeout: Duration) -> Result<Client, ClientError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| ClientError::Url(url.into()))?;
        if rest.is_empty() {
            return Err(ClientError::Url(url.into()));
        }
        match scheme {
            "http" => {}
            "ws" | "udp" | "https" | "wss" => {
                return Err(ClientError::Unsupported {
                    url: url.into(),
                    scheme: scheme.into(),
                });
            }
            _ => return Err(ClientError::Url(url.into())),
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|source| ClientError::Transport {
                url: url.into(),
                source,
            })?;
        Ok(Client {
            url: url.to_string(),
            http,
            next_id: AtomicU64::new(1),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Call one method; a JSON-RPC error comes back as [`ClientError::Rpc`].
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(&jsonrpc::request(id, method, params)).expect("serializes");
        let bytes = self.post(body).await?;
        let resp: Response =
            serde_json::from_slice(&bytes).map_err(|e| ClientError::BadResponse {
                url: self.url.clone(),
                why: e.to_string(),
            })?;
        match (resp.result, resp.error) {
            (_, Some(e)) => Err(ClientError::Rpc(e)),
            (Some(v), None) => Ok(v),
            (None, None) => Err(ClientError::BadResponse {
                url: self.url.clone(),
                why: "neither result nor error".into(),
            }),
        }
    }

    /// Call and decode the result into `T`.
    pub async fn call_as<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, ClientError> {
        let v = self.call(method, params).await?;
        serde_json::from_value(v).map_err(|e| ClientError::BadResponse {
            url: self.url.clone(),
            why: e.to_string(),
        })
    }

    /// Send a raw body (a request or a batch) and return the raw response body.
    pub async fn post(&self, body: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        let transport = |source| ClientError::Transport {
            url: self.url.clone(),
            source,
        };
        let resp = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        Ok(resp.bytes().await.map_err(transport)?.to_vec())
    }
}
