//! The STUN server on the STUN port, UDP and TCP. It answers any Binding request
//! (stock clients included); a request that proves a peer id is also remembered
//! in [`StunState`]. Anything that is not a STUN request gets no answer; a TCP
//! stream that is not STUN is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cirrus_proto::stun;
use libp2p::PeerId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{SOFTWARE, StunState, Transport};

/// TCP connections served at once; more wait in the kernel's backlog.
const MAX_TCP: usize = 256;
/// A TCP connection that sends nothing for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(60);

fn answer(state: &StunState, bytes: &[u8], from: SocketAddr, t: Transport) -> Option<Vec<u8>> {
    let a = stun::handle_binding(bytes, from, SOFTWARE);
    if let Some(p) = a.peer
        && let Ok(peer) = PeerId::from_bytes(&p.peer_id)
    {
        state.saw(peer, t, p.observed);
    }
    a.reply
}

pub async fn serve_udp(
    sock: UdpSocket,
    state: Arc<StunState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; stun::MAX_MESSAGE + 1];
    loop {
        let (n, from) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // ICMP errors from earlier sends surface here on some systems; not fatal.
                Err(e) => { tracing::debug!(error = %e, "STUN UDP receive error"); continue; }
            },
        };
        if n > stun::MAX_MESSAGE {
            continue;
        }
        if let Some(reply) = answer(&state, &buf[..n], from, Transport::Udp) {
            let _ = sock.send_to(&reply, from).await;
        }
    }
}

pub async fn serve_tcp(
    listener: TcpListener,
    state: Arc<StunState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_TCP));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            p = slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
        };
        let (stream, from) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => { tracing::debug!(error = %e, "STUN TCP accept error"); continue; }
            },
        };
        let (state, shutdown) = (state.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = serve_stream(stream, from, &state) => {}
            }
            drop(permit);
        });
    }
}

async fn serve_stream(mut stream: TcpStream, from: SocketAddr, state: &StunState) {
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    loop {
        let len = match stun::frame_len(&buf) {
            Ok(Some(len)) if buf.len() >= len => len,
            Ok(_) => {
                let mut chunk = [0u8; 1024];
                match tokio::time::timeout(TCP_IDLE, stream.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => {
                        buf.extend_from_slice(&chunk[..n]);
                        continue;
                    }
                    _ => return, // closed, error or idle
                }
            }
            Err(_) => return, // not STUN: close
        };
        let frame: Vec<u8> = buf.drain(..len).collect();
        if let Some(reply) = answer(state, &frame, from, Transport::Tcp)
            && stream.write_all(&reply).await.is_err()
        {
            return;
        }
    }
}
