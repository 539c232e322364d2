#!/usr/bin/env node
// Browser test of the node dashboard (GET / on the HTTP port), in Debian's Chromium,
// against a running 3-node testnet.
//
//   cd node/tests/browser && npm ci
//   CIRRUS_NODES=http://127.0.0.151:38081,http://127.0.0.152:38081,http://127.0.0.153:38081 \
//   CIRRUS_BIN=/path/to/cirrus CIRRUS_SCREENSHOTS=/tmp/shots node dashboard.mjs
//
// Environment:
//   CIRRUS_NODES                   comma-separated HTTP URLs of the testnet's nodes (3 or more)
//   CIRRUS_BIN                     the `cirrus` CLI, used to write a record (keygen, put)
//   CIRRUS_SCREENSHOTS             where the screenshots go (default: $TMPDIR/cirrus-dashboard-screenshots)
//   CIRRUS_DASHBOARD_MODE          `node` (default): open <node URL>/, as the node serves it.
//                                  `files`: serve node/src/api/dashboard/ from a small HTTP
//                                  server on 127.0.0.1 and open it with ?ws=ws://HOST:WSPORT/
//                                  (for binaries that do not serve GET / yet).
//                                  `proxy`: serve the files from the node's own IP on another
//                                  port and pass `POST /` on to the node, so the page finds the
//                                  WebSocket as it will when the node serves it (same-origin
//                                  getnodeinfo, then ws://<page host>:<ports.ws>/).
//   CIRRUS_DASHBOARD_URL_TEMPLATE  overrides the page URL; placeholders: {node} (node URL,
//                                  no trailing slash), {host}, {wsPort}, {ws} (ws://host:port/),
//                                  {files} (the file server, files mode only).
//   CHROMIUM                       browser binary (default /usr/bin/chromium)
//
// Exits 0 when every step passed; otherwise 1, naming the step that failed.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DASHBOARD_DIR = path.resolve(HERE, '../../src/api/dashboard');
const FILES = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/index.html': ['index.html', 'text/html; charset=utf-8'],
  '/dashboard.css': ['dashboard.css', 'text/css; charset=utf-8'],
  '/dashboard.js': ['dashboard.js', 'text/javascript; charset=utf-8'],
};
// The headers the node should send with the three files (the file server here sends
// them too, so the page is known to work under this policy).
export const DASHBOARD_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-cache',
};
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };

const env = process.env;
const MODE = (env.CIRRUS_DASHBOARD_MODE || 'node').toLowerCase();
const SHOTS = env.CIRRUS_SCREENSHOTS || path.join(os.tmpdir(), 'cirrus-dashboard-screenshots');
const CHROMIUM = env.CHROMIUM || '/usr/bin/chromium';

// ---------------------------------------------------------------------------
// Steps: each has a name; the first failure ends the run with that name.

let current = '';
const started = Date.now();
const cleanups = [];
const pages = [];   // {page, i} for failure screenshots
const warnings = [];

class StepError extends Error {}

async function step(name, fn) {
  current = name;
  const t = Date.now();
  process.stdout.write(`… ${name}\n`);
  const out = await fn();
  process.stdout.write(`✓ ${name} (${((Date.now() - t) / 1000).toFixed(1)} s)\n`);
  return out;
}

function fail(msg) { throw new StepError(msg); }

