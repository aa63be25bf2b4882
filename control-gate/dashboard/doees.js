// Doees: the list, deploying by upload and following the build, one Doee's
// versions (build logs, rollback, delete, a test invocation), and the
// project's triggers.

import { ApiError, call, get, post, del, seg } from './api.js';
import { h, fill, field, table, empty, badge, formatTime, formatBytes, formatDuration, confirmButton, copyLine } from './dom.js';
import { attempt, notify, showError, navigate } from './messages.js';
import { packDirectory } from './tar.js';

const FINAL = new Set(['succeeded', 'failed']);

/** The base URL of HTTP triggers, as the Control Gate told the page. */
export function triggersBase() {
  const meta = document.querySelector('meta[name="isms-triggers-url"]');
  const raw = meta ? meta.content : '';
  if (!raw || raw.includes('{{')) return null;
  try {
    const url = new URL(raw);
    // Listening on every address: reach it by the name this page was reached by.
    if (url.hostname === '0.0.0.0' || url.hostname === '[::]') url.hostname = location.hostname;
    return url.origin;
  } catch {
    return null;
  }
}

function quote(text) {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

/** The curl line that calls an HTTP route. */
export function curlLine(project, route, methods) {
  const base = triggersBase() || 'http://<trigger-address>';
  const url = `${base}/${project}${route}`;
  if (methods.includes('POST')) return `curl -d ${quote('world')} ${url}`;
  if (methods.includes('GET') || !methods.length) return `curl ${url}`;
  return `curl -X ${methods[0]} -d ${quote('world')} ${url}`;
}

function latest(doee) {
  return doee.versions[doee.versions.length - 1];
}

export async function doeesTab(body, context) {
  const { project, signal } = context;
  const list = h('div');
  const deploy = deployForm(context, async () => drawList());
  fill(body, deploy, h('h2', 'Doees'), list);

  async function drawList() {
    const doees = await get(`projects/${seg(project)}/doees`, { signal });
    if (!doees.length) {
      fill(list, empty('No Doees in this project yet.',
        'Deploy one above: pick the folder that holds its ', h('code', 'doee.toml'),
        ' (', h('code', 'isms new hello --lang rust'), ' makes one).'));
      return;
    }
    fill(list, table('Doees of this project', ['Doee', 'Language', 'Active version', 'Latest build', 'HTTP routes'],
      doees.map((d) => {
        const last = latest(d);
        return [
          h('a', { href: `#/projects/${seg(project)}/doees/${seg(d.name)}` }, d.name),
          d.language,
          d.active_version ? `v${d.active_version}` : h('span.muted', 'none yet'),
          last ? [`v${last.version} `, badge(last.build.status)] : '—',
          d.triggers.http.length ? d.triggers.http.map((t) => t.route).join(', ') : h('span.muted', 'none'),
        ];
      })));
  }
  await drawList();
}

/** Picking a folder or a .tar.gz, uploading it, and following its build. */
function deployForm(context, afterBuild) {
  const { project, may, signal } = context;
  const folder = h('input', { type: 'file', name: 'folder', webkitdirectory: true, multiple: true });
  const archive = h('input', { type: 'file', name: 'archive', accept: '.tar.gz,.tgz,application/gzip' });
  const chosen = h('p.chosen', { 'aria-live': 'polite' }, 'Nothing chosen yet.');
  const submit = h('button', { type: 'submit' }, 'Deploy');
  const problem = h('div.form-error', { role: 'alert' });
  const build = h('div.build');
  let pick = null;

  folder.addEventListener('change', () => {
    if (!folder.files.length) return;
    archive.value = '';
    const top = (folder.files[0].webkitRelativePath || '').split('/')[0];
    pick = { kind: 'folder', files: folder.files };
    fill(chosen, `Folder ${top}/ with ${folder.files.length} files (target/ and .git/ are left out).`);
  });
  archive.addEventListener('change', () => {
    if (!archive.files.length) return;
    folder.value = '';
    const file = archive.files[0];
    pick = { kind: 'archive', file };
    fill(chosen, `Archive ${file.name}, ${formatBytes(file.size)}.`);
  });

  const form = h('form.card.deploy', { 'aria-labelledby': 'deploy-title' },
    h('h2#deploy-title', 'Deploy a Doee'),
    h('p.hint', 'Upload a Doee\'s folder (the one with its ', h('code', 'doee.toml'),
      ') or a .tar.gz of it. Each deploy is a new version; it becomes active once it builds.'),
    may('developer') ? null : h('p.msg.info', `Deploying needs the developer role in this project; yours is ${context.role}. The platform will refuse it.`),
    h('div.row',
      field('A folder', folder),
      field('or a .tar.gz archive', archive)),
    chosen,
    problem,
    h('div.actions', submit),
    build);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    fill(problem);
    if (!pick) {
      fill(problem, 'Choose a folder or a .tar.gz archive first.');
      folder.focus();
      return;
    }
    submit.disabled = true;
    try {
      submit.textContent = pick.kind === 'folder' ? 'Packing…' : 'Uploading…';
      let upload;
      if (pick.kind === 'folder') {
        try {
          upload = (await packDirectory(pick.files)).archive;
        } catch (err) {
          fill(problem, `Cannot pack this folder: ${err.message}`);
          return;
        }
      } else {
        upload = pick.file;
      }
      submit.textContent = 'Uploading…';
      let deployed;
      try {
        deployed = await call('POST', `projects/${seg(project)}/doees`, { body: upload, signal });
      } catch (err) {
        if (err.name === 'AbortError' || (err.status === 401)) throw err;
        fill(problem, `Deploy refused: ${err.message}`);
        return;
      }
      notify(`Uploaded ${deployed.name} v${deployed.version}; building.`);
      await followBuild(build, context, deployed.name, deployed.version);
      await afterBuild();
    } catch (err) {
      if (err.name !== 'AbortError' && err.status !== 401) showError(err, 'Deploy');
    } finally {
      submit.disabled = false;
      submit.textContent = 'Deploy';
    }
  });
  return form;
}

