//! Port guessing: the target's half of the birthday search (docs/nat.md, "Port
//! guessing"). Where one NAT maps per destination, a plain punch cannot work: the
//! hard side's packets toward the easy side leave from ports nobody knows. So the
//! hard side opens [`Guess::SOCKETS`] sockets toward the easy side's one endpoint,
//! each with a mapping of its own, and the easy side sends [`Guess::PROBES`]
//! packets to random ports of the hard side's address; one lands on an open
//! mapping about 98% of the time.
//!
//! Every packet goes to the requester's own address (the rendezvous checked it), a
//! requester has one guess under way at a time and a few per minute, and the node
//! runs at most [`MAX_RUNNING`] at once, so a guess costs a bounded number of
//! packets and sockets whoever asks.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use cirrus_proto::api::Guess;
use cirrus_proto::punch::spray::ports_from;
use cirrus_proto::punch::{Kept, OPENING_TTL, Spray};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::punch::{Punchers, UdpPort, lock};
use super::transaction_id;

/// Guesses sending at once on this node.
pub const MAX_RUNNING: usize = 4;
/// Sockets opened for guessing that may be open at once on this node: three
/// guesses' worth (a requester's second guess may come while the first one's
/// sockets still wait, and used sockets stay), well under the 1,024 descriptors a
/// process gets by default.
pub const MAX_SOCKETS: usize = 3 * Guess::SOCKETS;
#[derive(Debug, thiserror::Error)]
pub enum GuessError {
    #[error("a guess toward this address is under way")]
    Running,
    #[error("too many guesses under way")]
    Busy,
    #[error("too many sockets open for guessing")]
    NoRoom,
    #[error("too many guesses from this address; try again later")]
    Throttled,
    #[error("no STUN client socket on local port {0}")]
    NoSocket(u16),
    #[error("no STUN client UDP socket to guess from")]
    NoSockets,
}

/// Holds a requester's place among the guesses under way.
struct Running {
    punchers: Arc<Punchers>,
    ip: IpAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        lock(&self.punchers.guessing).retain(|ip| *ip != self.ip);
    }
}

impl Punchers {
    /// Start our half of a guess toward `endpoint` (the requester's mapping). For
    /// [`Guess::Open`], the sockets are open and have sent their first packet when
    /// this returns, so the requester may start probing at once.
    pub async fn guess(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        guess: Guess,
    ) -> Result<(), GuessError> {
        let result = self.start_guess(endpoint, guess).await;
        let outcome = if result.is_ok() { "started" } else { "refused" };
        self.metrics.punch("guess", outcome);
        result
    }

    async fn start_guess(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        guess: Guess,
    ) -> Result<(), GuessError> {
        let ip = endpoint.ip();
        let running = {
            let mut guessing = lock(&self.guessing);
            if guessing.contains(&ip) {
                return Err(GuessError::Running);
            }
            if guessing.len() >= MAX_RUNNING {
                return Err(GuessError::Busy);
            }
            if !self.guesses_per_ip.allow(ip, 1) {
                return Err(GuessError::Throttled);
            }
            guessing.push(ip);
            Running {
                punchers: self.clone(),
                ip,
            }
        };
        match guess {
            Guess::Probe { local_port } => self.probe(running, local_port),
            Guess::Open => self.open(running, endpoint).await,
        }
    }

