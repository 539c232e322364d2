// The cloud client: a set of nodes used as one database.
//
// - Nodes: starts from the URLs it is given and, unless `discover: false`, learns
//   the others from `getpeerinfo` (each found node is confirmed by its own
//   `getnodeinfo` before it is used).
// - Routing: calls go to healthy nodes in turn, so reads spread; a node that is
//   unreachable, times out, is behind the session (-32011), rate limits or fails
//   internally is left for the next one (health.js decides who is avoided).
// - Sessions: the latest token goes with every call as `session`, and every put
//   result's `session` replaces it, so a read on any node sees the client's own
//   writes (SPEC "Sessions"). `cloud.session` reads and sets it, to persist it.
// - Verified reads: verified-read.js.

import { BehindError, CODES, CloudError, RpcError, TimeoutError, TransportError, VerificationError } from './errors.js';
import { CloudNode } from './cloud-node.js';
import { PENALTY } from './health.js';
import { nodeUrls, peerHosts, urlsAt } from './nodes.js';
import { checkReturned } from './record.js';
import { verifiedGet } from './verified-read.js';

/** Errors after which the same call is tried on another node: the node's trouble, not the request's. */
/** @type {Set<number>} */
const MOVE_ON = new Set([CODES.BEHIND, CODES.INTERNAL, CODES.RATE_LIMITED]);
const MAX_SESSION_CHARS = 1024;
/** A discovered address that does not answer this fast is not worth waiting for. */
const PROBE_TIMEOUT_MS = 3000;

export class Cloud {
  /** @type {Map<string, CloudNode>} keyed by the URL calls go to (`node.url`, never changes) */
  #nodes = new Map();
  /** @type {string | null} */
  #session = null;
  #turn = 0;
  /** @type {Promise<void> | null} */
  #discovering = null;
  #discoveredAt = 0;
  /** The last write in flight: the next one starts after it. @type {Promise<unknown>} */
  #writes = Promise.resolve();

  /** @param {import('./index.js').CloudOptions} opts */
  constructor(opts) {
    const given = Array.isArray(opts?.nodes) ? opts.nodes : [opts?.nodes].filter(Boolean);
    if (!given.length) throw new TypeError('Cloud needs at least one node URL');
    /** @type {import('./cloud-node.js').ResolvedOptions} */
    this.opts = {
      transport: /** @type {'ws' | 'http'} */ (opts.transport ?? (opts.WebSocket ?? globalThis.WebSocket ? 'ws' : 'http')),
      discover: opts.discover ?? true,
      rediscoverMs: opts.rediscoverMs ?? 300_000,
      timeoutMs: opts.timeoutMs ?? 5000,
      wait: opts.wait,
      maxAttempts: opts.maxAttempts ?? 4,
      verifyNodes: opts.verifyNodes ?? 5,
      settleMs: opts.settleMs ?? 3000,
      now: opts.now ?? Date.now,
      health: opts.health ?? {},
      makeTransport: opts.makeTransport,
      WebSocket: opts.WebSocket,
      fetch: opts.fetch,
    };
    this.onEvent = opts.onEvent ?? (() => {});
    this.onSession = opts.onSession ?? (() => {});
    for (const g of given) this.addNode(g);
    if (opts.session) this.#session = checkToken(opts.session);
  }

  // ---- session -------------------------------------------------------------

  /** The session token carried on every call (null before the first put). */
  get session() {
    return this.#session;
  }

