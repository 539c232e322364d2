//! Per-node health, as the client remembers it to choose where to send the next
//! call. Everything decays with time, so a node that failed is tried again after a
//! while and a penalty wears off without anyone clearing it.
//!
//! A node is avoided (tried only after every healthy one) while, over the last
//! minutes, it failed more than it succeeded, its answers took longer than about
//! 2.4 s on average, or it carries a penalty (a root the majority did not report, a
//! proof that does not check) not yet worn off. The same rules as the browser
//! client (`clients/js/src/health.js`).

use std::time::{Duration, Instant};

/// Half-life of the success and failure counts and of the latency average.
pub const HALF_LIFE: Duration = Duration::from_secs(60);
/// Average answer time above which a node is avoided.
pub const SLOW: Duration = Duration::from_millis(2400);
/// Half-life of penalties.
pub const PENALTY_HALF_LIFE: Duration = Duration::from_secs(120);
/// Decayed failures below this do not count: one old timeout is forgiven.
const MIN_FAILURES: f64 = 0.5;
/// A penalty above this avoids the node.
const MAX_PENALTY: f64 = 0.5;

/// How much a penalty weighs: one decays below the bar in one half-life.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Penalty {
    /// Reported a root the majority did not, or did not answer one.
    Disagreed,
    /// Served a proof or record that does not verify: lying or broken.
    BadProof,
}

impl Penalty {
    fn weight(self) -> f64 {
        match self {
            Penalty::Disagreed => 1.0,
            Penalty::BadProof => 4.0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NodeHealth {
    at: Instant,
    ok: f64,
    failed: f64,
    ms_sum: f64,
    ms_weight: f64,
    penalty: f64,
    last_reason: Option<String>,
}

/// What a node's health looks like now.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub ok: f64,
    pub failed: f64,
    pub penalty: f64,
    pub average_ms: Option<f64>,
    /// Why the node is avoided, if it is.
    pub avoided: Option<String>,
}

impl NodeHealth {
    pub fn new(now: Instant) -> NodeHealth {
        NodeHealth {
            at: now,
            ok: 0.0,
            failed: 0.0,
            ms_sum: 0.0,
            ms_weight: 0.0,
            penalty: 0.0,
            last_reason: None,
        }
    }

    fn decay(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        let k = 0.5f64.powf(dt / HALF_LIFE.as_secs_f64());
        self.ok *= k;
        self.failed *= k;
        self.ms_sum *= k;
        self.ms_weight *= k;
        self.penalty *= 0.5f64.powf(dt / PENALTY_HALF_LIFE.as_secs_f64());
    }

    /// A call answered (an error that is the request's fault counts too).
    pub fn success(&mut self, now: Instant, took: Duration) {
        self.decay(now);
        self.ok += 1.0;
        self.ms_sum += took.as_secs_f64() * 1000.0;
        self.ms_weight += 1.0;
    }

    /// A call failed: unreachable, timed out, behind the session, internal error.
    pub fn failure(&mut self, now: Instant, reason: String) {
        self.decay(now);
        self.failed += 1.0;
        self.last_reason = Some(reason);
    }

    pub fn penalize(&mut self, now: Instant, penalty: Penalty, reason: String) {
        self.decay(now);
        self.penalty += penalty.weight();
        self.last_reason = Some(reason);
    }

    fn average_ms(&self) -> Option<f64> {
        (self.ms_weight > 0.05).then(|| self.ms_sum / self.ms_weight)
    }

    /// Why the node is avoided now, or `None` when it is healthy.
    pub fn avoided(&mut self, now: Instant) -> Option<String> {
        self.decay(now);
        let why = || self.last_reason.clone().unwrap_or_default();
        if self.penalty > MAX_PENALTY {
            return Some(format!("penalised: {}", why()));
        }
        if self.failed > MIN_FAILURES && self.failed > self.ok {
            return Some(format!("failing: {}", why()));
        }
        match self.average_ms() {
            Some(avg) if avg > SLOW.as_secs_f64() * 1000.0 => {
                Some(format!("slow: {avg:.0} ms on average"))
            }
            _ => None,
        }
    }

    /// How bad the node looks, to order avoided nodes (lower is better).
    pub fn badness(&mut self, now: Instant) -> f64 {
        self.decay(now);
        self.failed - self.ok + 2.0 * self.penalty + self.average_ms().unwrap_or(0.0) / 1000.0
    }

    pub fn snapshot(&mut self, now: Instant) -> Snapshot {
        let avoided = self.avoided(now);
        Snapshot {
            ok: self.ok,
            failed: self.failed,
            penalty: self.penalty,
            average_ms: self.average_ms(),
            avoided,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn failing_more_than_succeeding_avoids_a_node_until_it_wears_off() {
        let t0 = Instant::now();
        let mut h = NodeHealth::new(t0);
        assert_eq!(h.avoided(t0), None);
        h.success(t0, 10 * MS);
        h.failure(t0, "timeout".into());
        assert_eq!(h.avoided(t0), None, "one failure against one success");
        h.failure(t0, "timeout".into());
        assert!(h.avoided(t0).unwrap().contains("timeout"));
        // Both counts decay alike, so the balance stays; but once the failures are
        // under the floor, they no longer count.
        assert!(h.avoided(t0 + 3 * HALF_LIFE).is_none());
    }

    #[test]
    fn slow_answers_avoid_a_node_and_penalties_decay() {
        let t0 = Instant::now();
        let mut h = NodeHealth::new(t0);
        for _ in 0..5 {
            h.success(t0, 3000 * MS);
        }
        assert!(h.avoided(t0).unwrap().starts_with("slow"));
        let mut p = NodeHealth::new(t0);
        p.penalize(t0, Penalty::Disagreed, "other root".into());
        assert!(p.avoided(t0).unwrap().contains("other root"));
        assert_eq!(
            p.avoided(t0 + PENALTY_HALF_LIFE + MS),
            None,
            "one half-life"
        );
        let mut q = NodeHealth::new(t0);
        q.penalize(t0, Penalty::BadProof, "bad proof".into());
        assert!(
            q.avoided(t0 + 2 * PENALTY_HALF_LIFE).is_some(),
            "a lie weighs four"
        );
        assert!(q.badness(t0) > p.badness(t0));
    }
}
