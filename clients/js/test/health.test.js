// Node health and majority selection, on a hand-driven clock.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NodeHealth, PENALTY, SplitError, pickMajority } from '../src/index.js';

function clock() {
  let t = 1_000_000;
  return { now: () => t, advance: (/** @type {number} */ ms) => (t += ms) };
}

test('a fresh node is healthy; one failure avoids it until it decays', () => {
  const c = clock();
  const h = new NodeHealth({ now: c.now });
  assert.equal(h.avoided, false);
  h.failure('timeout');
  assert.match(String(h.avoidReason()), /failing: timeout/);
  c.advance(61_000); // one half-life: 1 -> 0.49, under the 0.5 floor
  assert.equal(h.avoided, false);
});

test('fails more than it succeeds over the last minutes', () => {
  const c = clock();
  const h = new NodeHealth({ now: c.now });
  for (let i = 0; i < 5; i++) h.success(50);
  for (let i = 0; i < 4; i++) h.failure('unreachable');
  assert.equal(h.avoided, false, '4 failures, 5 successes');
  h.failure('unreachable');
  h.failure('unreachable');
  assert.equal(h.avoided, true, '6 failures, 5 successes');
  h.success(50);
  h.success(50);
  assert.equal(h.avoided, false);
  // Old successes wear off like failures do: the ratio holds, counts shrink, and
  // once the failures fall under the floor the node is tried again.
  h.failure('unreachable');
  h.failure('unreachable');
  assert.equal(h.avoided, true);
  c.advance(5 * 60_000);
  assert.equal(h.avoided, false);
});

test('slow on average (over ~2.4 s) is avoided; fast answers bring it back', () => {
  const c = clock();
  const h = new NodeHealth({ now: c.now });
  h.success(2000);
  h.success(2600);
  assert.equal(h.avoided, false, 'average 2.3 s');
  h.success(3500);
  assert.match(String(h.avoidReason()), /slow: 2700 ms/);
  for (let i = 0; i < 3; i++) h.success(100);
  assert.equal(h.avoided, false);
  // Recent answers weigh more: one slow answer now outweighs fast ones long ago.
  const h2 = new NodeHealth({ now: c.now });
  for (let i = 0; i < 4; i++) h2.success(100);
  c.advance(5 * 60_000);
  h2.success(5000);
  assert.equal(h2.avoided, true);
});

test('penalties avoid a node, decay, and order avoided nodes', () => {
  const c = clock();
  const liar = new NodeHealth({ now: c.now });
  const stale = new NodeHealth({ now: c.now });
  liar.penalize('bad proof', PENALTY.badProof);
  stale.penalize('disagreed', PENALTY.disagreed);
  assert.match(String(liar.avoidReason()), /penalised: bad proof/);
  assert.ok(stale.avoided);
  assert.ok(liar.badness() > stale.badness());
  c.advance(121_000); // one penalty half-life
  assert.equal(stale.avoided, false);
  assert.equal(liar.avoided, true);
  c.advance(2 * 120_000);
  assert.equal(liar.avoided, false);
  assert.equal(liar.snapshot().avoided, null);
});

test('majority: unanimous, 3-1 reports the minority, 2-2 is a split', () => {
  const a = 'a'.repeat(64), b = 'b'.repeat(64);
  assert.deepEqual(pickMajority([{ node: 'n1', root: a }, { node: 'n2', root: a }]), { root: a, agreed: ['n1', 'n2'], disagreed: [], unresponsive: [], asked: 2 });
  const m = pickMajority([{ node: 'n1', root: a }, { node: 'n2', root: b }, { node: 'n3', root: a }, { node: 'n4', root: a }]);
  assert.equal(m.root, a);
  assert.deepEqual(m.agreed, ['n1', 'n3', 'n4']);
  assert.deepEqual(m.disagreed, [{ node: 'n2', root: b }]);
  assert.throws(
    () => pickMajority([{ node: 'n1', root: a }, { node: 'n2', root: b }, { node: 'n3', root: a }, { node: 'n4', root: b }]),
    (e) => e instanceof SplitError && /no strict majority among 4 nodes asked: 2 report a{12}… \(n1, n3\); 2 report b{12}… \(n2, n4\)/.test(e.message) && e.roots[a].length === 2,
  );
});

test('majority: nodes that did not answer still count as asked', () => {
  const a = 'a'.repeat(64);
  const m = pickMajority([{ node: 'n1', root: a }, { node: 'n2', error: 'timeout' }, { node: 'n3', root: a }]);
  assert.deepEqual(m.unresponsive, [{ node: 'n2', error: 'timeout' }]);
  assert.throws(
    () => pickMajority([{ node: 'n1', root: a }, { node: 'n2', error: 'timeout' }, { node: 'n3', error: 'refused' }]),
    (e) => e instanceof SplitError && /1 report .*2 did not answer \(n2, n3\)/.test(e.message),
  );
  assert.throws(() => pickMajority([{ node: 'n1', error: 'x' }]), /none answered|did not answer/);
  assert.throws(() => pickMajority([]), SplitError);
});
