// The transports against stand-ins for WebSocket and fetch: many calls in flight
// matched by id, answers out of order, a closed connection failing its calls at
// once and reopening on the next call, timeouts, and JSON-RPC errors as RpcError.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BehindError, HttpTransport, RpcError, TimeoutError, TransportError, WsTransport } from '../src/index.js';

/** A WebSocket stand-in the test drives by hand. */
class FakeSocket {
  /** @type {FakeSocket[]} */
  static all = [];
  /** @param {string} url */
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    /** @type {any[]} */
    this.sent = [];
    /** @type {any} */ this.onopen = null;
    /** @type {any} */ this.onclose = null;
    /** @type {any} */ this.onerror = null;
    /** @type {any} */ this.onmessage = null;
    FakeSocket.all.push(this);
  }
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  /** @param {string} data */
  send(data) {
    this.sent.push(JSON.parse(data));
  }
  /** @param {any} msg */
  answer(msg) {
    this.onmessage?.({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) });
  }
  close(code = 1006) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code });
  }
}
const tick = () => new Promise((r) => setTimeout(r, 0));

test('ws: calls in flight on one connection, answered out of order, matched by id', async () => {
  FakeSocket.all = [];
  /** @type {any[]} */
  const notes = [];
  const t = new WsTransport('ws://n:38082', { WebSocket: /** @type {any} */ (FakeSocket), onNotification: (m) => notes.push(m) });
  const a = t.call('getdbhash', {}, 1000);
  const b = t.call('getrating', { target: 'x' }, 1000);
  const c = t.call('get', { author: 'a', key: 'k' }, 1000);
  assert.equal(FakeSocket.all.length, 1, 'one connection for all');
  const ws = FakeSocket.all[0];
  ws.open();
  await tick();
  assert.deepEqual(ws.sent.map((m) => m.method), ['getdbhash', 'getrating', 'get']);
  const [ia, ib, ic] = ws.sent.map((m) => m.id);
  ws.answer({ jsonrpc: '2.0', method: 'record', params: { key: 'k' } }); // a notification in between
  ws.answer({ jsonrpc: '2.0', id: ic, error: { code: -32011, message: 'behind', data: { missing: 3 } } });
  ws.answer({ jsonrpc: '2.0', id: ib, result: 'B' });
  ws.answer({ jsonrpc: '2.0', id: ia, result: 'A' });
  ws.answer('not json at all');
  assert.equal(await a, 'A');
  assert.equal(await b, 'B');
  await assert.rejects(c, (e) => e instanceof BehindError && e.code === -32011 && e.missing === 3 && e.node === 'ws://n:38082');
  assert.deepEqual(notes, [{ jsonrpc: '2.0', method: 'record', params: { key: 'k' } }]);
});

test('ws: a close fails the calls in flight at once; the next call reconnects', async () => {
  FakeSocket.all = [];
  const t = new WsTransport('ws://n:38082', { WebSocket: /** @type {any} */ (FakeSocket) });
  const p = t.call('getdbhash', {}, 60_000);
  FakeSocket.all[0].open();
  await tick();
  FakeSocket.all[0].close(1011);
  await assert.rejects(p, (e) => e instanceof TransportError && /closed \(code 1011\)/.test(e.message));
  const q = t.call('getdbhash', {}, 1000);
  assert.equal(FakeSocket.all.length, 2);
  FakeSocket.all[1].open();
  await tick();
  FakeSocket.all[1].answer({ jsonrpc: '2.0', id: FakeSocket.all[1].sent[0].id, result: 'again' });
  assert.equal(await q, 'again');
});

test('ws: connect failure and timeouts', async () => {
  FakeSocket.all = [];
  const t = new WsTransport('ws://n:38082', { WebSocket: /** @type {any} */ (FakeSocket) });
  const p = t.call('getdbhash', {}, 1000);
  FakeSocket.all[0].onerror?.({});
  await assert.rejects(p, (e) => e instanceof TransportError && /could not connect/.test(e.message));
  const slowOpen = t.call('getdbhash', {}, 20);
  await assert.rejects(slowOpen, (e) => e instanceof TransportError && /within 20 ms/.test(e.message));
  const q = t.call('getdbhash', {}, 30);
  FakeSocket.all.at(-1)?.open();
  await assert.rejects(q, (e) => e instanceof TimeoutError);
});

test('http: result, JSON-RPC error, HTTP garbage, timeout', async () => {
  /** @type {any[]} */
  const bodies = [];
  /** @param {(body: any) => any} answer */
  const fetchWith = (answer) => /** @type {any} */ (async (/** @type {string} */ _url, /** @type {any} */ init) => {
    const body = JSON.parse(init.body);
    bodies.push({ body, headers: init.headers });
    const a = await answer(body);
    return { status: a.status ?? 200, text: async () => (typeof a.text === 'string' ? a.text : JSON.stringify(a.text)) };
  });
  let t = new HttpTransport('http://n:38081', { fetch: fetchWith((b) => ({ text: { jsonrpc: '2.0', id: b.id, result: { ok: 1 } } })) });
  assert.deepEqual(await t.call('getdbhash', { session: 's' }, 1000), { ok: 1 });
  assert.deepEqual(bodies[0].body.params, { session: 's' });
  assert.equal(bodies[0].headers['content-type'], 'application/json');
  t = new HttpTransport('http://n:38081', { fetch: fetchWith((b) => ({ status: 429, text: { jsonrpc: '2.0', id: b.id, error: { code: -32006, message: 'rate limited' } } })) });
  await assert.rejects(t.call('getdbhash', {}, 1000), (e) => e instanceof RpcError && e.code === -32006);
  t = new HttpTransport('http://n:38081', { fetch: fetchWith(() => ({ status: 502, text: '<html>bad gateway</html>' })) });
  await assert.rejects(t.call('getdbhash', {}, 1000), (e) => e instanceof TransportError && /HTTP 502/.test(e.message));
  const hang = /** @type {any} */ ((/** @type {string} */ _u, /** @type {any} */ init) => new Promise((_, reject) => init.signal.addEventListener('abort', () => reject(new Error('aborted')))));
  t = new HttpTransport('http://n:38081', { fetch: hang });
  await assert.rejects(t.call('getdbhash', {}, 20), TimeoutError);
});
