//! `cirrus stun HOST:PORT [--tcp]`: one Binding request to any RFC 8489 server,
//! print the mapped address.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use cirrus_node::stun::SOFTWARE;
use cirrus_proto::stun::{self, StunError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket, lookup_host};

#[derive(clap::Args)]
pub struct StunArgs {
    /// Server, e.g. 127.0.0.1:3478 or stun.example.org:3478.
    server: String,
    /// Use TCP instead of UDP.
    #[arg(long)]
    tcp: bool,
    /// Seconds to wait in all.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

pub async fn stun(a: StunArgs) -> anyhow::Result<ExitCode> {
    let server = lookup_host(&a.server)
        .await
        .with_context(|| format!("cannot resolve {}", a.server))?
        .next()
        .with_context(|| format!("{} has no address", a.server))?;
    let timeout =
        Duration::try_from_secs_f64(a.timeout).context("--timeout must be a positive number")?;
    let mut txid = [0u8; 12];
    getrandom::fill(&mut txid).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let req = stun::binding_request(txid, SOFTWARE, None);
    let mapped = tokio::time::timeout(timeout, async {
        if a.tcp {
            over_tcp(server, &req, &txid).await
        } else {
            over_udp(server, &req, &txid).await
        }
    })
    .await
    .with_context(|| format!("no answer from {server} within {} s", a.timeout))??;
    println!("{mapped}");
    Ok(ExitCode::SUCCESS)
}

async fn over_udp(server: SocketAddr, req: &[u8], txid: &[u8; 12]) -> anyhow::Result<SocketAddr> {
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("literal");
    let sock = UdpSocket::bind(local).await?;
    let mut buf = [0u8; stun::MAX_MESSAGE];
    // Retransmit with doubling intervals (RFC 8489 §6.2.1) until the outer timeout.
    let mut rto = Duration::from_millis(500);
    loop {
        sock.send_to(req, server).await?;
        let until = tokio::time::Instant::now() + rto;
        while let Ok(r) = tokio::time::timeout_at(until, sock.recv_from(&mut buf)).await {
            let (n, from) = r?;
            if from != server {
                continue;
            }
            match stun::parse_binding_response(&buf[..n], txid) {
                Err(StunError::WrongTransaction | StunError::NotStun(_)) => continue,
                other => return Ok(other?),
            }
        }
        rto *= 2;
    }
}

async fn over_tcp(server: SocketAddr, req: &[u8], txid: &[u8; 12]) -> anyhow::Result<SocketAddr> {
    let mut s = TcpStream::connect(server)
        .await
        .with_context(|| format!("cannot connect to {server}"))?;
    s.write_all(req).await?;
    let mut buf = Vec::new();
    loop {
        if let Some(len) = stun::frame_len(&buf)?
            && buf.len() >= len
        {
            return Ok(stun::parse_binding_response(&buf[..len], txid)?);
        }
        let mut chunk = [0u8; 512];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("{server} closed the connection without an answer");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
