//! Request rates per source, shared by every place input enters: the client API on
//! every transport, the STUN server, and the punches a node sends on request.
//!
//! A source is an IPv4 address, an IPv6 /64 (one subscriber's whole prefix, which
//! it can rotate through at will), or a peer that relays requests to us. The table
//! is an LRU of bounded size, so a flood of new sources costs O(1) per request and
//! never more memory. Loopback is exempt unless `limit_loopback` is set, so local
//! testnets and benchmarks are not throttled (the tests set it).

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use hashlink::LruCache;

#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    /// Sustained requests per second per source (a batch counts each request).
    pub rate: f64,
    /// Requests a source may send at once before the rate applies.
    pub burst: f64,
    /// Sustained requests per second a peer may relay to us (for all its clients).
    pub relay_rate: f64,
    /// Apply the limits to loopback sources too.
    pub limit_loopback: bool,
}

impl Rates {
    /// `rate` per second with a burst of `burst`, nothing relayed.
    pub fn per_second(rate: f64, burst: f64, limit_loopback: bool) -> Rates {
        Rates {
            rate,
            burst,
            relay_rate: rate,
            limit_loopback,
        }
    }
}

/// Who is charged for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(u32),
    /// The upper 64 bits: the /64 prefix.
    V6(u64),
    /// A peer relaying requests (hash of its peer id).
    Peer(u64),
}

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(u32::from(v4)),
                None => Source::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }

    pub fn peer(id: &[u8]) -> Source {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        Source::Peer(h.finish())
    }
}

/// Rate buckets kept; the least recently used goes when a new source arrives.
pub const MAX_BUCKETS: usize = 100_000;

/// Token buckets per source.
pub struct RateLimiter {
    cfg: Rates,
    buckets: Mutex<LruCache<Source, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(cfg: Rates) -> Self {
        RateLimiter {
            cfg,
            buckets: Mutex::new(LruCache::new(MAX_BUCKETS)),
        }
    }

    pub fn exempt(&self, ip: IpAddr) -> bool {
        ip.is_loopback() && !self.cfg.limit_loopback
    }

    /// Take `cost` tokens for a client at `ip`; false when it is over its rate.
    pub fn allow(&self, ip: IpAddr, cost: usize) -> bool {
        self.exempt(ip) || self.take(Source::of(ip), cost, self.cfg.rate)
    }

    /// Take `cost` tokens for a peer's own requests (by its id's bytes).
    pub fn allow_peer(&self, peer: &[u8], cost: usize) -> bool {
        self.take(Source::peer(peer), cost, self.cfg.rate)
    }

    /// Take `cost` tokens for requests relayed by a peer.
    pub fn allow_relayed(&self, peer: &[u8], cost: usize) -> bool {
        self.take(Source::peer(peer), cost, self.cfg.relay_rate)
    }

    fn take(&self, source: Source, cost: usize, rate: f64) -> bool {
        let burst = self.cfg.burst.max(rate);
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let entry = match b.get_mut(&source) {
            Some(e) => e,
            None => {
                b.insert(source, (burst, now));
                b.get_mut(&source).expect("just inserted")
            }
        };
        let (tokens, at) = entry;
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= cost as f64 {
            *tokens -= cost as f64;
            true
        } else {
            false
        }
    }

    /// Buckets held now (for tests of the bound).
    pub fn buckets(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_sources_are_their_slash_64() {
        assert_eq!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Source::of(ip("::ffff:192.0.2.1")),
            Source::of(ip("192.0.2.1"))
        );
    }

    #[test]
    fn the_rate_table_is_bounded_and_charges_the_whole_cost() {
        let l = RateLimiter::new(Rates::per_second(10.0, 20.0, true));
        assert!(l.allow(ip("192.0.2.1"), 20));
        assert!(!l.allow(ip("192.0.2.1"), 1), "the burst is spent");
        assert!(
            !l.allow(ip("192.0.2.2"), 21),
            "a cost over the burst never fits"
        );
        for i in 0..(MAX_BUCKETS as u32 + 1000) {
            l.allow(IpAddr::V4(i.into()), 1);
        }
        assert_eq!(l.buckets(), MAX_BUCKETS);
    }
}
