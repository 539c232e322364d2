// Cirrus node dashboard: plain ES module, no framework, no build step, no outside
// request. Everything from the network is put into the page with textContent or
// attributes, never as HTML.
//
// How it finds the API: served by the node, it asks `POST /` (same origin)
// `getnodeinfo` for `ports.ws`, then opens ws://<location.hostname>:<ports.ws>/ and
// does everything else over that one WebSocket. `?ws=ws://HOST:PORT` skips the HTTP
// step (development, tests). `?demo=1` fills the reachability panel with sample
// events (only that panel; the rest stays live).

const params = new URLSearchParams(location.search);
const WS_OVERRIDE = params.get('ws');
const DEMO = params.get('demo') === '1';

const POLL_MS = 2000;            // getnodeinfo / getpeerinfo / getdbhash
const HIDDEN_POLL_MS = 10000;    // while the tab is hidden
const RATE_WINDOW_MS = 5 * 60 * 1000;
const RATE_NOW_MS = 10 * 1000;   // "records / s" now: average over this
const BUCKET_MS = 5000;          // chart bars
const SYNC_GRACE_MS = 6000;      // roots that differ for less than this: "syncing"
const COMPARE_EVERY_MS = 15000;
const CALL_TIMEOUT_MS = 10000;
const RELAY_TIMEOUT_MS = 8000;
const MAX_RECENT = 40;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;

// ---------------------------------------------------------------------------
// Small DOM helpers

const $ = (id) => document.getElementById(id);
const SVG_NS = 'http://www.w3.org/2000/svg';

/** h('div', {class: 'x', text: 'y', title, dataset: {}, attrs: {}, on: {click}}, ...children) */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = String(v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'attrs') for (const [a, av] of Object.entries(v)) { if (av !== undefined && av !== null) el.setAttribute(a, String(av)); }
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === 'title') el.title = String(v);
    else el[k] = v;
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) if (c) el.append(c);
  return el;
}

// Icons: constant path data only (24×24, stroked).
const ICONS = {
  cloud: 'M7 18.5h10a4.5 4.5 0 0 0 .6-8.96A6.5 6.5 0 0 0 5.1 9.4 4.6 4.6 0 0 0 7 18.5z',
  server: 'M4 4h16v6H4z M4 14h16v6H4z M8 7h.01 M8 17h.01',
  database: 'M4 6c0-1.7 3.6-3 8-3s8 1.3 8 3-3.6 3-8 3-8-1.3-8-3z M4 6v12c0 1.7 3.6 3 8 3s8-1.3 8-3V6 M4 12c0 1.7 3.6 3 8 3s8-1.3 8-3',
  peers: 'M18 8a3 3 0 1 0 0-6 3 3 0 0 0 0 6z M6 15a3 3 0 1 0 0-6 3 3 0 0 0 0 6z M18 22a3 3 0 1 0 0-6 3 3 0 0 0 0 6z M8.6 13.5l6.8 4 M15.4 6.5l-6.8 4',
  compare: 'M4 8h13 M14 4l4 4-4 4 M20 16H7 M10 12l-4 4 4 4',
  activity: 'M22 12h-4l-3 9L9 3l-3 9H2',
  zap: 'M13 2L3 14h9l-1 8 10-12h-9l1-8z',
  copy: 'M9 9h11v11H9z M5 15H4V4h11v1',
  check: 'M20 6L9 17l-5-5',
  x: 'M18 6L6 18 M6 6l12 12',
  alert: 'M12 3l10 18H2L12 3z M12 10v4 M12 17.5v.01',
  refresh: 'M21 12a9 9 0 1 1-2.64-6.36L21 8 M21 3v5h-5',
  sync: 'M21 12a9 9 0 0 1-15.5 6.2L3 16 M3 12a9 9 0 0 1 15.5-6.2L21 8 M21 3v5h-5 M3 21v-5h5',
  plug: 'M9 2v6 M15 2v6 M6 8h12v4a6 6 0 0 1-12 0z M12 18v4',
  direct: 'M4 12h16 M14 6l6 6-6 6',
  relay: 'M3 17c0-6 4-11 9-11s9 5 9 11 M18 14l3 3 3-3',
  pending: 'M12 22a10 10 0 1 0 0-20 10 10 0 0 0 0 20z M12 6v6l4 2',
  help: 'M12 22a10 10 0 1 0 0-20 10 10 0 0 0 0 20z M9.1 9a3 3 0 0 1 5.8 1c0 2-3 3-3 3 M12 17h.01',
  in: 'M20 12H4 M10 6l-6 6 6 6',
  out: 'M4 12h16 M14 6l6 6-6 6',
  dot: 'M12 12h.01',
};

function icon(name, cls = 'icon') {
  return svg('svg', { viewBox: '0 0 24 24', class: cls, 'aria-hidden': 'true', focusable: 'false' },
    svg('path', { d: ICONS[name] || ICONS.dot }));
}

function fillIcons(root = document) {
  for (const el of root.querySelectorAll('[data-icon]')) {
    if (!el.firstChild) el.append(icon(el.dataset.icon));
  }
}

/** Replace el's children only when the data behind them changed. */
function patch(el, sig, build) {
  if (el.__sig === sig) return false;
  el.__sig = sig;
  el.replaceChildren(...[build()].flat().filter(Boolean));
  return true;
}

function setText(el, text) {
  const t = String(text);
  if (el.textContent !== t) el.textContent = t;
}

// ---------------------------------------------------------------------------
// Formatting

const nf = new Intl.NumberFormat('en-US');
const fmtInt = (n) => (typeof n === 'number' && Number.isFinite(n) ? nf.format(n) : '—');

function fmtRate(r) {
  if (!Number.isFinite(r)) return '—';
  if (r === 0) return '0';
  if (r < 10) return r.toFixed(1);
  return nf.format(Math.round(r));
}

