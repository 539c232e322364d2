//! Calling a node's JSON-RPC API, for the CLI and for other Rust programs.
//!
//! [`Client::connect`] takes a node URL: `http://HOST:PORT`, `ws://HOST:PORT` or
//! `udp://HOST:PORT`, and every call works the same over each.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cirrus_proto::jsonrpc::{self, ErrorObject, Response};
use cirrus_proto::udp::{CallError, Progress, Retransmit, UdpCall};
use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad node URL {0:?}: expected http://, ws:// or udp://HOST:PORT")]
    Url(String),
    #[error(
        "{url}: {scheme} is not supported here (use http://, ws:// or udp://; subscriptions need ws://)"
    )]
    Unsupported { url: String, scheme: String },
    #[error("{url}: {why}")]
    Transport { url: String, why: String },
    #[error("{url}: cannot send this request: {why}")]
    Request { url: String, why: String },
    #[error("{url}: not a JSON-RPC response: {why}")]
    BadResponse { url: String, why: String },
    #[error("error {}: {}", .0.code, .0.message)]
    Rpc(ErrorObject),
}

pub struct Client {
    url: String,
    transport: Transport,
    timeout: Duration,
    next_id: AtomicU64,
}

enum Transport {
    Http(reqwest::Client),
    Ws,
    Udp(SocketAddr),
}

