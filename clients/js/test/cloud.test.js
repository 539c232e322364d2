// The cloud client against fake nodes: sessions, failover, spreading, discovery,
// verified reads with honest, stale and lying nodes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BehindError, Cloud, CloudError, Identity, RpcError, SplitError, TransportError, VerificationError, nodeUrls, hostOfMultiaddr, peerHosts } from '../src/index.js';
import { FakeDb, FakeNode, fakeNetwork } from './fake-network.js';

const me = new Identity(new Uint8Array(32).fill(9));
const url = (/** @type {number} */ i) => `http://127.0.0.${i}:38081`;

/** n fake nodes on one shared database. */
function setup(n = 3, db = new FakeDb(), now = Date.now) {
  const nodes = Array.from({ length: n }, (_, i) => new FakeNode(url(i + 1), db));
  const net = fakeNetwork(nodes);
  /** @type {any[]} */
  const events = [];
  const cloud = new Cloud({ nodes: nodes.map((x) => x.url), transport: 'http', discover: false, makeTransport: net.makeTransport, settleMs: 50, now, onEvent: (e) => events.push(e) });
  return { nodes, db, cloud, events };
}

test('the session goes with every call, and each put result replaces it', async () => {
  const { nodes, cloud } = setup(2);
  /** @type {(string | null)[]} */
  const saved = [];
  cloud.onSession = (t) => saved.push(t);
  const first = await cloud.put(me, 'k', 'v1', { via: nodes[0].url });
  assert.equal(first.status, 'applied');
  assert.equal(first.node, nodes[0].url);
  const token1 = first.session;
  assert.equal(cloud.session, token1);
  // The put itself looked up the held seq without a token, then wrote.
  assert.deepEqual(nodes[0].calls.map((c) => [c.method, c.params.session]), [['get', undefined], ['put', undefined]]);
  await cloud.get(me.author, 'k', { via: nodes[1].url });
  assert.equal(nodes[1].calls.at(-1)?.params.session, token1);
  const second = await cloud.put(me, 'k', 'v2', { via: nodes[1].url });
  assert.equal(nodes[1].calls.at(-1)?.params.session, token1, 'put carries the previous token');
  assert.ok(second.record.seq > first.record.seq);
  assert.equal(cloud.session, second.session);
  assert.deepEqual(saved, [token1, second.session]);
  // Writes at the same time still go one after the other, each with the token of
  // the one before.
  const [x, y] = await Promise.all([cloud.put(me, 'a', '1'), cloud.put(me, 'b', '2')]);
  const puts = nodes.flatMap((n) => n.calls).filter((c) => c.method === 'put').sort((a, b) => a.n - b.n);
  assert.deepEqual(puts.slice(-2).map((c) => c.params.session), [second.session, x.session]);
  assert.equal(cloud.session, y.session);
  // A verified read carries it to every node it asks.
  const before = nodes.map((n) => n.calls.length);
  await cloud.verifiedGet(me.author, 'k');
  const sent = nodes.flatMap((n, i) => n.calls.slice(before[i]));
  assert.ok(sent.length >= 3 && sent.every((c) => c.params.session === y.session));

  // A saved token is carried from the first call of a new client.
  const again = new Cloud({ nodes: [nodes[0].url], transport: 'http', discover: false, makeTransport: fakeNetwork(nodes).makeTransport, session: 'saved-token', wait: 500 });
  await again.getRating('film');
  assert.deepEqual(nodes[0].calls.at(-1)?.params, { target: 'film', session: 'saved-token', wait: 500 });
  assert.throws(() => (again.session = 'x'.repeat(1025)), TypeError);
});

test('moves to another node on -32011, unreachable or -32603; not on -32602', async () => {
  const { nodes, cloud } = setup(3);
  nodes[0].behave.any = () => {
    throw new BehindError('behind', { missing: 2 }, nodes[0].url);
  };
  nodes[1].behave.any = () => {
    throw new TransportError('refused', { node: nodes[1].url });
  };
  const { result, node } = await cloud.callWithNode('getdbhash', {}, { via: nodes[0].url });
  assert.equal(node, nodes[2].url);
  assert.equal(typeof result.root, 'string');
  assert.match(String(cloud.nodes[0].health.avoided), /failing: .*behind/);

  nodes[2].behave.getrating = () => {
    throw new RpcError(-32602, 'invalid params: bad session token', undefined, nodes[2].url);
  };
  await assert.rejects(cloud.getRating('x', { via: nodes[2].url }), (e) => e instanceof RpcError && e.code === -32602);
  assert.equal(nodes[2].calls.filter((c) => c.method === 'getrating').length, 1);
  assert.equal(cloud.nodes[2].health.avoided, null, 'a bad request is not the node failing');

  nodes[2].behave.any = () => {
    throw new BehindError('behind', { missing: 1 }, nodes[2].url);
  };
  nodes[1].behave.any = nodes[2].behave.any;
  await assert.rejects(cloud.call('getdbhash'), (e) => e instanceof CloudError && e.code === -32011 && e.errors.length === 3);
});

