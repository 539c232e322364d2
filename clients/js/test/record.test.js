// Record signing bytes, id and rules, against the vector pinned in the Rust tests
// (proto/tests/record.rs, `signing_bytes_match_the_pinned_vector`).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Identity, RecordError, checkLimits, recordId, signRecord, signedMessage, supersedes, toHex, verifyRecord } from '../src/index.js';
import { parse, stringify } from '../src/json.js';

const SEED = new Uint8Array(32).fill(7);
const PINNED_SIG =
  '7d320aea3bb6c6eaa599282e8c6c105402066eced5f8550338ba09e96a3d1d567cfbd01186371df4ff1c184c8173b7481ed2e403adb1ecb03da66246ecf9380e';
const PINNED_ID = '036fc83984ce94072c8015a8198430e405d0308b0e00ea06f241bb8f70b82cbb';
const hex = (/** @type {string} */ s) => Buffer.from(s).toString('hex');

test('signing bytes, signature and id match the pinned Rust vector', () => {
  const r = signRecord(SEED, { kind: 'doc', key: 'hello', seq: 1, value: 'world' });
  // Spelled out field by field from SPEC "Records".
  const expected = [hex('cirrus-record-v1'), '00', r.author, '0005', hex('hello'), '0000000000000001', '01', '00000005', hex('world')].join('');
  assert.equal(toHex(signedMessage(r)), expected);
  assert.equal(r.sig, PINNED_SIG);
  assert.equal(recordId(r), PINNED_ID);
  verifyRecord(r);
  verifyRecord({ ...r, id: PINNED_ID });
});

test('tombstone and rating bytes', () => {
  const t = signRecord(SEED, { kind: 'rating', key: 'x', seq: 258, value: null });
  const m = signedMessage(t);
  assert.equal(m[16], 1, 'rating kind byte');
  assert.deepEqual([...m.slice(49, 51)], [0, 1]);
  assert.deepEqual([...m.slice(52, 60)], [0, 0, 0, 0, 0, 0, 1, 2]);
  assert.deepEqual([...m.slice(60)], [0], 'null value is a single 0 byte');
  verifyRecord(t);
});

test('multi-byte UTF-8 lengths count bytes', () => {
  const r = signRecord(SEED, { key: 'ключ', seq: 1, value: '☁' });
  const m = signedMessage(r);
  assert.deepEqual([...m.slice(49, 51)], [0, 8]);
  assert.deepEqual([...m.slice(m.length - 7, m.length - 3)], [0, 0, 0, 3]);
  verifyRecord(r);
});

test('tampering breaks the signature', () => {
  const r = signRecord(SEED, { key: 'k', seq: 1, value: 'v' });
  const flip = (/** @type {string} */ h, i = 5) => h.slice(0, 2 * i) + ((parseInt(h.slice(2 * i, 2 * i + 2), 16) ^ 1).toString(16).padStart(2, '0')) + h.slice(2 * i + 2);
  for (const bad of [
    { ...r, seq: 2 },
    { ...r, key: 'kx' },
    { ...r, value: null },
    { ...r, kind: /** @type {const} */ ('rating'), value: null },
    { ...r, sig: flip(r.sig) },
    { ...r, author: flip(r.author, 0) },
    { ...r, id: PINNED_ID },
  ]) {
    assert.throws(() => verifyRecord(bad), (e) => e instanceof RecordError && (e.code === -32001 || e.code === -32002));
  }
});

test('limits follow SPEC', () => {
  const ok = 'k'.repeat(256);
  verifyRecord(signRecord(SEED, { key: ok, seq: 1, value: 'v'.repeat(65536) }));
  const author = new Identity(SEED).author;
  for (const [fields, what] of [
    [{ key: '', value: null }, /key/],
    [{ key: ok + 'k', value: null }, /key/],
    [{ key: 'é'.repeat(129), value: null }, /key/],
    [{ key: 'a\nb', value: null }, /control/],
    [{ key: 'a\u0085b', value: null }, /control/],
    [{ key: 'k', value: 'v'.repeat(65537) }, /value/],
    [{ key: 'k', kind: 'rating', value: '6' }, /rating/],
    [{ key: 'k', kind: 'rating', value: '05' }, /rating/],
    [{ key: 'k', kind: 'rating', value: '' }, /rating/],
    [{ key: 'k', kind: 'other', value: null }, /kind/],
  ]) {
    assert.throws(() => checkLimits({ author, kind: 'doc', seq: 1, ...fields }), (e) => e instanceof RecordError && e.code === -32002 && what.test(e.message), String(what));
  }
  for (const s of ['1', '2', '3', '4', '5']) verifyRecord(signRecord(SEED, { kind: 'rating', key: 'film', seq: 1, value: s }));
});

test('u64 seq beyond 2^53 survives JSON and still verifies', () => {
  const r = signRecord(SEED, { key: 'k', seq: 18446744073709551615n, value: 'v' });
  const back = parse(stringify({ result: { record: r } })).result.record;
  assert.equal(back.seq, 18446744073709551615n);
  assert.match(stringify(r), /"seq":18446744073709551615,/);
  verifyRecord(back);
  assert.equal(parse('{"seq":7}').seq, 7);
});

test('conflict rule: higher seq, then higher id', () => {
  const a = signRecord(SEED, { key: 'k', seq: 2, value: 'a' });
  const b = signRecord(SEED, { key: 'k', seq: 1, value: 'b' });
  const c = signRecord(SEED, { key: 'k', seq: 2, value: 'c' });
  assert.ok(supersedes(a, b) && !supersedes(b, a));
  const [hi, lo] = recordId(a) > recordId(c) ? [a, c] : [c, a];
  assert.ok(supersedes(hi, lo) && !supersedes(lo, hi) && !supersedes(a, a));
});

test('identity: hex round trip and author', () => {
  const i = Identity.fromHex(' ' + '07'.repeat(32) + '\n');
  assert.equal(i.seedHex(), '07'.repeat(32));
  assert.equal(i.author, signRecord(SEED, { key: 'k', seq: 1, value: null }).author);
  assert.notEqual(Identity.generate().author, Identity.generate().author);
  assert.throws(() => Identity.fromHex('abcd'), TypeError);
});
