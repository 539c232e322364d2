// JSON-RPC over HTTP: one `POST /` per call (docs/api.md). From a web page on
// another origin this needs the node's CORS headers (SPEC "CORS"); without them the
// browser hides the answer and fetch fails with a bare TypeError, so the error says
// so.

import { parse, stringify } from '../json.js';
import { TimeoutError, TransportError } from '../errors.js';
import { answerOf } from './response.js';

export class HttpTransport {
  #nextId = 1;

  /** @param {string} url @param {{fetch?: typeof fetch}} [opts] */
  constructor(url, opts = {}) {
    this.url = url;
    this.kind = 'http';
    this.fetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** @param {string} method @param {object} params @param {number} timeoutMs */
  async call(method, params, timeoutMs) {
    const id = this.#nextId++;
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), timeoutMs);
    let text, status;
    try {
      const resp = await this.fetch(this.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: stringify({ jsonrpc: '2.0', id, method, params }),
        signal: ctrl.signal,
      });
      status = resp.status;
      text = await resp.text();
    } catch (e) {
      if (ctrl.signal.aborted) throw new TimeoutError(`${this.url}: no answer within ${timeoutMs} ms`, { node: this.url });
      const hint =
        typeof document !== 'undefined'
          ? ' (unreachable, or the node does not allow this origin: it must send Access-Control-Allow-Origin)'
          : '';
      throw new TransportError(`${this.url}: ${/** @type {Error} */ (e).message}${hint}`, { node: this.url, cause: e });
    } finally {
      clearTimeout(timer);
    }
    let msg;
    try {
      msg = parse(text);
    } catch {
      throw new TransportError(`${this.url}: HTTP ${status}, not JSON-RPC: ${text.slice(0, 120)}`, { node: this.url });
    }
    return answerOf(msg, id, this.url);
  }

  close() {}
}
