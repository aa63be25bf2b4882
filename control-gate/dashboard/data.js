// The project's databases: an SQL console (POST …/sql) and a document
// browser (GET …/collections[/<c>]), both served by DBriver.

import { get, post, seg, describe } from './api.js';
import { h, fill, field, table, empty } from './dom.js';

const PAGE = 20;

function cell(value) {
  if (value === null || value === undefined) return h('span.null', 'NULL');
  if (typeof value === 'object') return h('code', JSON.stringify(value));
  return String(value);
}

export async function dataTab(body, context) {
  fill(body, sqlConsole(context), documentBrowser(context));
}

function sqlConsole({ project, may, role, signal }) {
  const query = h('textarea.code', { name: 'query', rows: '4', spellcheck: 'false', placeholder: 'SELECT * FROM readings LIMIT 20' });
  const params = h('input.code', { type: 'text', name: 'params', spellcheck: 'false', placeholder: '["a", 1]' });
  const run = h('button', { type: 'submit' }, 'Run');
  const result = h('div.result', { 'aria-live': 'polite' });
  const form = h('form.card', { 'aria-labelledby': 'sql-title' },
    h('h2#sql-title', 'SQL console'),
    h('p.hint', 'Runs one statement on this project\'s SQL database, as its Doees see it. Ctrl+Enter runs it.'),
    may('developer') ? null : h('p.msg.info', `Running SQL needs the developer role in this project; yours is ${role}.`),
    field('Query', query),
    field('Parameters (optional)', params, 'A JSON array, bound to the placeholders $1, $2… in order (never spliced into the query).'),
    h('div.actions', run),
    result);
  query.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!query.value.trim()) {
      fill(result, h('p.msg.error', 'Write a query first.'));
      query.focus();
      return;
    }
    let bound = [];
    if (params.value.trim()) {
      try {
        bound = JSON.parse(params.value);
        if (!Array.isArray(bound)) throw new Error('not an array');
        params.removeAttribute('aria-invalid');
      } catch {
        params.setAttribute('aria-invalid', 'true');
        fill(result, h('p.msg.error', 'The parameters must be a JSON array, like ["a", 1].'));
        params.focus();
        return;
      }
    }
    run.disabled = true;
    fill(result, h('p.muted', 'Running…'));
    const started = performance.now();
    try {
      const answer = await post(`projects/${seg(project)}/sql`, { query: query.value, params: bound }, { signal });
      const ms = Math.round(performance.now() - started);
      const columns = answer.columns || [];
      const rows = answer.rows || [];
      const summary = columns.length
        ? `${rows.length} row${rows.length === 1 ? '' : 's'} in ${ms} ms`
        : `Done in ${ms} ms: ${answer.rows_affected || 0} row${answer.rows_affected === 1 ? '' : 's'} affected`;
      fill(result,
        h('p.sql-summary', summary),
        columns.length
          ? table('Query result', columns, rows.map((row) => columns.map((c) => cell(Array.isArray(row) ? row[columns.indexOf(c)] : row[c]))), { className: 'sql-result' })
          : null);
    } catch (err) {
      if (err.name === 'AbortError' || err.status === 401) return;
      fill(result, h('p.msg.error', `The query failed: ${describe(err)}`));
    } finally {
      run.disabled = false;
    }
  });
  return form;
}

function documentBrowser({ project, signal }) {
  const collections = h('div');
  const docs = h('div', { 'aria-live': 'polite' });
  const section = h('section.card', { 'aria-labelledby': 'docs-title' },
    h('div.title-row', h('h2#docs-title', 'Documents')),
    h('p.hint', 'Collections in this project\'s document store. Filters use MongoDB\'s query syntax.'),
    collections, docs);
  const reload = h('button.secondary.small', { type: 'button' }, 'Reload');
  section.querySelector('.title-row').append(reload);

  const load = async () => {
    fill(collections, h('p.muted', 'Loading…'));
    fill(docs);
    try {
      const list = await get(`projects/${seg(project)}/collections`, { signal });
      if (!list.length) {
        fill(collections, empty('No collections yet.', 'A Doee creates one when it first inserts a document.'));
        return;
      }
      fill(collections, h('ul.chips', { 'aria-label': 'Collections' }, list.map((c) => h('li', h('button.secondary', {
        type: 'button',
        onclick: (event) => {
          for (const b of collections.querySelectorAll('button')) b.setAttribute('aria-pressed', 'false');
          event.currentTarget.setAttribute('aria-pressed', 'true');
          browse(c.name);
        },
        'aria-pressed': 'false',
      }, `${c.name} (${c.count})`)))));
    } catch (err) {
      if (err.name === 'AbortError' || err.status === 401) return;
      fill(collections, h('p.msg.error', `Cannot list the collections: ${describe(err)}`));
    }
  };
  reload.addEventListener('click', load);

  function browse(name) {
    const filter = h('input.code', { type: 'text', name: 'filter', spellcheck: 'false', placeholder: '{"temp": {"$gt": 25}}' });
    const go = h('button', { type: 'submit' }, 'Find');
    const found = h('div');
    const prev = h('button.secondary.small', { type: 'button' }, 'Previous');
    const next = h('button.secondary.small', { type: 'button' }, 'Next');
    const where = h('span.muted');
    let skip = 0;
    const form = h('form.inline-form', { 'aria-label': `Find in ${name}` },
      h('h3', `Collection ${name}`),
      h('div.row', field('Filter (JSON, optional)', filter), h('div.actions', go)),
      found,
      h('div.pager', prev, ' ', where, ' ', next));
    const search = async () => {
      let parsed = {};
      if (filter.value.trim()) {
        try {
          parsed = JSON.parse(filter.value);
          filter.removeAttribute('aria-invalid');
        } catch {
          filter.setAttribute('aria-invalid', 'true');
          fill(found, h('p.msg.error', 'The filter must be a JSON object, like {"room": "kitchen"}.'));
          return;
        }
      }
      fill(found, h('p.muted', 'Loading…'));
      try {
        const query = `?filter=${encodeURIComponent(JSON.stringify(parsed))}&limit=${PAGE}&skip=${skip}`;
        const list = await get(`projects/${seg(project)}/collections/${seg(name)}${query}`, { signal });
        prev.disabled = skip === 0;
        next.disabled = list.length < PAGE;
        where.textContent = list.length ? `${skip + 1}–${skip + list.length}` : '';
        fill(found, list.length
          ? h('ol.documents', { start: String(skip + 1) }, list.map((doc) => h('li', h('pre.doc', { tabindex: '0' }, JSON.stringify(doc, null, 2)))))
          : empty(skip ? 'No more documents.' : 'No documents match.'));
      } catch (err) {
        if (err.name === 'AbortError' || err.status === 401) return;
        fill(found, h('p.msg.error', `Cannot read ${name}: ${describe(err)}`));
      }
    };
    form.addEventListener('submit', (event) => { event.preventDefault(); skip = 0; search(); });
    prev.addEventListener('click', () => { skip = Math.max(0, skip - PAGE); search(); });
    next.addEventListener('click', () => { skip += PAGE; search(); });
    fill(docs, form);
    search();
  }

  load();
  return section;
}
