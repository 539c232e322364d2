// Byte helpers: hex, UTF-8, big-endian integers. Everything on the wire is
// lowercase hex (SPEC "JSON-RPC"), everything hashed or signed is bytes.

const utf8 = new TextEncoder();

/** @param {Uint8Array} b */
export function toHex(b) {
  let s = '';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}

/**
 * Parse hex, optionally of a fixed byte length; throws TypeError otherwise.
 * @param {string} s @param {number} [len] @param {string} [what]
 */
export function fromHex(s, len, what = 'hex') {
  if (typeof s !== 'string' || s.length % 2 || !/^[0-9a-fA-F]*$/.test(s)) {
    throw new TypeError(`${what}: expected hex, got ${JSON.stringify(s)?.slice(0, 80)}`);
  }
  if (len !== undefined && s.length !== 2 * len) {
    throw new TypeError(`${what}: expected ${2 * len} hex characters, got ${s.length}`);
  }
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
  return out;
}

/** @param {string} s */
export const utf8Bytes = (s) => utf8.encode(s);

/** @param {...Uint8Array} parts */
export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let i = 0;
  for (const p of parts) {
    out.set(p, i);
    i += p.length;
  }
  return out;
}

/** Big-endian unsigned integer of `bytes` bytes. @param {number | bigint} n @param {number} bytes */
export function uintBE(n, bytes) {
  let v = BigInt(n);
  if (v < 0n || v >= 1n << BigInt(8 * bytes)) throw new RangeError(`${n} does not fit in ${bytes} bytes`);
  const out = new Uint8Array(bytes);
  for (let i = bytes - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/** @param {Uint8Array} a @param {Uint8Array} b */
export function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}
