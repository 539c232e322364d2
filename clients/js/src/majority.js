// Choosing the root to trust (SPEC "Verified reads"): the root that a strict
// majority of the nodes asked report. A node that did not answer still counts as
// asked, so with 2 of 5 nodes unreachable, 3 must agree: an attacker cannot win by
// knocking honest nodes off the network.

import { SplitError } from './errors.js';

/**
 * @typedef {{node: string, root?: string, error?: string}} RootAnswer
 * @typedef {{root: string, agreed: string[], disagreed: {node: string, root: string}[],
 *   unresponsive: {node: string, error: string}[], asked: number}} Majority
 */

/**
 * Group answers by root and return the strict-majority root with who agreed, who
 * reported another root, and who did not answer. Throws SplitError naming the split
 * when no root has more than half of the asked nodes.
 * @param {RootAnswer[]} answers one per node asked
 * @returns {Majority}
 */
export function pickMajority(answers) {
  /** @type {Map<string, string[]>} */
  const byRoot = new Map();
  const unresponsive = [];
  for (const a of answers) {
    if (typeof a.root === 'string') byRoot.set(a.root, [...(byRoot.get(a.root) ?? []), a.node]);
    else unresponsive.push({ node: a.node, error: a.error ?? 'no answer' });
  }
  const ranked = [...byRoot].sort((x, y) => y[1].length - x[1].length);
  const asked = answers.length;
  const top = ranked[0];
  if (!top || 2 * top[1].length <= asked) {
    const split = ranked.map(([r, ns]) => `${ns.length} report ${r.slice(0, 12)}… (${ns.join(', ')})`);
    if (unresponsive.length) split.push(`${unresponsive.length} did not answer (${unresponsive.map((u) => u.node).join(', ')})`);
    throw new SplitError(
      `no strict majority among ${asked} nodes asked: ${split.join('; ') || 'none answered'}`,
      Object.fromEntries(byRoot),
      unresponsive,
      asked,
    );
  }
  const [root, agreed] = top;
  const disagreed = ranked.slice(1).flatMap(([r, ns]) => ns.map((node) => ({ node, root: r })));
  return { root, agreed, disagreed, unresponsive, asked };
}
