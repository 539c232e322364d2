// An author key: a 32-byte ed25519 seed (RFC 8032 secret key), stored as 64 hex
// characters, the same form as the `cirrus keygen` file. The public key is the
// record's `author`.

import * as ed from '@noble/ed25519';
import './record.js'; // sets noble's sha512
import { fromHex, toHex } from './bytes.js';
import { signRecord } from './record.js';

export class Identity {
  #seed;

  /** @param {Uint8Array} seed 32 bytes */
  constructor(seed) {
    if (!(seed instanceof Uint8Array) || seed.length !== 32) throw new TypeError('an identity seed is 32 bytes');
    this.#seed = Uint8Array.from(seed);
    /** The author: hex of the 32-byte public key. */
    this.author = toHex(ed.getPublicKey(this.#seed));
  }

  /** A fresh random key (crypto.getRandomValues). */
  static generate() {
    return new Identity(ed.utils.randomSecretKey());
  }

  /** From 64 hex characters (surrounding whitespace allowed, as in a key file). @param {string} hex */
  static fromHex(hex) {
    return new Identity(fromHex(String(hex).trim(), 32, 'identity seed'));
  }

  /** The seed as hex, to store (it is the secret: keep it private). */
  seedHex() {
    return toHex(this.#seed);
  }

  /**
   * @param {{kind?: import('./record.js').Kind, key: string, seq: number | bigint, value: string | null}} fields
   */
  sign(fields) {
    return signRecord(this.#seed, fields);
  }
}