impl Client {
    pub fn connect(url: &str, timeout: Duration) -> Result<Client, ClientError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| ClientError::Url(url.into()))?;
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return Err(ClientError::Url(url.into()));
        }
        let transport = match scheme {
            "http" => Transport::Http(
                reqwest::Client::builder()
                    .timeout(timeout)
                    .build()
                    .map_err(|e| ClientError::Transport {
                        url: url.into(),
                        why: e.to_string(),
                    })?,
            ),
            "ws" => Transport::Ws,
            "udp" => {
                let addr = std::net::ToSocketAddrs::to_socket_addrs(rest)
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| ClientError::Url(url.into()))?;
                Transport::Udp(addr)
            }
            "https" | "wss" => {
                return Err(ClientError::Unsupported {
                    url: url.into(),
                    scheme: scheme.into(),
                });
            }
            _ => return Err(ClientError::Url(url.into())),
        };
        Ok(Client {
            url: url.to_string(),
            transport,
            timeout,
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
        let resp: Response = serde_json::from_slice(&bytes).map_err(|e| self.bad(e.to_string()))?;
        match (resp.result, resp.error) {
            (_, Some(e)) => Err(ClientError::Rpc(e)),
            (Some(v), None) => Ok(v),
            (None, None) => Err(self.bad("neither result nor error".into())),
        }
    }

    /// Call and decode the result into `T`.
    pub async fn call_as<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, ClientError> {
        let v = self.call(method, params).await?;
        serde_json::from_value(v).map_err(|e| self.bad(e.to_string()))
    }

    /// Send one message (a request or a batch) and return the raw answer.
    pub async fn post(&self, body: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        match &self.transport {
            Transport::Http(http) => {
                let transport = |e: reqwest::Error| ClientError::Transport {
                    url: self.url.clone(),
                    why: e.to_string(),
                };
                let resp = http
                    .post(&self.url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(transport)?;
                Ok(resp.bytes().await.map_err(transport)?.to_vec())
            }
            Transport::Ws => {
                let mut ws = self.ws_connect().await?;
                let answer = tokio::time::timeout(self.timeout, ws_ask(&mut ws, &body))
                    .await
                    .map_err(|_| self.timed_out())?;
                let _ = ws.close(None).await;
                answer.map_err(|e| match e {
                    WsAskError::Ws(e) => self.io(e),
                    other => self.bad(other.to_string()),
                })
            }
            Transport::Udp(addr) => self.udp_exchange(*addr, body).await,
        }
    }

    /// Subscribe over WebSocket and hand every notification to `each` until the
    /// connection ends.
    /// Subscribe over WebSocket; `subscribed` runs once the node has acknowledged
    /// the subscription, then `each` for every notification until the connection
    /// ends.
    pub async fn subscribe(
        &self,
        topics: &[String],
        subscribed: impl FnOnce(),
        mut each: impl FnMut(Value),
    ) -> Result<(), ClientError> {
        if !matches!(self.transport, Transport::Ws) {
            return Err(ClientError::Unsupported {
                url: self.url.clone(),
                scheme: "subscribe needs ws".into(),
            });
        }
        let mut ws = self.ws_connect().await?;
        let req = jsonrpc::request(0, "subscribe", serde_json::json!({ "topics": topics }));
        ws.send(WsMessage::Text(req.to_string().into()))
            .await
            .map_err(|e| self.io(e))?;
        let mut subscribed = Some(subscribed);
        while let Some(m) = ws.next().await {
            if let WsMessage::Text(t) = m.map_err(|e| self.io(e))? {
                let v: Value = serde_json::from_str(&t).map_err(|e| self.bad(e.to_string()))?;
                if let Some(e) = v.get("error") {
                    let e: ErrorObject =
                        serde_json::from_value(e.clone()).map_err(|e| self.bad(e.to_string()))?;
                    return Err(ClientError::Rpc(e));
                }
                if v.get("method").is_some() {
                    each(v);
                } else if v.get("id") == Some(&Value::from(0))
                    && v.get("result").is_some()
                    && let Some(f) = subscribed.take()
                {
                    f();
                }
            }
        }
        Ok(())
    }

    async fn ws_connect(
        &self,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        ClientError,
    > {
        let (ws, _) = tokio::time::timeout(
            self.timeout,
            tokio_tungstenite::connect_async(self.url.as_str()),
        )
        .await
        .map_err(|_| self.timed_out())?
        .map_err(|e| self.io(e))?;
        Ok(ws)
    }

    /// UDP: one [`UdpCall`] (padding, retransmission, fragments, the cookie retry)
    /// over a socket of our own.
    async fn udp_exchange(&self, addr: SocketAddr, body: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        let local: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .expect("literal");
        let sock = udp_socket(local).map_err(|e| self.io(e))?;
        let retransmit = Retransmit::Doubling(Duration::from_millis(250));
        let mut call = UdpCall::new(Instant::now(), body, self.timeout, retransmit)
            .map_err(|e| self.udp(e))?;
        let mut buf = vec![0u8; 65_536];
        loop {
            if let Some(d) = call.poll_transmit(Instant::now()) {
                sock.send_to(d, addr).await.map_err(|e| self.io(e))?;
            }
            let wake = tokio::time::Instant::from_std(call.poll_timeout());
            match tokio::time::timeout_at(wake, sock.recv_from(&mut buf)).await {
                Err(_) => call
                    .handle_timeout(Instant::now())
                    .map_err(|e| self.udp(e))?,
                Ok(r) => {
                    let (n, from) = r.map_err(|e| self.io(e))?;
                    if from != addr || cirrus_proto::stun::is_stun(&buf[..n]) {
                        continue;
                    }
                    let progress = call
                        .on_datagram(Instant::now(), &buf[..n])
                        .map_err(|e| self.udp(e))?;
                    if let Progress::Answer(msg) = progress {
                        return Ok(msg);
                    }
                }
            }
        }
    }

    fn udp(&self, e: CallError) -> ClientError {
        match e {
            CallError::TimedOut(_) => self.timed_out(),
            CallError::CookieLoop => self.bad(e.to_string()),
            CallError::TooLarge(_) | CallError::NotJson => ClientError::Request {
                url: self.url.clone(),
                why: e.to_string(),
            },
        }
    }

    fn bad(&self, why: String) -> ClientError {
        ClientError::BadResponse {
            url: self.url.clone(),
            why,
        }
    }
    fn io(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Transport {
            url: self.url.clone(),
            why: e.to_string(),
        }
    }
    fn timed_out(&self) -> ClientError {
        ClientError::Transport {
            url: self.url.clone(),
            why: format!("no answer within {:?}", self.timeout),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum WsAskError {
    #[error(transparent)]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("connection closed before the answer")]
    Closed,
}

/// Send one message (a request or a batch) on an open WebSocket and return its
/// answer: the message with the request's id, or an array for a batch. Notifications
/// in between are skipped.
pub(crate) async fn ws_ask<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    body: &[u8],
) -> Result<Vec<u8>, WsAskError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let want = cirrus_proto::udp::request_id(body);
    let text = String::from_utf8_lossy(body).into_owned();
    ws.send(WsMessage::Text(text.into())).await?;
    while let Some(m) = ws.next().await {
        if let WsMessage::Text(t) = m? {
            let v: Value = serde_json::from_str(&t)?;
            if v.is_array() || v.get("id") == Some(&want) {
                return Ok(t.as_bytes().to_vec());
            }
        }
    }
    Err(WsAskError::Closed)
}

/// A large answer comes as a burst of up to hundreds of fragments; with the default
/// receive buffer (about 200 KB on Linux, some 90 fragments) most of a
/// 1000-record `list` is dropped before the client reads it, on every try. So ask
/// for a large buffer (the kernel caps it at `net.core.rmem_max`).
const UDP_RECV_BUFFER: usize = 8 << 20;

fn udp_socket(local: SocketAddr) -> std::io::Result<UdpSocket> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(local),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort: a smaller buffer still works for smaller answers.
    let _ = sock.set_recv_buffer_size(UDP_RECV_BUFFER);
    sock.set_nonblocking(true)?;
    sock.bind(&local.into())?;
    UdpSocket::from_std(sock.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under load the first try is retransmitted, so the node answers two copies of
    /// the request without a cookie; the second of those answers may arrive after
    /// the client has sent the request again with the cookie. It is not the answer.
    #[tokio::test]
    async fn a_late_cookie_answer_to_an_earlier_copy_is_not_the_answer() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let cookie_err = br#"{"jsonrpc":"2.0","error":{"code":-32010,"message":"cookie required","data":{"cookie":"c0ffee"}},"id":1}"#;
        let node = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            let first: Value = serde_json::from_slice(&buf[..n]).unwrap();
            assert!(first.get("cookie").is_none(), "{first}");
            server.send_to(cookie_err, from).await.unwrap();
            // The client now sends the request with the cookie...
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            let second: Value = serde_json::from_slice(&buf[..n]).unwrap();
            assert_eq!(second["cookie"], "c0ffee", "{second}");
            // ...and the answer to a retransmitted copy of the first arrives late.
            server.send_to(cookie_err, from).await.unwrap();
            server
                .send_to(br#"{"jsonrpc":"2.0","result":"the answer","id":1}"#, from)
                .await
                .unwrap();
        });
        let client = Client::connect(&format!("udp://{addr}"), Duration::from_secs(5)).unwrap();
        let got = client.call("getdbhash", serde_json::json!({})).await;
        node.await.unwrap();
        assert_eq!(got.unwrap(), "the answer");
    }
}
