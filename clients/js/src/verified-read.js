// A verified read (SPEC "Verified reads"). No single node is trusted:
//
// 1. Ask several nodes for `getdbhash`. While their roots differ (writes still
//    spreading), ask the ones that answered again, for up to `settleMs`.
// 2. Take the root a strict majority of the asked nodes report (majority.js).
// 3. Read the record with `proof: true` from a node of that majority, check the
//    proof against the node's own root and the majority root, and the record
//    against the proof (signature, id = the proof's leaf id, the right slot).
//    A node whose answer fails a check is caught, reported and penalised, and the
//    next majority node is asked. If the root moved on meanwhile, start over.
// 4. Report and penalise the nodes that disagreed or did not answer.

import { VerificationError } from './errors.js';
import { PENALTY } from './health.js';
import { pickMajority } from './majority.js';
import { verifyProof, slotHash } from './merkle.js';
import { checkReturned, recordId } from './record.js';

const ROUNDS = 3;
const SETTLE_STEP_MS = 250;

/**
 * @param {import('./cloud.js').Cloud} cloud
 * @param {{author: string, key: string, kind: 'doc' | 'rating', via?: string, nodes: number, settleMs: number}} q
 * @returns {Promise<import('./index.js').VerifiedRead>}
 */
export async function verifiedGet(cloud, q) {
  const want = { author: q.author, kind: q.kind, key: q.key };
  const slot = slotHash(q.author, q.kind, q.key);
  /** @type {{node: string, reason: string}[]} */
  const caught = [];
  let moved = '';
  for (let round = 0; round < ROUNDS; round++) {
    const asked = cloud.pickNodes(q.nodes, q.via);
    const majority = pickMajority(await askRoots(cloud, asked, q.settleMs));
    const servers = q.via && majority.agreed.includes(q.via) ? [q.via, ...majority.agreed.filter((n) => n !== q.via)] : majority.agreed;
    for (const node of servers) {
      let res;
      try {
        res = await cloud.callOn(node, 'get', { ...want, proof: true });
      } catch {
        continue; // counted in its health already
      }
      const served = judge(res, slot, want, majority.root);
      if ('bad' in served) {
        cloud.penalize(node, served.bad, PENALTY.badProof);
        caught.push({ node, reason: served.bad });
        continue;
      }
      if ('moved' in served) {
        moved = `${node} now proves against ${served.moved}`;
        continue;
      }
      for (const d of majority.disagreed) {
        cloud.penalize(d.node, `reported root ${d.root.slice(0, 12)}…, the majority ${majority.root.slice(0, 12)}…`);
      }
      for (const u of majority.unresponsive) cloud.penalize(u.node, `no root: ${u.error}`, PENALTY.unresponsive);
      return { ...served, root: majority.root, servedBy: node, agreed: majority.agreed, disagreed: majority.disagreed, unresponsive: majority.unresponsive, caught, asked: majority.asked };
    }
  }
  const why = [moved && `the root kept moving (${moved})`, ...caught.map((c) => `${c.node}: ${c.reason}`)].filter(Boolean);
  throw new VerificationError(`verified read of ${q.kind} ${JSON.stringify(q.key)}: no node of the majority served a proof that checks out${why.length ? ': ' + why.join('; ') : ''}`);
}

/**
 * `getdbhash` from every node, asking again those that answered while their roots
 * differ, up to `settleMs`.
 * @param {import('./cloud.js').Cloud} cloud @param {string[]} nodes @param {number} settleMs
 * @returns {Promise<import('./majority.js').RootAnswer[]>}
 */
async function askRoots(cloud, nodes, settleMs) {
  const deadline = Date.now() + settleMs;
  /** @type {Map<string, import('./majority.js').RootAnswer>} */
  const answers = new Map();
  let ask = nodes;
  for (;;) {
    await Promise.all(
      ask.map(async (node) => {
        try {
          const r = await cloud.callOn(node, 'getdbhash', {});
          if (typeof r?.root !== 'string' || !/^[0-9a-f]{64}$/.test(r.root)) throw new Error('no root in the answer');
          answers.set(node, { node, root: r.root });
        } catch (e) {
          answers.set(node, { node, error: /** @type {Error} */ (e).message });
        }
      }),
    );
    const all = nodes.map((n) => /** @type {import('./majority.js').RootAnswer} */ (answers.get(n)));
    const roots = new Set(all.map((a) => a.root).filter(Boolean));
    if (roots.size <= 1 || Date.now() + SETTLE_STEP_MS > deadline) return all;
    ask = all.filter((a) => a.root).map((a) => a.node);
    await new Promise((r) => setTimeout(r, SETTLE_STEP_MS));
  }
}

/**
 * Judge one `get` answer with proof against the majority root.
 * @param {any} res @param {Uint8Array} slot @param {{author: string, kind: string, key: string}} want @param {string} root
 * @returns {{bad: string} | {moved: string} | {present: boolean, record: any}}
 */
function judge(res, slot, want, root) {
  if (!res || typeof res.root !== 'string' || !res.proof) return { bad: 'answered without a proof' };
  let proven;
  try {
    // Against its own root first: a node whose proof fails even that is broken or
    // lying, whatever the majority holds.
    proven = verifyProof(res.proof, res.root, slot);
  } catch (e) {
    return { bad: `proof does not verify against its own root: ${/** @type {Error} */ (e).message}` };
  }
  if (res.root !== root) return { moved: res.root };
  const record = res.record ?? null;
  if (!proven.present) return record === null ? { present: false, record: null } : { bad: 'returned a record the proof says is absent' };
  if (record === null) return { bad: 'the proof shows the slot present, but no record came with it' };
  try {
    checkReturned(record, want);
  } catch (e) {
    return { bad: /** @type {Error} */ (e).message };
  }
  if (recordId(record) !== proven.id) return { bad: "the record is not the one the proof's leaf names" };
  return { present: true, record };
}
