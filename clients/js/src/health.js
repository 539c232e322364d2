// Per-node health: what the client remembers about each node to choose where to
// send the next call. Everything decays with time, so a node that failed is tried
// again after a while and a penalty wears off without anyone clearing it.
//
// A node is *avoided* (tried only after every healthy node) while, over the last
// minutes:
//   - it failed more than it succeeded (decayed counts, half-life `halfLifeMs`),
//   - its answers took longer than `slowMs` (~2.4 s) on average, or
//   - it carries a penalty (a disagreeing root, a bad proof) not yet worn off.

/** @typedef {{halfLifeMs: number, slowMs: number, penaltyHalfLifeMs: number, minFailures: number, maxPenalty: number}} HealthConfig */

/** @type {Readonly<HealthConfig>} */
export const HEALTH_DEFAULTS = Object.freeze({
  /** Half-life of the success/failure counts and of the latency average. */
  halfLifeMs: 60_000,
  /** Average answer time above which a node is avoided. */
  slowMs: 2400,
  /** Half-life of penalties. */
  penaltyHalfLifeMs: 120_000,
  /** Decayed failures below this do not count: one old timeout is forgiven. */
  minFailures: 0.5,
  /** A penalty above this avoids the node. */
  maxPenalty: 0.5,
});

/** Penalty weights by reason: one decays below `maxPenalty` in one half-life, four in three. */
export const PENALTY = Object.freeze({
  /** Reported a root the majority did not (verified read), or did not answer one. */
  disagreed: 1,
  unresponsive: 1,
  /** Served a proof or record that does not verify: a lying or broken node. */
  badProof: 4,
});

export class NodeHealth {
  #now;
  #cfg;
  #at; // time the decayed values below were last brought up to date
  #ok = 0;
  #fail = 0;
  #msSum = 0; // decayed sum of answer times, and of their weights
  #msWeight = 0;
  #penalty = 0;
  /** @type {string | null} */
  #lastReason = null;

  /** @param {{now?: () => number} & Partial<HealthConfig>} [opts] */
  constructor(opts = {}) {
    this.#now = opts.now ?? Date.now;
    this.#cfg = { ...HEALTH_DEFAULTS, ...opts };
    this.#at = this.#now();
  }

  /** Bring every decayed value up to now. */
  #decay() {
    const now = this.#now();
    const dt = Math.max(0, now - this.#at);
    this.#at = now;
    const k = 2 ** (-dt / this.#cfg.halfLifeMs);
    this.#ok *= k;
    this.#fail *= k;
    this.#msSum *= k;
    this.#msWeight *= k;
    this.#penalty *= 2 ** (-dt / this.#cfg.penaltyHalfLifeMs);
  }

  /** A call answered (an RPC error that is the caller's fault counts too). @param {number} ms */
  success(ms) {
    this.#decay();
    this.#ok += 1;
    this.#msSum += ms;
    this.#msWeight += 1;
  }

  /** A call failed: unreachable, timed out, behind the session, internal error. @param {string} reason */
  failure(reason, weight = 1) {
    this.#decay();
    this.#fail += weight;
    this.#lastReason = reason;
  }

  /** @param {string} reason @param {number} [amount] */
  penalize(reason, amount = PENALTY.disagreed) {
    this.#decay();
    this.#penalty += amount;
    this.#lastReason = reason;
  }

  /** Why the node is avoided now, or null when it is healthy. */
  avoidReason() {
    this.#decay();
    const c = this.#cfg;
    if (this.#penalty > c.maxPenalty) return `penalised: ${this.#lastReason}`;
    if (this.#fail > c.minFailures && this.#fail > this.#ok) return `failing: ${this.#lastReason}`;
    const avg = this.averageMs();
    if (avg !== null && avg > c.slowMs) return `slow: ${Math.round(avg)} ms on average`;
    return null;
  }

  get avoided() {
    return this.avoidReason() !== null;
  }

  /** Decayed average answer time, or null with nothing recent to go by. */
  averageMs() {
    this.#decay();
    return this.#msWeight > 0.05 ? this.#msSum / this.#msWeight : null;
  }

  /**
   * How bad the node looks, to order avoided nodes among themselves (lower is
   * better): net failures, penalties, and seconds of average latency.
   */
  badness() {
    this.#decay();
    return this.#fail - this.#ok + 2 * this.#penalty + (this.averageMs() ?? 0) / 1000;
  }

  snapshot() {
    this.#decay();
    return {
      ok: round(this.#ok),
      failed: round(this.#fail),
      penalty: round(this.#penalty),
      averageMs: this.averageMs() === null ? null : Math.round(/** @type {number} */ (this.averageMs())),
      avoided: this.avoidReason(),
    };
  }
}

/** @param {number} x */
const round = (x) => Math.round(x * 100) / 100;
