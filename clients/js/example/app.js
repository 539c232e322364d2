// The example page: connect to some nodes, keep a key and the session token in
// localStorage, write a record on one node and read it back, verified, from
// another. Everything it does goes through the library in ../src.
import { Cloud, Identity, SplitError } from '../src/index.js';

const $ = (/** @type {string} */ id) => /** @type {any} */ (document.getElementById(id));
const store = {
  get: (/** @type {string} */ k) => localStorage.getItem(`cirrus.${k}`),
  set: (/** @type {string} */ k, /** @type {string | null} */ v) => (v === null ? localStorage.removeItem(`cirrus.${k}`) : localStorage.setItem(`cirrus.${k}`, v)),
};
const DEFAULT_NODES = ['ws://127.0.0.11:38082', 'ws://127.0.0.12:38082', 'ws://127.0.0.13:38082'];

/** @type {Cloud | null} */
let cloud = null;
/** @type {Identity} */
let identity;
/** getnodeinfo of each node, by URL, for the node list. @type {Map<string, any>} */
const info = new Map();
/** What the last verified read said about each node. @type {Map<string, string>} */
const verdict = new Map();

// ---- small DOM helpers --------------------------------------------------------

/** @param {string} tag @param {Record<string, any>} [attrs] @param {...(Node | string | null)} kids */
function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') el.className = v;
    else if (v !== undefined && v !== null) el.setAttribute(k, v);
  }
  for (const kid of kids) if (kid !== null) el.append(kid);
  return el;
}

