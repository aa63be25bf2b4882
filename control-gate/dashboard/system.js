// The platform: the Services Controller's view of every service instance,
// and charts of invocations sampled from /metrics by this page.

import { get, describe } from './api.js';
import { h, fill, empty, badge, formatAgo } from './dom.js';
import { sampler, draw, SAMPLE_MS, WINDOW_MS } from './charts.js';

const REFRESH_MS = 2000;

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

function loadCell(s) {
  if (!s.capacity) return h('span.muted', '—');
  const share = s.capacity ? Math.min(1, s.in_flight / s.capacity) : 0;
  const meter = h('meter', { min: '0', max: String(s.capacity || 1), value: String(s.in_flight), 'aria-label': `${s.instance} load` });
  return h('span.load', meter, ` ${s.in_flight} / ${s.capacity}`, share >= 0.9 ? h('span.warn-text', ' full') : null);
}

function hostCell(s) {
  const labels = Object.entries(s.labels || {}).map(([name, value]) => `${name}=${value}`).join(', ');
  return h('td', s.host || '—',
    s.remote ? h('span.muted.block', `joined from ${s.remote}`) : null,
    labels ? h('span.muted.block', labels) : null);
}

function servicesTable(services) {
  const rows = services.map((s) => h('tr',
    h('th', { scope: 'row' }, s.instance, h('span.muted.block', s.service)),
    hostCell(s),
    h('td', badge(s.status)),
    h('td', loadCell(s)),
    h('td.num', String(s.queue_depth)),
    h('td.num', String(s.inner_queue)),
    h('td.num', String(s.workers)),
    h('td.num', s.restarts ? h('strong', String(s.restarts)) : '0'),
    h('td.num', String(s.handled)),
    h('td', s.up_since_ms ? formatAgo(s.up_since_ms).replace(' ago', '') : '—'),
    h('td.num', `${(s.heartbeat_age_ms / 1000).toFixed(1)} s`),
    h('td.num', String(s.pid))));
  return h('div.table-wrap', { tabindex: '0', role: 'region', 'aria-label': 'Service instances' },
    h('table.services',
      h('caption.visually-hidden', 'Service instances, as the kernel\'s Services Controller sees them'),
      h('thead', h('tr', ['Instance', 'Host and labels', 'Status', 'Load (in flight / capacity)', 'Kernel queue', 'Inner queue', 'Workers', 'Restarts', 'Handled', 'Up for', 'Heartbeat', 'PID']
        .map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', rows)));
}

const CHARTS = [
  {
    id: 'rate',
    title: 'Invocations per second',
    series: [{ key: 'rate', label: 'invocations/s', color: 'var(--chart-1)' }],
    unit: '/s',
  },
  {
    id: 'latency',
    title: 'Latency (p50 and p99)',
    series: [
      { key: 'p50', label: 'p50', color: 'var(--chart-1)' },
      { key: 'p99', label: 'p99', color: 'var(--chart-2)' },
    ],
    unit: ' ms',
  },
  {
    id: 'errors',
    title: 'Failed invocations per second',
    series: [{ key: 'errors', label: 'failed/s', color: 'var(--chart-err)' }],
    unit: '/s',
  },
];

function format(v) {
  if (v === 0) return '0';
  if (v < 10) return String(Number(v.toFixed(v < 1 ? 2 : 1)));
  return Math.round(v).toString();
}

function resolveColor(color) {
  const m = /^var\((--[a-z0-9-]+)\)$/.exec(color);
  if (!m) return color;
  return getComputedStyle(document.documentElement).getPropertyValue(m[1]).trim() || '#1d5fbf';
}

function chartCard(spec) {
  const canvas = h('canvas', { role: 'img', 'aria-label': `${spec.title}: no data yet` });
  const summary = h('p.chart-summary');
  const legend = h('ul.legend', spec.series.map((s) => h('li', h(`span.swatch.${spec.id}-${s.key}`), s.label)));
  const card = h('figure.chart', h('figcaption', h('h3', spec.title), legend), canvas, summary);
  const update = (points) => {
    const series = spec.series.map((s) => ({ ...s, color: resolveColor(s.color) }));
    draw(canvas, points, series, { unit: spec.unit, format });
    const last = [...points].reverse();
    const text = spec.series.map((s) => {
      const latest = last.find((p) => p[s.key] !== null && p[s.key] !== undefined);
      const values = points.map((p) => p[s.key]).filter((v) => v !== null && v !== undefined);
      const peak = values.length ? Math.max(...values) : null;
      if (!latest) return `${s.label}: no invocations since sampling began`;
      return `${s.label}: now ${format(latest[s.key])}${spec.unit}, peak ${format(peak)}${spec.unit}`;
    }).join('; ');
    summary.textContent = text;
    canvas.setAttribute('aria-label', `${spec.title} over the last minutes. ${text}`);
  };
  return { card, update };
}

export async function systemView(main, view) {
  const { signal } = view;
  const services = h('div');
  const problem = h('div.form-error', { role: 'alert' });
  const updated = h('span.muted');
  const charts = CHARTS.map(chartCard);
  const since = h('p.hint');
  fill(main,
    h('h1', 'System'),
    h('div.title-row', h('h2', 'Services'), updated),
    h('p.hint', 'Each service instance as the kernel sees it, read every 2 seconds. The supervisor of isms up (or isms join, on another host) restarts an instance that dies; Restarts counts those.'),
    problem,
    services,
    h('h2', 'Invocations, all projects'),
    since,
    h('div.charts', charts.map((c) => c.card)));

  const redraw = () => {
    const minutes = Math.round(WINDOW_MS / 60000);
    const from = sampler.since ? new Date(sampler.since).toLocaleTimeString() : 'now';
    since.textContent = `Sampled from /metrics every ${SAMPLE_MS / 1000} s by this page since ${from} (the last ${minutes} minutes at most): nothing is drawn for the time before this dashboard was opened.`;
    for (const c of charts) c.update(sampler.points);
    if (sampler.lastError) fill(problem, `Cannot read /metrics: ${describe(sampler.lastError)}`);
  };
  sampler.start();
  const unsubscribe = sampler.subscribe(redraw);
  const resize = new ResizeObserver(redraw);
  for (const c of charts) resize.observe(c.card);
  signal.addEventListener('abort', () => { unsubscribe(); resize.disconnect(); }, { once: true });

  const refresh = async () => {
    const list = await get('system/services', { signal });
    fill(services, list.length ? servicesTable(list) : empty('No service instances are registered.', 'Is the kernel running?'));
    updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
  };
  await refresh();
  redraw();
  (async () => {
    while (!signal.aborted) {
      await sleep(REFRESH_MS, signal);
      if (signal.aborted) return;
      try {
        await refresh();
        if (!sampler.lastError) fill(problem);
      } catch (err) {
        if (signal.aborted || err.name === 'AbortError' || err.status === 401) return;
        fill(problem, `Cannot read the services: ${describe(err)}. Trying again.`);
      }
    }
  })();
}
