//! Asking a STUN server for our mapping from a socket we keep using afterwards
//! (`cirrus stun`, and a client about to punch through NAT). No Cirrus attributes.

use std::net::SocketAddr;
use std::time::Duration;

use cirrus_proto::stun::transaction::{Schedule, Transaction, TransactionError};
use cirrus_proto::stun::{self, StunError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

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

impl From<TransactionError> for ProbeError {
    fn from(e: TransactionError) -> ProbeError {
        match e {
            TransactionError::Timeout(d) => ProbeError::Timeout(d),
            TransactionError::Stun(e) => ProbeError::Stun(e),
        }
    }
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
    let now = std::time::Instant::now();
    let tx = Transaction::new(now, server, txid, req, Schedule::within(timeout));
    run_udp(sock, Inbox::Socket(sock), tx).await
}

/// Where a transaction's answers come from: the socket itself, or the channel the
/// API hands STUN datagrams to when it owns the socket's receive side.
pub(crate) enum Inbox<'a> {
    Socket(&'a UdpSocket),
    Channel(&'a mut mpsc::Receiver<(Vec<u8>, SocketAddr)>),
}

impl Inbox<'_> {
    /// The next datagram; `None` once the channel has closed. A socket error
    /// (an ICMP error reported on it) is a datagram that is nobody's answer.
    async fn next(&mut self) -> Option<(Vec<u8>, SocketAddr)> {
        match self {
            Inbox::Socket(sock) => {
                let mut buf = vec![0u8; stun::MAX_MESSAGE];
                match sock.recv_from(&mut buf).await {
                    Ok((n, from)) => {
                        buf.truncate(n);
                        Some((buf, crate::sockets::canonical(from)))
                    }
                    Err(_) => Some((Vec::new(), SocketAddr::from(([0, 0, 0, 0], 0)))),
                }
            }
            Inbox::Channel(rx) => rx.recv().await,
        }
    }
}

/// Drive the transaction `tx` on `sock` (the machine in `cirrus_proto::stun::
/// transaction` decides what to send when, and what answers it).
pub(crate) async fn run_udp(
    sock: &UdpSocket,
    mut inbox: Inbox<'_>,
    mut tx: Transaction,
) -> Result<SocketAddr, ProbeError> {
    loop {
        let now = std::time::Instant::now();
        tx.handle_timeout(now);
        while let Some(t) = tx.poll_transmit(now) {
            let _ = sock.send_to(t.contents, t.destination).await;
        }
        if let Some(out) = tx.poll_event() {
            return Ok(out?);
        }
        let Some(at) = tx.poll_timeout() else {
            return Err(ProbeError::Closed);
        };
        match tokio::time::timeout_at(at.into(), inbox.next()).await {
            Err(_) => {}
            Ok(None) => return Err(ProbeError::Closed),
            Ok(Some((bytes, from))) => {
                tx.handle_packet(std::time::Instant::now(), from, &bytes);
            }
        }
    }
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