async function main() {
  const nodes = await step('read the environment', () => {
    const list = (env.CIRRUS_NODES || '').split(',').map((s) => s.trim().replace(/\/+$/, '')).filter(Boolean);
    if (list.length < 3) fail(`CIRRUS_NODES must list the testnet's nodes (at least 3 HTTP URLs, comma-separated); got ${JSON.stringify(env.CIRRUS_NODES || '')}`);
    if (!['node', 'files', 'proxy'].includes(MODE)) fail(`CIRRUS_DASHBOARD_MODE must be "node", "files" or "proxy", not ${JSON.stringify(MODE)}`);
    if (!env.CIRRUS_BIN || !fs.existsSync(env.CIRRUS_BIN)) fail(`CIRRUS_BIN must name the cirrus CLI binary; got ${JSON.stringify(env.CIRRUS_BIN || '')}`);
    if (!fs.existsSync(CHROMIUM)) fail(`no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`);
    for (const f of ['index.html', 'dashboard.css', 'dashboard.js']) {
      if (!fs.existsSync(path.join(DASHBOARD_DIR, f))) fail(`missing ${path.join(DASHBOARD_DIR, f)}`);
    }
    fs.mkdirSync(SHOTS, { recursive: true });
    console.log(`  mode ${MODE}, ${list.length} nodes, screenshots in ${SHOTS}`);
    return list.slice(0, 3);
  });

  // What the nodes say about themselves, asked from this process (not from the page).
  const infos = await step('ask every node getnodeinfo over HTTP', async () => {
    const out = [];
    for (const url of nodes) {
      const info = await rpcHttp(url, 'getnodeinfo');
      if (!info.peerId) fail(`${url}: getnodeinfo has no peerId`);
      if (!info.ports || !info.ports.ws) fail(`${url}: getnodeinfo has no ports.ws (WebSocket API not listening?)`);
      out.push({ url, info, host: new URL(url).hostname, wsPort: info.ports.ws });
    }
    const ids = new Set(out.map((o) => o.info.peerId));
    if (ids.size !== out.length) fail(`the nodes do not have distinct peer ids: ${[...ids].join(', ')}`);
    for (const o of out) console.log(`  ${o.url}  ${o.info.peerId}  ws :${o.wsPort}`);
    return out;
  });

  await step('testnet is connected and in agreement (HTTP)', async () => {
    await until(30000, async () => {
      for (const o of infos) {
        const peers = await rpcHttp(o.url, 'getpeerinfo');
        const got = new Set(peers.map((p) => p.peerId));
        for (const other of infos) if (other !== o && !got.has(other.info.peerId)) return `${o.url} is not connected to ${other.info.peerId}`;
      }
      const roots = await Promise.all(infos.map((o) => rpcHttp(o.url, 'getdbhash')));
      if (new Set(roots.map((r) => r.root)).size !== 1) return `roots differ: ${roots.map((r) => r.root).join(' ')}`;
      return true;
    });
  });

  let filesBase = null;
  if (MODE === 'node') {
    await step('the node serves the dashboard (GET /, /dashboard.css, /dashboard.js)', async () => {
      for (const o of infos) {
        for (const [p, [file, want]] of Object.entries(FILES)) {
          if (p === '/index.html') continue;
          const res = await fetch(o.url + p).catch((e) => fail(`GET ${o.url}${p}: ${e.message}`));
          if (res.status !== 200) {
            fail(`GET ${o.url}${p} answered HTTP ${res.status}${p === '/' ? ' (this binary does not serve the dashboard yet: run with CIRRUS_DASHBOARD_MODE=files or proxy)' : ''}`);
          }
          const type = (res.headers.get('content-type') || '').toLowerCase();
          const base = want.split(';')[0];
          const ok = base === 'text/javascript' ? /^(text|application)\/javascript\b/.test(type) : type.startsWith(base);
          if (!ok) fail(`GET ${o.url}${p}: Content-Type is ${JSON.stringify(type)}, want ${base}${base === 'text/javascript' ? ' (browsers refuse module scripts of other types)' : ''}`);
          // The policy matters on the page; nosniff on all three.
          for (const h of p === '/' ? ['content-security-policy', 'x-content-type-options'] : ['x-content-type-options']) {
            const got = res.headers.get(h);
            if (!got) warnings.push(`${o.url}${p} has no ${h} header (suggested: ${DASHBOARD_HEADERS[h]})`);
            else if (got.replace(/\s+/g, ' ') !== DASHBOARD_HEADERS[h]) warnings.push(`${o.url}${p}: ${h} is ${JSON.stringify(got)}; the test checked the page under ${JSON.stringify(DASHBOARD_HEADERS[h])}`);
          }
          const body = Buffer.from(await res.arrayBuffer());
          const src = fs.readFileSync(path.join(DASHBOARD_DIR, file));
          if (!body.equals(src)) warnings.push(`${o.url}${p} differs from ${file} in the repo (binary built from other sources?)`);
        }
      }
    });
  } else if (MODE === 'files') {
    filesBase = await step('serve the dashboard files on 127.0.0.1', () => serveFiles('127.0.0.1', null));
  } else {
    await step('serve the dashboard files from each node\'s IP, passing POST / to the node', async () => {
      for (const o of infos) o.proxyBase = await serveFiles(o.host, o.url);
    });
  }

  const browser = await step('launch Chromium', async () => {
    const b = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    cleanups.push(() => b.close());
    return b;
  });

  // One page per node, each with its own context.
  const tabs = [];
  for (const [i, o] of infos.entries()) {
    const n = i + 1;
    await step(`node ${n}: open the dashboard`, async () => {
      const url = pageUrl(o, filesBase);
      const ctx = await browser.newContext({ viewport: DESKTOP, deviceScaleFactor: 1, colorScheme: 'light' });
      await ctx.addInitScript(collectCspViolations);
      const page = await ctx.newPage();
      const tab = { n, o, url, ctx, page, errors: [], consoleErrors: [], foreign: [], ws: [], blockWs: false };
      const allowed = new Set([new URL(url).origin, `ws://${o.host}:${o.wsPort}`, `wss://${o.host}:${o.wsPort}`]);
      const wsOrigin = (u) => { try { const x = new URL(u); return `${x.protocol}//${x.host}`; } catch { return u; } };
      page.on('pageerror', (e) => tab.errors.push(e.message));
      page.on('console', (m) => { if (m.type() === 'error') tab.consoleErrors.push(m.text()); });
      page.on('request', (r) => {
        const u = r.url();
        if (u.startsWith('data:')) return;
        if (!allowed.has(new URL(u).origin)) tab.foreign.push(u);
      });
      page.on('websocket', (ws) => { if (!allowed.has(wsOrigin(ws.url()))) tab.foreign.push(ws.url()); });
      // Node 1's WebSocket goes through a route, so the test can drop it.
      if (n === 1) {
        await page.routeWebSocket(() => true, (route) => {
          if (tab.blockWs) { route.close({ code: 1011, reason: 'test: node unreachable' }); return; }
          const server = route.connectToServer();
          tab.ws.push({ route, server });
        });
      }
      tabs.push(tab);
      pages.push(tab);
      console.log(`  ${url}`);
      const res = await page.goto(url, { waitUntil: 'load' });
      if (!res || !res.ok()) fail(`GET ${url} answered ${res ? res.status() : 'nothing'}`);
    });
  }

  for (const t of tabs) {
    await step(`node ${t.n}: WebSocket is live`, () => waitText(t.page, 'ws-status', (s) => s === 'live', 20000, 'status "live"'));
    await step(`node ${t.n}: shows its own peer id`, () => waitText(t.page, 'node-peer-id', (s) => s === t.o.info.peerId, 10000, `peer id ${t.o.info.peerId}`));
    await step(`node ${t.n}: lists both other peers`, async () => {
      const want = infos.filter((x) => x !== t.o).map((x) => x.info.peerId);
      await waitPage(t.page, (ids) => ids.every((id) => document.querySelector(`[data-testid="peer-row"][data-peer-id="${id}"]`)), want, 15000,
        async () => `peer rows: ${JSON.stringify(await t.page.$$eval('[data-testid="peer-row"]', (els) => els.map((e) => e.dataset.peerId)))}; want ${want.join(', ')}`);
    });
  }

  for (const t of tabs) {
    await step(`node ${t.n}: reachability panel matches what the node answers`, async () => {
      const body = await rpcHttpRaw(t.o.url, 'getreachability');
      if (body.error && body.error.code === -32601) {
        await waitPage(t.page, () => /not available on this node/.test(document.getElementById('reach-empty').textContent), null, 10000,
          async () => `panel says ${JSON.stringify(await t.page.$eval('#card-reach', (e) => e.textContent.trim().slice(0, 200)))}`);
      } else if (body.error) {
        fail(`getreachability on ${t.o.url}: error ${body.error.code}: ${body.error.message}`);
      } else {
        const n = Math.min(50, (body.result.events || []).length);
        await waitPage(t.page, (want) => want === 0
          ? /No punch or relay calls yet/.test(document.getElementById('reach-empty').textContent)
          : document.querySelectorAll('#reach-list > li').length >= 1, n, 10000,
        async () => `panel says ${JSON.stringify(await t.page.$eval('#card-reach', (e) => e.textContent.trim().slice(0, 200)))}`);
      }
    });
  }

  await step('all pages show the same root, the one the nodes report', async () => {
    await until(20000, async () => {
      const roots = await Promise.all(tabs.map((t) => t.page.$eval('[data-testid="db-root"]', (e) => e.dataset.root)));
      const http = await rpcHttp(infos[0].url, 'getdbhash');
      if (new Set(roots).size !== 1) return `pages show roots ${roots.join(' ')}`;
      if (roots[0] !== http.root) return `pages show ${roots[0]}, getdbhash says ${http.root}`;
      if (!/^[0-9a-f]{64}$/.test(roots[0])) return `data-root is not 64 hex digits: ${roots[0]}`;
      return true;
    });
  });

  for (const t of tabs) {
    await step(`node ${t.n}: every peer is marked "agree"`, () => waitPage(t.page,
      () => { const m = [...document.querySelectorAll('[data-testid="peer-row"] [data-testid="peer-agree"]')]; return m.length >= 2 && m.every((e) => e.textContent === 'agree'); },
      null, 20000,
      async () => `marks: ${JSON.stringify(await t.page.$$eval('[data-testid="peer-agree"]', (els) => els.map((e) => e.textContent)))}`));
  }

  for (const t of tabs) {
    await step(`node ${t.n}: compare panel says all 3 nodes agree`, async () => {
      await t.page.click('#compare-run').catch(() => {});
      await waitPage(t.page,
        () => document.querySelector('[data-testid="compare-verdict"]').textContent === 'all 3 nodes agree' &&
          document.querySelectorAll('[data-testid="compare-row"]').length === 3,
        null, 30000,
        async () => `verdict ${JSON.stringify(await t.page.$eval('[data-testid="compare-verdict"]', (e) => e.textContent))}, rows ${await t.page.$$eval('[data-testid="compare-row"]', (e) => e.length)}`);
      const ids = await t.page.$$eval('[data-testid="compare-row"]', (els) => els.map((e) => e.dataset.peerId));
      const want = infos.map((x) => x.info.peerId);
      if (!want.every((id) => ids.includes(id))) fail(`compare rows are for ${ids.join(', ')}; want ${want.join(', ')}`);
    });
  }

  // Write a record with the CLI and watch every page pick it up, without a reload.
  const before = await step('note the record counts, then write a record with the CLI', async () => {
    const counts = [];
    for (const t of tabs) {
      await t.page.evaluate(() => { window.__cirrusNoReload = 'still-here'; });
      counts.push(Number(await t.page.$eval('[data-testid="db-records"]', (e) => e.dataset.count)));
    }
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'cirrus-dash-home-'));
    cleanups.push(() => fs.rmSync(home, { recursive: true, force: true }));
    const key = `dashboard-test/${Date.now()}`;
    const value = `written by the dashboard browser test at ${new Date().toISOString()}`;
    cli(home, ['keygen']);
    cli(home, ['put', key, value, '--node', infos[0].url]);
    console.log(`  put ${key} on ${infos[0].url}; counts before ${counts.join(', ')}`);
    return { counts, key };
  });

  for (const [i, t] of tabs.entries()) {
    await step(`node ${t.n}: record count and recent records update live`, async () => {
      await waitPage(t.page, ([min, key]) => {
        const c = Number(document.querySelector('[data-testid="db-records"]').dataset.count);
        const items = [...document.querySelectorAll('[data-testid="recent-records"] [data-testid="recent-record"]')];
        return c >= min && items.some((li) => li.dataset.key === key);
      }, [before.counts[i] + 1, before.key], 20000,
      async () => `count ${await t.page.$eval('[data-testid="db-records"]', (e) => e.dataset.count)} (want ≥ ${before.counts[i] + 1}), recent keys ${JSON.stringify(await t.page.$$eval('[data-testid="recent-record"]', (els) => els.slice(0, 5).map((e) => e.dataset.key)))}`);
      const still = await t.page.evaluate(() => window.__cirrusNoReload);
      if (still !== 'still-here') fail('the page was reloaded');
      const text = await t.page.$eval(`[data-testid="recent-record"][data-key="${before.key}"]`, (e) => e.textContent);
      if (!text.includes('written by the dashboard browser test')) fail(`the record's item does not show its value: ${JSON.stringify(text.slice(0, 200))}`);
    });
  }

  await step('after the write, all pages agree on the new root', async () => {
    await until(20000, async () => {
      const roots = await Promise.all(tabs.map((t) => t.page.$eval('[data-testid="db-root"]', (e) => e.dataset.root)));
      const http = await Promise.all(infos.map((o) => rpcHttp(o.url, 'getdbhash')));
      if (new Set([...roots, ...http.map((h) => h.root)]).size !== 1) return `pages ${roots.join(' ')}; nodes ${http.map((h) => h.root).join(' ')}`;
      for (const t of tabs) {
        const marks = await t.page.$$eval('[data-testid="peer-agree"]', (els) => els.map((e) => e.textContent));
        if (!marks.every((m) => m === 'agree')) return `node ${t.n} marks ${marks.join(',')}`;
      }
      return true;
    });
  });

  await step('screenshots at desktop and phone width; no sideways scrolling on a phone', async () => {
    for (const t of tabs) {
      await t.page.setViewportSize(DESKTOP);
      await t.page.evaluate(() => window.scrollTo(0, 0));
      await t.page.waitForTimeout(300);
      await shot(t.page, `node${t.n}-desktop.png`);
      await t.page.setViewportSize(PHONE);
      await t.page.waitForTimeout(400);
      const [sw, iw] = await t.page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
      if (sw > iw) fail(`node ${t.n}: at ${PHONE.width} px the page is ${sw} px wide (sideways scrolling)`);
      await shot(t.page, `node${t.n}-phone.png`);
    }
    const t = tabs[0];
    await t.page.emulateMedia({ colorScheme: 'dark' });
    await shot(t.page, 'node1-phone-dark.png');
    await t.page.setViewportSize(DESKTOP);
    await t.page.waitForTimeout(300);
    await shot(t.page, 'node1-desktop-dark.png');
    await t.page.emulateMedia({ colorScheme: 'light' });
  });

  await step('node 1: a dropped WebSocket shows "reconnecting", then comes back', async () => {
    const t = tabs[0];
    if (!t.ws.length) fail('the WebSocket route saw no connection');
    t.blockWs = true;
    for (const { route, server } of t.ws.splice(0)) {
      server.close({ code: 1001, reason: 'test drop' });
      route.close({ code: 1006, reason: 'test drop' });
    }
    await waitText(t.page, 'ws-status', (s) => s === 'reconnecting', 5000, 'status "reconnecting"');
    await waitPage(t.page, () => { const b = document.getElementById('banner'); return !b.hidden && /lost/i.test(b.textContent); }, null, 5000,
      async () => `banner ${JSON.stringify(await t.page.$eval('#banner', (b) => (b.hidden ? '(hidden) ' : '') + b.textContent.trim()))}`);
    await t.page.waitForTimeout(1500);
    await shot(t.page, 'node1-desktop-reconnecting.png');
    // The "reconnected" banner hides itself after a few seconds: a loaded machine
    // may poll past it, so the page keeps every banner it showed.
    await t.page.evaluate(() => {
      const b = document.getElementById('banner');
      window.__banners = [];
      new MutationObserver(() => { if (!b.hidden) window.__banners.push(b.textContent.trim()); })
        .observe(b, { attributes: true, childList: true, subtree: true, characterData: true });
    });
    t.blockWs = false;
    await t.page.click('#banner-retry').catch(() => {});
    await waitText(t.page, 'ws-status', (s) => s === 'live', 40000, 'status "live" again');
    await waitPage(t.page, () => window.__banners.some((text) => /reconnected/i.test(text)), null, 5000,
      async () => `banners shown: ${JSON.stringify(await t.page.evaluate(() => window.__banners))}`);
    // And the data is live again: the peers come back.
    await waitPage(t.page, () => document.querySelectorAll('[data-testid="peer-row"]').length >= 2, null, 10000, async () => 'peer rows missing after reconnecting');
  });

  await step('mock node: roots that differ, DISAGREE, reachability events, hostile text stays text', () => mockNode(browser, tabs[0].url));

  await step('no script errors, no outside requests, no CSP violations', async () => {
    for (const t of tabs) {
      if (t.errors.length) fail(`node ${t.n}: script errors: ${t.errors.join(' | ')}`);
      if (t.foreign.length) fail(`node ${t.n}: requests outside the node: ${[...new Set(t.foreign)].join(', ')}`);
      const csp = await t.page.evaluate(() => window.__cspViolations || []);
      if (csp.length) fail(`node ${t.n}: Content-Security-Policy violations: ${csp.join(' | ')}`);
      // Chromium logs failed WebSocket handshakes from the reconnect step; anything else is news.
      const other = t.consoleErrors.filter((m) => !/WebSocket/i.test(m));
      if (other.length) warnings.push(`node ${t.n}: console errors: ${other.join(' | ')}`);
    }
  });
}

