// JSON with u64 `seq` fields. A record's `seq` is a u64 (SPEC "Records"); a JS
// number is exact only up to 2^53, and a record whose seq was rounded no longer
// matches its signature. So a `seq` too long for a number is read as a BigInt and
// written back as bare digits.

/** @param {string} text */
export function parse(text) {
  // An unescaped `"seq":` can only be an object key (inside a JSON string the
  // quotes would be escaped), so this never touches string contents.
  const marked = text.replace(/"seq"\s*:\s*(\d{16,})/g, '"seq":"\\u0000u64:$1"');
  return JSON.parse(marked, (k, v) =>
    k === 'seq' && typeof v === 'string' && v.startsWith('\u0000u64:') ? toSeq(v.slice(5)) : v,
  );
}

/** Back to a number when it is exact, else a BigInt. @param {string} digits */
function toSeq(digits) {
  const b = BigInt(digits);
  return b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : b;
}

/** @param {unknown} value */
export function stringify(value) {
  const text = JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? `\u0000u64:${v}` : v));
  return text.replace(/"\\u0000u64:(\d+)"/g, '$1');
}
