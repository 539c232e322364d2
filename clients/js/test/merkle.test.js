// Proof checking against tries built independently: by test/fixtures/make_trie.py
// (Python hashlib, straight from docs/merkle.md) and by a real node
// (test/fixtures/node-proofs.json, captured by capture_node.mjs).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { ProofError, branchHash, fromHex, leafHash, nibble, recordId, slotHash, toHex, verifyProof, verifyRecord } from '../src/index.js';

const trie = JSON.parse(readFileSync(new URL('./fixtures/trie.json', import.meta.url), 'utf8'));
const fromNode = JSON.parse(readFileSync(new URL('./fixtures/node-proofs.json', import.meta.url), 'utf8'));
const all = [...trie.present, ...trie.absent];

test('slot hash, nibbles, leaf and branch hash agree with the Python trie', () => {
  for (const c of all) assert.equal(toHex(slotHash(c.author, c.kind, c.key)), c.slot, c.key);
  const h = fromHex('ab'.repeat(32));
  assert.deepEqual([nibble(h, 0), nibble(h, 1), nibble(h, 63)], [0xa, 0xb, 0xb]);
  // The root of the one-slot trie is its leaf; of the big one, the root branch.
  const s = trie.single;
  assert.equal(toHex(leafHash(fromHex(s.proof.leaf.slot), fromHex(s.proof.leaf.id))), s.root);
  const top = trie.present[0].proof.branches[0].map((/** @type {string} */ c) => fromHex(c));
  assert.equal(toHex(branchHash(top)), trie.root);
});

test('presence proofs verify and name the record id', () => {
  assert.ok(trie.present.some((/** @type {any} */ c) => c.proof.branches.length >= 4), 'fixture has a deep path');
  for (const c of trie.present) {
    assert.deepEqual(verifyProof(c.proof, trie.root, fromHex(c.slot)), { present: true, id: c.id }, c.key);
  }
});

test('absence proofs: empty child and another slot on the path', () => {
  const kinds = trie.absent.map((/** @type {any} */ c) => (c.proof.leaf ? 'other-leaf' : 'empty'));
  assert.deepEqual(kinds.sort(), ['empty', 'other-leaf']);
  for (const c of trie.absent) assert.deepEqual(verifyProof(c.proof, trie.root, fromHex(c.slot)), { present: false, id: null });
  const e = trie.empty;
  assert.deepEqual(verifyProof(e.proof, e.root, fromHex(e.slot)), { present: false, id: null });
  const one = trie.single;
  assert.deepEqual(verifyProof(one.proof, one.root, fromHex(one.slot)), { present: true, id: one.id });
  assert.deepEqual(verifyProof(one.absentCase.proof, one.root, fromHex(one.absentCase.slot)), { present: false, id: null });
});

/** Flip one hex digit. @param {string} h @param {number} [i] */
const flip = (h, i = 10) => h.slice(0, i) + (h[i] === '0' ? '1' : '0') + h.slice(i + 1);
const clone = (/** @type {any} */ x) => JSON.parse(JSON.stringify(x));

test('tampered proofs are rejected', () => {
  const deep = trie.present.find((/** @type {any} */ c) => c.proof.branches.length >= 4);
  const slot = fromHex(deep.slot);
  const bad = [];
  for (let d = 0; d < deep.proof.branches.length; d++) {
    for (const child of [0, nibble(slot, d), 15]) {
      const p = clone(deep.proof);
      p.branches[d][child] = flip(p.branches[d][child]);
      bad.push([`branch ${d} child ${child}`, p]);
    }
  }
  const leafId = clone(deep.proof);
  leafId.leaf.id = flip(leafId.leaf.id);
  const leafSlot = clone(deep.proof);
  leafSlot.leaf.slot = flip(leafSlot.leaf.slot, 60);
  const cut = clone(deep.proof);
  cut.branches.pop();
  const noLeaf = clone(deep.proof);
  noLeaf.leaf = null;
  const short = clone(deep.proof);
  short.branches[0] = short.branches[0].slice(0, 15);
  const notHex = clone(deep.proof);
  notHex.branches[1][3] = 'zz'.repeat(32);
  bad.push(['leaf id', leafId], ['leaf slot', leafSlot], ['a branch cut', cut], ['leaf dropped', noLeaf], ['15 children', short], ['not hex', notHex]);
  for (const [what, p] of bad) assert.throws(() => verifyProof(p, trie.root, slot), ProofError, what);
  assert.throws(() => verifyProof(deep.proof, flip(trie.root), slot), ProofError, 'another root');
  assert.throws(() => verifyProof({ branches: Array(64).fill(deep.proof.branches[0]), leaf: null }, trie.root, slot), /deeper/);
  assert.throws(() => verifyProof(/** @type {any} */ ({}), trie.root, slot), ProofError);

  // An absence proof must not be read as presence of the other slot, and a proof
  // for one slot does not prove another that leaves the path.
  const other = trie.absent.find((/** @type {any} */ c) => c.proof.leaf);
  const wrongPath = trie.present.find((/** @type {any} */ c) => nibble(fromHex(c.slot), 0) !== nibble(fromHex(other.slot), 0));
  assert.throws(() => verifyProof(other.proof, trie.root, fromHex(wrongPath.slot)), ProofError);
  // A leaf off the path: the empty trie's proof shape with a leaf of another slot.
  const off = { branches: [], leaf: trie.single.proof.leaf };
  assert.deepEqual(verifyProof(off, trie.single.root, fromHex(trie.single.absentCase.slot)), { present: false, id: null });
});

test('proofs made by a real node verify, and their records match the leaf', () => {
  const roots = new Set(fromNode.cases.map((/** @type {any} */ c) => c.root));
  assert.equal(roots.size, 1);
  for (const c of fromNode.cases) {
    const got = verifyProof(c.proof, c.root, slotHash(c.author, c.kind, c.key));
    assert.equal(got.present, c.record !== null, c.key);
    if (c.record) {
      verifyRecord(c.record);
      assert.equal(recordId(c.record), got.id);
    }
    const p = clone(c.proof);
    p.branches[0][7] = flip(p.branches[0][7]);
    assert.throws(() => verifyProof(p, c.root, slotHash(c.author, c.kind, c.key)), ProofError);
  }
});
