// Building the page. Everything from the API goes in as text nodes, never
// as markup: a Doee's output or a log line cannot become part of the page.

/**
 * h('tag.class#id', {attr: value, onclick: fn}, ...children)
 * Children may be strings, numbers, nodes, arrays of those, null or false.
 */
export function h(spec, attrs, ...children) {
  const [, tag, rest] = /^([a-z0-9-]+)(.*)$/.exec(spec);
  const el = document.createElement(tag);
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === '.') el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'value') {
      el.value = value;
    } else if (key === 'checked' || key === 'disabled' || key === 'selected') {
      el[key] = Boolean(value);
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let ids = 0;
/** A fresh id for label/for and aria-describedby pairs. */
export function uid(prefix) {
  ids += 1;
  return `${prefix}-${ids}`;
}

/** A labelled form field: the label above the control, an optional hint. */
export function field(label, control, hint) {
  if (!control.id) control.id = uid('f');
  let hintEl = null;
  if (hint) {
    hintEl = h('p.hint', { id: uid('hint') }, hint);
    control.setAttribute('aria-describedby', hintEl.id);
  }
  return h('div.field', h('label', { for: control.id }, label), control, hintEl);
}

/** A table with a header row; `rows` are arrays of cells (or <tr>s). */
export function table(caption, headers, rows, { className } = {}) {
  const t = h('table', { class: className },
    caption ? h('caption', caption) : null,
    h('thead', h('tr', headers.map((title) => h('th', { scope: 'col' }, title)))),
    h('tbody', rows.map((row) => (row instanceof Node ? row : h('tr', row.map((cell) => h('td', cell)))))),
  );
  return h('div.table-wrap', { tabindex: '0', role: 'region', 'aria-label': caption || headers.join(', ') }, t);
}

/** An empty state: what is missing, and what to do about it. */
export function empty(title, ...advice) {
  return h('div.empty', h('p.empty-title', title), advice.length ? h('p', ...advice) : null);
}

/** A status badge; the word is the meaning, the colour only helps. */
export function badge(status) {
  const tone = {
    succeeded: 'ok', up: 'ok', ok: 'ok', active: 'ok',
    failed: 'bad', error: 'bad', crashed: 'bad', timeout: 'bad', down: 'bad',
    not_started: 'bad', busy: 'warn', unavailable: 'bad', preempted: 'warn',
    queued: 'warn', building: 'warn', pending: 'warn',
  }[status] || 'plain';
  return h(`span.badge.${tone}`, String(status).replace('_', ' '));
}

export function formatTime(ms) {
  if (!ms) return '—';
  const d = new Date(ms);
  const today = new Date();
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  if (d.toDateString() === today.toDateString()) return time;
  return `${d.toLocaleDateString()} ${time}`;
}

export function formatAgo(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  if (ms < 1) return `${Math.round(ms * 1000)} µs`;
  if (ms < 1000) return `${ms < 10 ? ms.toFixed(2) : ms.toFixed(1)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}

/**
 * A button that asks again before a destructive action: the first press
 * shows "Really …?" with a confirm and a cancel button in its place.
 */
export function confirmButton(label, question, confirmLabel, action) {
  const box = h('span.confirm');
  const start = h('button.danger', { type: 'button' }, label);
  const show = (node) => { fill(box, node); };
  start.addEventListener('click', () => {
    const yes = h('button.danger', { type: 'button' }, confirmLabel);
    const no = h('button.secondary', { type: 'button' }, 'Cancel');
    yes.addEventListener('click', async () => {
      yes.disabled = true;
      no.disabled = true;
      try { await action(); } finally { show(start); }
    });
    no.addEventListener('click', () => { show(start); start.focus(); });
    show(h('span.ask', { role: 'group', 'aria-label': question }, h('span', question), ' ', yes, ' ', no));
    no.focus();
  });
  show(start);
  return box;
}

/** A read-only line of text with a Copy button (clipboard where allowed). */
export function copyLine(text, label) {
  const input = h('input.code', { type: 'text', readonly: true, value: text, 'aria-label': label, spellcheck: 'false' });
  const button = h('button.secondary.small', { type: 'button' }, 'Copy');
  const said = h('span.copied', { role: 'status' });
  button.addEventListener('click', async () => {
    input.focus();
    input.select();
    let ok = false;
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(text);
        ok = true;
      }
    } catch { /* fall through to the selection */ }
    if (!ok) {
      try { ok = document.execCommand('copy'); } catch { ok = false; }
    }
    said.textContent = ok ? 'Copied' : 'Selected: press Ctrl+C to copy';
    setTimeout(() => { said.textContent = ''; }, 2500);
  });
  return h('div.copyline', input, button, said);
}