function ago(ms, compact = false) {
  if (!ms) return '—';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  const sfx = compact ? '' : ' ago';
  if (s < 2) return compact ? 'now' : 'just now';
  if (s < 60) return `${s}s${sfx}`;
  if (s < 3600) return `${Math.floor(s / 60)}m${sfx}`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${sfx}`;
  return `${Math.floor(s / 86400)}d${sfx}`;
}

function duration(sec) {
  if (!Number.isFinite(sec)) return '—';
  sec = Math.max(0, Math.floor(sec));
  const d = Math.floor(sec / 86400), hh = Math.floor((sec % 86400) / 3600);
  const m = Math.floor((sec % 3600) / 60), s = sec % 60;
  const p2 = (n) => String(n).padStart(2, '0');
  if (d) return `${d}d ${hh}h ${p2(m)}m`;
  if (hh) return `${hh}h ${p2(m)}m ${p2(s)}s`;
  if (m) return `${m}m ${p2(s)}s`;
  return `${s}s`;
}

const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const fullTime = (ms) => new Date(ms).toLocaleString();

function shortHex(hex, head = 8, tail = 6) {
  if (typeof hex !== 'string') return '—';
  return hex.length > head + tail + 1 ? `${hex.slice(0, head)}…${hex.slice(-tail)}` : hex;
}

/** Peer ids of ed25519 keys all start with "12D3KooW": show what tells them apart. */
function shortPeer(id) {
  if (typeof id !== 'string' || !id) return '—';
  const body = id.startsWith('12D3KooW') ? id.slice(8) : id;
  return body.length > 12 ? `${body.slice(0, 6)}…${body.slice(-4)}` : body;
}

function str(v, fallback = '—') {
  return v === null || v === undefined || v === '' ? fallback : String(v);
}

/** "/ip4/1.2.3.4/tcp/38080" -> {host: "1.2.3.4", port: "38080", proto: "tcp"} */
function parseMultiaddr(ma) {
  if (typeof ma !== 'string') return null;
  const p = ma.split('/').filter(Boolean);
  let host = null, port = null, proto = null;
  for (let i = 0; i < p.length; i++) {
    if (['ip4', 'ip6', 'dns', 'dns4', 'dns6'].includes(p[i])) host = p[i] === 'ip6' ? `[${p[i + 1]}]` : p[i + 1];
    if ((p[i] === 'tcp' || p[i] === 'udp') && port === null) { port = p[i + 1]; proto = p[i]; }
    if (p[i] === 'quic-v1' || p[i] === 'quic') proto = 'quic';
    if (p[i] === 'ws') proto = 'ws';
  }
  return host ? { host, port, proto } : null;
}

function fmtAddr(ma) {
  const a = parseMultiaddr(ma);
  if (!a) return str(ma);
  return a.port ? `${a.host}:${a.port}` : a.host;
}

function hostOf(url) {
  try { return new URL(url).host; } catch { return String(url); }
}

// Identicons (5×5, mirrored), so peers are recognizable at a glance.
function fnv1a(s, seed = 0x811c9dc5) {
  let x = seed >>> 0;
  for (let i = 0; i < s.length; i++) { x ^= s.charCodeAt(i); x = Math.imul(x, 0x01000193) >>> 0; }
  // final avalanche
  x ^= x >>> 15; x = Math.imul(x, 0x2c1b3c6d) >>> 0; x ^= x >>> 12;
  return x >>> 0;
}

function identicon(id) {
  const bits = fnv1a(id || '?');
  const hue = fnv1a(id || '?', 0x9747b28c) % 360;
  const el = svg('svg', { viewBox: '0 0 5 5', class: 'identicon-svg', 'aria-hidden': 'true', 'shape-rendering': 'crispEdges' });
  el.style.setProperty('--ic-h', String(hue));
  el.append(svg('rect', { x: 0, y: 0, width: 5, height: 5, class: 'ic-bg' }));
  let b = 0;
  for (let col = 0; col < 3; col++) {
    for (let row = 0; row < 5; row++) {
      if ((bits >>> b++) & 1) {
        el.append(svg('rect', { x: col, y: row, width: 1, height: 1, class: 'ic-fg' }));
        if (col < 2) el.append(svg('rect', { x: 4 - col, y: row, width: 1, height: 1, class: 'ic-fg' }));
      }
    }
  }
  return el;
}

// Copying: the Clipboard API needs a secure context (http://192.168.x.y is not);
// fall back to a hidden textarea.
async function copyText(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) { await navigator.clipboard.writeText(text); return true; }
  } catch { /* fall through */ }
  const ta = h('textarea', { value: text, attrs: { readonly: '', 'aria-hidden': 'true' }, class: 'offscreen' });
  document.body.append(ta);
  ta.select();
  let ok = false;
  try { ok = document.execCommand('copy'); } catch { ok = false; }
  ta.remove();
  return ok;
}

let toastTimer = null;
function toast(msg) {
  const t = $('toast');
  t.textContent = msg;
  t.hidden = false;
  t.classList.remove('show');
  void t.offsetWidth;
  t.classList.add('show');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.classList.remove('show'); t.hidden = true; }, 1800);
}

async function copyWithFeedback(text, what, btn) {
  const ok = await copyText(text);
  toast(ok ? `Copied ${what}` : `Could not copy; select it by hand: ${text}`);
  if (ok && btn) {
    btn.classList.add('copied');
    setTimeout(() => btn.classList.remove('copied'), 1200);
  }
}

/** A short hash that shows the whole value on hover and copies it on click. */
function hashChip(full, { what = 'hash', short = shortHex, cls = '' } = {}) {
  if (typeof full !== 'string' || !full) return h('span', { class: 'muted', text: '—' });
  const b = h('button', {
    type: 'button', class: `hash ${cls}`.trim(), text: short(full),
    title: `${full}\nclick to copy`, attrs: { 'aria-label': `${what} ${full}, click to copy` },
  });
  b.addEventListener('click', () => copyWithFeedback(full, what, b));
  return b;
}

function copyButton(text, what) {
  const b = h('button', { type: 'button', class: 'icon-btn', title: `Copy ${what}`, attrs: { 'aria-label': `Copy ${what}` } },
    icon('copy', 'icon i-copy'), icon('check', 'icon i-check'));
  b.addEventListener('click', (e) => { e.stopPropagation(); copyWithFeedback(text, what, b); });
  return b;
}

/** A relative time that the 1 s ticker keeps fresh. */
function agoEl(ms, cls = 'ago', compact = false) {
  return h('time', {
    class: cls, text: ago(ms, compact), title: ms ? fullTime(ms) : '',
    dataset: { ago: String(ms || 0), compact: compact ? '1' : undefined },
    attrs: { datetime: ms ? new Date(ms).toISOString() : null },
  });
}

const NAT = {
  none: { label: 'no NAT', cls: 'ok', tip: 'A STUN server saw a socket at its own local address and port: reachable as is.' },
  'endpoint-independent': { label: 'endpoint-independent', cls: 'info', tip: 'Two STUN servers saw one socket at the same external address and port: hole punching works.' },
  'endpoint-dependent': { label: 'endpoint-dependent', cls: 'warn', tip: 'Two STUN servers saw one socket at different external ports (symmetric NAT): clients will often need the relay.' },
  unknown: { label: 'unknown', cls: 'muted', tip: 'Fewer than two STUN servers have answered for any one socket yet.' },
};

function natBadge(nat) {
  const n = NAT[nat] || { label: str(nat, 'unknown'), cls: 'muted', tip: '' };
  return h('span', { class: `badge badge-${n.cls}`, title: n.tip, text: n.label });
}

// ---------------------------------------------------------------------------
// JSON-RPC over one WebSocket: many requests in flight, matched by id.

class RpcError extends Error {
  constructor(err) {
    super(err && err.message ? err.message : 'JSON-RPC error');
    this.code = err && err.code;
    this.data = err && err.data;
  }
}

class RpcSocket {
  constructor(url) {
    this.url = url;
    this.nextId = 1;
    this.pending = new Map();
    this.onnotify = () => {};
    this.ws = null;
    this.isOpen = false;
    this.closeReason = '';
    this.closed = null;
  }

  open(timeoutMs = 8000) {
    return new Promise((resolve, reject) => {
      let ws;
      try { ws = new WebSocket(this.url); } catch (e) { reject(new Error(`bad WebSocket URL ${this.url}: ${e.message}`)); return; }
      this.ws = ws;
      const timer = setTimeout(() => { reject(new Error(`timed out connecting to ${this.url}`)); try { ws.close(); } catch { /* ignore */ } }, timeoutMs);
      this.closed = new Promise((done) => {
        ws.onclose = (ev) => {
          clearTimeout(timer);
          const was = this.isOpen;
          this.isOpen = false;
          this.closeReason = was
            ? (ev.reason ? `closed by the node: ${ev.reason} (${ev.code})` : `connection closed (code ${ev.code})`)
            : `cannot connect to ${this.url}`;
          for (const [, p] of this.pending) { clearTimeout(p.timer); p.reject(new Error(this.closeReason)); }
          this.pending.clear();
          reject(new Error(this.closeReason));
          done(this.closeReason);
        };
      });
      ws.onerror = () => { /* a close event follows with the details we can get */ };
      ws.onopen = () => { clearTimeout(timer); this.isOpen = true; resolve(); };
      ws.onmessage = (ev) => this.onMessage(ev.data);
    });
  }

  onMessage(data) {
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    for (const m of Array.isArray(msg) ? msg : [msg]) {
      if (!m || typeof m !== 'object') continue;
      if (m.id !== undefined && m.id !== null && this.pending.has(m.id)) {
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        clearTimeout(p.timer);
        if (m.error) p.reject(new RpcError(m.error));
        else p.resolve(m.result);
      } else if (typeof m.method === 'string' && m.id === undefined) {
        try { this.onnotify(m.method, m.params); } catch (e) { console.error('notification handler', e); }
      }
    }
  }

  call(method, params = {}, timeoutMs = CALL_TIMEOUT_MS) {
    if (!this.isOpen) return Promise.reject(new Error('not connected'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${method}: no answer in ${Math.round(timeoutMs / 1000)} s`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      try {
        this.ws.send(JSON.stringify({ jsonrpc: '2.0', id, method, params }));
      } catch (e) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(e);
      }
    });
  }

  close() { try { this.ws && this.ws.close(1000, 'dashboard closing'); } catch { /* ignore */ } }
}

