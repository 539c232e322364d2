//! `cirrus stun HOST:PORT [--tcp]`: one Binding request to any RFC 8489 server,
//! print the mapped address.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use cirrus_node::stun::probe;
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
    let mapped = if a.tcp {
        let mut s = tokio::time::timeout(timeout, TcpStream::connect(server))
            .await
            .with_context(|| format!("cannot connect to {server} within {} s", a.timeout))?
            .with_context(|| format!("cannot connect to {server}"))?;
        probe::binding_tcp(&mut s, timeout).await
    } else {
        let local = if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let sock = UdpSocket::bind(local).await?;
        probe::binding_udp(&sock, server, timeout).await
    }
    .with_context(|| format!("STUN Binding to {server}"))?;
    println!("{mapped}");
    Ok(ExitCode::SUCCESS)
}
