// The system charts: /metrics (Prometheus text, the platform's own
// counters) read every few seconds by this page, turned into rates and
// latency quantiles between consecutive samples, drawn on a <canvas>.
// The history is what this page has seen since it was opened; nothing is
// stored on the server for it.

import { get } from './api.js';

export const SAMPLE_MS = 2000;
export const WINDOW_MS = 5 * 60 * 1000;

/** Parses Prometheus text into [{name, labels, value}]. */
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    let l;
    while ((l = re.exec(m[3] || ''))) labels[l[1]] = l[2].replace(/\\(.)/g, '$1');
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

/** One sample: totals over every Doee. */
function summarise(metrics, t) {
  let total = 0;
  let errors = 0;
  const buckets = new Map();
  for (const { name, labels, value } of metrics) {
    if (name === 'isms_invocations_total') {
      total += value;
      if (labels.status !== 'succeeded') errors += value;
    } else if (name === 'isms_invocation_duration_seconds_bucket') {
      const le = labels.le === '+Inf' ? Infinity : Number(labels.le);
      buckets.set(le, (buckets.get(le) || 0) + value);
    }
  }
  return { t, total, errors, buckets };
}

/**
 * The q-quantile of a cumulative histogram (Map le -> count), interpolating
 * linearly inside the bucket, as Prometheus' histogram_quantile does.
 */
export function quantile(q, buckets) {
  const bounds = [...buckets.keys()].sort((a, b) => a - b);
  if (!bounds.length) return null;
  const count = buckets.get(bounds[bounds.length - 1]);
  if (!count) return null;
  const rank = q * count;
  let lower = 0;
  let below = 0;
  for (const le of bounds) {
    const cumulative = buckets.get(le);
    if (cumulative >= rank) {
      if (le === Infinity) return lower; // past the last bound: say the bound
      const inBucket = cumulative - below;
      return inBucket > 0 ? lower + ((le - lower) * (rank - below)) / inBucket : le;
    }
    lower = le;
    below = cumulative;
  }
  return lower;
}

/** The points between consecutive samples: rate, errors, p50 and p99 (ms). */
function derive(prev, next) {
  const dt = (next.t - prev.t) / 1000;
  const dTotal = next.total - prev.total;
  const dErrors = next.errors - prev.errors;
  if (dt <= 0 || dTotal < 0 || dErrors < 0) return null; // counters were reset
  const delta = new Map();
  for (const [le, value] of next.buckets) delta.set(le, value - (prev.buckets.get(le) || 0));
  const p50 = dTotal > 0 ? quantile(0.5, delta) : null;
  const p99 = dTotal > 0 ? quantile(0.99, delta) : null;
  return {
    t: next.t,
    rate: dTotal / dt,
    errors: dErrors / dt,
    p50: p50 === null ? null : p50 * 1000,
    p99: p99 === null ? null : p99 * 1000,
  };
}

/** Reads /metrics every SAMPLE_MS and keeps WINDOW_MS of points. */
class Sampler {
  constructor() {
    this.samples = [];
    this.points = [];
    this.listeners = new Set();
    this.timer = null;
    this.since = null;
    this.lastError = null;
  }

  start() {
    if (this.timer) return;
    this.since = Date.now();
    const tick = async () => {
      try {
        const text = await get('/metrics');
        const sample = summarise(parseMetrics(String(text)), Date.now());
        const prev = this.samples[this.samples.length - 1];
        this.samples = [prev, sample].filter(Boolean);
        if (prev) {
          const point = derive(prev, sample);
          if (point) this.points.push(point);
        }
        const horizon = Date.now() - WINDOW_MS;
        while (this.points.length && this.points[0].t < horizon) this.points.shift();
        this.lastError = null;
      } catch (err) {
        this.lastError = err;
      }
      for (const listener of this.listeners) listener();
    };
    tick();
    this.timer = setInterval(tick, SAMPLE_MS);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    this.samples = [];
    this.points = [];
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

export const sampler = new Sampler();

function cssVar(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const exp = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * exp >= value) return step * exp;
  }
  return 10 * exp;
}

/**
 * Draws series [{key, color}] of points [{t, [key]: value}] over the last
 * WINDOW_MS on a canvas sized by its CSS box.
 */
export function draw(canvas, points, series, { unit, format }) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const text = cssVar('--muted', '#555');
  const grid = cssVar('--grid', '#ddd');
  ctx.font = '11px system-ui, sans-serif';
  const left = 48;
  const right = 8;
  const top = 8;
  const bottom = 20;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const now = Date.now();
  const from = now - WINDOW_MS;
  let max = 0;
  for (const p of points) for (const s of series) if (p[s.key] > max) max = p[s.key];
  max = niceMax(max * 1.1);
  const x = (t) => left + ((t - from) / WINDOW_MS) * plotW;
  const y = (v) => top + plotH - (v / max) * plotH;
  ctx.strokeStyle = grid;
  ctx.fillStyle = text;
  ctx.lineWidth = 1;
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (let i = 0; i <= 4; i += 1) {
    const v = (max * i) / 4;
    const yy = Math.round(y(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(left, yy);
    ctx.lineTo(width - right, yy);
    ctx.stroke();
    ctx.fillText(`${format(v)}${unit}`, left - 6, yy);
  }
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  // On a narrow chart, every other minute.
  const every = plotW < 300 ? 2 : 1;
  for (let m = 5; m >= 0; m -= 1) {
    if (m % every) continue;
    const t = now - m * 60000;
    ctx.fillText(m === 0 ? 'now' : `-${m} min`, Math.min(Math.max(x(t), left + 16), width - right - 14), top + plotH + 5);
  }
  ctx.lineWidth = 2;
  ctx.lineJoin = 'round';
  for (const s of series) {
    ctx.strokeStyle = s.color;
    ctx.fillStyle = s.color;
    ctx.beginPath();
    let drawing = false;
    let last = null;
    for (const p of points) {
      const v = p[s.key];
      if (v === null || v === undefined) { drawing = false; continue; }
      if (drawing) ctx.lineTo(x(p.t), y(v));
      else ctx.moveTo(x(p.t), y(v));
      drawing = true;
      last = p;
    }
    ctx.stroke();
    if (last) {
      ctx.beginPath();
      ctx.arc(x(last.t), y(last[s.key]), 2.5, 0, Math.PI * 2);
      ctx.fill();
    }
  }
}
