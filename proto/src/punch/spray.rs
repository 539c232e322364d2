//! The probing half of a port guess (the birthday search, docs/nat.md): one probe to
//! each of [`Guess::PROBES`] random ports of the other side's address, in bursts of
//! [`BURST`] every [`BURST_EVERY`], so that one guess does not fill a socket buffer
//! or a NAT's queue at once. The randomness comes in as bytes.

use std::time::{Duration, Instant};

use crate::api::Guess;

pub const BURST: usize = 64;
pub const BURST_EVERY: Duration = Duration::from_millis(2);
/// NATs allocate from 1024 up (Linux's range when none is set).
pub const LOWEST_PORT: u16 = 1024;

/// Ports of 1024..=65535 from `random` (two bytes each).
pub fn ports_from(random: &[u8]) -> Vec<u16> {
    let span = u32::from(u16::MAX - LOWEST_PORT) + 1;
    random
        .chunks_exact(2)
        .map(|b| LOWEST_PORT + (u32::from(u16::from_le_bytes([b[0], b[1]])) % span) as u16)
        .collect()
}

#[derive(Debug, Clone)]
pub struct Spray {
    ports: Vec<u16>,
    sent: usize,
    next_burst: Instant,
}

impl Spray {
    /// A spray of at most [`Guess::PROBES`] of `ports`, its first burst due at `now`.
    pub fn new(now: Instant, mut ports: Vec<u16>) -> Spray {
        ports.truncate(Guess::PROBES);
        Spray {
            ports,
            sent: 0,
            next_burst: now,
        }
    }

    /// The port to probe next, if its burst is due at `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<u16> {
        if self.sent >= self.ports.len() || now < self.next_burst {
            return None;
        }
        let port = self.ports[self.sent];
        self.sent += 1;
        if self.sent % BURST == 0 {
            self.next_burst += BURST_EVERY;
        }
        Some(port)
    }

    /// When the next burst is due; `None` once every probe is out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.sent < self.ports.len()).then_some(self.next_burst)
    }

    pub fn sent(&self) -> usize {
        self.sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes (xorshift64): the same every run.
    fn noise(seed: &mut u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                (*seed >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn bursts_of_64_every_2_ms_on_ports_where_nats_allocate() {
        let t0 = Instant::now();
        let mut seed = 1;
        let mut s = Spray::new(t0, ports_from(&noise(&mut seed, 2 * 2000)));
        let (mut now, mut bursts, mut ports) = (t0, Vec::new(), Vec::new());
        while let Some(at) = s.poll_timeout() {
            now = now.max(at);
            let mut n = 0;
            while let Some(p) = s.poll_transmit(now) {
                ports.push(p);
                n += 1;
            }
            bursts.push(((now - t0).as_millis(), n));
        }
        assert_eq!(s.sent(), Guess::PROBES, "at most the guess's probes");
        assert_eq!(bursts.len(), Guess::PROBES / BURST);
        assert!(
            bursts
                .iter()
                .enumerate()
                .all(|(i, b)| *b == (2 * i as u128, BURST))
        );
        assert!(ports.iter().all(|p| *p >= LOWEST_PORT));
        assert!(ports.iter().any(|p| *p < 5000) && ports.iter().any(|p| *p > 62_000));
    }

    /// The birthday odds the docs promise, from these very ports: the other side
    /// holds `SOCKETS` mappings on random ports; a guess finds one about 98% of the
    /// time ((1 - 256/64,512)^1,024 ≈ 1.7% misses).
    #[test]
    fn one_guess_finds_an_open_mapping_about_98_percent_of_the_time() {
        let mut seed = 0x5eed;
        let trials = 2000;
        let mut found = 0;
        for _ in 0..trials {
            let open: std::collections::HashSet<u16> =
                ports_from(&noise(&mut seed, 2 * Guess::SOCKETS))
                    .into_iter()
                    .collect();
            let probes = ports_from(&noise(&mut seed, 2 * Guess::PROBES));
            if probes.iter().any(|p| open.contains(p)) {
                found += 1;
            }
        }
        let rate = f64::from(found) / f64::from(trials);
        assert!((0.97..0.993).contains(&rate), "{found} of {trials}");
    }
}
