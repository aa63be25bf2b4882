// What a project's Doees are doing: invocations (the list read again every
// second) and logs (the Server-Sent Events stream, followed live).

import { get, follow, seg, describe } from './api.js';
import { h, fill, empty, badge, formatTime, formatDuration } from './dom.js';

const POLL_MS = 1000;
const LIMIT = 50;
const MAX_LOG_LINES = 2000;

function triggerText(inv) {
  const d = inv.trigger_detail || {};
  if (inv.trigger === 'http') return `HTTP ${d.method || ''} ${d.path || ''}${d.query ? `?${d.query}` : ''}`;
  if (inv.trigger === 'mqtt') return `MQTT ${d.topic || ''}`;
  return inv.trigger.toUpperCase();
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

export async function invocationsTab(body, { project, signal }) {
  const live = h('span.live', 'Live');
  const pause = h('button.secondary.small', { type: 'button', 'aria-pressed': 'false' }, 'Pause');
  const updated = h('span.muted');
  const announce = h('span.visually-hidden', { 'aria-live': 'polite' });
  const problem = h('div.form-error', { role: 'alert' });
  const tbody = h('tbody');
  const tableEl = h('table.invocations',
    h('caption.visually-hidden', `Recent invocations of ${project}, newest first`),
    h('thead', h('tr', ['Started', 'Doee', 'Trigger', 'Status', 'Duration', 'HTTP', 'Output or error', ''].map((t) => h('th', { scope: 'col' }, t)))),
    tbody);
  const wrap = h('div.table-wrap', { tabindex: '0', role: 'region', 'aria-label': 'Recent invocations' }, tableEl);
  const none = empty('No invocations yet.', 'Call one of the project\'s HTTP routes (see Triggers) or use Try it on a Doee; it appears here within a second.');
  const holder = h('div', none);
  let paused = false;
  pause.addEventListener('click', () => {
    paused = !paused;
    pause.setAttribute('aria-pressed', String(paused));
    pause.textContent = paused ? 'Resume' : 'Pause';
    live.textContent = paused ? 'Paused' : 'Live';
    live.classList.toggle('off', paused);
  });
  fill(body,
    h('div.title-row', h('h2', 'Invocations'), h('div.controls', live, pause, updated)),
    h('p.hint', `The latest ${LIMIT}, newest first, read again every second. Open one for its output and log lines.`),
    problem, announce, holder);

  const rows = new Map(); // id -> {tr, detail, status}
  let first = true;
  let lastAnnounce = 0;
  let pendingNew = 0;
  const refresh = async () => {
    const list = await get(`projects/${seg(project)}/invocations?limit=${LIMIT}`, { signal });
    let fresh = 0;
    const order = [];
    for (const inv of list) {
      let row = rows.get(inv.id);
      if (!row) {
        row = makeRow(inv);
        rows.set(inv.id, row);
        if (!first) {
          row.tr.classList.add('new');
          fresh += 1;
        }
      } else if (row.status !== inv.status || row.duration !== inv.duration_ms) {
        updateRow(row, inv);
      }
      order.push(row.tr);
      if (row.detail) order.push(row.detail);
    }
    const keep = new Set(list.map((inv) => inv.id));
    for (const id of [...rows.keys()]) if (!keep.has(id)) rows.delete(id);
    // Re-inserting existing nodes keeps focus and open details.
    tbody.replaceChildren(...order);
    if (list.length && holder.firstChild !== wrap) fill(holder, wrap);
    if (!list.length && holder.firstChild !== none) fill(holder, none);
    pendingNew += fresh;
    if (pendingNew && Date.now() - lastAnnounce > 5000) {
      announce.textContent = `${pendingNew} new invocation${pendingNew === 1 ? '' : 's'}`;
      pendingNew = 0;
      lastAnnounce = Date.now();
    }
    updated.textContent = `updated ${formatTime(Date.now())}`;
    first = false;
  };
  await refresh();
  // Then every second, in the background, until the page is left.
  (async () => {
    while (!signal.aborted) {
      await sleep(POLL_MS, signal);
      if (signal.aborted || paused) continue;
      try {
        await refresh();
        fill(problem);
      } catch (err) {
        if (signal.aborted || err.name === 'AbortError' || err.status === 401) return;
        fill(problem, `Cannot read the invocations: ${describe(err)}. Trying again.`);
      }
    }
  })();

  function makeRow(inv) {
    const row = { tr: null, detail: null, status: null, duration: null, cells: {} };
    const open = h('button.secondary.small', { type: 'button', 'aria-expanded': 'false' }, 'Details');
    row.cells.status = h('td');
    row.cells.duration = h('td.num');
    row.cells.http = h('td.num');
    row.cells.output = h('td.out');
    row.tr = h('tr', { 'data-id': inv.id },
      h('td', formatTime(inv.started_ms)),
      h('td', `${inv.doee} v${inv.version}`),
      h('td', triggerText(inv)),
      row.cells.status, row.cells.duration, row.cells.http, row.cells.output,
      h('td', open));
    updateRow(row, inv);
    open.addEventListener('click', async () => {
      if (row.detail) {
        row.detail.remove();
        row.detail = null;
        open.setAttribute('aria-expanded', 'false');
        return;
      }
      const cell = h('td', { colspan: '8' }, h('p.muted', 'Loading…'));
      row.detail = h('tr.detail', cell);
      row.tr.after(row.detail);
      open.setAttribute('aria-expanded', 'true');
      try {
        const full = await get(`invocations/${seg(inv.id)}`, { signal });
        fill(cell, invocationDetail(full));
      } catch (err) {
        if (err.name !== 'AbortError') fill(cell, h('p.msg.error', describe(err)));
      }
    });
    return row;
  }
}

function updateRow(row, inv) {
  row.status = inv.status;
  row.duration = inv.duration_ms;
  fill(row.cells.status, badge(inv.status), inv.cold_start ? h('span.muted', ' cold') : null);
  fill(row.cells.duration, inv.status === 'pending' ? '…' : formatDuration(inv.duration_ms));
  fill(row.cells.http, inv.http_status ? String(inv.http_status) : '—');
  fill(row.cells.output, outputSnippet(inv));
}

/** The start of an invocation's output (or why it failed), on one line. */
function outputSnippet(inv) {
  const cut = (text) => (text.length > 60 ? `${text.slice(0, 60)}…` : text).replace(/\s+/g, ' ');
  if (inv.error) return h('span.bad-text', cut(inv.error));
  if (inv.output !== undefined) return inv.output ? h('code', cut(inv.output)) : h('span.muted', '(empty)');
  if (inv.output_base64 !== undefined) return h('span.muted', '(binary)');
  return inv.status === 'pending' ? h('span.muted', 'running…') : '—';
}

function invocationDetail(inv) {
  let output = null;
  if (inv.output !== undefined) output = h('pre.output', inv.output || '(empty)');
  else if (inv.output_base64 !== undefined) output = h('pre.output', `(binary, base64) ${inv.output_base64}`);
  return h('div.inv-detail',
    h('p', 'Invocation ', h('code', inv.id), ` · ${inv.trigger} · started ${formatTime(inv.started_ms)}`),
    inv.error ? h('p.msg.error', `Error: ${inv.error}`) : null,
    output ? [h('h4', 'Output'), output, inv.output_truncated ? h('p.muted', 'Cut at the recording limit.') : null] : null,
    h('h4', 'Log lines'),
    inv.logs && inv.logs.length
      ? h('ol.loglines', inv.logs.map((l) => h('li', h('span.time', formatTime(l.at_ms)), ' ', h(`span.level.${l.level}`, l.level), ' ', h('span.msg-text', l.message))))
      : h('p.muted', 'This invocation logged nothing.'));
}

export async function logsTab(body, { project, signal }) {
  const state = h('span.live', 'Connecting…');
  const pause = h('button.secondary.small', { type: 'button', 'aria-pressed': 'false' }, 'Pause');
  const clear = h('button.secondary.small', { type: 'button' }, 'Clear');
  const stick = h('input', { type: 'checkbox', checked: true, id: 'log-stick' });
  const problem = h('div.form-error', { role: 'alert' });
  const lines = h('ol.logview', { tabindex: '0', 'aria-label': `Log of ${project}` });
  const none = h('li.muted.placeholder', 'No log lines yet: builds and Doees write here, and new lines appear as they are written.');
  lines.append(none);
  fill(body,
    h('div.title-row', h('h2', 'Logs'), h('div.controls', state, pause, clear,
      h('label.check', stick, ' Keep the newest in view'))),
    h('p.hint', 'Build output and the Doees\' log lines, live (the latest 200, then each new one).'),
    problem, lines);

  let paused = false;
  let lastId = null;
  let run = null; // the stream's own AbortController
  clear.addEventListener('click', () => { fill(lines, none); });
  pause.addEventListener('click', () => {
    paused = !paused;
    pause.setAttribute('aria-pressed', String(paused));
    pause.textContent = paused ? 'Resume' : 'Pause';
    if (paused && run) run.abort();
  });

  const add = (entry) => {
    if (none.parentNode) none.remove();
    lines.append(h(`li.logline.${entry.level}`,
      h('span.time', formatTime(entry.at_ms)), ' ',
      h(`span.level.${entry.level}`, entry.level), ' ',
      h('span.doee-ref', `${entry.doee} v${entry.version}`), ' ',
      h('span.source', entry.source === 'build' ? 'build' : `inv ${String(entry.invocation_id || '').slice(0, 8)}`), ' ',
      h('span.msg-text', entry.message)));
    while (lines.childElementCount > MAX_LOG_LINES) lines.firstElementChild.remove();
    if (stick.checked) lines.scrollTop = lines.scrollHeight;
  };

  let backoff = 1000;
  // Follows in the background until the page is left.
  (async () => {
    while (!signal.aborted) {
      if (paused) {
        state.textContent = 'Paused';
        state.classList.add('off');
        await sleep(300, signal);
        continue;
      }
      run = new AbortController();
      const stop = () => run.abort();
      signal.addEventListener('abort', stop, { once: true });
      state.textContent = 'Live';
      state.classList.remove('off');
      try {
        const query = lastId ? `?follow=1&after=${encodeURIComponent(lastId)}` : '?follow=1&limit=200';
        await follow(`projects/${seg(project)}/logs${query}`, {
          signal: run.signal,
          onEvent: (event) => {
            if (event.event === 'log') {
              const entry = JSON.parse(event.data);
              lastId = event.id || entry.id;
              add(entry);
              backoff = 1000;
              fill(problem);
            } else if (event.event === 'error') {
              fill(problem, `The log stream stopped: ${event.data}`);
            }
          },
        });
      } catch (err) {
        if (signal.aborted) return;
        if (err.status === 401) return;
        if (err.name !== 'AbortError') fill(problem, `The log stream stopped: ${describe(err)}. Reconnecting.`);
      } finally {
        signal.removeEventListener('abort', stop);
      }
      if (signal.aborted) return;
      if (!paused) {
        state.textContent = 'Reconnecting…';
        state.classList.add('off');
        await sleep(backoff, signal);
        backoff = Math.min(backoff * 2, 10000);
      }
    }
  })();
}
