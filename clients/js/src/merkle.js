// The database hash: a hexary Merkle trie over all slots, and checking its proofs.
// This follows docs/merkle.md to the byte; `proto::merkle::Proof::verify` in the Rust
// code is the reference. Only the root is trusted: a proof is only as good as the
// root it is checked against (see verified-read.js for where the root comes from).

import { sha256 } from '@noble/hashes/sha2.js';
import { concat, equalBytes, fromHex, toHex, utf8Bytes } from './bytes.js';
import { ProofError } from './errors.js';
import { kindByte } from './record.js';

const SLOT_TAG = utf8Bytes('cirrus-slot-v1');
/** The hash of an empty subtree: 32 zero bytes. */
export const EMPTY = new Uint8Array(32);
export const EMPTY_HEX = '0'.repeat(64);

/**
 * Slot hash of (author, kind, key): H("cirrus-slot-v1" || kind || author || key),
 * the key last and without a length prefix.
 * @param {string} author hex @param {import('./record.js').Kind} kind @param {string} key
 */
export function slotHash(author, kind, key) {
  return sha256(concat(SLOT_TAG, new Uint8Array([kindByte(kind)]), fromHex(author, 32, 'author'), utf8Bytes(key)));
}

/** Leaf: H(0x00 || slot || id). @param {Uint8Array} slot @param {Uint8Array} id */
export const leafHash = (slot, id) => sha256(concat(new Uint8Array([0]), slot, id));

/** Branch: H(0x01 || c0 || ... || c15). @param {Uint8Array[]} children */
export const branchHash = (children) => sha256(concat(new Uint8Array([1]), ...children));

/** Nibble i of a hash, high half of byte 0 first. @param {Uint8Array} h @param {number} i */
export const nibble = (h, i) => (i % 2 === 0 ? h[i >> 1] >> 4 : h[i >> 1] & 0x0f);

/**
 * @typedef {{branches: string[][], leaf: {slot: string, id: string} | null}} Proof
 * @typedef {{present: true, id: string} | {present: false, id: null}} ProofResult
 */

/**
 * Check a proof for `slot` against `root` (docs/merkle.md "Proofs"). Returns whether
 * the slot is present and, if so, the id of the record it holds. Throws ProofError
 * for any proof that does not check out, including malformed ones.
 * @param {Proof} proof @param {string | Uint8Array} root @param {Uint8Array} slot
 * @returns {ProofResult}
 */
export function verifyProof(proof, root, slot) {
  const rootBytes = typeof root === 'string' ? hex32(root, 'root') : root;
  if (!proof || !Array.isArray(proof.branches)) throw new ProofError('malformed proof: no branches array');
  // A slot hash has 64 nibbles, so a path has at most 63 branches above its leaf.
  if (proof.branches.length >= 64) throw new ProofError('the proof is deeper than a slot hash');
  let expected = rootBytes;
  proof.branches.forEach((children, depth) => {
    if (!Array.isArray(children) || children.length !== 16) {
      throw new ProofError(`malformed proof: branch ${depth} does not have 16 children`);
    }
    const bytes = children.map((c) => hex32(c, `branch ${depth}`));
    if (!equalBytes(branchHash(bytes), expected)) {
      throw new ProofError(`branch at depth ${depth} does not hash to the value its parent (or the root) holds`);
    }
    expected = bytes[nibble(slot, depth)];
  });
  const depth = proof.branches.length;
  if (proof.leaf === null || proof.leaf === undefined) {
    if (!equalBytes(expected, EMPTY)) throw new ProofError('the proof ends at an empty child but the parent holds a non-empty hash');
    return { present: false, id: null };
  }
  const leafSlot = hex32(proof.leaf.slot, 'leaf slot');
  const leafId = hex32(proof.leaf.id, 'leaf id');
  if (!equalBytes(leafHash(leafSlot, leafId), expected)) {
    throw new ProofError('the leaf does not hash to the value its parent (or the root) holds');
  }
  for (let i = 0; i < depth; i++) {
    if (nibble(leafSlot, i) !== nibble(slot, i)) throw new ProofError("the leaf is not on the slot's path");
  }
  // Another slot's leaf on our path proves absence: it is the only slot under it.
  return equalBytes(leafSlot, slot) ? { present: true, id: toHex(leafId) } : { present: false, id: null };
}

/** @param {unknown} s @param {string} what */
function hex32(s, what) {
  try {
    return fromHex(/** @type {string} */ (s), 32, what);
  } catch (e) {
    throw new ProofError(`malformed proof: ${/** @type {Error} */ (e).message}`);
  }
}
