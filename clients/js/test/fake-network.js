// Test double for a set of nodes: each fake node answers JSON-RPC calls from an
// in-memory database, with a Merkle trie built here the plain recursive way
// (docs/merkle.md; the verifier itself is checked against Python and node fixtures).
import { BehindError, RpcError, TransportError, recordId, slotHash, toHex, fromHex, leafHash, branchHash, nibble, verifyRecord } from '../src/index.js';

/** @param {{slot: Uint8Array, id: Uint8Array}[]} pairs @param {number} d @returns {Uint8Array} */
function hashOf(pairs, d) {
  if (pairs.length === 0) return new Uint8Array(32);
  if (pairs.length === 1) return leafHash(pairs[0].slot, pairs[0].id);
  return branchHash(children(pairs, d));
}
/** @param {{slot: Uint8Array, id: Uint8Array}[]} pairs @param {number} d */
const children = (pairs, d) => Array.from({ length: 16 }, (_, n) => hashOf(pairs.filter((p) => nibble(p.slot, d) === n), d + 1));

export class FakeDb {
  /** @type {Map<string, any>} slot hex -> record */
  records = new Map();
  /** @param {any} r */
  put(r) {
    verifyRecord(r);
    const slot = toHex(slotHash(r.author, r.kind, r.key));
    const id = recordId(r);
    if (this.records.get(slot)?.id === id) return 'duplicate';
    this.records.set(slot, { ...r, id });
    return 'applied';
  }
  pairs() {
    return [...this.records].map(([s, r]) => ({ slot: fromHex(s), id: fromHex(r.id) }));
  }
  root() {
    return toHex(hashOf(this.pairs(), 0));
  }
  /** @param {Uint8Array} slot */
  prove(slot) {
    let pairs = this.pairs();
    const branches = [];
    for (let d = 0; pairs.length >= 2; d++) {
      branches.push(children(pairs, d).map(toHex));
      pairs = pairs.filter((p) => nibble(p.slot, d) === nibble(slot, d));
    }
    return { branches, leaf: pairs.length ? { slot: toHex(pairs[0].slot), id: toHex(pairs[0].id) } : null };
  }
  clone() {
    const c = new FakeDb();
    c.records = new Map(this.records);
    return c;
  }
}

let sessions = 0;
let callNo = 0; // orders calls across nodes

/** A fake node. `behave` overrides a method: return a value, or throw. */
export class FakeNode {
  /** @param {string} url @param {FakeDb} db @param {{peerId?: string, peers?: any[], ports?: any}} [o] */
  constructor(url, db, o = {}) {
    this.url = url;
    this.db = db;
    this.peerId = o.peerId ?? `peer-${url}`;
    this.peers = o.peers ?? [];
    this.ports = o.ports ?? { http: 38081, ws: 38082 };
    /** @type {Record<string, (params: any) => any>} */
    this.behave = {};
    /** @type {{method: string, params: any, n: number}[]} */
    this.calls = [];
  }

  /** @param {string} method @param {any} params */
  handle(method, params) {
    this.calls.push({ method, params, n: ++callNo });
    if (this.behave[method]) return this.behave[method](params);
    if (this.behave.any) return this.behave.any(params);
    switch (method) {
      case 'getnodeinfo':
        return { peerId: this.peerId, ports: this.ports, db: { root: this.db.root() } };
      case 'getpeerinfo':
        return this.peers;
      case 'getdbhash':
        return { root: this.db.root(), records: this.db.records.size, ratings: { count: 0, sum: 0 } };
      case 'put': {
        const status = this.db.put(params.record);
        return { id: recordId(params.record), status, session: `s${++sessions}` };
      }
      case 'get': {
        const slot = slotHash(params.author, params.kind ?? 'doc', params.key);
        const record = this.db.records.get(toHex(slot)) ?? null;
        return params.proof ? { record, root: this.db.root(), proof: this.db.prove(slot) } : { record };
      }
      case 'getrating':
        return { target: params.target, count: 0, sum: 0, average: null };
      case 'list':
        return { records: [...this.db.records.values()], next: null };
      default:
        throw new RpcError(-32601, 'method not found', undefined, this.url);
    }
  }
}

/** A network of fake nodes and the `makeTransport` that reaches them. @param {FakeNode[]} nodes */
export function fakeNetwork(nodes) {
  const byUrl = new Map(nodes.map((n) => [n.url, n]));
  return {
    nodes: byUrl,
    /** @param {string} kind @param {string} url */
    makeTransport: (kind, url) => ({
      url,
      kind,
      async call(/** @type {string} */ method, /** @type {any} */ params) {
        await new Promise((r) => setTimeout(r, 1));
        const n = byUrl.get(url);
        if (!n) throw new TransportError(`${url}: connection refused`, { node: url });
        // Through JSON, as on the wire.
        return JSON.parse(JSON.stringify(n.handle(method, JSON.parse(JSON.stringify(params)))));
      },
      close() {},
    }),
  };
}

export { BehindError };
