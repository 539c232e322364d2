// Node addresses: the URLs a node is called at, and how the URLs of nodes the
// client has not been told about are derived from `getpeerinfo` and `getnodeinfo`.
//
// A node serves HTTP and WebSocket on two ports (38081, 38082 by default). Given
// one URL, the other is guessed (the default pair, else the next port up; a URL
// without a port, as behind a proxy, is taken to serve both) until the node's
// `getnodeinfo.ports` tells the truth.

export const DEFAULT_PORTS = Object.freeze({ http: 38081, ws: 38082 });

/**
 * @typedef {{http: string, ws: string}} NodeUrls
 * @typedef {{http?: number, ws?: number}} Ports
 */

/**
 * The HTTP and WebSocket URLs of a node given as `http://H:P`, `ws://H:P`, their
 * TLS forms, a bare `H:P` or `H` (taken as HTTP), or `{http, ws}`.
 * @param {string | Partial<NodeUrls>} given
 * @returns {NodeUrls}
 */
export function nodeUrls(given) {
  if (typeof given === 'object' && given) {
    if (given.http && given.ws) return { http: clean(given.http), ws: clean(given.ws) };
    return nodeUrls(/** @type {string} */ (given.http ?? given.ws));
  }
  let s = String(given ?? '').trim();
  if (!s) throw new TypeError('empty node URL');
  const bare = !/^[a-z]+:\/\//i.test(s);
  if (bare) s = `http://${s}`;
  const u = new URL(s);
  const scheme = u.protocol.replace(':', '');
  if (!['http', 'https', 'ws', 'wss'].includes(scheme)) throw new TypeError(`${given}: expected http://, ws:// (or https://, wss://)`);
  const tls = scheme === 'https' || scheme === 'wss';
  const isWs = scheme.startsWith('ws');
  const host = u.hostname; // IPv6 keeps its brackets here
  const at = (/** @type {number | string} */ http, /** @type {number | string} */ ws) => ({
    http: `${tls ? 'https' : 'http'}://${host}${http === '' ? '' : ':' + http}`,
    ws: `${tls ? 'wss' : 'ws'}://${host}${ws === '' ? '' : ':' + ws}`,
  });
  // A URL with a scheme and no port is at the scheme's own port (80, 443), as
  // behind a reverse proxy: take both transports to be there.
  if (!u.port && !bare) return at('', '');
  const port = u.port ? Number(u.port) : DEFAULT_PORTS.http;
  if (isWs) return at(port === DEFAULT_PORTS.ws ? DEFAULT_PORTS.http : port - 1, port);
  return at(port, port === DEFAULT_PORTS.http ? DEFAULT_PORTS.ws : port + 1);
}

/** @param {string} url */
const clean = (url) => url.replace(/\/+$/, '');

/**
 * The URLs of a node on `host` with the given ports, in the schemes of `like`.
 * @param {string} host hostname, IPv6 in brackets @param {Ports} ports @param {NodeUrls} like
 * @returns {NodeUrls}
 */
export function urlsAt(host, ports, like) {
  const tls = like.http.startsWith('https:');
  return {
    http: `${tls ? 'https' : 'http'}://${host}:${ports.http ?? DEFAULT_PORTS.http}`,
    ws: `${tls ? 'wss' : 'ws'}://${host}:${ports.ws ?? DEFAULT_PORTS.ws}`,
  };
}

/**
 * The host of a multiaddr (`/ip4/1.2.3.4/tcp/38080/p2p/…`, `/ip6/::1/…`,
 * `/dns4/example.org/…`), as it goes in a URL; null when it has none.
 * @param {string} ma
 */
export function hostOfMultiaddr(ma) {
  const m = /^\/(ip4|ip6|dns|dns4|dns6)\/([^/]+)/.exec(String(ma ?? ''));
  if (!m) return null;
  return m[1] === 'ip6' ? `[${m[2]}]` : m[2];
}

/**
 * The hosts a peer may serve its API on, most likely first: the IP of the
 * connection to it, then the external address its STUN clients learned.
 * @param {{addr?: string, stun?: {address?: string | null} | null}} peer
 */
export function peerHosts(peer) {
  const hosts = [hostOfMultiaddr(peer.addr ?? '')];
  const ext = peer.stun?.address;
  if (ext) hosts.push(ext.includes(':') ? `[${ext}]` : ext);
  return /** @type {string[]} */ ([...new Set(hosts.filter((h) => h))]);
}
