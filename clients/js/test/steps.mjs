// A tiny step runner for the scripts that run against live nodes (browser.mjs,
// live.mjs): every step runs, prints PASS or FAIL with the reason, and `finish`
// exits 1 if any failed, with a hint for the steps that need node features not
// everywhere yet.

/** @type {{name: string, ok: boolean, why?: string}[]} */
const results = [];

const HINTS = {
  '[sessions]': 'needs the session token in put results (SPEC "Sessions")',
  '[CORS]': 'needs CORS on the HTTP API (SPEC "CORS")',
};

/** @param {string} name @param {() => Promise<string | void>} fn */
export async function step(name, fn) {
  const t0 = Date.now();
  try {
    const note = await fn();
    results.push({ name, ok: true });
    console.log(`PASS  ${name}${note ? `: ${note}` : ''} (${Date.now() - t0} ms)`);
  } catch (e) {
    const why = String(/** @type {Error} */ (e)?.message ?? e).split('\n')[0];
    results.push({ name, ok: false, why });
    console.log(`FAIL  ${name}: ${why}`);
  }
}

/** Print the summary; exit 1 if a step failed. @param {string[]} [extra] lines to print on failure */
export function finish(extra = []) {
  const failed = results.filter((r) => !r.ok);
  console.log(`\n${results.length - failed.length} passed, ${failed.length} failed`);
  if (!failed.length) return;
  for (const f of failed) {
    const tag = Object.keys(HINTS).find((t) => f.name.startsWith(t));
    console.log(`  failed: ${f.name}${tag ? `\n          (${HINTS[/** @type {keyof HINTS} */ (tag)]})` : ''}\n          ${f.why}`);
  }
  for (const line of extra) console.log(line);
  process.exitCode = 1;
}