    /// Room for `n` more guessed sockets, if [`MAX_SOCKETS`] allows.
    fn take_room(&self, n: usize) -> bool {
        let before = self.guess_sockets.fetch_add(n, Ordering::AcqRel);
        if before + n > MAX_SOCKETS {
            self.guess_sockets.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        self.metrics.guess_sockets_open.set((before + n) as i64);
        true
    }

    fn give_room(&self, n: usize) {
        let before = self.guess_sockets.fetch_sub(n, Ordering::AcqRel);
        self.metrics.guess_sockets_open.set((before - n) as i64);
    }

    /// Send [`Guess::PROBES`] indications to random ports of the requester's
    /// address from our socket on `local_port` (the mapping its sockets aim at).
    fn probe(self: &Arc<Self>, running: Running, local_port: u16) -> Result<(), GuessError> {
        let sock = lock(&self.udp)
            .get(&local_port)
            .map(|u| u.sock.clone())
            .ok_or(GuessError::NoSocket(local_port))?;
        let me = self.clone();
        self.tasks.spawn(async move {
            let probe = cirrus_proto::stun::binding_indication(transaction_id());
            let sent = spray(&sock, running.ip, &probe).await;
            me.metrics.guess_probes.inc_by(sent as u64);
            // The requester gets one guess at a time: this one ends with its probes.
            drop(running);
        });
        Ok(())
    }

    /// Open [`Guess::SOCKETS`] sockets that serve the API, each sending one packet
    /// toward `endpoint`; those the requester reaches stay while it uses them.
    async fn open(
        self: &Arc<Self>,
        running: Running,
        endpoint: SocketAddr,
    ) -> Result<(), GuessError> {
        // Bound as a STUN client socket of the requester's family is.
        let (bind, api) = {
            let udp = lock(&self.udp);
            udp.values()
                .find_map(|UdpPort { sock, api }| {
                    let local = sock.local_addr().ok()?;
                    (local.is_ipv4() == endpoint.is_ipv4()).then(|| (local.ip(), api.clone()))
                })
                .ok_or(GuessError::NoSockets)?
        };
        if !self.take_room(Guess::SOCKETS) {
            return Err(GuessError::NoRoom);
        }
        let mut opened = Vec::with_capacity(Guess::SOCKETS);
        for _ in 0..Guess::SOCKETS {
            let Ok(sock) = UdpSocket::bind(SocketAddr::new(bind, 0)).await else {
                break;
            };
            // Past our NAT, not as far as the requester's, whose router might
            // answer and spoil the port pair.
            let ttl = sock.ttl().ok();
            let _ = sock.set_ttl(OPENING_TTL);
            let opener = cirrus_proto::stun::binding_indication(transaction_id());
            let _ = sock.send_to(&opener, endpoint).await;
            if let Some(ttl) = ttl {
                let _ = sock.set_ttl(ttl);
            }
            let (heard, stop) = (Arc::new(AtomicU64::new(0)), self.stop.child_token());
            api.serve_guessed_udp(Arc::new(sock), heard.clone(), stop.clone());
            opened.push((heard, stop));
        }
        self.give_room(Guess::SOCKETS - opened.len());
        // Our packets are out: the requester's next guess may start.
        drop(running);
        if opened.is_empty() {
            return Err(GuessError::NoSockets);
        }
        self.metrics.guess_sockets.inc_by(opened.len() as u64);
        self.tasks
            .spawn(keep_used(opened, self.clone(), self.stop.clone()));
        Ok(())
    }
}

/// Close the sockets as `cirrus_proto::punch::Kept` says: the ones nobody reached
/// within its wait, then each used one once it has heard nothing for a while.
async fn keep_used(
    sockets: Vec<(Arc<AtomicU64>, CancellationToken)>,
    punchers: Arc<Punchers>,
    shutdown: CancellationToken,
) {
    let mut kept = Kept::new(Instant::now(), sockets.len());
    let mut open = Opened {
        sockets: sockets
            .into_iter()
            .map(|(h, stop)| (h, Some(stop)))
            .collect(),
        punchers,
    };
    loop {
        while let Some(i) = kept.poll_close() {
            open.close(i);
        }
        let Some(at) = kept.poll_timeout() else {
            return;
        };
        let wait = tokio::time::sleep_until(at.into());
        // Each socket's token is a child of `shutdown`: they close with the node.
        if shutdown.run_until_cancelled(wait).await.is_none() {
            return;
        }
        let heard: Vec<u64> = open
            .sockets
            .iter()
            .map(|(h, _)| h.load(Ordering::Relaxed))
            .collect();
        kept.look(Instant::now(), &heard);
    }
}

/// The sockets of one guess, each with the count of datagrams it heard and, while
/// it is open, its stop token; closing one gives its room back, and whatever is
/// still open closes when this goes.
struct Opened {
    sockets: Vec<(Arc<AtomicU64>, Option<CancellationToken>)>,
    punchers: Arc<Punchers>,
}

impl Opened {
    fn close(&mut self, i: usize) {
        if let Some(stop) = self.sockets.get_mut(i).and_then(|(_, s)| s.take()) {
            stop.cancel();
            self.punchers.give_room(1);
        }
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        for i in 0..self.sockets.len() {
            self.close(i);
        }
    }
}

/// Send `datagram` to [`Guess::PROBES`] random ports of `ip`, in bursts
/// (`cirrus_proto::punch::Spray`); how many went out.
pub async fn spray(sock: &UdpSocket, ip: IpAddr, datagram: &[u8]) -> usize {
    let mut spray = Spray::new(std::time::Instant::now(), random_ports(Guess::PROBES));
    let mut sent = 0;
    while let Some(at) = spray.poll_timeout() {
        tokio::time::sleep_until(at.into()).await;
        while let Some(port) = spray.poll_transmit(std::time::Instant::now()) {
            if sock
                .send_to(datagram, SocketAddr::new(ip, port))
                .await
                .is_ok()
            {
                sent += 1;
            }
        }
    }
    sent
}

/// `n` random ports where NATs allocate. Without the OS's randomness there are no
/// probes.
fn random_ports(n: usize) -> Vec<u16> {
    let mut bytes = vec![0u8; 2 * n];
    if getrandom::fill(&mut bytes).is_err() {
        return Vec::new();
    }
    ports_from(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ports_are_where_nats_allocate() {
        let ports = random_ports(Guess::PROBES);
        assert_eq!(ports.len(), Guess::PROBES);
        assert!(ports.iter().all(|p| *p >= 1024));
        // Spread over the range, not stuck in one corner.
        assert!(ports.iter().any(|p| *p < 20_000) && ports.iter().any(|p| *p > 50_000));
    }
}
