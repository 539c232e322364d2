// One node as the cloud client knows it: its two URLs (HTTP and WebSocket; calls go
// to the one of the chosen transport), its peer id once known, its health, and its
// transport, opened on first use.

import { NodeHealth } from './health.js';
import { HttpTransport } from './transport/http.js';
import { WsTransport } from './transport/ws.js';

/**
 * The Cloud's options with defaults filled in.
 * @typedef {{transport: 'ws' | 'http', discover: boolean, rediscoverMs: number, timeoutMs: number,
 *   wait: number | undefined, maxAttempts: number, verifyNodes: number, settleMs: number, now: () => number,
 *   health: Partial<import('./health.js').HealthConfig>,
 *   makeTransport?: (kind: 'ws' | 'http', url: string) => import('./index.js').Transport,
 *   WebSocket?: typeof WebSocket, fetch?: typeof fetch}} ResolvedOptions
 */

/** One node as the cloud knows it. */
export class CloudNode {
  /** @param {import('./nodes.js').NodeUrls} urls @param {'ws' | 'http'} kind @param {ResolvedOptions} cloudOpts @param {boolean} discovered */
  constructor(urls, kind, cloudOpts, discovered) {
    this.urls = urls;
    this.kind = kind;
    this.discovered = discovered;
    /** @type {string | null} */
    this.peerId = null;
    /** The API ports the node reports listening on. @type {import('./nodes.js').Ports | null} */
    this.ports = null;
    this.health = new NodeHealth({ now: cloudOpts.now, ...cloudOpts.health });
    this.opts = cloudOpts;
    /** @type {import('./index.js').Transport | null} */
    this.transportObj = null;
  }

  get url() {
    return this.urls[this.kind];
  }

  transport() {
    this.transportObj ??= this.opts.makeTransport
      ? this.opts.makeTransport(this.kind, this.url)
      : this.kind === 'ws'
        ? new WsTransport(this.url, { WebSocket: this.opts.WebSocket })
        : new HttpTransport(this.url, { fetch: this.opts.fetch });
    return this.transportObj;
  }

  /**
   * Take what `getnodeinfo` says: the peer id, and the port of the other
   * transport. The URL in use just answered, so only the other one was a guess
   * (and one without a port, as behind a proxy, is left alone). @param {any} info
   */
  learn(info) {
    if (typeof info?.peerId === 'string') this.peerId = info.peerId;
    if (info?.ports) this.ports = info.ports;
    const other = this.kind === 'ws' ? 'http' : 'ws';
    const port = info?.ports?.[other];
    const u = new URL(this.urls[other]);
    if (Number.isInteger(port) && u.port) {
      u.port = String(port);
      this.urls = { ...this.urls, [other]: u.origin };
    }
  }

  close() {
    this.transportObj?.close();
    this.transportObj = null;
  }
}