/** @param {string} s */
const short = (s, head = 10, tail = 6) => (s && s.length > head + tail + 1 ? `${s.slice(0, head)}…${s.slice(-tail)}` : s);
const hostOf = (/** @type {string} */ url) => url.replace(/^\w+:\/\//, '');

/** Show an error in a card (or hide it with null). @param {string} id @param {unknown} err */
function showError(id, err) {
  const el = $(id);
  el.hidden = !err;
  el.replaceChildren();
  if (!err) return;
  const e = /** @type {any} */ (err);
  // A CloudError lists each node's error below a one-line headline.
  const text = e.errors?.length ? `${e.method}: every node tried failed` : e.message ?? String(e);
  el.append(h('strong', {}, e.name && e.name !== 'Error' ? `${e.name}${e.code !== undefined ? ` ${e.code}` : ''}` : 'Error'), ' ', text);
  for (const sub of e.errors ?? []) el.append(h('div', { class: 'sub' }, sub.message));
  log(`✗ ${e.message ?? e}`, 'bad');
}

/** @param {string} text @param {string} [kind] */
function log(text, kind = '') {
  const li = h('li', { class: kind }, h('time', {}, new Date().toLocaleTimeString()), ' ', text);
  $('log').prepend(li);
  while ($('log').children.length > 60) $('log').lastChild.remove();
}

/** Run an async action with its button disabled and its card's error box cleared. */
async function action(/** @type {string} */ button, /** @type {string} */ errorId, /** @type {() => Promise<void>} */ fn) {
  const b = $(button);
  b.disabled = true;
  b.classList.add('busy');
  showError(errorId, null);
  try {
    await fn();
  } catch (e) {
    showError(errorId, e);
  } finally {
    b.disabled = false;
    b.classList.remove('busy');
    renderNodes();
  }
}

// ---- key and session ------------------------------------------------------------

function loadKey() {
  const seed = store.get('seed');
  try {
    identity = seed ? Identity.fromHex(seed) : Identity.generate();
  } catch {
    identity = Identity.generate();
  }
  store.set('seed', identity.seedHex());
  renderKey();
}

function renderKey() {
  $('author').textContent = identity.author;
  $('author').title = identity.author;
  $('read-author').value = identity.author;
}

function renderSession() {
  const t = cloud?.session ?? store.get('session');
  $('session').textContent = t ?? 'none yet: a write starts one';
  $('session').classList.toggle('muted', !t);
}

// ---- nodes ------------------------------------------------------------------------

function nodeUrlsFromInput() {
  return $('node-urls').value.split(/[\s,]+/).map((/** @type {string} */ s) => s.trim()).filter(Boolean);
}

async function connect() {
  cloud?.close();
  info.clear();
  verdict.clear();
  const urls = nodeUrlsFromInput();
  store.set('nodes', urls.join('\n'));
  const transport = document.querySelector('input[name=transport]:checked')?.getAttribute('value') === 'http' ? 'http' : 'ws';
  store.set('transport', transport);
  cloud = new Cloud({
    nodes: urls,
    transport,
    discover: $('discover').checked,
    session: store.get('session'),
    onSession: (t) => {
      store.set('session', t);
      renderSession();
      log(t ? `session token now ${short(t, 16, 8)}` : 'session forgotten');
    },
    onEvent: (ev) => {
      if (ev.type === 'node' && ev.discovered) log(`found ${ev.node}`);
      if (ev.type === 'penalty') log(`penalised ${ev.node}: ${ev.reason}`, 'bad');
      if (ev.type === 'call' && !ev.ok) log(`${ev.method} on ${hostOf(ev.node)} failed: ${ev.error}`, 'warn');
    },
  });
  log(`connecting over ${transport === 'ws' ? 'WebSocket' : 'HTTP'} to ${urls.join(', ')}`);
  if ($('discover').checked) await cloud.discover();
  await refreshInfo();
  const up = [...info.values()].filter((i) => !i.error).length;
  if (!up) {
    const err = new Error('no node answered');
    /** @type {any} */ (err).method = 'getnodeinfo';
    /** @type {any} */ (err).errors = [...info.entries()].map(([url, i]) => ({ message: i.error ?? `${url}: ?` }));
    throw err;
  }
  log(`${up} of ${info.size} nodes answered`, 'good');
}

async function refreshInfo() {
  if (!cloud) return;
  await Promise.all(
    cloud.nodes.map(async (n) => {
      try {
        info.set(n.url, await cloud?.callOn(n.url, 'getnodeinfo', {}, { timeoutMs: 4000 }));
      } catch (e) {
        info.set(n.url, { error: /** @type {Error} */ (e).message });
      }
    }),
  );
  renderNodes();
}

function renderNodes() {
  const list = $('node-list');
  list.replaceChildren();
  const nodes = cloud?.nodes ?? [];
  if (!nodes.length) list.append(h('li', { class: 'empty' }, 'Not connected.'));
  for (const n of nodes) {
    const i = info.get(n.url) ?? {};
    const v = verdict.get(n.url);
    const state = i.error ? 'down' : n.health.avoided ? 'avoided' : i.peerId ? 'up' : 'unknown';
    const title = i.error ?? n.health.avoided ?? (i.peerId ? 'healthy' : 'not asked yet');
    list.append(
      h('li', { class: `node ${state}` },
        h('span', { class: 'dot', title }),
        h('span', { class: 'url mono' }, hostOf(n.url)),
        h('span', { class: 'peer mono', title: i.peerId ?? '' }, i.peerId ? short(i.peerId, 8, 6) : i.error ? 'unreachable' : '–'),
        h('span', { class: 'meta' }, i.db ? `${i.db.records} records · root ${i.db.root.slice(0, 8)}` : '', n.discovered ? h('span', { class: 'tag' }, 'found') : null),
        h('span', { class: 'meta' }, n.health.averageMs !== null ? `${n.health.averageMs} ms` : ''),
        v ? h('span', { class: `verdict ${v}` }, v) : null,
      ),
    );
  }
  for (const id of ['write-node', 'read-node']) {
    const sel = $(id);
    const keep = sel.value;
    sel.replaceChildren(h('option', { value: '' }, 'any healthy node'), ...nodes.map((n) => h('option', { value: n.url }, hostOf(n.url))));
    if (nodes.some((n) => n.url === keep)) sel.value = keep;
  }
  // Read from another node than the one written to, unless the user chose.
  if (!$('read-node').dataset.touched && nodes.length > 1) {
    const w = $('write-node').value || nodes[0].url;
    $('read-node').value = nodes.find((n) => n.url !== w)?.url ?? '';
  }
  if (!$('write-node').value && nodes.length && !$('write-node').dataset.touched) $('write-node').value = nodes[0].url;
}

// ---- write and read ------------------------------------------------------------------

/** @param {HTMLElement} dl @param {[string, string | Node, string?][]} rows */
function fill(dl, rows) {
  dl.replaceChildren(...rows.flatMap(([k, v, cls]) => [h('dt', {}, k), h('dd', { class: cls ?? '' }, v)]));
  dl.hidden = false;
}

async function write() {
  if (!cloud) await connect();
  const c = /** @type {Cloud} */ (cloud);
  const key = $('key').value;
  const res = await c.put(identity, key, $('value').value, { via: $('write-node').value || undefined });
  log(`wrote ${JSON.stringify(key)} on ${hostOf(res.node)}: ${res.status}`, 'good');
  fill($('write-result'), [
    ['status', h('span', { class: `badge ${res.status === 'applied' ? 'ok' : 'warn'}` }, res.status)],
    ['node', hostOf(res.node), 'mono'],
    ['id', res.id, 'mono wrapall'],
    ['seq', String(res.record.seq), 'mono'],
    ['session', res.session ? short(res.session, 24, 8) : 'not returned by this node (an older version): reads fall back to waiting for gossip', res.session ? 'mono wrapall' : 'muted'],
  ]);
  $('read-key').value = key;
  $('read-author').value = identity.author;
  renderSession();
}

async function read() {
  if (!cloud) await connect();
  const c = /** @type {Cloud} */ (cloud);
  const out = $('read-result');
  out.hidden = true;
  verdict.clear();
  let v;
  try {
    v = await c.verifiedGet($('read-author').value.trim(), $('read-key').value, { via: $('read-node').value || undefined });
  } catch (e) {
    if (e instanceof SplitError) {
      for (const [root, nodes] of Object.entries(e.roots)) for (const n of nodes) verdict.set(n, `root ${root.slice(0, 8)}`);
    }
    throw e;
  }
  for (const n of v.agreed) verdict.set(n, 'agreed');
  for (const d of v.disagreed) verdict.set(d.node, 'disagreed');
  for (const u of v.unresponsive) verdict.set(u.node, 'no answer');
  for (const x of v.caught) verdict.set(x.node, 'caught lying');
  log(`verified read from ${hostOf(v.servedBy)}: ${v.present ? 'present' : 'absent'}, ${v.agreed.length} of ${v.asked} agree`, 'good');

  const chips = (/** @type {string} */ cls, /** @type {string[]} */ urls) => h('div', { class: 'chips' }, ...urls.map((u) => h('span', { class: `chip ${cls}`, title: u }, hostOf(u))));
  out.replaceChildren(
    h('div', { class: `value ${v.present ? '' : 'absent'}` }, v.present ? String(v.record?.value ?? '(deleted: a tombstone)') : 'No such record'),
    h('div', { class: 'badges' },
      h('span', { class: 'badge ok' }, v.present ? '✓ present' : '✓ absent'),
      h('span', { class: 'badge ok' }, '✓ Merkle proof'),
      v.present ? h('span', { class: 'badge ok' }, '✓ signature') : null,
      h('span', { class: 'badge' }, `${v.agreed.length} of ${v.asked} nodes agree`),
    ),
  );
  const dl = h('dl', { class: 'result' });
  fill(/** @type {HTMLElement} */ (dl), [
    ['majority root', v.root, 'mono wrapall'],
    ['proof from', hostOf(v.servedBy), 'mono'],
    ['agreed', chips('ok', v.agreed)],
    ...(v.disagreed.length ? /** @type {[string, Node][]} */ ([['disagreed', chips('bad', v.disagreed.map((d) => d.node))]]) : []),
    ...(v.unresponsive.length ? /** @type {[string, Node][]} */ ([['no answer', chips('muted', v.unresponsive.map((d) => d.node))]]) : []),
    ...(v.caught.length ? /** @type {[string, Node][]} */ ([['caught', chips('bad', v.caught.map((d) => d.node))]]) : []),
    ...(v.present && v.record ? /** @type {[string, string, string][]} */ ([['seq', String(v.record.seq), 'mono'], ['id', String(v.record.id), 'mono wrapall']]) : []),
  ]);
  out.append(dl);
  out.hidden = false;
  await refreshInfo();
}

// ---- wiring ---------------------------------------------------------------------------

function init() {
  const q = new URLSearchParams(location.search);
  $('node-urls').value = (q.get('nodes')?.split(',') ?? store.get('nodes')?.split('\n') ?? DEFAULT_NODES).join('\n');
  const t = q.get('transport') ?? store.get('transport');
  if (t === 'http') /** @type {any} */ (document.querySelector('input[name=transport][value=http]')).checked = true;
  loadKey();
  renderSession();
  renderNodes();

  $('connect').onclick = () => action('connect', 'nodes-error', connect);
  $('write').onclick = () => action('write', 'write-error', write);
  $('read').onclick = () => action('read', 'read-error', read);
  $('write-node').onchange = () => ($('write-node').dataset.touched = '1');
  $('read-node').onchange = () => ($('read-node').dataset.touched = '1');
  $('new-key').onclick = () => {
    if (!confirm('Make a new key? The old seed is dropped from this browser.')) return;
    identity = Identity.generate();
    store.set('seed', identity.seedHex());
    renderKey();
    log(`new key ${short(identity.author)}`);
  };
  $('show-import').onclick = () => ($('import-row').hidden = !$('import-row').hidden);
  $('import-key').onclick = () => {
    showError('key-error', null);
    try {
      identity = Identity.fromHex($('seed-input').value);
      store.set('seed', identity.seedHex());
      $('seed-input').value = '';
      $('import-row').hidden = true;
      renderKey();
      log(`imported key ${short(identity.author)}`);
    } catch (e) {
      showError('key-error', e);
    }
  };
  $('copy-seed').onclick = async () => {
    try {
      await navigator.clipboard.writeText(identity.seedHex());
      log('seed copied to the clipboard');
    } catch {
      prompt('Your seed (keep it secret):', identity.seedHex());
    }
  };
  $('forget-session').onclick = () => {
    if (cloud) cloud.session = null;
    store.set('session', null);
    renderSession();
  };
  if (q.get('connect') !== '0') action('connect', 'nodes-error', connect);
}

init();