test('reads spread over healthy nodes, and a failing node is avoided', async () => {
  const { nodes, cloud } = setup(3, new FakeDb(), () => 1000); // time stands still: no decay
  for (let i = 0; i < 6; i++) await cloud.call('getdbhash');
  assert.deepEqual(nodes.map((n) => n.calls.length), [2, 2, 2]);
  nodes[0].behave.any = () => {
    throw new TransportError('down');
  };
  // Two successes behind it: avoided once failures outnumber them, at the third.
  for (let i = 0; i < 12; i++) await cloud.call('getdbhash');
  assert.equal(nodes[0].calls.length, 2 + 3);
  assert.match(String(cloud.nodes[0].health.avoided), /failing: down/);
  assert.deepEqual(cloud.order().length, 3);
});

test('get checks the record and moves on from a node that returns a bad one', async () => {
  const { nodes, cloud } = setup(2);
  await cloud.put(me, 'k', 'v', { via: nodes[0].url });
  nodes[0].behave.get = (p) => {
    const r = nodes[1].handle('get', p);
    return { record: { ...r.record, value: 'forged' } };
  };
  const r = await cloud.get(me.author, 'k', { via: nodes[0].url });
  assert.equal(r?.value, 'v');
  assert.match(String(cloud.nodes[0].health.avoided), /penalised: .*signature/);
});

test('verified read: unanimous presence and absence', async () => {
  const { nodes, cloud } = setup(3);
  await cloud.put(me, 'k', 'v');
  for (let i = 0; i < 20; i++) await cloud.put(me, `other-${i}`, 'x');
  const v = await cloud.verifiedGet(me.author, 'k', { via: nodes[1].url });
  assert.equal(v.present, true);
  assert.equal(v.record?.value, 'v');
  assert.equal(v.servedBy, nodes[1].url);
  assert.equal(v.root, nodes[0].db.root());
  assert.deepEqual([v.agreed.length, v.disagreed, v.unresponsive, v.caught, v.asked], [3, [], [], [], 3]);
  const a = await cloud.verifiedGet(me.author, 'missing');
  assert.deepEqual([a.present, a.record], [false, null]);
});

test('verified read: 3-1 reports and penalises the minority; 2-2 fails naming the split', async () => {
  const db = new FakeDb();
  const { nodes, cloud } = setup(4, db);
  await cloud.put(me, 'k', 'v');
  const odd = db.clone();
  odd.put(me.sign({ key: 'only-on-4', seq: 1, value: 'x' }));
  nodes[3].db = odd;
  const v = await cloud.verifiedGet(me.author, 'k', { nodes: 4 });
  assert.deepEqual(v.disagreed, [{ node: nodes[3].url, root: odd.root() }]);
  assert.equal(v.agreed.length, 3);
  assert.match(String(cloud.nodes[3].health.avoided), /penalised: reported root/);

  nodes[2].db = odd;
  await assert.rejects(cloud.verifiedGet(me.author, 'k', { nodes: 4 }), (e) => e instanceof SplitError && /no strict majority among 4 nodes asked: 2 report .*; 2 report/.test(e.message));
});

test('verified read: an unreachable node counts as asked and is reported', async () => {
  const { nodes, cloud } = setup(3);
  await cloud.put(me, 'k', 'v');
  nodes[2].behave.any = () => {
    throw new TransportError('refused', { node: nodes[2].url });
  };
  const v = await cloud.verifiedGet(me.author, 'k');
  assert.deepEqual(v.unresponsive.map((u) => u.node), [nodes[2].url]);
  nodes[1].behave.any = nodes[2].behave.any;
  await assert.rejects(cloud.verifiedGet(me.author, 'k'), SplitError);
});