// ---------------------------------------------------------------------------
// Helpers

// Runs in the page before its scripts: remember every CSP violation.
function collectCspViolations() {
  window.__cspViolations = [];
  document.addEventListener('securitypolicyviolation', (e) => {
    window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'}${e.sourceFile ? ` (${e.sourceFile}:${e.lineNumber})` : ''}`);
  });
}

async function rpcHttpRaw(url, method, params = {}) {
  const res = await fetch(url + '/', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
    signal: AbortSignal.timeout(10000),
  }).catch((e) => fail(`${method} on ${url}: ${e.cause ? e.cause.message || e.cause.code : e.message}`));
  return res.json().catch(() => fail(`${method} on ${url}: HTTP ${res.status}, not JSON`));
}

async function rpcHttp(url, method, params = {}) {
  let res;
  try {
    res = await fetch(url + '/', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
      signal: AbortSignal.timeout(10000),
    });
  } catch (e) {
    fail(`${method} on ${url}: ${e.cause ? e.cause.message || e.cause.code : e.message}`);
  }
  const body = await res.json().catch(() => fail(`${method} on ${url}: HTTP ${res.status}, not JSON`));
  if (body.error) fail(`${method} on ${url}: error ${body.error.code}: ${body.error.message}`);
  return body.result;
}

