//! Asking a STUN server for our mapping from a socket we keep using afterwards
//! (`cirrus stun`, and a client about to punch through NAT). No Cirrus attributes.

use std::net::SocketAddr;
use std::time::Duration;

use cirrus_proto::stun::{self, StunError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::{SOFTWARE, transaction_id};

/// Why a Binding exchange got no mapping.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the connection closed before the answer")]
    Closed,
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Stun(#[from] StunError),
}

fn request() -> ([u8; 12], Vec<u8>) {
    let txid = transaction_id();
    (txid, stun::binding_request(txid, SOFTWARE, None))
}

/// Binding over UDP, retransmitting with doubling intervals (RFC 8489 §6.2.1) until
/// `timeout`. Datagrams from elsewhere are skipped.
pub async fn binding_udp(
    sock: &UdpSocket,
    server: SocketAddr,
    timeout: Duration,
) -> Result<SocketAddr, ProbeError> {
    let (txid, req) = request();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut rto = Duration::from_millis(500);
    let mut buf = [0u8; stun::MAX_MESSAGE];
    while tokio::time::Instant::now() < deadline {
        let _ = sock.send_to(&req, server).await;
        let until = (tokio::time::Instant::now() + rto).min(deadline);
        while let Ok(Ok((n, from))) = tokio::time::timeout_at(until, sock.recv_from(&mut buf)).await
        {
            if from != server || !stun::is_stun(&buf[..n]) {
                continue;
            }
            match stun::parse_binding_response(&buf[..n], &txid) {
                Err(StunError::WrongTransaction) => continue,
                other => return Ok(other?),
            }
        }
        rto *= 2;
    }
    Err(ProbeError::Timeout(timeout))
}

/// Binding over an open TCP connection.
pub async fn binding_tcp(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<SocketAddr, ProbeError> {
    let (txid, req) = request();
    exchange_tcp(stream, &txid, &req, timeout).await
}

/// Send the Binding request `req` (transaction `txid`) on an open TCP connection and
/// read its response, within `timeout`. Shared with the node's own STUN clients,
/// whose requests are signed.
pub(crate) async fn exchange_tcp(
    stream: &mut TcpStream,
    txid: &[u8; 12],
    req: &[u8],
    timeout: Duration,
) -> Result<SocketAddr, ProbeError> {
    tokio::time::timeout(timeout, async {
        stream.write_all(req).await?;
        let mut buf = Vec::with_capacity(256);
        loop {
            if let Some(len) = stun::frame_len(&buf)?
                && buf.len() >= len
            {
                return Ok(stun::parse_binding_response(&buf[..len], txid)?);
            }
            let mut chunk = [0u8; 512];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(ProbeError::Closed);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .map_err(|_| ProbeError::Timeout(timeout))?
}
