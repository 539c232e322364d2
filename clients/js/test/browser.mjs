// End-to-end in a real browser (Chromium through playwright-core) against running
// nodes: the library as a web page uses it, served from another origin than the
// nodes, and the example page driven by clicks.
//
//   CIRRUS_NODES=http://127.0.0.101:38081,http://127.0.0.102:38081,http://127.0.0.103:38081 \
//   [CIRRUS_WS=ws://...,ws://...] [CIRRUS_SCREENSHOTS=dir] node test/browser.mjs
//
// Each step prints PASS or FAIL with the reason; the exit code is 1 if any failed
// (steps.mjs).
// Steps marked [sessions] or [CORS] need those node features (SPEC "Sessions",
// "CORS"). The other steps use WebSocket, which browsers allow across origins.
import { existsSync, mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { chromium } from 'playwright-core';
import { serve } from '../example/serve.mjs';
import { nodeUrls } from '../src/nodes.js';
import { finish, step } from './steps.mjs';

const CHROMIUM = process.env.CIRRUS_CHROMIUM ?? '/usr/bin/chromium';
const HTTP = (process.env.CIRRUS_NODES ?? 'http://127.0.0.101:38081,http://127.0.0.102:38081,http://127.0.0.103:38081').split(',').map((s) => s.trim()).filter(Boolean);
const WS = process.env.CIRRUS_WS ? process.env.CIRRUS_WS.split(',').map((s) => s.trim()) : HTTP.map((u) => nodeUrls(u).ws);
// A node apart from the others (its root differs), for the verified-read step.
const ODD = process.env.CIRRUS_ODD ?? '';
const SHOTS = resolve(process.env.CIRRUS_SCREENSHOTS ?? new URL('../screenshots', import.meta.url).pathname);
if (HTTP.length < 2 || WS.length !== HTTP.length) {
  console.error('CIRRUS_NODES needs at least two node URLs (and CIRRUS_WS as many, if given)');
  process.exit(2);
}

async function waitForChromium() {
  const until = Date.now() + Number(process.env.CIRRUS_CHROMIUM_WAIT_S ?? 300) * 1000;
  while (!existsSync(CHROMIUM)) {
    if (Date.now() > until) throw new Error(`${CHROMIUM} not found (install chromium, or set CIRRUS_CHROMIUM)`);
    console.log(`waiting for ${CHROMIUM} to be installed…`);
    await new Promise((r) => setTimeout(r, 5000));
  }
}

await waitForChromium();
const server = await serve(0, '127.0.0.1');
console.log(`serving clients/js at ${server.url} (nodes: ${HTTP.join(' ')})`);
const browser = await chromium
  .launch({
    executablePath: CHROMIUM,
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
  .catch((e) => {
    console.log(`FAIL  launching ${CHROMIUM}: ${e.message.split('\n')[0]}`);
    process.exit(1);
  });
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
/** @type {string[]} */
const consoleErrors = [];
page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
page.on('pageerror', (e) => consoleErrors.push(e.message));

const pageUrl = `${server.url}/example/index.html?connect=0&nodes=${encodeURIComponent(WS.join(','))}`;

try {
  await step('example page and library load (import map, no network)', async () => {
    await page.goto(pageUrl);
    await page.waitForSelector('#author:not(:empty)');
  });

  await step('signing in the browser matches the pinned Rust vector', async () => {
    const sig = await page.evaluate(async () => {
      const { signRecord, recordId } = await import('/src/index.js');
      const r = signRecord(new Uint8Array(32).fill(7), { key: 'hello', seq: 1, value: 'world' });
      return `${r.sig}/${recordId(r)}`;
    });
    const want = '7d320aea3bb6c6eaa599282e8c6c105402066eced5f8550338ba09e96a3d1d567cfbd01186371df4ff1c184c8173b7481ed2e403adb1ecb03da66246ecf9380e/036fc83984ce94072c8015a8198430e405d0308b0e00ea06f241bb8f70b82cbb';
    if (sig !== want) throw new Error(`got ${sig}`);
  });

  // One cloud in the page for the steps below, with every call's params recorded
  // so the test can see the session go along.
  await page.evaluate(async ({ nodes }) => {
    const lib = await import('/src/index.js');
    const w = /** @type {any} */ (window);
    w.lib = lib;
    w.sent = [];
    w.me = lib.Identity.generate();
    w.key = `browser-test-${Date.now()}`;
    w.makeCloud = (/** @type {string[]} */ urls, /** @type {'ws' | 'http'} */ transport, discover = false) =>
      new lib.Cloud({
        nodes: urls,
        transport,
        discover,
        makeTransport: (kind, url) => {
          const t = kind === 'ws' ? new lib.WsTransport(url) : new lib.HttpTransport(url);
          return { url, kind, close: () => t.close(), call: (m, p, ms) => (w.sent.push({ url, method: m, session: p.session }), t.call(m, p, ms)) };
        },
      });
    w.ws = w.makeCloud(nodes, 'ws');
  }, { nodes: WS });

  await step(`ws: sign and put a record on ${WS[0]}`, async () => {
    const r = await page.evaluate(async (via) => {
      const w = /** @type {any} */ (window);
      w.put = await w.ws.put(w.me, w.key, 'hello from chromium', { via });
      return w.put;
    }, WS[0]);
    if (r.node !== WS[0] || !['applied', 'duplicate'].includes(r.status)) throw new Error(`unexpected ${JSON.stringify(r)}`);
    return `${r.status}, id ${r.id.slice(0, 12)}…`;
  });

  await step('[sessions] ws: put result carries a session token', async () => {
    const s = await page.evaluate(() => /** @type {any} */ (window).put?.session);
    if (typeof s !== 'string' || !/^[A-Za-z0-9_-]{1,1024}$/.test(s)) throw new Error(`put returned session ${JSON.stringify(s)} (the node does not return sessions yet?)`);
    return `token ${s.slice(0, 16)}…`;
  });

  await step(`[sessions] ws: read it back at once on ${WS[1]}, carrying the session`, async () => {
    const r = await page.evaluate(async (via) => {
      const w = /** @type {any} */ (window);
      const before = w.sent.length;
      const rec = await w.ws.get(w.me.author, w.key, { via });
      const call = w.sent.slice(before).find((/** @type {any} */ c) => c.method === 'get');
      return { value: rec?.value, node: call?.url, carried: call?.session ?? null, token: w.ws.session };
    }, WS[1]);
    if (r.node !== WS[1]) throw new Error(`read went to ${r.node}`);
    if (r.carried !== r.token) throw new Error(`the get carried session ${r.carried}, the client holds ${r.token}`);
    const saw = r.value === 'hello from chromium';
    // Without a token a read on another node may or may not see the write yet
    // (gossip races the read): only the token makes it a guarantee.
    if (!r.token) throw new Error(`no session token to carry (the read ${saw ? 'happened to see' : 'did not see'} the write)`);
    if (!saw) throw new Error(`read ${JSON.stringify(r.value)} right after the put, carrying the token`);
    return 'session carried, own write read';
  });

  await step(`ws: verified read via ${WS[1]} (majority root, Merkle proof checked in the page)`, async () => {
    const v = await page.evaluate(async (via) => {
      const w = /** @type {any} */ (window);
      const v = await w.ws.verifiedGet(w.me.author, w.key, { via });
      const absent = await w.ws.verifiedGet(w.me.author, `${w.key}-never-written`);
      return { present: v.present, value: v.record?.value, agreed: v.agreed.length, asked: v.asked, servedBy: v.servedBy, absent: absent.present, root: v.root };
    }, WS[1]);
    if (!v.present || v.value !== 'hello from chromium' || v.absent) throw new Error(JSON.stringify(v));
    return `${v.agreed} of ${v.asked} agree on ${v.root.slice(0, 12)}…, proof from ${v.servedBy}`;
  });

  await step('ws: discovery from one node finds the others', async () => {
    const found = await page.evaluate(async (seed) => {
      const c = /** @type {any} */ (window).makeCloud([seed], 'ws', true);
      await c.discover();
      const urls = c.nodes.map((/** @type {any} */ n) => n.url);
      c.close();
      return urls;
    }, WS[0]);
    const missing = WS.filter((u) => !found.includes(u));
    if (missing.length) throw new Error(`found ${found.join(', ')}; missing ${missing.join(', ')}`);
    return found.join(', ');
  });

  await step(`[CORS] http: put on ${HTTP[0]} and read back on ${HTTP[1]} with the session`, async () => {
    const r = await page.evaluate(async ({ nodes }) => {
      const w = /** @type {any} */ (window);
      w.http = w.makeCloud(nodes, 'http');
      w.http.session = w.ws.session;
      const put = await w.http.put(w.me, `${w.key}-http`, 'over http', { via: nodes[0] });
      const rec = await w.http.get(w.me.author, `${w.key}-http`, { via: nodes[1] });
      return { status: put.status, value: rec?.value };
    }, { nodes: HTTP });
    if (r.value !== 'over http') throw new Error(JSON.stringify(r));
    return r.status;
  });

  await step('[CORS] http: verified read', async () => {
    const v = await page.evaluate(async () => {
      const w = /** @type {any} */ (window);
      const v = await w.http.verifiedGet(w.me.author, `${w.key}-http`);
      return { present: v.present, agreed: v.agreed.length, asked: v.asked };
    });
    if (!v.present) throw new Error(JSON.stringify(v));
    return `${v.agreed} of ${v.asked} agree`;
  });

  if (ODD) {
    await step(`[CORS] http: a verified read names ${ODD}, whose root differs, as disagreeing`, async () => {
      const v = await page.evaluate(async ({ nodes, odd }) => {
        const w = /** @type {any} */ (window);
        const c = w.makeCloud([...nodes, odd], 'http');
        try {
          const v = await c.verifiedGet(w.me.author, `${w.key}-http`);
          return { present: v.present, agreed: v.agreed.length, asked: v.asked, disagreed: v.disagreed.map((/** @type {any} */ d) => d.node) };
        } finally {
          c.close();
        }
      }, { nodes: HTTP, odd: ODD });
      if (!v.present || !v.disagreed.includes(ODD)) throw new Error(JSON.stringify(v));
      return `${v.agreed} of ${v.asked} agree; disagreeing: ${v.disagreed.join(', ')}`;
    });
  }

  await page.evaluate(() => {
    const w = /** @type {any} */ (window);
    w.ws?.close();
    w.http?.close();
  });

  await step(`example page: write on ${WS[0]}, verified read from ${WS[1]}, by clicks`, async () => {
    await page.goto(pageUrl.replace('connect=0', 'connect=1'));
    await page.waitForFunction((n) => document.querySelectorAll('#node-list .node.up').length >= n, WS.length, { timeout: 15000 }).catch(async () => {
      throw new Error(`nodes not all up: ${await page.textContent('#node-list')} ${await page.textContent('#nodes-error')}`);
    });
    const key = `page-${Date.now()}`;
    await page.fill('#key', key);
    await page.fill('#value', 'written from the example page');
    await page.selectOption('#write-node', WS[0]);
    await page.click('#write');
    await page.waitForSelector('#write-result:not([hidden]), #write-error:not([hidden])');
    if (await page.isVisible('#write-error')) throw new Error(`write: ${await page.textContent('#write-error')}`);
    await page.selectOption('#read-node', WS[1]);
    await page.click('#read');
    await page.waitForSelector('#read-result:not([hidden]), #read-error:not([hidden])', { timeout: 15000 });
    if (await page.isVisible('#read-error')) throw new Error(`read: ${await page.textContent('#read-error')}`);
    const value = await page.textContent('#read-result .value');
    const agreed = await page.locator('#read-result .chip.ok').count();
    if (value !== 'written from the example page') throw new Error(`page shows ${JSON.stringify(value)}`);
    if (agreed !== WS.length) throw new Error(`${agreed} nodes shown agreeing, expected ${WS.length}`);
    return `${agreed} nodes agreed`;
  });

  await step(`screenshots (desktop and 390 px) in ${SHOTS}`, async () => {
    mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: `${SHOTS}/example-desktop.png`, fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(200);
    await page.screenshot({ path: `${SHOTS}/example-phone.png`, fullPage: true });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow > 0) throw new Error(`the page is ${overflow} px wider than a 390 px screen`);
  });
} finally {
  await browser.close();
  server.close();
}

finish(consoleErrors.length ? ['page console errors:', ...consoleErrors.slice(0, 10).map((e) => `  ${e}`)] : []);