/** Polls a version until its build is final, showing its status and log. */
async function followBuild(box, { project, signal }, name, version) {
  const status = h('span');
  const log = h('pre.log.build-log', { tabindex: '0', 'aria-label': `Build log of ${name} v${version}` });
  const heading = h('h3', `Build of ${name} v${version}`);
  const started = Date.now();
  const elapsed = h('span.muted');
  fill(box, heading, h('p.build-status', { 'aria-live': 'polite' }, 'Status: ', status, ' ', elapsed), log);
  let last = null;
  for (;;) {
    const doee = await get(`projects/${seg(project)}/doees/${seg(name)}`, { signal });
    const v = doee.versions.find((x) => x.version === version);
    const state = v ? v.build.status : 'queued';
    if (state !== last) {
      fill(status, badge(state));
      last = state;
    }
    fill(elapsed, `(${Math.round((Date.now() - started) / 1000)} s)`);
    const text = (v && v.build.log) || '';
    if (log.textContent !== text) {
      const follow = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
      log.textContent = text || 'Waiting for the build to start…';
      if (follow) log.scrollTop = log.scrollHeight;
    }
    if (FINAL.has(state)) {
      const link = h('a', { href: `#/projects/${seg(project)}/doees/${seg(name)}` }, `Open ${name}`);
      if (state === 'succeeded') {
        notify(`${name} v${version} built and is now active.`);
        box.append(h('p.msg.ok', `${name} v${version} built and is now active. `, link));
      } else {
        showError(`the build of ${name} v${version} failed; the previous version (if any) serves on. Its log is below the deploy form.`, 'Build failed');
        box.append(h('p.msg.error', `The build of ${name} v${version} failed. `, link));
      }
      return state;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
    if (signal.aborted) return null;
  }
}

export async function doeeView(body, context, name) {
  const { project, may, signal } = context;
  let doee;
  try {
    doee = await get(`projects/${seg(project)}/doees/${seg(name)}`, { signal });
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      fill(body, empty(`There is no Doee ${name} in ${project}.`, h('a', { href: `#/projects/${seg(project)}/doees` }, 'Back to the Doees')));
      return;
    }
    throw err;
  }
  const redraw = () => doeeView(body, context, name);
  const versions = [...doee.versions].reverse();
  fill(body,
    h('ul.facts',
      h('li', 'Language: ', doee.language),
      h('li', 'Active version: ', doee.active_version ? `v${doee.active_version}` : 'none has built yet'),
      h('li', 'Versions: ', String(doee.versions.length))),
    triggersOf(project, doee),
    may('developer') && doee.active_version ? tryIt(context, doee) : null,
    h('h2', 'Versions'),
    table(`Versions of ${doee.name}`, ['Version', 'Build', 'Deployed', 'Binary', ''],
      versions.map((v) => h('tr', { class: v.active ? 'active-row' : null },
        h('th', { scope: 'row' }, `v${v.version}`, v.active ? [' ', badge('active')] : null),
        h('td', badge(v.build.status)),
        h('td', `${formatTime(v.created_ms)} by ${v.deployed_by}`),
        h('td', v.sha256 ? h('code', { title: v.sha256 }, v.sha256.slice(0, 12)) : '—'),
        h('td', may('developer') && !v.active && v.build.status === 'succeeded'
          ? h('button.secondary.small', {
            type: 'button',
            onclick: async (event) => {
              event.target.disabled = true;
              const done = await attempt(`Rolling back to v${v.version}`, () => post(`projects/${seg(project)}/doees/${seg(name)}/rollback`, { version: v.version }));
              if (done) {
                notify(`${name} v${v.version} is active again.`);
                await redraw();
                const versionsTable = body.querySelector('table.versions');
                if (versionsTable) versionsTable.closest('.table-wrap').focus();
              } else {
                event.target.disabled = false;
              }
            },
          }, `Make v${v.version} active`)
          : ''))),
    { className: 'versions' }),
    h('h2', 'Build logs'),
    versions.map((v) => h('details.build-log',
      { open: v === versions[0] ? true : null },
      h('summary', `v${v.version}: `, badge(v.build.status)),
      h('pre.log', { tabindex: '0' }, v.build.log || 'No build output.'))),
    may('developer') && h('section.danger-zone', { 'aria-labelledby': 'delete-doee' },
      h('h2#delete-doee', `Delete ${name}`),
      h('p', 'Deleting removes every version and its triggers at once.'),
      confirmButton(`Delete ${name}`, `Delete ${name}, all its versions and its triggers?`, `Delete ${name} for good`, async () => {
        const done = await attempt(`Deleting ${name}`, () => del(`projects/${seg(project)}/doees/${seg(name)}`));
        if (done !== undefined) {
          notify(`Deleted ${name}.`);
          navigate(`#/projects/${seg(project)}/doees`);
        }
      })));
  // Keep showing a build that is still running.
  const last = latest(doee);
  if (last && !FINAL.has(last.build.status)) {
    setTimeout(() => { if (!signal.aborted) redraw(); }, 1500);
  }
}