  /** Set or clear the token, e.g. one saved from an earlier visit. @param {string | null} token */
  set session(token) {
    token = checkToken(token);
    if (token === this.#session) return;
    this.#session = token;
    this.onSession(this.#session);
    this.onEvent({ type: 'session', session: this.#session });
  }

  // ---- nodes ---------------------------------------------------------------

  /** Add a node by URL; returns its URL as used for calls. @param {string | {http: string, ws: string}} url */
  addNode(url, discovered = false) {
    return this.#add(nodeUrls(url), discovered).url;
  }

  /** @param {import('./nodes.js').NodeUrls} urls @param {boolean} discovered @returns {CloudNode} */
  #add(urls, discovered) {
    const have = this.#nodes.get(urls[this.opts.transport]);
    if (have) return have;
    const n = new CloudNode(urls, this.opts.transport, this.opts, discovered);
    this.#nodes.set(n.url, n);
    this.onEvent({ type: 'node', node: n.url, discovered });
    return n;
  }

  /** What the client knows about each node, for display or logs. */
  get nodes() {
    return [...this.#nodes.values()].map((n) => ({
      url: n.url,
      http: n.urls.http,
      ws: n.urls.ws,
      peerId: n.peerId,
      discovered: n.discovered,
      health: n.health.snapshot(),
    }));
  }

  /** @param {string} url */
  #find(url) {
    for (const n of this.#nodes.values()) if (n.url === url || n.urls.http === url || n.urls.ws === url) return n;
    return undefined;
  }

  /**
   * Nodes in the order to try them: healthy ones first, starting one further on at
   * each call so load spreads; then avoided ones, least bad first. `via` goes first.
   * @param {string} [via]
   */
  order(via) {
    const all = [...this.#nodes.values()];
    const healthy = all.filter((n) => !n.health.avoided);
    const start = healthy.length ? this.#turn++ % healthy.length : 0;
    const rotated = [...healthy.slice(start), ...healthy.slice(0, start)];
    const avoided = all.filter((n) => n.health.avoided).sort((a, b) => a.health.badness() - b.health.badness());
    const order = [...rotated, ...avoided];
    if (via) {
      const v = this.#find(via) ?? this.#add(nodeUrls(via), false);
      return [v, ...order.filter((n) => n !== v)];
    }
    return order;
  }

  /** Up to `n` nodes for a verified read, healthy first. @param {number} n @param {string} [via] */
  pickNodes(n, via) {
    return this.order(via).slice(0, n).map((x) => x.url);
  }

  /**
   * Report a node, e.g. for a root that disagrees; it is avoided until the penalty
   * decays. @param {string} url @param {string} reason @param {number} [amount]
   */
  penalize(url, reason, amount = PENALTY.disagreed) {
    const n = this.#find(url);
    if (!n) return;
    n.health.penalize(reason, amount);
    this.onEvent({ type: 'penalty', node: n.url, reason });
  }

  /**
   * Learn the other nodes: ask the known ones for `getnodeinfo` (real ports, peer
   * id) and `getpeerinfo`, derive a URL for every peer from the IP it is connected
   * from and the asking node's API ports, and keep it once that URL's own
   * `getnodeinfo` names the same peer id. Never throws: what fails is reported
   * through `onEvent` and skipped.
   */
  async discover() {
    const seeds = [...this.#nodes.values()];
    /** @type {string[]} */
    const added = [];
    /** @type {Map<string, {peer: any, like: CloudNode}>} */
    const peers = new Map();
    await Promise.all(
      seeds.map(async (seed) => {
        try {
          seed.learn(await this.#attempt(seed, 'getnodeinfo', {}));
          for (const p of await this.#attempt(seed, 'getpeerinfo', {})) {
            if (typeof p?.peerId === 'string' && !peers.has(p.peerId)) peers.set(p.peerId, { peer: p, like: seed });
          }
        } catch (e) {
          this.onEvent({ type: 'discover', node: seed.url, error: String(/** @type {Error} */ (e).message) });
        }
      }),
    );
    const known = new Set([...this.#nodes.values()].map((n) => n.peerId).filter(Boolean));
    await Promise.all(
      [...peers.values()]
        .filter(({ peer }) => !known.has(peer.peerId))
        .map(async ({ peer, like }) => {
          // Peers are taken to listen on the asking node's API ports.
          const portOf = (/** @type {string} */ u) => Number(new URL(u).port) || undefined;
          const ports = like.ports ?? { http: portOf(like.urls.http), ws: portOf(like.urls.ws) };
          // Try every host at once (a private IP may only time out) and keep the
          // first, in order of preference, whose own getnodeinfo names the peer.
          const tried = await Promise.all(peerHosts(peer).map((host) => this.#probe(urlsAt(host, ports, like.urls), peer.peerId)));
          const found = tried.find((c) => c !== null);
          for (const c of tried) if (c !== found) c?.close();
          if (found && !this.#nodes.has(found.url)) {
            this.#nodes.set(found.url, found);
            this.onEvent({ type: 'node', node: found.url, discovered: true, peerId: found.peerId });
            added.push(found.url);
          } else found?.close();
        }),
    );
    this.#discoveredAt = this.opts.now();
    this.onEvent({ type: 'discover', added });
    return added;
  }

  /**
   * A node at `urls` if it answers as `peerId` (or is behind our session: it is
   * there all the same), else null.
   * @param {import('./nodes.js').NodeUrls} urls @param {string} peerId
   */
  async #probe(urls, peerId) {
    if (this.#nodes.has(urls[this.opts.transport])) return null;
    const cand = new CloudNode(urls, this.opts.transport, this.opts, true);
    try {
      const info = await this.#attempt(cand, 'getnodeinfo', {}, { timeoutMs: PROBE_TIMEOUT_MS });
      if (info?.peerId === peerId) {
        cand.learn(info);
        return cand;
      }
      this.onEvent({ type: 'discover', node: cand.url, error: `answers as ${info?.peerId}, not ${peerId}` });
    } catch (e) {
      if (e instanceof BehindError) {
        cand.peerId = peerId;
        return cand;
      }
    }
    cand.close();
    return null;
  }

  /** Run discovery once before the first call, and again in the background now and then. */
  async #ready() {
    if (!this.opts.discover) return;
    if (!this.#discovering) {
      this.#discovering = this.discover().then(() => {});
      return this.#discovering;
    }
    if (this.#discoveredAt === 0) return this.#discovering; // the first one is still running
    if (this.opts.now() - this.#discoveredAt > this.opts.rediscoverMs) {
      this.#discoveredAt = this.opts.now(); // one at a time
      this.discover();
    }
  }

  // ---- calling -------------------------------------------------------------

  /**
   * One call on one node, with the session attached and the outcome counted in the
   * node's health. `check` may throw VerificationError on a result that fails a
   * check; that penalises the node.
   * @param {CloudNode} node @param {string} method @param {object} params
   * @param {{timeoutMs?: number, check?: (result: any) => void}} [o]
   */
  async #attempt(node, method, params, o = {}) {
    /** @type {Record<string, unknown>} */
    const p = { ...params };
    if (this.#session) p.session = this.#session;
    if (this.opts.wait !== undefined) p.wait = this.opts.wait;
    // The node may hold the call up to `wait` ms for the session; allow for that.
    const timeoutMs = o.timeoutMs ?? Math.max(this.opts.timeoutMs, (this.opts.wait ?? 2000) + 3000);
    const t0 = this.opts.now();
    try {
      const result = await node.transport().call(method, p, timeoutMs);
      o.check?.(result);
      const ms = this.opts.now() - t0;
      node.health.success(ms);
      this.onEvent({ type: 'call', node: node.url, method, ms, ok: true });
      return result;
    } catch (e) {
      const ms = this.opts.now() - t0;
      const err = /** @type {Error} */ (e);
      if (err instanceof VerificationError) {
        node.health.penalize(err.message, PENALTY.badProof);
        this.onEvent({ type: 'penalty', node: node.url, reason: err.message });
      } else if (err instanceof RpcError && !MOVE_ON.has(err.code)) {
        node.health.success(ms); // it answered; the request was at fault
      } else {
        node.health.failure(err instanceof TimeoutError ? 'timeout' : err.message);
      }
      this.onEvent({ type: 'call', node: node.url, method, ms, ok: false, error: err.message, code: /** @type {any} */ (err).code });
      throw err;
    }
  }

  /**
   * Call a method on one given node only (no failover), session attached.
   * @param {string} url @param {string} method @param {object} [params] @param {{timeoutMs?: number, check?: (r: any) => void}} [o]
   */
  async callOn(url, method, params = {}, o = {}) {
    const n = this.#find(url) ?? this.#add(nodeUrls(url), false);
    return this.#attempt(n, method, params, o);
  }

  /**
   * Call any method, moving to the next node on a transport error, a timeout,
   * -32011 (behind the session), -32006 or -32603, or a result that fails `check`.
   * Other JSON-RPC errors are the request's fault and are thrown at once.
   * Resolves to `{result, node}`.
   * @param {string} method @param {object} [params]
   * @param {{via?: string, timeoutMs?: number, check?: (r: any) => void}} [o]
   */
  async callWithNode(method, params = {}, o = {}) {
    await this.#ready();
    const errors = [];
    for (const node of this.order(o.via).slice(0, this.opts.maxAttempts)) {
      try {
        return { result: await this.#attempt(node, method, params, o), node: node.url };
      } catch (e) {
        if (e instanceof RpcError && !MOVE_ON.has(e.code)) throw e;
        if (!(e instanceof TransportError || e instanceof RpcError || e instanceof VerificationError)) throw e;
        errors.push(e);
      }
    }
    throw new CloudError(method, errors);
  }

  /**
   * Like callWithNode, resolving to the result alone.
   * @param {string} method @param {object} [params] @param {{via?: string, timeoutMs?: number, check?: (r: any) => void}} [o]
   */
  async call(method, params = {}, o = {}) {
    return (await this.callWithNode(method, params, o)).result;
  }

  // ---- records -------------------------------------------------------------

  /**
   * Sign and write a record; the node's new session token replaces ours. Without
   * `seq`, the next one is max(held seq + 1, now in ms), as the CLI does.
   *
   * Writes of one Cloud go one at a time: each must carry the token returned by
   * the one before, or two tokens would each miss the other's write (tokens are
   * opaque; the client cannot merge them).
   * @param {import('./identity.js').Identity} identity @param {string} key @param {string | null} value
   * @param {{kind?: 'doc' | 'rating', seq?: number | bigint, via?: string}} [o]
   * @returns {Promise<import('./index.js').PutResult>}
   */
  put(identity, key, value, o = {}) {
    const run = this.#writes.then(async () => {
      const kind = o.kind ?? 'doc';
      const seq = o.seq ?? (await this.#nextSeq(identity.author, kind, key, o.via));
      const record = identity.sign({ kind, key, seq, value });
      const { result, node } = await this.callWithNode('put', { record }, { via: o.via });
      if (typeof result?.session === 'string') this.session = result.session;
      return { ...result, node, record: { ...record, id: result?.id } };
    });
    this.#writes = run.catch(() => {});
    return run;
  }

  /** Rate `target` 1 to 5, or withdraw the rating with null. @param {import('./identity.js').Identity} identity @param {string} target @param {number | null} score @param {{seq?: number | bigint, via?: string}} [o] */
  async rate(identity, target, score, o = {}) {
    return this.put(identity, target, score === null ? null : String(score), { ...o, kind: 'rating' });
  }

  /** Write a tombstone. @param {import('./identity.js').Identity} identity @param {string} key @param {{kind?: 'doc' | 'rating', via?: string}} [o] */
  async delete(identity, key, o = {}) {
    return this.put(identity, key, null, o);
  }

  /** @param {string} author @param {string} kind @param {string} key @param {string} [via] */
  async #nextSeq(author, kind, key, via) {
    const held = await this.get(author, key, { kind: /** @type {any} */ (kind), via });
    const now = this.opts.now();
    if (!held) return now;
    const next = BigInt(held.seq) + 1n;
    const seq = next > BigInt(now) ? next : BigInt(now);
    return seq <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(seq) : seq;
  }

  /**
   * Read a record (null when the slot is empty). Its signature and id are checked;
   * a node that returns a bad one is penalised and the next node asked.
   * @param {string} author @param {string} key @param {{kind?: 'doc' | 'rating', via?: string}} [o]
   */
  async get(author, key, o = {}) {
    const kind = o.kind ?? 'doc';
    const res = await this.call('get', { author, key, kind }, { via: o.via, check: (/** @type {any} */ r) => checkReturned(r?.record, { author, kind, key }) });
    return res?.record ?? null;
  }

  /**
   * One page of records: `{records, next}`. Pass `next` back as `after` for the
   * next page (a cursor is valid only with the same `author`). With `verify`, every
   * record's signature is checked.
   * @param {{author?: string, kind?: 'doc' | 'rating', prefix?: string, after?: string, limit?: number}} [params]
   * @param {{via?: string, verify?: boolean}} [o]
   */
  async list(params = {}, o = {}) {
    const check = (/** @type {any} */ r) => {
      if (!Array.isArray(r?.records)) throw new VerificationError('list answered without a records array');
      if (o.verify) r.records.forEach((/** @type {any} */ x) => checkReturned(x, x));
    };
    return this.call('list', params, { via: o.via, check });
  }

  /** @param {string} target @param {{via?: string}} [o] */
  async getRating(target, o = {}) {
    return this.call('getrating', { target }, o);
  }

  /**
   * A verified read (SPEC "Verified reads"): majority root, proof checked locally.
   * @param {string} author @param {string} key
   * @param {{kind?: 'doc' | 'rating', via?: string, nodes?: number, settleMs?: number}} [o]
   */
  async verifiedGet(author, key, o = {}) {
    await this.#ready();
    return verifiedGet(this, { author, key, kind: o.kind ?? 'doc', via: o.via, nodes: o.nodes ?? this.opts.verifyNodes, settleMs: o.settleMs ?? this.opts.settleMs });
  }

  /** Close every connection. */
  close() {
    for (const n of this.#nodes.values()) n.close();
  }
}

/** A token is opaque to the client: only its type and size are checked. @param {unknown} token */
function checkToken(token) {
  if (token === null || token === undefined || token === '') return null;
  if (typeof token !== 'string' || token.length > MAX_SESSION_CHARS) {
    throw new TypeError(`a session token is a string of at most ${MAX_SESSION_CHARS} characters`);
  }
  return token;
}
