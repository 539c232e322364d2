// The library in Node.js against running nodes, over HTTP (no CORS outside a
// browser) and WebSocket (Node 20: --experimental-websocket; npm run test:live).
//   CIRRUS_NODES=http://127.0.0.101:38081,http://127.0.0.102:38081,http://127.0.0.103:38081 npm run test:live
// One unreachable address is added to the set on purpose: calls must move past it
// and verified reads must report it.
import { Cloud, Identity, nodeUrls } from '../src/index.js';
import { finish, step } from './steps.mjs';

const HTTP = (process.env.CIRRUS_NODES ?? 'http://127.0.0.101:38081,http://127.0.0.102:38081,http://127.0.0.103:38081').split(',').map((s) => s.trim()).filter(Boolean);
const DEAD = process.env.CIRRUS_DEAD ?? 'http://127.0.0.254:38081';
const me = Identity.generate();
const stamp = Date.now();

for (const transport of /** @type {const} */ (['http', 'ws'])) {
  if (transport === 'ws' && !globalThis.WebSocket) {
    console.log('SKIP  ws: no WebSocket in this Node.js (run with --experimental-websocket)');
    continue;
  }
  const urls = HTTP.map((u) => nodeUrls(u)[transport]);
  const dead = nodeUrls(DEAD)[transport];
  const cloud = new Cloud({ nodes: [...urls, dead], transport, discover: false, timeoutMs: 1500 });
  const key = `live-${transport}-${stamp}`;
  /** @type {any} */
  let put;

  await step(`${transport}: put on ${urls[0]}`, async () => {
    put = await cloud.put(me, key, `v-${transport}`, { via: urls[0] });
    return `${put.status} ${put.id.slice(0, 12)}…`;
  });
  await step(`[sessions] ${transport}: put returned a session token`, async () => {
    if (typeof put?.session !== 'string') throw new Error(`session ${JSON.stringify(put?.session)}`);
    if (cloud.session !== put.session) throw new Error('the client did not take the token');
  });
  await step(`[sessions] ${transport}: read your write at once on ${urls[1]}`, async () => {
    if (!cloud.session) throw new Error('no session token to carry, so nothing makes the node wait for the write');
    const r = await cloud.get(me.author, key, { via: urls[1] });
    if (r?.value !== `v-${transport}`) throw new Error(`read ${JSON.stringify(r?.value)} right after the put`);
  });
  await step(`${transport}: a second write (carrying the token, if any), seq grows`, async () => {
    const again = await cloud.put(me, key, `v2-${transport}`, { via: urls[1] });
    if (BigInt(again.record.seq) <= BigInt(put.record.seq)) throw new Error(`seq ${again.record.seq} after ${put.record.seq}`);
    put = again;
  });
  await step(`${transport}: calls move past the unreachable ${dead}`, async () => {
    const { node } = await cloud.callWithNode('getdbhash', {}, { via: dead });
    if (node === dead) throw new Error('answered by the dead node?');
    return `answered by ${node}`;
  });
  await step(`${transport}: verified read (dead node counted as asked, and reported)`, async () => {
    const v = await cloud.verifiedGet(me.author, key, { nodes: urls.length + 1, via: urls[2] ?? urls[1] });
    if (!v.present || v.record?.value !== `v2-${transport}`) throw new Error(`read ${JSON.stringify(v.record?.value)}`);
    if (!v.unresponsive.some((u) => u.node === dead)) throw new Error(`dead node not reported: ${JSON.stringify(v.unresponsive)}`);
    return `${v.agreed.length} of ${v.asked} agree, ${v.unresponsive.length} did not answer`;
  });
  await step(`${transport}: verified absence, rating, list`, async () => {
    const a = await cloud.verifiedGet(me.author, `${key}-never`);
    if (a.present) throw new Error('present?');
    await cloud.rate(me, `film-${stamp}`, 4);
    const page = await cloud.list({ author: me.author }, { verify: true });
    if (!page.records.some((r) => r.key === key)) throw new Error('list misses the record');
    return `${page.records.length} records listed and verified`;
  });
  await step(`[sessions] ${transport}: a malformed session token is refused (-32602)`, async () => {
    const c = new Cloud({ nodes: urls, transport, discover: false, session: '!!not-base64url!!' });
    try {
      await c.getRating('x');
      throw new Error('accepted');
    } catch (e) {
      if (/** @type {any} */ (e).code !== -32602) throw e;
      if (/unknown field `session`/.test(/** @type {Error} */ (e).message)) throw new Error('the node does not take a session param yet');
    } finally {
      c.close();
    }
  });
  await step(`${transport}: discovery from ${urls[0]} alone`, async () => {
    const c = new Cloud({ nodes: [urls[0]], transport });
    await c.discover();
    const found = c.nodes.map((n) => n.url);
    c.close();
    const missing = urls.filter((u) => !found.includes(u));
    if (missing.length) throw new Error(`missing ${missing.join(', ')} (found ${found.join(', ')})`);
    return `${found.length} nodes`;
  });
  cloud.close();
}
finish();