function triggersOf(project, doee) {
  const http = doee.triggers.http;
  const mqtt = doee.triggers.mqtt;
  const schedules = doee.triggers.schedule;
  return h('section', { 'aria-labelledby': `trig-${doee.name}` },
    h('h2', { id: `trig-${doee.name}` }, 'Triggers'),
    !http.length && !mqtt.length && !schedules.length
      ? empty('No triggers.', 'Declare them in doee.toml under [[triggers.http]], [[triggers.mqtt]] or [[triggers.schedule]].') : null,
    http.map((t) => h('div.trigger',
      h('p', h('span.method', t.methods.join(', ')), ' ', h('code', `/${project}${t.route}`)),
      copyLine(curlLine(project, t.route, t.methods), `curl line for ${t.route}`))),
    mqtt.map((t) => h('p.trigger', 'MQTT ', h('code', t.topic), t.reply_topic ? [' → replies on ', h('code', t.reply_topic)] : null)),
    schedules.map((t) => h('p.trigger', 'Schedule ', h('code', t.description), ' · next ', nextFiring(t))));
}

/** When a schedule fires next, and how many firings it skipped. */
function nextFiring(t) {
  const next = t.next_ms == null ? 'never' : formatTime(t.next_ms);
  return t.skipped ? `${next} (${t.skipped} skipped)` : next;
}