test('verified read: a node serving a forged proof or record is caught; another serves', async () => {
  const { nodes, cloud } = setup(3);
  await cloud.put(me, 'k', 'v');
  for (let i = 0; i < 20; i++) await cloud.put(me, `other-${i}`, 'x');
  const honest = (/** @type {any} */ p) => new FakeNode('x', nodes[0].db).handle('get', p);
  nodes[0].behave.get = (p) => {
    const r = honest(p);
    r.proof.branches[0][3] = 'ab'.repeat(32);
    return r;
  };
  let v = await cloud.verifiedGet(me.author, 'k', { via: nodes[0].url });
  assert.deepEqual(v.caught.map((c) => c.node), [nodes[0].url]);
  assert.match(v.caught[0].reason, /proof does not verify against its own root/);
  assert.notEqual(v.servedBy, nodes[0].url);
  assert.equal(v.record?.value, 'v');

  // Proof fine, record swapped for another validly signed one of the same slot.
  const older = me.sign({ key: 'k', seq: 1, value: 'old' });
  nodes[1].behave.get = (p) => ({ ...honest(p), record: older });
  v = await cloud.verifiedGet(me.author, 'k', { via: nodes[1].url });
  assert.match(v.caught.find((c) => c.node === nodes[1].url)?.reason ?? '', /not the one the proof's leaf names/);
  // Claims absence while the majority root holds the record: the proof cannot show it.
  nodes[2].behave.get = (p) => ({ ...honest(p), record: null });
  await assert.rejects(cloud.verifiedGet(me.author, 'k', { via: nodes[2].url, nodes: 3 }), VerificationError);
});

test('discovery: peers are confirmed by their own getnodeinfo before use', async () => {
  const db = new FakeDb();
  const seed = new FakeNode(url(1), db, {
    peers: [
      { peerId: 'peer-2', addr: '/ip4/127.0.0.2/tcp/40001' }, // inbound: ephemeral port
      { peerId: 'peer-3', addr: '/ip4/127.0.0.3/udp/38080/quic-v1' }, // answers as someone else
      { peerId: 'peer-4', addr: '/ip4/127.0.0.4/tcp/38080' }, // unreachable
      { peerId: 'peer-5', addr: '/ip4/10.0.0.5/tcp/38080', stun: { address: '127.0.0.5' } }, // reachable by its STUN address
    ],
  });
  const nodes = [seed, new FakeNode(url(2), db, { peerId: 'peer-2' }), new FakeNode(url(3), db, { peerId: 'impostor' }), new FakeNode(url(5), db, { peerId: 'peer-5' })];
  const net = fakeNetwork(nodes);
  const cloud = new Cloud({ nodes: [url(1)], transport: 'http', makeTransport: net.makeTransport });
  await cloud.getRating('x');
  assert.deepEqual(cloud.nodes.map((n) => [n.url, n.peerId, n.discovered]), [
    [url(1), 'peer-1', false].map((x) => (x === 'peer-1' ? `peer-${url(1)}` : x)),
    [url(2), 'peer-2', true],
    [url(5), 'peer-5', true],
  ]);
  const off = new Cloud({ nodes: [url(1)], transport: 'http', discover: false, makeTransport: net.makeTransport });
  await off.getRating('x');
  assert.equal(off.nodes.length, 1);
});

test('node URLs: the other port is derived, multiaddrs give hosts', () => {
  assert.deepEqual(nodeUrls('http://127.0.0.11:38081/'), { http: 'http://127.0.0.11:38081', ws: 'ws://127.0.0.11:38082' });
  assert.deepEqual(nodeUrls('ws://127.0.0.11:9002'), { http: 'http://127.0.0.11:9001', ws: 'ws://127.0.0.11:9002' });
  assert.deepEqual(nodeUrls('wss://node.example'), { http: 'https://node.example', ws: 'wss://node.example' });
  assert.deepEqual(nodeUrls('[::1]:38082'), { http: 'http://[::1]:38082', ws: 'ws://[::1]:38083' });
  assert.deepEqual(nodeUrls('127.0.0.1'), { http: 'http://127.0.0.1:38081', ws: 'ws://127.0.0.1:38082' });
  assert.throws(() => nodeUrls('udp://1.2.3.4:38083'), TypeError);
  assert.equal(hostOfMultiaddr('/ip6/::1/tcp/38080/p2p/x'), '[::1]');
  assert.equal(hostOfMultiaddr('/dns4/a.example/tcp/1'), 'a.example');
  assert.equal(hostOfMultiaddr('/p2p-circuit'), null);
  assert.deepEqual(peerHosts({ addr: '/ip4/1.2.3.4/tcp/5', stun: { address: '1.2.3.4' } }), ['1.2.3.4']);
});
