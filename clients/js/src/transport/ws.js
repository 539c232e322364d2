// JSON-RPC over WebSocket (docs/api.md): one connection per node, many calls in
// flight on it, answers matched by id as they come. The connection opens on the
// first call and again on the first call after it closed (the node closes a
// connection silent for 60 s; the browser answers the node's pings itself).
// Notifications (messages with a method and no id) go to `onNotification`.

import { parse, stringify } from '../json.js';
import { TimeoutError, TransportError } from '../errors.js';
import { answerOf } from './response.js';

export class WsTransport {
  /** @type {WebSocket | null} */
  #ws = null;
  /** @type {Promise<WebSocket> | null} */
  #opening = null;
  /** @type {Map<number, {resolve: (v: any) => void, reject: (e: Error) => void, timer: any}>} */
  #pending = new Map();
  #nextId = 1;

  /**
   * @param {string} url
   * @param {{WebSocket?: typeof WebSocket, onNotification?: (msg: {method: string, params: any}) => void}} [opts]
   */
  constructor(url, opts = {}) {
    this.url = url;
    this.kind = 'ws';
    this.WebSocket = opts.WebSocket ?? globalThis.WebSocket;
    this.onNotification = opts.onNotification;
    if (!this.WebSocket) throw new TransportError('no WebSocket in this runtime (Node.js 20: --experimental-websocket)');
  }

  /** @param {string} method @param {object} params @param {number} timeoutMs */
  async call(method, params, timeoutMs) {
    const started = Date.now();
    const ws = await this.#open(timeoutMs);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const left = Math.max(1, timeoutMs - (Date.now() - started));
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new TimeoutError(`${this.url}: no answer within ${timeoutMs} ms`, { node: this.url }));
      }, left);
      this.#pending.set(id, {
        resolve: (msg) => {
          try {
            resolve(answerOf(msg, id, this.url));
          } catch (e) {
            reject(e);
          }
        },
        reject,
        timer,
      });
      try {
        ws.send(stringify({ jsonrpc: '2.0', id, method, params }));
      } catch (e) {
        this.#settle(id)?.reject(new TransportError(`${this.url}: send failed: ${/** @type {Error} */ (e).message}`, { node: this.url }));
      }
    });
  }

  /** @param {number} timeoutMs @returns {Promise<WebSocket>} */
  #open(timeoutMs) {
    if (this.#ws && this.#ws.readyState === 1) return Promise.resolve(this.#ws);
    if (this.#opening) return this.#opening;
    this.#opening = new Promise((resolve, reject) => {
      const ws = new this.WebSocket(this.url);
      const fail = (/** @type {string} */ why) => {
        clearTimeout(timer);
        ws.onopen = ws.onerror = ws.onclose = ws.onmessage = null; // once, even if close() fires close
        this.#opening = null;
        try {
          ws.close();
        } catch {}
        reject(new TransportError(`${this.url}: ${why}`, { node: this.url }));
      };
      const timer = setTimeout(() => fail(`could not connect within ${timeoutMs} ms`), timeoutMs);
      // Browsers give no reason for a failed WebSocket; `close` follows with a code.
      ws.onerror = () => fail('could not connect (WebSocket error)');
      ws.onclose = (ev) => fail(`closed before it opened (code ${ev.code})`);
      ws.onopen = () => {
        clearTimeout(timer);
        this.#opening = null;
        this.#ws = ws;
        ws.onerror = null;
        ws.onclose = (ev) => this.#closed(ws, ev.code);
        resolve(ws);
      };
      ws.onmessage = (ev) => this.#message(ev.data);
    });
    return this.#opening;
  }

  /** @param {unknown} data */
  #message(data) {
    if (typeof data !== 'string') return;
    let msg;
    try {
      msg = parse(data);
    } catch {
      return; // not JSON: nothing to match it to
    }
    if (msg && typeof msg.id === 'number' && this.#pending.has(msg.id)) {
      this.#settle(msg.id)?.resolve(msg);
    } else if (msg && typeof msg.method === 'string' && msg.id === undefined) {
      this.onNotification?.(msg);
    }
  }

  /** @param {number} id */
  #settle(id) {
    const p = this.#pending.get(id);
    if (!p) return undefined;
    clearTimeout(p.timer);
    this.#pending.delete(id);
    return p;
  }

  /** Every call in flight on a closed connection fails now, not at its timeout. @param {WebSocket} ws @param {number} code */
  #closed(ws, code) {
    if (this.#ws !== ws) return;
    this.#ws = null;
    for (const id of [...this.#pending.keys()]) {
      this.#settle(id)?.reject(new TransportError(`${this.url}: connection closed (code ${code})`, { node: this.url }));
    }
  }

  close() {
    const ws = this.#ws;
    if (ws) {
      this.#closed(ws, 1000);
      ws.close(1000);
    }
  }
}
