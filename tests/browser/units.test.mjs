// Unit tests of the dashboard's pure parts, in node (no browser needed):
// the in-page tar writer against GNU tar, and the /metrics arithmetic.
// Run by tests/e2e/dashboard.rs, or: node --test tests/browser/

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { directoryEntries, tar, gzip, packDirectory } from '../../control-gate/dashboard/tar.js';
import { parseMetrics, quantile } from '../../control-gate/dashboard/charts.js';

/** What <input webkitdirectory> gives: File objects with relative paths. */
function picked(files) {
  return Object.entries(files).map(([path, text]) => {
    const file = new File([text], path.split('/').pop(), { lastModified: 1_700_000_000_000 });
    Object.defineProperty(file, 'webkitRelativePath', { value: path });
    return file;
  });
}

const LONG = `src/${'deep/'.repeat(20)}${'n'.repeat(90)}.rs`; // past ustar's 100-byte name

test('a picked folder becomes a .tar.gz that GNU tar reads back whole', async () => {
  const files = picked({
    'hello/doee.toml': 'name = "hello"\n',
    'hello/src/lib.rs': 'fn main() {}\n',
    [`hello/${LONG}`]: 'long\n',
    'hello/target/debug/junk': 'left out',
    'hello/.git/HEAD': 'left out',
    'hello/src/target/kept.rs': 'only the top target/ is left out',
  });
  const { archive, files: count } = await packDirectory(files);
  assert.equal(count, 4);
  const dir = mkdtempSync(join(tmpdir(), 'isms-tar-'));
  try {
    writeFileSync(join(dir, 'a.tar.gz'), Buffer.from(await archive.arrayBuffer()));
    const listed = execFileSync('tar', ['-tzf', 'a.tar.gz'], { cwd: dir }).toString().trim().split('\n');
    assert.deepEqual(listed.filter((p) => !p.endsWith('/')).sort(),
      ['doee.toml', LONG, 'src/lib.rs', 'src/target/kept.rs'].sort());
    assert.ok(listed.includes('src/'), 'directories come before their files');
    execFileSync('tar', ['-xzf', 'a.tar.gz'], { cwd: dir });
    assert.equal(readFileSync(join(dir, LONG), 'utf8'), 'long\n');
    assert.equal(readFileSync(join(dir, 'doee.toml'), 'utf8'), 'name = "hello"\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('tar headers carry valid checksums and end with two zero blocks', async () => {
  const bytes = new Uint8Array(await (await tar(directoryEntries(picked({ 'd/a.txt': 'x' })))).arrayBuffer());
  assert.equal(bytes.length % 512, 0);
  const header = bytes.slice(0, 512);
  const stored = parseInt(new TextDecoder().decode(header.slice(148, 154)), 8);
  const sum = header.reduce((total, b, i) => total + (i >= 148 && i < 156 ? 32 : b), 0);
  assert.equal(stored, sum);
  assert.ok(bytes.slice(-1024).every((b) => b === 0));
  const gz = new Uint8Array(await (await gzip(new Blob([bytes]))).arrayBuffer());
  assert.deepEqual(new Uint8Array(gunzipSync(gz)), bytes);
});

test('a folder without doee.toml at its top, or a name too long for ustar, is refused', async () => {
  await assert.rejects(packDirectory(picked({ 'x/src/lib.rs': '' })), /no doee.toml/);
  await assert.rejects(
    packDirectory(picked({ 'x/doee.toml': '', [`x/${'a'.repeat(120)}`]: '' })),
    /too long/,
  );
});

test('quantiles interpolate inside buckets as histogram_quantile does', () => {
  const buckets = new Map([[0.001, 50], [0.01, 90], [0.1, 100], [Infinity, 100]]);
  assert.equal(quantile(0.5, buckets), 0.001);
  assert.ok(Math.abs(quantile(0.7, buckets) - 0.0055) < 1e-9);
  assert.ok(Math.abs(quantile(0.99, buckets) - 0.091) < 1e-9);
  assert.equal(quantile(0.5, new Map([[0.1, 0], [Infinity, 0]])), null);
  // Past the last finite bound: that bound.
  assert.equal(quantile(0.99, new Map([[0.1, 1], [Infinity, 10]])), 0.1);
});

test('Prometheus text is parsed with its labels', () => {
  const text = [
    '# HELP isms_invocations_total Invocations.',
    'isms_invocations_total{project="demo",doee="hello",status="succeeded"} 12',
    'isms_invocation_duration_seconds_bucket{project="demo",doee="hello",le="+Inf"} 12',
    'isms_service_up{service="doer",instance="doer-1"} 1',
  ].join('\n');
  const metrics = parseMetrics(text);
  assert.equal(metrics.length, 3);
  assert.deepEqual(metrics[0], {
    name: 'isms_invocations_total',
    labels: { project: 'demo', doee: 'hello', status: 'succeeded' },
    value: 12,
  });
  assert.equal(metrics[1].labels.le, '+Inf');
});

test('a refusal of an older session, answered after a new login, leaves the new one alone', async () => {
  const store = new Map();
  globalThis.sessionStorage = {
    getItem: (k) => (store.has(k) ? store.get(k) : null),
    setItem: (k, v) => store.set(k, String(v)),
    removeItem: (k) => store.delete(k),
  };
  // Each call waits until the test answers it.
  const pending = [];
  globalThis.fetch = (_url, { headers }) => new Promise((resolve) => pending.push({ headers, resolve }));
  const refused = () => new Response(JSON.stringify({ error: 'the token has expired' }), {
    status: 401, headers: { 'content-type': 'application/json' },
  });
  const api = await import('../../control-gate/dashboard/api.js');
  let ended = 0;
  api.onSessionEnd(() => { ended += 1; });
  store.set('isms.session', JSON.stringify({ token: 'old', username: 'admin' }));
  const first = api.get('projects').catch((e) => e.status);
  const second = api.get('projects/demo').catch((e) => e.status);
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(pending.length, 2);
  pending[0].resolve(refused());
  assert.equal(await first, 401);
  assert.equal(ended, 1, 'the session ended once');
  assert.equal(store.get('isms.session'), undefined);
  // The user logs in again; then the other call made with the old token is refused.
  store.set('isms.session', JSON.stringify({ token: 'new', username: 'admin' }));
  pending[1].resolve(refused());
  assert.equal(await second, 401);
  assert.equal(ended, 1, 'not ended again');
  assert.equal(JSON.parse(store.get('isms.session')).token, 'new');
});