function cli(home, args) {
  const r = spawnSync(env.CIRRUS_BIN, args, { env: { ...env, HOME: home }, encoding: 'utf8', timeout: 30000 });
  if (r.error) fail(`cirrus ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) fail(`cirrus ${args.join(' ')} exited ${r.status}: ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

/** Poll fn until it returns true; anything else is the reason to keep waiting. */
async function until(ms, fn) {
  const end = Date.now() + ms;
  let last = '';
  for (;;) {
    let r;
    try { r = await fn(); } catch (e) { if (e instanceof StepError) r = e.message; else throw e; }
    if (r === true) return;
    last = r;
    if (Date.now() > end) fail(`not within ${ms / 1000} s: ${last}`);
    await new Promise((res) => setTimeout(res, 400));
  }
}

async function waitPage(page, fn, arg, ms, explain) {
  try {
    await page.waitForFunction(fn, arg, { timeout: ms, polling: 200 });
  } catch (e) {
    if (!/Timeout/i.test(e.message)) throw e;
    fail(`not within ${ms / 1000} s: ${explain ? await explain().catch((x) => x.message) : ''}`);
  }
}

async function waitText(page, testid, ok, ms, what) {
  const end = Date.now() + ms;
  let last = null;
  for (;;) {
    last = await page.$eval(`[data-testid="${testid}"]`, (e) => e.textContent).catch(() => null);
    if (last !== null && ok(last)) return last;
    if (Date.now() > end) fail(`[data-testid=${testid}] did not show ${what} within ${ms / 1000} s; it shows ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

async function shot(page, name) {
  const file = path.join(SHOTS, name);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: file, fullPage: true });
  console.log(`  screenshot ${file}`);
}

function pageUrl(o, filesBase) {
  if (MODE === 'proxy' && !env.CIRRUS_DASHBOARD_URL_TEMPLATE) return `${o.proxyBase}/`;
  const tpl = env.CIRRUS_DASHBOARD_URL_TEMPLATE || (MODE === 'files' ? '{files}/?ws={ws}' : '{node}/');
  const ws = `ws://${o.host}:${o.wsPort}/`;
  return tpl.replaceAll('{node}', o.url).replaceAll('{host}', o.host).replaceAll('{wsPort}', String(o.wsPort))
    .replaceAll('{ws}', encodeURIComponent(ws)).replaceAll('{files}', filesBase || '');
}

/** The three files on host:(any port); with `upstream`, POST / goes on to that node. */
function serveFiles(host, upstream) {
  return new Promise((resolve, reject) => {
    const srv = http.createServer(async (req, res) => {
      const p = new URL(req.url, 'http://x').pathname;
      if (upstream && req.method === 'POST' && p === '/') {
        const chunks = [];
        for await (const c of req) chunks.push(c);
        try {
          const r = await fetch(upstream + '/', { method: 'POST', headers: { 'content-type': 'application/json' }, body: Buffer.concat(chunks) });
          res.writeHead(r.status, { 'content-type': r.headers.get('content-type') || 'application/json' });
          res.end(Buffer.from(await r.arrayBuffer()));
        } catch (e) {
          res.writeHead(502, { 'content-type': 'text/plain' });
          res.end(`upstream ${upstream}: ${e.message}\n`);
        }
        return;
      }
      const f = FILES[p];
      if (req.method !== 'GET' || !f) { res.writeHead(404, { 'content-type': 'text/plain' }); res.end('not found\n'); return; }
      res.writeHead(200, { ...DASHBOARD_HEADERS, 'content-type': f[1] });
      res.end(fs.readFileSync(path.join(DASHBOARD_DIR, f[0])));
    });
    srv.on('error', reject);
    srv.listen(0, host, () => {
      cleanups.push(() => new Promise((r) => { srv.closeAllConnections?.(); srv.close(r); }));
      const base = `http://${host}:${srv.address().port}`;
      console.log(`  ${base}/ serves ${DASHBOARD_DIR}${upstream ? `, POST / goes to ${upstream}` : ''}`);
      resolve(base);
    });
  });
}

// A node played by the test through a routed WebSocket: what the testnet cannot
// show on demand (a peer whose root differs, a compare that disagrees, punch and
// relay events), and strings from the network that must stay text.
async function mockNode(browser, baseUrl) {
  const HOSTILE = '<img src=x onerror="window.__xss=1">';
  const SELF = '12D3KooWMockSe1fNodeAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
  const A = '12D3KooWMockPeerAgreesBBBBBBBBBBBBBBBBBBBBBBBBBBBBB';
  const B = '12D3KooWMockPeerDiffersCCCCCCCCCCCCCCCCCCCCCCCCCCC';
  const ROOT = 'a1'.repeat(32), OTHER = 'b2'.repeat(32);
  const DB = { root: ROOT, records: 42, ratings: { count: 3, sum: 12 } };
  const now = () => Math.floor(Date.now() / 1000);
  const mapping = (port, via) => ({ port, localPort: port + 10000, via, lastSeen: now() - 4, address: '203.0.113.5' });
  const answer = (req) => {
    switch (req.method) {
      case 'subscribe': return { ok: true };
      case 'getnodeinfo': return {
        peerId: SELF, version: '9.9.9', uptime: 3725, peers: 2,
        ports: { p2p: 38080, http: 38081, ws: 38082, udp: 38083, stun: 38084 },
        listen: ['/ip4/192.0.2.10/tcp/38080', '/ip4/192.0.2.10/udp/38080/quic-v1'],
        stun: { address: '203.0.113.5', nat: 'endpoint-dependent', udp: [mapping(40001, A)], tcp: [mapping(40002, B)], seen: [] },
        db: DB,
      };
      case 'getpeerinfo': return [
        { peerId: A, addr: '/ip4/192.0.2.11/tcp/38080', direction: 'outbound', connectedSince: now() - 600, pingMs: 23.4, agent: HOSTILE,
          stun: { address: '198.51.100.7', nat: 'endpoint-independent', udp: [mapping(41001, SELF)], tcp: [] }, dbRoot: ROOT, score: 10 },
        { peerId: B, addr: '/ip4/192.0.2.12/udp/38080/quic-v1', direction: 'inbound', connectedSince: now() - 30, pingMs: null, agent: null,
          stun: null, dbRoot: OTHER, score: -2 },
      ];
      case 'getdbhash': return DB;
      case 'getreachability': return { events: [
        { at: Date.now() - 3000, kind: 'punch', role: 'rendezvous', peerId: A, client: HOSTILE, transport: 'udp', path: 'direct' },
        { at: Date.now() - 60000, kind: 'relay', role: 'rendezvous', peerId: B, client: '192.0.2.99:40000', transport: null, path: 'relay' },
      ] };
      case 'relay': return req.params.peerId === A
        ? { jsonrpc: '2.0', id: 1, result: DB }
        : { jsonrpc: '2.0', id: 1, result: { root: OTHER, records: 41, ratings: { count: 3, sum: 12 } } };
      default: return undefined;
    }
  };
  const ctx = await browser.newContext({ viewport: DESKTOP, deviceScaleFactor: 1 });
  await ctx.addInitScript(collectCspViolations);
  try {
    const page = await ctx.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.routeWebSocket(/\/mock-node/, (ws) => {
      ws.onMessage((text) => {
        const req = JSON.parse(String(text));
        const result = answer(req);
        ws.send(JSON.stringify(result === undefined
          ? { jsonrpc: '2.0', id: req.id, error: { code: -32601, message: `method not found: ${req.method}` } }
          : { jsonrpc: '2.0', id: req.id, result }));
        if (req.method === 'subscribe') {
          setTimeout(() => ws.send(JSON.stringify({ jsonrpc: '2.0', method: 'record', params: {
            author: 'ab'.repeat(32), id: 'cd'.repeat(32), key: HOSTILE, kind: 'doc', seq: 7, sig: 'ef'.repeat(64), value: HOSTILE } })), 500);
        }
      });
    });
    const u = new URL(baseUrl);
    u.search = '';
    u.searchParams.set('ws', 'ws://127.0.0.1:9/mock-node');
    await page.goto(u.toString());
    await waitText(page, 'ws-status', (x) => x === 'live', 10000, 'status "live"');
    await waitText(page, 'node-peer-id', (x) => x === SELF, 5000, `peer id ${SELF}`);
    await waitPage(page, ([a, b]) => {
      const mark = (id) => document.querySelector(`[data-testid="peer-row"][data-peer-id="${id}"] [data-testid="peer-agree"]`);
      return mark(a) && mark(a).textContent === 'agree' && mark(b) && mark(b).textContent === 'differs';
    }, [A, B], 15000, async () => `marks ${JSON.stringify(await page.$$eval('[data-testid="peer-agree"]', (els) => els.map((e) => e.textContent)))}`);
    await waitPage(page, () => document.querySelector('[data-testid="compare-verdict"]').textContent === 'nodes DISAGREE' &&
      document.querySelectorAll('[data-testid="compare-row"]').length === 3, null, 15000,
    async () => `verdict ${JSON.stringify(await page.$eval('[data-testid="compare-verdict"]', (e) => e.textContent))}`);
    await waitPage(page, (key) => [...document.querySelectorAll('[data-testid="recent-record"]')].some((li) => li.dataset.key === key), HOSTILE, 5000,
      async () => 'the notified record is not listed');
    await waitPage(page, () => document.querySelectorAll('#reach-list > li').length === 2, null, 5000,
      async () => `reachability shows ${await page.$$eval('#reach-list > li', (e) => e.length)} events`);
    const check = await page.evaluate((h) => ({
      xss: window.__xss,
      imgs: document.querySelectorAll('main img, main [onerror]').length,
      key: document.querySelector('[data-testid="recent-record"] .rec-key').textContent,
      reach: document.getElementById('reach-list').textContent.includes(h),
      nat: document.getElementById('node-nat').textContent,
      ext: document.getElementById('node-ext').textContent,
      records: document.querySelector('[data-testid="db-records"]').dataset.count,
    }), HOSTILE);
    if (check.xss !== undefined || check.imgs) fail('text from the network was parsed as HTML');
    if (check.key !== HOSTILE || !check.reach) fail(`hostile strings were not shown as text: ${JSON.stringify(check)}`);
    if (check.nat !== 'endpoint-dependent' || check.ext !== '203.0.113.5' || check.records !== '42') fail(`node card: ${JSON.stringify(check)}`);
    if (errors.length) fail(`script errors: ${errors.join(' | ')}`);
    const csp = await page.evaluate(() => window.__cspViolations);
    if (csp.length) fail(`Content-Security-Policy violations: ${csp.join(' | ')}`);
    await shot(page, 'mock-desktop-disagree.png');
    await page.setViewportSize(PHONE);
    await page.waitForTimeout(300);
    await shot(page, 'mock-phone-disagree.png');
  } finally {
    await ctx.close();
  }
}

async function cleanup() {
  for (const c of cleanups.reverse()) { try { await c(); } catch { /* ignore */ } }
}

try {
  await main();
  for (const w of warnings) console.log(`! warning: ${w}`);
  console.log(`dashboard browser test: all steps passed in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${SHOTS}`);
  await cleanup();
  process.exit(0);
} catch (e) {
  const msg = e instanceof StepError ? e.message : (e && e.stack) || String(e);
  console.error(`✗ FAILED at step "${current}": ${msg}`);
  for (const t of pages) {
    try { await t.page.screenshot({ path: path.join(SHOTS, `FAILED-node${t.n}.png`), fullPage: true }); console.error(`  page of node ${t.n}: ${path.join(SHOTS, `FAILED-node${t.n}.png`)}`); } catch { /* ignore */ }
    if (t.errors.length) console.error(`  node ${t.n} script errors: ${t.errors.join(' | ')}`);
  }
  for (const w of warnings) console.error(`! warning: ${w}`);
  await cleanup();
  process.exit(1);
}
