//! Calling a node's JSON-RPC API, for the CLI and for other Rust programs.
//!
//! [`Client::connect`] takes a node URL: `http://HOST:PORT`, `ws://HOST:PORT` or
//! `udp://HOST:PORT`, and every call works the same over each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::net::SocketAddr;

use cirrus_proto::jsonrpc::{self, ErrorObject, Response};
use cirrus_proto::udp::Reassembler;
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
                let want: Value = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("id").cloned())
                    .unwrap_or(Value::Null);
                ws.send(WsMessage::Text(
                    String::from_utf8_lossy(&body).into_owned().into(),
                ))
                .await
                .map_err(|e| self.io(e))?;
                let answer = tokio::time::timeout(self.timeout, async {
                    while let Some(m) = ws.next().await {
                        if let WsMessage::Text(t) = m.map_err(|e| self.io(e))? {
                            let v: Value =
                                serde_json::from_str(&t).map_err(|e| self.bad(e.to_string()))?;
                            // Skip notifications; a batch answer is an array.
                            if v.is_array() || v.get("id") == Some(&want) {
                                return Ok(t.as_bytes().to_vec());
                            }
                        }
                    }
                    Err(self.bad("connection closed before the answer".into()))
                })
                .await
                .map_err(|_| self.timed_out())?;
                let _ = ws.close(None).await;
                answer
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

    /// UDP: pad small requests (so the answer fits the anti-amplification budget),
    /// retransmit with doubling intervals, reassemble fragments, and repeat once with
    /// the cookie if the node asks for one.
    async fn udp_exchange(&self, addr: SocketAddr, body: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        let local: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .expect("literal");
        let sock = udp_socket(local).map_err(|e| self.io(e))?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut body = body;
        let mut sent_cookie = None;
        for _ in 0..2 {
            let mut padded = body.clone();
            if padded.len() < UDP_MIN_REQUEST {
                padded.resize(UDP_MIN_REQUEST, b' ');
            }
            let answer = self
                .udp_once(&sock, addr, &padded, sent_cookie.as_ref(), deadline)
                .await?;
            match cookie_of(&answer) {
                Some(c) => {
                    sent_cookie = Some(c.clone());
                    let mut v: Value =
                        serde_json::from_slice(&body).map_err(|e| self.bad(e.to_string()))?;
                    match &mut v {
                        Value::Object(o) => {
                            o.insert("cookie".into(), c);
                        }
                        Value::Array(a) => {
                            if let Some(Value::Object(o)) = a.first_mut() {
                                o.insert("cookie".into(), c);
                            }
                        }
                        _ => return Ok(answer),
                    }
                    body = serde_json::to_vec(&v).expect("serializes");
                }
                None => return Ok(answer),
            }
        }
        Err(self.bad("the node kept asking for a cookie".into()))
    }

    async fn udp_once(
        &self,
        sock: &UdpSocket,
        addr: SocketAddr,
        req: &[u8],
        sent_cookie: Option<&Value>,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<u8>, ClientError> {
        let mut rto = Duration::from_millis(250);
        let mut buf = vec![0u8; 65_536];
        loop {
            // A fresh reassembler per try: fragments of an earlier answer may be lost.
            let mut parts = Reassembler::default();
            sock.send_to(req, addr).await.map_err(|e| self.io(e))?;
            let until = (tokio::time::Instant::now() + rto).min(deadline);
            while let Ok(r) = tokio::time::timeout_at(until, sock.recv_from(&mut buf)).await {
                let (n, from) = r.map_err(|e| self.io(e))?;
                if from != addr || cirrus_proto::stun::is_stun(&buf[..n]) {
                    continue;
                }
                if let Some(msg) = parts.push(&buf[..n]) {
                    // Asking for the very cookie this request carries: a late answer
                    // to a retransmitted copy sent before we had the cookie. (A node
                    // that no longer takes our cookie sends a new one.)
                    if sent_cookie.is_some() && cookie_of(&msg).as_ref() == sent_cookie {
                        continue;
                    }
                    return Ok(msg);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.timed_out());
            }
            rto *= 2;
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

/// The cookie a -32010 "cookie required" answer asks for.
fn cookie_of(answer: &[u8]) -> Option<Value> {
    let v: Value = serde_json::from_slice(answer).ok()?;
    (v["error"]["code"] == jsonrpc::COOKIE_REQUIRED).then(|| v["error"]["data"]["cookie"].clone())
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

/// Requests are padded with JSON whitespace to this size: a node answers an unknown
/// source with at most three times what it got, and the cookie error must fit.
const UDP_MIN_REQUEST: usize = 64;

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
