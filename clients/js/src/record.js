// The author-signed record (SPEC "Records"): the exact signed bytes, the record id,
// the size and content rules, signing and checking.
//
// A record in JSON: {author, kind, key, seq, value, sig} (hex author and sig). The
// signed message is spelled out field by field in `signedMessage`; the id is
// SHA-256(signed message || signature), the same bytes the node stores.

import * as ed from '@noble/ed25519';
import { sha256, sha512 } from '@noble/hashes/sha2.js';
import { concat, fromHex, toHex, uintBE, utf8Bytes } from './bytes.js';
import { CODES, RecordError, VerificationError } from './errors.js';

// noble's synchronous API needs a SHA-512; with it, signing works without WebCrypto
// (which pages served over plain http from a non-loopback host do not get).
ed.hashes.sha512 = sha512;

export const SIGNING_TAG = utf8Bytes('cirrus-record-v1');
export const MAX_KEY_BYTES = 256;
export const MAX_VALUE_BYTES = 65536;
/** @type {Readonly<Record<string, number>>} */
export const KIND_BYTE = Object.freeze({ doc: 0, rating: 1 });

/**
 * @typedef {'doc' | 'rating'} Kind
 * @typedef {{author: string, kind: Kind, key: string, seq: number | bigint, value: string | null}} UnsignedRecord
 * @typedef {UnsignedRecord & {sig: string, id?: string}} SignedRecord
 */

/** @param {string} kind */
export function kindByte(kind) {
  const b = KIND_BYTE[kind];
  if (b === undefined) throw new RecordError(`unknown kind ${JSON.stringify(kind)}: expected "doc" or "rating"`);
  return b;
}

/**
 * The bytes the author signs: tag, kind, author, u16 key length, key, u64 seq, then
 * 0 for a null value or 1, u32 value length and the value (all big-endian).
 * @param {UnsignedRecord} r
 */
export function signedMessage(r) {
  const key = utf8Bytes(r.key);
  const value =
    r.value === null ? new Uint8Array([0]) : concat(new Uint8Array([1]), uintBE(utf8Bytes(r.value).length, 4), utf8Bytes(r.value));
  return concat(
    SIGNING_TAG,
    new Uint8Array([kindByte(r.kind)]),
    fromHex(r.author, 32, 'author'),
    uintBE(key.length, 2),
    key,
    uintBE(r.seq, 8),
    value,
  );
}

/** Record id, hex: SHA-256(signed message || signature). @param {SignedRecord} r */
export function recordId(r) {
  return toHex(sha256(concat(signedMessage(r), fromHex(r.sig, 64, 'sig'))));
}

/** Rust's `char::is_control`: general category Cc. */
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/**
 * SPEC size and content rules, without the signature. Throws RecordError (-32002).
 * @param {UnsignedRecord} r
 */
export function checkLimits(r) {
  kindByte(r.kind);
  if (typeof r.key !== 'string' || typeof r.author !== 'string') throw new RecordError('key and author must be strings');
  if (!wellFormed(r.key) || (r.value !== null && !wellFormed(r.value))) {
    throw new RecordError('key and value must be valid Unicode (no lone surrogates)');
  }
  const klen = utf8Bytes(r.key).length;
  if (klen < 1 || klen > MAX_KEY_BYTES) throw new RecordError(`key must be 1 to ${MAX_KEY_BYTES} bytes of UTF-8, got ${klen} bytes`);
  if (CONTROL.test(r.key)) throw new RecordError('key must not contain control characters');
  if (r.value !== null && typeof r.value !== 'string') throw new RecordError('value must be a string or null');
  const vlen = r.value === null ? 0 : utf8Bytes(r.value).length;
  if (vlen > MAX_VALUE_BYTES) throw new RecordError(`value must be at most ${MAX_VALUE_BYTES} bytes, got ${vlen}`);
  if (r.kind === 'rating' && r.value !== null && !/^[1-5]$/.test(r.value)) {
    throw new RecordError(`a rating's value must be a decimal integer from 1 to 5 or null, got ${JSON.stringify(r.value.slice(0, 16))}`);
  }
  const seq = BigInt(r.seq);
  if (seq < 0n || seq >= 1n << 64n) throw new RecordError(`seq must be a u64, got ${r.seq}`);
}

/** @param {string} s */
const wellFormed = (s) => /** @type {any} */ (s).isWellFormed?.() ?? true; // ES2024; older engines: let the node judge

/**
 * Sign a record with a 32-byte ed25519 seed. Checks the limits first, so a record
 * the node would refuse is never sent.
 * @param {Uint8Array} seed
 * @param {{kind?: Kind, key: string, seq: number | bigint, value: string | null}} fields
 * @returns {SignedRecord}
 */
export function signRecord(seed, { kind = 'doc', key, seq, value }) {
  /** @type {UnsignedRecord} */
  const r = { author: toHex(ed.getPublicKey(seed)), kind, key, seq, value };
  checkLimits(r);
  return { ...r, sig: toHex(ed.sign(signedMessage(r), seed)) };
}

/**
 * Full check of a record as a node returned it: limits, then the signature with
 * strict (RFC 8032, non-ZIP-215) rules as the nodes use, so exactly the records the
 * nodes accept pass. Throws RecordError (-32002 limits, -32001 signature).
 * @param {SignedRecord} r
 */
export function verifyRecord(r) {
  if (!r || typeof r !== 'object') throw new RecordError('not a record');
  checkLimits(r);
  let ok = false;
  try {
    ok = ed.verify(fromHex(r.sig, 64, 'sig'), signedMessage(r), fromHex(r.author, 32, 'author'), { zip215: false });
  } catch {
    ok = false;
  }
  if (!ok) throw new RecordError('signature does not verify', CODES.BAD_SIGNATURE);
  if (r.id !== undefined && r.id !== recordId(r)) throw new RecordError('the record id does not match its content', CODES.BAD_SIGNATURE);
}

/**
 * The SPEC conflict rule: does `a` win over `b` in the same slot? Higher seq, then
 * higher id (hex ids compare like the bytes they spell).
 * @param {SignedRecord} a @param {SignedRecord} b
 */
export function supersedes(a, b) {
  const sa = BigInt(a.seq), sb = BigInt(b.seq);
  if (sa !== sb) return sa > sb;
  return recordId(a) > recordId(b);
}

/**
 * A record a node returned for (author, kind, key): null, or a record of that very
 * slot whose signature and id check out. Throws VerificationError.
 * @param {any} record @param {{author: string, kind: string, key: string}} slot
 */
export function checkReturned(record, slot) {
  if (record === null || record === undefined) return;
  if (record.author !== slot.author || record.kind !== slot.kind || record.key !== slot.key) {
    throw new VerificationError('the node returned a record of another slot');
  }
  try {
    verifyRecord(record);
  } catch (e) {
    throw new VerificationError(`the node returned a bad record: ${/** @type {Error} */ (e).message}`, { cause: e });
  }
}