// ---------------------------------------------------------------------------
// State

const state = {
  conn: 'connecting',       // connecting | live | reconnecting
  everLive: false,
  wsUrl: null,
  attempt: 0,
  retryAt: 0,
  lastError: '',
  lastData: 0,              // ms of the last successful poll
  pollError: '',
  node: null,
  nodeAt: 0,                // when node.uptime was read
  peers: [],
  db: null,
  samples: [],              // {t, n}: getdbhash.records over time
  recent: [],               // {rec, at}
  peerEvents: [],           // {peerId, event, addr, at}
  agree: new Map(),         // peerId -> {root, changedAt, mismatchSince}
  reach: { status: 'idle', events: [], error: '' },   // idle | ok | unsupported | error | demo
  compare: { running: false, at: 0, rows: null, agree: null, attempt: 0, error: '' },
};

let rpc = null;
let compareTimer = null;
let compareDue = 0;

// ---------------------------------------------------------------------------
// Connection: find the WebSocket, connect, subscribe, reconnect with backoff.

async function resolveWsUrl() {
  if (WS_OVERRIDE) {
    if (!/^wss?:\/\//i.test(WS_OVERRIDE)) throw new Error(`?ws= must be a ws:// or wss:// URL, not ${WS_OVERRIDE}`);
    return WS_OVERRIDE;
  }
  let res;
  try {
    res = await fetch(new URL('./', location.href), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'getnodeinfo', params: {} }),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (e) {
    throw new Error(`cannot reach the node's HTTP API at ${location.host}`);
  }
  const hint = 'is this page served by a Cirrus node? Otherwise open it with ?ws=ws://HOST:PORT';
  if (!res.ok) throw new Error(`POST / on ${location.host} answered HTTP ${res.status}; ${hint}`);
  let body;
  try { body = await res.json(); } catch { throw new Error(`POST / on ${location.host} did not answer JSON-RPC; ${hint}`); }
  if (body.error) throw new RpcError(body.error);
  const port = body.result && body.result.ports && body.result.ports.ws;
  if (!port) throw new Error('this node has no WebSocket API listening (getnodeinfo.ports.ws is missing)');
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${location.hostname}:${port}/`;
}

let wakeRetry = null;
function sleepOrRetry(ms) {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() { clearTimeout(t); wakeRetry = null; resolve(); }
    wakeRetry = done;
  });
}

async function connectLoop() {
  for (;;) {
    setConn(state.everLive ? 'reconnecting' : 'connecting');
    let sock = null;
    try {
      const url = await resolveWsUrl();
      state.wsUrl = url;
      sock = new RpcSocket(url);
      sock.onnotify = onNotification;
      await sock.open();
      rpc = sock;
      await sock.call('subscribe', { topics: ['records', 'peers'] });
      const wasLive = state.everLive;
      state.attempt = 0;
      state.everLive = true;
      state.lastError = '';
      if (state.reach.status === 'unsupported' || state.reach.status === 'error') state.reach.status = 'idle';
      setConn('live', wasLive);
      await poll();
      compareIn(300);
      const reason = await sock.closed;
      state.lastError = reason;
    } catch (e) {
      state.lastError = e && e.message ? e.message : String(e);
      if (sock) sock.close();
    }
    if (rpc === sock) rpc = null;
    clearTimeout(pollTimer);
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.attempt);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    state.attempt++;
    state.retryAt = Date.now() + delay;
    setConn(state.everLive ? 'reconnecting' : 'connecting');
    await sleepOrRetry(delay);
  }
}

let bannerTimer = null;
function setConn(conn, reconnected = false) {
  state.conn = conn;
  const pill = $('status-pill');
  pill.dataset.state = conn;
  setText($('ws-status'), conn);
  pill.title = state.wsUrl ? `WebSocket ${state.wsUrl}` : '';
  document.body.classList.toggle('is-stale', conn !== 'live' && state.everLive);
  $('compare-run').disabled = conn !== 'live';
  clearTimeout(bannerTimer);
  if (conn === 'live') {
    if (reconnected) {
      showBanner('ok', 'Reconnected: live data again.', false);
      bannerTimer = setTimeout(hideBanner, 4000);
    } else hideBanner();
  } else {
    renderBanner();
  }
  renderFooter();
  renderTitle();
}

function renderBanner() {
  if (state.conn === 'live') return;
  const secs = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
  const err = state.lastError ? ` (${state.lastError})` : '';
  const retry = state.retryAt > Date.now() ? `Retrying in ${secs} s` : 'Connecting';
  if (state.everLive) {
    const since = state.lastData ? ` Data below is from ${clock(state.lastData)}.` : '';
    showBanner('bad', `Connection to the node lost${err}. ${retry}…${since}`, state.retryAt > Date.now());
  } else if (state.attempt > 0) {
    showBanner('warn', `Cannot reach the node${err}. ${retry}…`, state.retryAt > Date.now());
  }
}

function showBanner(kind, text, retry) {
  const b = $('banner');
  b.dataset.kind = kind;
  b.hidden = false;
  setText($('banner-text'), text);
  const ic = $('banner-icon');
  if (ic.dataset.kind !== kind) { ic.dataset.kind = kind; ic.replaceChildren(icon(kind === 'ok' ? 'check' : kind === 'bad' ? 'plug' : 'alert')); }
  $('banner-retry').hidden = !retry;
}

function hideBanner() { $('banner').hidden = true; }

// ---------------------------------------------------------------------------
// Polling

let pollTimer = null;
let polling = false;

function schedulePoll(ms) {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(poll, ms);
}

async function poll() {
  const sock = rpc;
  if (!sock || !sock.isOpen) return;
  if (polling) return;
  polling = true;
  try {
    const [info, peers, db] = await Promise.all([
      sock.call('getnodeinfo'),
      sock.call('getpeerinfo'),
      sock.call('getdbhash'),
    ]);
    if (sock !== rpc) return;
    onNodeInfo(info);
    onDb(db);
    onPeers(peers);
    state.lastData = Date.now();
    state.pollError = '';
    renderFooter();
    pollReach(sock);
  } catch (e) {
    if (sock === rpc && sock.isOpen) {
      state.pollError = e.message;
      renderFooter();
    }
  } finally {
    polling = false;
    if (sock === rpc && sock.isOpen) schedulePoll(document.hidden ? HIDDEN_POLL_MS : POLL_MS);
  }
}

async function pollReach(sock) {
  if (DEMO || state.reach.status === 'unsupported') return;
  try {
    const r = await sock.call('getreachability');
    state.reach = { status: 'ok', events: Array.isArray(r && r.events) ? r.events : [], error: '' };
  } catch (e) {
    if (!sock.isOpen) return;
    if (e instanceof RpcError && e.code === -32601) state.reach = { status: 'unsupported', events: [], error: '' };
    else state.reach = { status: 'error', events: state.reach.events, error: e.message };
  }
  renderReach();
}

// Quick refreshes between polls, driven by notifications.
function debounce(fn, ms) {
  let t = null;
  return () => { if (!t) t = setTimeout(() => { t = null; fn(); }, ms); };
}

const refreshDbSoon = debounce(async () => {
  const sock = rpc;
  if (!sock || !sock.isOpen) return;
  try { const db = await sock.call('getdbhash'); if (sock === rpc) { onDb(db); renderPeers(); } } catch { /* next poll */ }
}, 400);

const refreshPeersSoon = debounce(async () => {
  const sock = rpc;
  if (!sock || !sock.isOpen) return;
  try {
    const [info, peers] = await Promise.all([sock.call('getnodeinfo'), sock.call('getpeerinfo')]);
    if (sock === rpc) { onNodeInfo(info); onPeers(peers); }
  } catch { /* next poll */ }
}, 300);

function onNotification(method, p) {
  if (method === 'record' && p && typeof p === 'object') {
    state.recent.unshift({ rec: p, at: Date.now() });
    if (state.recent.length > MAX_RECENT) state.recent.length = MAX_RECENT;
    renderRecordsSoon();
    refreshDbSoon();
  } else if (method === 'peer' && p && typeof p === 'object') {
    state.peerEvents.unshift({ peerId: p.peerId, event: p.event, addr: p.addr, at: Date.now() });
    if (state.peerEvents.length > 20) state.peerEvents.length = 20;
    renderPeerEvent();
    refreshPeersSoon();
  }
}

// ---------------------------------------------------------------------------
// Data handlers

function onNodeInfo(info) {
  if (!info || typeof info !== 'object') return;
  state.node = info;
  state.nodeAt = Date.now();
  renderNode();
}

function onDb(db) {
  if (!db || typeof db !== 'object') return;
  const prevRoot = state.db && state.db.root;
  state.db = db;
  const now = Date.now();
  if (typeof db.records === 'number') {
    const last = state.samples[state.samples.length - 1];
    if (!last || now - last.t >= 250) state.samples.push({ t: now, n: db.records });
    else last.n = db.records;
    while (state.samples.length > 2 && state.samples[1].t < now - RATE_WINDOW_MS - 10000) state.samples.shift();
  }
  if (prevRoot !== db.root) {
    updateAgreement();
    // Let the write spread, then compare again (at most every few seconds).
    if (prevRoot && !state.compare.running) compareIn(Math.max(2500, 5000 - (Date.now() - state.compare.at)));
    renderCompare();
  }
  renderDb();
  renderChart();
}

function onPeers(peers) {
  if (!Array.isArray(peers)) return;
  state.peers = peers.slice().sort((a, b) => String(a.peerId).localeCompare(String(b.peerId)));
  updateAgreement();
  renderPeers();
  renderDb();
}

/** agree / syncing / differs per peer, from the root it last announced. */
function updateAgreement() {
  const now = Date.now();
  const ours = state.db && state.db.root;
  const seen = new Set();
  for (const p of state.peers) {
    seen.add(p.peerId);
    let a = state.agree.get(p.peerId);
    if (!a) { a = { root: p.dbRoot, changedAt: now, mismatchSince: null, firstSeen: now }; state.agree.set(p.peerId, a); }
    if (a.root !== p.dbRoot) { a.root = p.dbRoot; a.changedAt = now; }
    if (ours && p.dbRoot === ours) a.mismatchSince = null;
    else if (a.mismatchSince === null) a.mismatchSince = now;
  }
  for (const id of [...state.agree.keys()]) if (!seen.has(id)) state.agree.delete(id);
}

function agreeState(p) {
  const a = state.agree.get(p.peerId);
  const ours = state.db && state.db.root;
  if (!ours || !a) return 'syncing';
  if (p.dbRoot === ours) return 'agree';
  const now = Date.now();
  // Roots differ briefly while writes are in flight; a peer whose announced root
  // still moves is catching up.
  if (now - a.mismatchSince < SYNC_GRACE_MS || now - a.changedAt < SYNC_GRACE_MS) return 'syncing';
  return p.dbRoot ? 'differs' : 'unknown';
}

const AGREE_TIP = {
  agree: 'The root this peer last announced equals ours.',
  syncing: 'Roots differ right now, as they do while writes are in flight.',
  differs: `The root this peer announced has differed from ours for over ${SYNC_GRACE_MS / 1000} s.`,
  unknown: 'This peer has not announced a root yet.',
};

function agreeMark(s) {
  const ic = s === 'agree' ? 'check' : s === 'differs' ? 'x' : s === 'syncing' ? 'sync' : 'help';
  return h('span', { class: `mark mark-${s}`, title: AGREE_TIP[s] },
    icon(ic, 'icon mark-icon'), h('span', { text: s, dataset: { testid: 'peer-agree' } }));
}

// ---------------------------------------------------------------------------
// Rendering: this node

function renderTitle() {
  const id = state.node && state.node.peerId;
  const suffix = state.conn === 'live' ? '' : ` (${state.conn})`;
  document.title = id ? `Cirrus · ${shortPeer(id)}${suffix}` : `Cirrus node${suffix}`;
}

/** Who found a mapping: a peer's STUN server (its id), or our router (`upnp`). */
function viaCell(via) {
  if (via === 'upnp') {
    return h('span', { class: 'via-router', text: 'router (UPnP)', title: 'a port the LAN gateway forwards to this node (port mapping)' });
  }
  return via ? hashChip(via, { what: 'peer id', short: shortPeer, cls: 'hash-sm' }) : '—';
}

function mappingTable(stun) {
  const rows = [];
  for (const t of ['udp', 'tcp']) {
    for (const m of (stun && Array.isArray(stun[t]) ? stun[t] : [])) rows.push({ t, m });
  }
  if (!rows.length) return h('p', { class: 'empty', text: 'No STUN mappings yet: they appear once a peer\u2019s STUN server answers.' });
  return h('div', { class: 'table-wrap' },
    h('table', { class: 'table table-compact mappings' },
      h('thead', {}, h('tr', {},
        h('th', { text: 'Proto' }), h('th', { class: 'num', text: 'Port' }), h('th', { class: 'num', text: 'Local' }),
        h('th', { text: 'Via' }), h('th', { class: 'seen', text: 'Seen' }))),
      h('tbody', {}, rows.map(({ t, m }) => {
        const ext = m.address ? `${m.address}:${m.port}` : String(m.port);
        return h('tr', {},
          h('td', {}, h('span', { class: `proto proto-${t}`, text: t })),
          h('td', { class: 'num mono', title: `external ${ext}`, text: str(m.port) }),
          h('td', { class: 'num mono', text: str(m.localPort) }),
          h('td', { class: 'via' }, viaCell(m.via)),
          h('td', { class: 'seen' }, agoEl(m.lastSeen ? m.lastSeen * 1000 : 0, 'ago', true)));
      }))));
}

function renderNode() {
  const n = state.node;
  if (!n) return;
  const id = str(n.peerId);
  const idEl = $('node-peer-id');
  if (idEl.textContent !== id) {
    idEl.textContent = id;
    idEl.dataset.peerId = id;
    $('node-identicon').replaceChildren(identicon(id));
    $('top-identicon').replaceChildren(identicon(id));
    setText($('top-peer'), shortPeer(id));
    $('top-peer').title = id;
    $('top-node').hidden = false;
    const btn = $('node-copy');
    btn.disabled = false;
    btn.onclick = () => copyWithFeedback(id, 'peer id', btn);
    btn.replaceChildren(icon('copy', 'icon i-copy'), icon('check', 'icon i-check'));
    renderTitle();
  }
  setText($('node-version-tag'), n.version ? `v${n.version}` : '');
  renderUptime();
  setText($('node-peers'), `${fmtInt(n.peers)} connected`);
  const stun = n.stun || {};
  patch($('node-ext'), JSON.stringify([stun.address]), () =>
    stun.address ? h('code', { class: 'mono', text: stun.address }) : h('span', { class: 'muted', text: 'not known yet' }));
  patch($('node-nat'), JSON.stringify([stun.nat]), () => natBadge(stun.nat || 'unknown'));

  const ports = n.ports || {};
  const order = ['p2p', 'http', 'ws', 'udp', 'stun'];
  const names = Object.keys(ports).sort((a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99));
  patch($('node-ports'), JSON.stringify(ports), () => names.length
    ? names.map((k) => h('span', { class: 'chip', title: portTip(k) }, h('span', { class: 'chip-k', text: k }), h('span', { class: 'chip-v mono', text: str(ports[k]) })))
    : h('span', { class: 'muted', text: 'none reported' }));

  const dyn = [];
  for (const t of ['udp', 'tcp']) for (const m of (Array.isArray(stun[t]) ? stun[t] : [])) if (m.via !== 'upnp') dyn.push({ t, local: m.localPort, port: m.port });
  patch($('node-dyn-ports'), JSON.stringify(dyn), () => dyn.length
    ? dyn.map((d) => h('span', { class: 'chip', title: `${d.t === 'udp' ? 'UDP' : 'WebSocket (TCP)'} API on local port ${d.local}, seen outside as port ${d.port}` },
      h('span', { class: `chip-k proto-${d.t}`, text: d.t }), h('span', { class: 'chip-v mono', text: str(d.local) }),
      d.port !== d.local ? h('span', { class: 'chip-x mono', text: `→ ${d.port}` }) : null))
    : h('span', { class: 'muted', text: 'none yet (one pair per peer, once STUN answers)' }));

  patch($('node-mappings'), JSON.stringify([stun.udp, stun.tcp]), () => mappingTable(stun));
  const listen = Array.isArray(n.listen) ? n.listen : [];
  patch($('node-listen'), JSON.stringify(listen), () => listen.map((a) => h('li', { class: 'mono', text: a })));
}

function portTip(k) {
  return {
    p2p: 'libp2p swarm, TCP and UDP/QUIC (node to node)',
    http: 'HTTP JSON-RPC API (POST /) and this page',
    ws: 'WebSocket JSON-RPC API (this page is live over it)',
    udp: 'datagram JSON-RPC API',
    stun: 'STUN server, UDP and TCP',
  }[k] || k;
}

function renderUptime() {
  const n = state.node;
  if (!n || typeof n.uptime !== 'number') return;
  const live = state.conn === 'live';
  const up = n.uptime + (live ? (Date.now() - state.nodeAt) / 1000 : 0);
  setText($('node-uptime'), duration(up));
}

// ---------------------------------------------------------------------------
// Rendering: database and chart

function renderDb() {
  const db = state.db;
  if (!db) return;
  const rec = $('db-records');
  setText(rec, fmtInt(db.records));
  rec.dataset.count = String(db.records);
  setText($('db-ratings-count'), fmtInt(db.ratings && db.ratings.count));
  setText($('db-ratings-sum'), fmtInt(db.ratings && db.ratings.sum));
  const root = $('db-root');
  if (root.dataset.root !== db.root) {
    root.dataset.root = str(db.root, '');
    setText(root, shortHex(db.root, 12, 8));
    root.title = `${db.root}\nclick to copy`;
    root.onclick = () => copyWithFeedback(db.root, 'root', root);
  }
  // Agreement summary over peers.
  const counts = { agree: 0, syncing: 0, differs: 0, unknown: 0 };
  for (const p of state.peers) counts[agreeState(p)]++;
  const total = state.peers.length;
  let kind, text;
  if (!total) { kind = 'muted'; text = 'no peers to compare with'; }
  else if (counts.agree === total) { kind = 'agree'; text = total === 1 ? 'the peer agrees' : `all ${total} peers agree`; }
  else if (counts.differs) { kind = 'differs'; text = `${counts.differs} of ${total} ${total === 1 ? 'peer differs' : 'peers differ'}`; }
  else if (counts.syncing) { kind = 'syncing'; text = `${counts.syncing} of ${total} syncing`; }
  else { kind = 'unknown'; text = `${counts.agree} of ${total} agree`; }
  patch($('db-agree-summary'), kind + text, () => h('span', { class: `mark mark-${kind}`, title: 'Roots the peers last announced, against ours' },
    icon(kind === 'agree' ? 'check' : kind === 'differs' ? 'x' : kind === 'syncing' ? 'sync' : 'help', 'icon mark-icon'), h('span', { text })));
}

/** getdbhash.records at time t, interpolated between samples (null before the first). */
function countAt(t) {
  const s = state.samples;
  if (!s.length || t < s[0].t) return null;
  if (t >= s[s.length - 1].t) return s[s.length - 1].n;
  let lo = 0, hi = s.length - 1;
  while (hi - lo > 1) { const mid = (lo + hi) >> 1; if (s[mid].t <= t) lo = mid; else hi = mid; }
  const a = s[lo], b = s[hi];
  return a.n + ((b.n - a.n) * (t - a.t)) / (b.t - a.t);
}

/** Records per second in fixed buckets over the window, from the change of the count. */
function buckets(now) {
  const s = state.samples;
  const out = [];
  if (s.length < 2) return out;
  const first = s[0].t, last = s[s.length - 1].t;
  const end = Math.ceil(now / BUCKET_MS) * BUCKET_MS;
  for (let b = end - RATE_WINDOW_MS; b < end; b += BUCKET_MS) {
    const a = Math.max(b, first);
    const z = Math.min(b + BUCKET_MS, last);
    if (z - a < 1000) continue;   // no data here (before the first sample, a gap, or too short)
    const r = Math.max(0, countAt(z) - countAt(a)) / ((z - a) / 1000);
    out.push({ a: b, b: b + BUCKET_MS, r, partial: z < b + BUCKET_MS });
  }
  return out;
}

function rateNow() {
  const s = state.samples;
  if (s.length < 2) return NaN;
  const last = s[s.length - 1];
  if (state.conn !== 'live' || Date.now() - last.t > 3 * POLL_MS + 2000) return NaN;
  const from = Math.max(s[0].t, last.t - RATE_NOW_MS);
  const dt = (last.t - from) / 1000;
  return dt >= 1 ? Math.max(0, last.n - countAt(from)) / dt : NaN;
}

function niceMax(v) {
  if (v <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function renderChart() {
  const el = $('rate-chart');
  const W = 600, H = 140, TOP = 16, BOT = 1;
  const now = Date.now();
  const bs = buckets(now);
  const end = Math.ceil(now / BUCKET_MS) * BUCKET_MS;
  const t0 = end - RATE_WINDOW_MS;
  const peak = bs.reduce((m, b) => Math.max(m, b.r), 0);
  const ymax = niceMax(peak * 1.1);
  const x = (t) => ((t - t0) / RATE_WINDOW_MS) * W;
  const y = (r) => H - BOT - (r / ymax) * (H - TOP - BOT);
  const kids = [];
  for (const f of [0.5, 1]) kids.push(svg('line', { x1: 0, x2: W, y1: y(ymax * f), y2: y(ymax * f), class: 'grid' }));
  kids.push(svg('line', { x1: W / 2, x2: W / 2, y1: TOP, y2: H, class: 'grid grid-v' }));
  const bw = (BUCKET_MS / RATE_WINDOW_MS) * W;
  for (const b of bs) {
    const yy = y(b.r);
    const hgt = Math.max(b.r > 0 ? 1.5 : 0, H - BOT - yy);
    const rect = svg('rect', { x: (x(b.a) + 0.6).toFixed(2), y: (H - BOT - hgt).toFixed(2), width: Math.max(0.5, bw - 1.2).toFixed(2), height: hgt.toFixed(2), class: b.partial ? 'bar bar-now' : 'bar' });
    const t = svg('title');
    t.textContent = `${clock(b.a)}–${clock(b.b)}: ${fmtRate(b.r)} records/s${b.partial ? ' (so far)' : ''}`;
    rect.append(t);
    kids.push(rect);
  }
  kids.push(svg('line', { x1: 0, x2: W, y1: H - BOT, y2: H - BOT, class: 'axis' }));
  el.replaceChildren(...kids);
  setText($('chart-ymax'), `${fmtRate(ymax)}/s`);
  const done = bs.filter((b) => !b.partial);
  const avg = done.length ? done.reduce((m, b) => m + b.r, 0) / done.length : NaN;
  setText($('chart-legend'), bs.length ? `peak ${fmtRate(peak)}/s · avg ${fmtRate(avg)}/s` : 'collecting…');
  const idle = $('chart-idle');
  idle.hidden = bs.length > 0 && peak > 0;
  setText(idle, !state.samples.length ? 'waiting for data…' : bs.length ? 'no new records in this window' : 'measuring…');
  setText($('db-rate'), fmtRate(rateNow()));
  $('db-rate').title = `average over the last ${RATE_NOW_MS / 1000} s, from the change of getdbhash.records`;
}

// ---------------------------------------------------------------------------
// Rendering: peers

const peerCards = new Map();

function buildPeerCard(id) {
  const card = h('article', { class: 'peer', dataset: { testid: 'peer-row', peerId: id } });
  const parts = {
    mark: h('div', { class: 'peer-mark' }),
    addr: h('dd', { class: 'mono' }),
    dir: h('dd'),
    ping: h('dd', { class: 'mono' }),
    nat: h('dd'),
    root: h('dd'),
    since: h('dd'),
    agent: h('dd', { class: 'mono small' }),
    stunSummary: h('span', { class: 'muted' }),
    stunBody: h('div'),
  };
  const details = h('details', { class: 'more peer-stun', open: peerCards.size < 4 },
    h('summary', {}, 'STUN mappings ', parts.stunSummary), parts.stunBody);
  card.append(
    h('header', { class: 'peer-head' },
      h('span', { class: 'identicon md', attrs: { 'aria-hidden': 'true' } }, identicon(id)),
      h('div', { class: 'peer-id' },
        h('code', { class: 'mono peer-short', title: id, text: shortPeer(id) }),
        copyButton(id, 'peer id')),
      parts.mark),
    h('dl', { class: 'kv kv-peer' },
      h('div', {}, h('dt', { text: 'Address' }), parts.addr),
      h('div', {}, h('dt', { text: 'Direction' }), parts.dir),
      h('div', {}, h('dt', { text: 'Ping' }), parts.ping),
      h('div', {}, h('dt', { text: 'NAT type' }), parts.nat),
      h('div', { class: 'kv-wide' }, h('dt', { text: 'Announced root' }), parts.root),
      h('div', {}, h('dt', { text: 'Connected' }), parts.since),
      h('div', {}, h('dt', { text: 'Agent' }), parts.agent)),
    details);
  return { card, parts };
}

function renderPeers() {
  const list = $('peer-list');
  const ids = new Set(state.peers.map((p) => p.peerId));
  for (const [id, c] of peerCards) if (!ids.has(id)) { c.card.remove(); peerCards.delete(id); }
  let prev = null;
  for (const p of state.peers) {
    let c = peerCards.get(p.peerId);
    if (!c) { c = buildPeerCard(p.peerId); peerCards.set(p.peerId, c); }
    const want = prev ? prev.nextSibling : list.firstChild;
    if (want !== c.card) list.insertBefore(c.card, want);
    prev = c.card;
    updatePeerCard(c, p);
  }
  $('peers-empty').hidden = state.peers.length > 0;
  setText($('peers-count'), state.peers.length ? String(state.peers.length) : '');
}

function updatePeerCard({ card, parts }, p) {
  const s = agreeState(p);
  card.dataset.agree = s;
  patch(parts.mark, s, () => agreeMark(s));
  const a = parseMultiaddr(p.addr);
  const stun = p.stun || null;
  patch(parts.addr, JSON.stringify([p.addr, stun && stun.address]), () => {
    const shown = stun && stun.address ? stun.address : (a ? a.host : str(p.addr));
    return [h('span', { title: `connection ${str(p.addr)}`, text: shown }),
      a && a.proto ? h('span', { class: 'muted small', text: ` · ${a.proto}` }) : null];
  });
  patch(parts.dir, String(p.direction), () => h('span', { class: 'dir' },
    icon(p.direction === 'inbound' ? 'in' : 'out', 'icon icon-sm'), h('span', { text: str(p.direction) })));
  const ping = typeof p.pingMs === 'number' ? p.pingMs : null;
  patch(parts.ping, String(ping === null ? '' : ping.toFixed(1)), () => ping === null
    ? h('span', { class: 'muted', text: 'not yet' })
    : h('span', { class: `ping ${ping < 50 ? 'ping-ok' : ping < 200 ? 'ping-warn' : 'ping-bad'}`, text: ping < 10 ? `${ping.toFixed(2)} ms` : `${Math.round(ping)} ms` }));
  patch(parts.nat, String(stun && stun.nat), () => stun ? natBadge(stun.nat || 'unknown') : h('span', { class: 'muted', text: 'not announced' }));
  const ours = state.db && state.db.root;
  patch(parts.root, JSON.stringify([p.dbRoot, s]), () => p.dbRoot
    ? hashChip(p.dbRoot, { what: 'root', cls: s === 'agree' ? 'hash-ok' : s === 'syncing' ? 'hash-warn' : 'hash-bad' })
    : h('span', { class: 'muted', text: 'not announced yet' }));
  const since = p.connectedSince ? p.connectedSince * 1000 : 0;
  patch(parts.since, String(since), () => agoEl(since));
  setText(parts.agent, str(p.agent));
  const nu = stun && Array.isArray(stun.udp) ? stun.udp.length : 0;
  const nt = stun && Array.isArray(stun.tcp) ? stun.tcp.length : 0;
  setText(parts.stunSummary, stun ? `udp ${nu} · tcp ${nt}` : 'none announced');
  patch(parts.stunBody, JSON.stringify(stun ? [stun.udp, stun.tcp] : null), () => stun
    ? mappingTable(stun)
    : h('p', { class: 'empty', text: 'This peer has not announced its STUN data yet.' }));
}

function renderPeerEvent() {
  const e = state.peerEvents[0];
  const el = $('peer-last-event');
  if (!e) { el.replaceChildren(); return; }
  el.replaceChildren(
    h('span', { class: `evt evt-${e.event === 'connected' ? 'ok' : 'bad'}`, text: str(e.event) }),
    ' ', h('code', { class: 'mono', title: str(e.peerId), text: shortPeer(e.peerId) }), ' ', agoEl(e.at));
}

// ---------------------------------------------------------------------------
// Rendering: recent records

// A burst of records is drawn once per frame (and not at all while the tab is hidden).
let recordsFrame = 0;
function renderRecordsSoon() {
  if (recordsFrame) return;
  recordsFrame = requestAnimationFrame(() => { recordsFrame = 0; renderRecords(true); });
}

function renderRecords(fresh = false) {
  const list = $('recent-records');
  $('records-empty').hidden = state.recent.length > 0;
  // Items are keyed by the object they show; new ones go on top.
  const have = new Map();
  for (const li of list.children) have.set(li.__item, li);
  const keep = new Set(state.recent);
  for (const [item, li] of have) if (!keep.has(item)) li.remove();
  let prev = null;
  for (const item of state.recent) {
    let li = have.get(item);
    if (!li) {
      li = recordItem(item);
      if (fresh) li.classList.add('fresh');
    }
    const want = prev ? prev.nextSibling : list.firstChild;
    if (want !== li) list.insertBefore(li, want);
    prev = li;
  }
}

function preview(v) {
  const s = String(v).replace(/\s*\n\s*/g, ' ⏎ ');
  return s.length > 160 ? `${s.slice(0, 160)}…` : s;
}

function recordItem(item) {
  const r = item.rec;
  const kind = r.kind === 'rating' ? 'rating' : r.kind === 'doc' ? 'doc' : str(r.kind);
  let value;
  if (r.value === null) value = h('span', { class: 'rec-value tomb', text: 'deleted (tombstone)' });
  else if (kind === 'rating') {
    const n = Math.max(0, Math.min(5, parseInt(r.value, 10) || 0));
    value = h('span', { class: 'rec-value', title: `rating ${str(r.value)}` },
      h('span', { class: 'stars', attrs: { 'aria-hidden': 'true' }, text: '★'.repeat(n) }),
      h('span', { class: 'stars stars-off', attrs: { 'aria-hidden': 'true' }, text: '★'.repeat(5 - n) }),
      h('span', { class: 'rec-score', text: ` ${str(r.value)}` }));
  } else {
    const full = String(r.value);
    value = h('span', { class: 'rec-value', title: full.length > 2000 ? `${full.slice(0, 2000)}…` : full, text: preview(full) });
  }
  const li = h('li', { class: 'rec', dataset: { testid: 'recent-record', key: str(r.key, ''), id: str(r.id, '') } },
    h('div', { class: 'rec-top' },
      h('span', { class: `kind kind-${kind}`, text: kind }),
      h('code', { class: 'rec-key', title: str(r.key), text: str(r.key) }),
      agoEl(item.at, 'ago rec-time')),
    h('div', { class: 'rec-body' }, value),
    h('div', { class: 'rec-meta' },
      h('span', { class: 'rec-author' }, h('span', { class: 'identicon xs', attrs: { 'aria-hidden': 'true' } }, identicon(str(r.author, ''))),
        'by ', hashChip(r.author, { what: 'author', short: (x) => shortHex(x, 6, 4), cls: 'hash-sm' })),
      h('span', {}, 'seq ', h('span', { class: 'mono', text: str(r.seq) })),
      r.id ? h('span', {}, 'id ', hashChip(r.id, { what: 'record id', short: (x) => shortHex(x, 6, 4), cls: 'hash-sm' })) : null));
  li.__item = item;
  return li;
}

// ---------------------------------------------------------------------------
// Rendering: reachability

const PATH = {
  direct: { cls: 'ok', icon: 'direct', tip: 'the client reached the peer directly (hole punched)' },
  relay: { cls: 'warn', icon: 'relay', tip: 'carried over the swarm through this node' },
  pending: { cls: 'info', icon: 'pending', tip: 'not settled yet' },
  unknown: { cls: 'muted', icon: 'help', tip: 'this node could not tell which path the client took' },
};

function demoEvents() {
  const now = Date.now();
  const ids = ['12D3KooWKa3HTKQEnydVUqNXdmLDXwhFVgrCy29Fm2eKZPiZJfNS', '12D3KooWS7jVmv1gvLKqsawPgX3cJB6Dj2UigmY1LKnTFM4Hom1M', '12D3KooWDemoPeerKf8z3xYqN1vRb6TtP2mWcH9sLgA4eJdU7oZ'];
  return [
    { at: now - 4000, kind: 'punch', role: 'rendezvous', peerId: ids[0], client: '198.51.100.23:40512', transport: 'udp', path: 'pending' },
    { at: now - 38000, kind: 'punch', role: 'rendezvous', peerId: ids[1], client: '203.0.113.9:51022', transport: 'tcp', path: 'direct' },
    { at: now - 95000, kind: 'relay', role: 'rendezvous', peerId: ids[2], client: '192.0.2.77:33001', transport: null, path: 'relay' },
    { at: now - 160000, kind: 'punch', role: 'target', peerId: ids[0], client: '198.51.100.23:40498', transport: 'udp', path: 'direct' },
    { at: now - 420000, kind: 'relay', role: 'target', peerId: ids[1], client: null, transport: null, path: 'unknown' },
    { at: now - 3700000, kind: 'punch', role: 'rendezvous', peerId: ids[2], client: '192.0.2.77:32990', transport: 'udp', path: 'relay' },
  ];
}

/** Alike events (the compare panel's relays, a client's retries) as one line: the
 * newest, where it stands, with how many there were. */
function foldRepeats(events) {
  const out = [];
  const seen = new Map();
  const key = (e) => [e.kind, e.role, e.peerId, e.method, e.path, e.transport, e.client].join('|');
  for (const e of events) {
    const k = key(e);
    const first = seen.get(k);
    if (first) first.times += 1;
    else { const x = { ...e, times: 1 }; seen.set(k, x); out.push(x); }
  }
  return out;
}

function renderReach() {
  const r = state.reach;
  $('reach-demo').hidden = r.status !== 'demo';
  const list = $('reach-list');
  const empty = $('reach-empty');
  const events = foldRepeats((r.events || []).slice(0, 64)).slice(0, 30);
  if (r.status === 'unsupported') {
    list.replaceChildren(); list.__sig = null;
    $('reach-summary').replaceChildren();
    empty.hidden = false;
    empty.className = 'empty empty-box';
    empty.replaceChildren(h('strong', { text: 'not available on this node' }),
      h('span', { text: ' — this node\u2019s version does not report punch and relay calls (getreachability).' }));
    return;
  }
  empty.className = 'empty';
  if (r.status === 'idle') { empty.hidden = false; setText(empty, state.conn === 'live' ? 'Asking the node…' : '—'); return; }
  if (r.status === 'error' && !events.length) { empty.hidden = false; setText(empty, `Could not read reachability: ${r.error}`); return; }
  empty.hidden = events.length > 0;
  if (!events.length) setText(empty, 'No punch or relay calls yet.');
  const counts = {};
  for (const e of events) counts[e.path] = (counts[e.path] || 0) + 1;
  patch($('reach-summary'), JSON.stringify(counts), () => Object.keys(PATH).filter((k) => counts[k]).map((k) =>
    h('span', { class: `badge badge-${PATH[k].cls}` }, icon(PATH[k].icon, 'icon icon-sm'), h('span', { text: `${k} ${counts[k]}` }))));
  patch(list, JSON.stringify(events), () => events.map((e) => {
    const pth = PATH[e.path] || PATH.unknown;
    const kindIcon = e.kind === 'relay' ? 'relay' : 'zap';
    return h('li', { class: 'reach-item' },
      h('span', { class: `reach-kind reach-${e.kind === 'relay' ? 'relay' : 'punch'}`, title: str(e.kind) }, icon(kindIcon)),
      h('div', { class: 'reach-main' },
        h('div', { class: 'reach-line' },
          h('strong', { text: str(e.kind) }),
          e.method ? h('code', { class: 'mono small', text: ` ${str(e.method)}` }) : null,
          e.times > 1 ? h('span', { class: 'badge badge-muted times', title: `${e.times} alike among the last events; the newest shown`, text: `×${e.times}` }) : null,
          h('span', { class: 'muted', text: ` as ${str(e.role)}` }),
          e.peerId ? [h('span', { class: 'muted', text: e.role === 'target' ? ' · from ' : ' · to ' }),
            hashChip(e.peerId, { what: 'peer id', short: shortPeer, cls: 'hash-sm' })] : null),
        h('div', { class: 'reach-line muted small' },
          h('span', { text: 'client ' }), h('code', { class: 'mono', text: str(e.client, 'unknown') }),
          e.transport ? h('span', { class: `proto proto-${e.transport === 'tcp' ? 'tcp' : 'udp'}`, text: str(e.transport) }) : null,
          h('span', { text: ' · ' }), agoEl(e.at))),
      h('span', { class: `badge badge-${pth.cls} path`, title: pth.tip }, icon(pth.icon, 'icon icon-sm'), h('span', { text: str(e.path, 'unknown') })));
  }));
}

// ---------------------------------------------------------------------------
// Compare: our getdbhash and every peer's through relay, like `cirrus compare`.

const sameDb = (a, b) => !!a && !!b && a.root === b.root && a.records === b.records &&
  (a.ratings && a.ratings.sum) === (b.ratings && b.ratings.sum) && (a.ratings && a.ratings.count) === (b.ratings && b.ratings.count);


async function askAll(sock) {
  const peers = state.peers.slice();
  const selfName = WS_OVERRIDE ? hostOf(WS_OVERRIDE) : location.host;
  const self = sock.call('getdbhash').then((db) => ({ ok: true, db }), (e) => ({ ok: false, error: e.message }));
  const others = peers.map((p) => sock.call('relay', { peerId: p.peerId, request: { jsonrpc: '2.0', id: 1, method: 'getdbhash' } }, RELAY_TIMEOUT_MS)
    .then((resp) => {
      if (resp && resp.result && typeof resp.result === 'object') return { ok: true, db: resp.result };
      if (resp && resp.error) return { ok: false, error: `${resp.error.message} (${resp.error.code})` };
      return { ok: false, error: 'no getdbhash in the relayed answer' };
    }, (e) => ({ ok: false, error: e.message })));
  const res = await Promise.all([self, ...others]);
  const rows = [{ node: selfName, path: 'this node', peerId: state.node && state.node.peerId, ...res[0] }];
  peers.forEach((p, i) => {
    const a = parseMultiaddr(p.addr);
    rows.push({ node: (p.stun && p.stun.address) || (a && a.host) || str(p.addr), path: 'relay', peerId: p.peerId, ...res[i + 1] });
  });
  return rows;
}

async function runCompare() {
  clearTimeout(compareTimer);
  compareDue = 0;
  const sock = rpc;
  if (!sock || !sock.isOpen || state.compare.running) { scheduleCompare(); return; }
  state.compare.running = true;
  state.compare.attempt = 0;
  renderCompare();
  try {
    let rows;
    let agree = false;
    // Roots differ briefly while writes are in flight: ask again a few times first.
    for (let attempt = 0; attempt < 3; attempt++) {
      state.compare.attempt = attempt;
      if (attempt) { renderCompare(); await new Promise((r) => setTimeout(r, 1000)); }
      rows = await askAll(sock);
      if (sock !== rpc) return;
      const first = rows[0].ok ? rows[0].db : null;
      agree = rows.every((r) => r.ok && sameDb(r.db, first));
      if (agree) break;
    }
    state.compare = { running: false, at: Date.now(), rows, agree, attempt: 0, error: '' };
  } catch (e) {
    state.compare = { ...state.compare, running: false, error: e.message };
  } finally {
    state.compare.running = false;
    renderCompare();
    scheduleCompare();
  }
}

function scheduleCompare() {
  compareDue = 0;
  compareIn(document.hidden ? 4 * COMPARE_EVERY_MS : COMPARE_EVERY_MS);
}

/** Run the compare in ms, unless it is already due sooner. */
function compareIn(ms) {
  const due = Date.now() + ms;
  if (compareDue && compareDue <= due) return;
  clearTimeout(compareTimer);
  compareDue = due;
  compareTimer = setTimeout(() => { compareDue = 0; runCompare(); }, ms);
}

function renderCompare() {
  const c = state.compare;
  const box = $('compare-verdict-box');
  const verdict = $('compare-verdict');
  const detail = $('compare-detail');
  const btn = $('compare-run');
  btn.classList.toggle('spinning', c.running);
  btn.disabled = c.running || state.conn !== 'live';
  if (c.at) { const w = $('compare-when'); w.replaceChildren('asked ', agoEl(c.at)); }
  if (!c.rows) {
    box.dataset.state = 'pending';
    setText(verdict, c.running ? 'comparing…' : c.error ? `compare failed: ${c.error}` : 'waiting for the node…');
    patchVerdictIcon('pending');
    setText(detail, '');
    return;
  }
  const n = c.rows.length;
  const unreachable = c.rows.filter((r) => !r.ok).length;
  box.dataset.state = c.agree ? 'agree' : 'differs';
  setText(verdict, c.agree ? (n === 1 ? 'only this node to compare' : `all ${n} nodes agree`) : 'nodes DISAGREE');
  patchVerdictIcon(c.agree ? 'agree' : 'differs');
  let d = '';
  if (c.running) d = c.attempt ? 'asking again (writes may be in flight)…' : 'comparing…';
  else if (!c.agree && unreachable) d = `${unreachable} could not be reached`;
  else if (!c.agree) d = 'after asking three times, 1 s apart';
  else if (n === 1) d = 'no peers connected';
  const first = c.rows[0].ok ? c.rows[0].db : null;
  // The table is a snapshot: say so once this node has moved on since.
  const moved = !c.running && first && state.db && state.db.root !== first.root;
  if (moved) d = 'this node has new records since; comparing again shortly';
  box.classList.toggle('stale', !!moved);
  setText(detail, d);
  patch($('compare-body'), JSON.stringify(c.rows), () => c.rows.map((r) => {
    const same = r.ok && sameDb(r.db, first);
    return h('tr', { class: same ? '' : 'row-bad', dataset: { testid: 'compare-row', peerId: str(r.peerId, '') } },
      h('td', { dataset: { label: 'Node' } },
        h('span', { class: 'cmp-node' },
          h('span', { class: `mark-dot ${same ? 'ok' : 'bad'}`, title: same ? 'same as this node' : 'differs from this node', attrs: { 'aria-hidden': 'true' } }),
          h('span', { class: 'mono', text: str(r.node) }),
          h('span', { class: `tag ${r.path === 'relay' ? 'tag-relay' : 'tag-self'}`, text: r.path }))),
      h('td', { dataset: { label: 'Peer ID' } },
        r.peerId ? h('span', { class: 'cmp-peer' }, h('span', { class: 'identicon xs', attrs: { 'aria-hidden': 'true' } }, identicon(r.peerId)),
          hashChip(r.peerId, { what: 'peer id', short: shortPeer, cls: 'hash-sm' })) : '—'),
      r.ok
        ? [h('td', { class: 'num mono', dataset: { label: 'Records' }, text: fmtInt(r.db.records) }),
          h('td', { class: 'num mono', dataset: { label: 'Ratings sum' }, text: fmtInt(r.db.ratings && r.db.ratings.sum) }),
          h('td', { dataset: { label: 'Root' } }, hashChip(r.db.root, { what: 'root', cls: same ? 'hash-sm' : 'hash-sm hash-bad' }))]
        : h('td', { class: 'cmp-err', attrs: { colspan: 3 }, dataset: { label: 'Error' }, text: `unreachable: ${r.error}` }));
  }));
}

function patchVerdictIcon(s) {
  const el = $('compare-verdict-icon');
  if (el.dataset.s === s) return;
  el.dataset.s = s;
  el.replaceChildren(icon(s === 'agree' ? 'check' : s === 'differs' ? 'x' : 'pending'));
}

// ---------------------------------------------------------------------------
// Footer, ticker

function renderFooter() {
  const f = $('footer-conn');
  const url = state.wsUrl || (WS_OVERRIDE || 'the node');
  const parts = [`WebSocket ${url}`];
  if (state.lastData) parts.push(`last update ${clock(state.lastData)}`);
  if (state.pollError && state.conn === 'live') parts.push(`last poll failed: ${state.pollError}`);
  setText(f, parts.join(' · '));
  const u = $('updated');
  if (state.lastData) { u.dataset.ago = String(state.lastData); setText(u, `updated ${ago(state.lastData)}`); }
}

function tick() {
  for (const el of document.querySelectorAll('[data-ago]')) {
    const ms = Number(el.dataset.ago);
    if (el.id === 'updated') { if (ms) setText(el, `updated ${ago(ms)}`); }
    else setText(el, ago(ms, el.dataset.compact === '1'));
  }
  renderUptime();
  if (state.conn !== 'live') renderBanner();
  // Syncing turns into differs with time alone.
  if (state.peers.length) { renderPeers(); renderDb(); }
  renderChart();
}

// ---------------------------------------------------------------------------
// Start

function start() {
  fillIcons();
  $('banner-retry').addEventListener('click', () => { if (wakeRetry) wakeRetry(); });
  $('compare-run').addEventListener('click', () => runCompare());
  document.addEventListener('visibilitychange', () => { if (!document.hidden && rpc && rpc.isOpen) { poll(); } });
  if (DEMO) state.reach = { status: 'demo', events: demoEvents(), error: '' };
  renderReach();
  renderChart();
  renderCompare();
  setInterval(tick, 1000);
  connectLoop();
}

start();