/** Runs the active version once (POST …/invoke, like `isms invoke`). */
function tryIt({ project, signal }, doee) {
  const input = h('textarea', { name: 'input', rows: '2', spellcheck: 'false' }, 'world');
  const run = h('button', { type: 'submit' }, 'Invoke');
  const result = h('div.result', { 'aria-live': 'polite' });
  const form = h('form.inline-form', { 'aria-labelledby': 'try-it' },
    h('h2#try-it', 'Try it'),
    field('Input (the request body)', input),
    h('div.actions', run),
    result);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    run.disabled = true;
    const started = performance.now();
    try {
      const response = await call('POST', `projects/${seg(project)}/doees/${seg(doee.name)}/invoke`,
        { body: input.value, signal, raw: true, accept: 'text/event-stream' });
      const id = h('code', response.headers.get('x-isms-invocation-id') || '?');
      const line = h('p', badge('pending'), ` ${response.status}, running… · invocation `, id);
      const output = h('pre.output');
      fill(result, line, output);
      // What the Doee writes as it goes (ctx.write) shows as it comes; an
      // answer that did not stream is the body itself.
      let failure = null;
      if ((response.headers.get('content-type') || '').startsWith('text/event-stream')) {
        failure = await readEvents(response, (data) => { output.textContent += data; });
      } else {
        output.textContent = await response.text();
      }
      const ms = performance.now() - started;
      fill(line, badge(failure ? 'error' : 'succeeded'),
        failure ? ` failed after ${formatDuration(ms)}: ${failure} · invocation ` : ` ${response.status} in ${formatDuration(ms)} · invocation `, id);
    } catch (err) {
      if (err.name === 'AbortError') return;
      const id = err.body && err.body.invocation_id;
      fill(result, h('p.msg.error', `Failed (${err.status}): ${err.message}`, id ? [' · invocation ', h('code', id)] : null));
    } finally {
      run.disabled = false;
    }
  });
  return form;
}

/**
 * Reads Server-Sent Events, handing each piece's data to `onData`; resolves
 * to the error of an `error` event, or null at `end`.
 */
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { done, value } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const lines = buffer.slice(0, end).split('\n');
      buffer = buffer.slice(end + 2);
      const name = (lines.find((l) => l.startsWith('event: ')) || '').slice(7);
      const data = lines.filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
      if (name === 'error') return JSON.parse(data).error;
      if (name === 'end') return null;
      if (!name) onData(data);
    }
    if (done) return 'the stream ended before the invocation did';
  }
}

export async function triggersTab(body, { project, signal }) {
  const doees = await get(`projects/${seg(project)}/doees`, { signal });
  const http = [];
  const mqtt = [];
  const schedules = [];
  for (const d of doees) {
    for (const t of d.triggers.http) http.push({ doee: d.name, ...t });
    for (const t of d.triggers.mqtt) mqtt.push({ doee: d.name, ...t });
    for (const t of d.triggers.schedule) schedules.push({ doee: d.name, ...t });
  }
  const base = triggersBase();
  fill(body,
    h('h2', 'HTTP routes'),
    h('p.hint', base
      ? ['Served by the CommServer at ', h('code', `${base}/${project}/<route>`), '.']
      : 'The address of the HTTP triggers is not known to this page.'),
    http.length
      ? table('HTTP routes', ['Route', 'Methods', 'Doee', 'Call it'], http.map((t) => [
        h('code', `/${project}${t.route}`),
        t.methods.join(', '),
        h('a', { href: `#/projects/${seg(project)}/doees/${seg(t.doee)}` }, t.doee),
        copyLine(curlLine(project, t.route, t.methods), `curl line for ${t.route}`),
      ]), { className: 'triggers' })
      : empty('No HTTP routes.', 'A Doee declares them in its doee.toml under [[triggers.http]].'),
    h('h2', 'MQTT filters'),
    mqtt.length
      ? table('MQTT filters', ['Filter', 'Replies on', 'Doee'], mqtt.map((t) => [
        h('code', t.topic), t.reply_topic ? h('code', t.reply_topic) : '—',
        h('a', { href: `#/projects/${seg(project)}/doees/${seg(t.doee)}` }, t.doee),
      ]))
      : empty('No MQTT filters.', 'A Doee declares them in its doee.toml under [[triggers.mqtt]].'),
    h('h2', 'Schedules'),
    schedules.length
      ? table('Schedules', ['Schedule', 'Next firing', 'Last firing', 'Skipped', 'Doee'], schedules.map((t) => [
        h('code', t.description),
        t.next_ms == null ? 'never' : formatTime(t.next_ms),
        t.last_ms == null ? '—' : formatTime(t.last_ms),
        String(t.skipped),
        h('a', { href: `#/projects/${seg(project)}/doees/${seg(t.doee)}` }, t.doee),
      ]), { className: 'schedules' })
      : empty('No schedules.', 'A Doee declares them in its doee.toml under [[triggers.schedule]], with cron = "*/5 * * * *" or every = "30s".'));
}
