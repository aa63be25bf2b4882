// One project: its header, its tabs, and the members tab.

import { get, post, del, session, seg } from './api.js';
import { h, fill, field, table, empty, confirmButton } from './dom.js';
import { attempt, notify, navigate } from './messages.js';
import { doeesTab, doeeView, triggersTab } from './doees.js';
import { invocationsTab, logsTab } from './activity.js';
import { dataTab } from './data.js';
import { mqttTab } from './mqtt.js';
import { secretsTab } from './secrets.js';

const TABS = [
  ['doees', 'Doees'],
  ['triggers', 'Triggers'],
  ['mqtt', 'MQTT'],
  ['invocations', 'Invocations'],
  ['logs', 'Logs'],
  ['data', 'SQL and documents'],
  ['secrets', 'Secrets'],
  ['members', 'Members'],
];

const RANK = { viewer: 0, developer: 1, admin: 2 };

/** The caller's role in a project: a platform admin may do everything. */
function roleIn(detail) {
  const me = session();
  if (!me) return 'viewer';
  if (me.role === 'admin') return 'admin';
  const member = detail.members.find((m) => m.username === me.user);
  return member ? member.role : 'viewer';
}

export async function projectView(main, view, { project, tab, doee }) {
  let detail;
  try {
    detail = await get(`projects/${seg(project)}`, { signal: view.signal });
  } catch (err) {
    if (err.status !== 404) throw err;
    // The platform answers 404 alike for a project that does not exist and
    // one the caller is not a member of.
    fill(main, h('h1', `No project ${project}`),
      empty(`There is no project ${project}, or you are not one of its members.`,
        h('a', { href: '#/projects' }, 'See your projects')));
    return;
  }
  const role = roleIn(detail);
  const may = (needed) => RANK[role] >= RANK[needed];
  const known = TABS.some(([key]) => key === tab);
  const current = known ? tab : 'doees';
  const body = h('section.tab-body', { 'aria-labelledby': `tab-${current}` });
  fill(main,
    h('nav.crumbs', { 'aria-label': 'Breadcrumb' },
      h('a', { href: '#/projects' }, 'Projects'), ' / ',
      doee ? h('a', { href: `#/projects/${seg(project)}/doees` }, project) : h('span', project),
      doee ? [' / ', h('span', doee)] : null),
    h('div.title-row',
      h('h1', doee ? `${doee}` : `Project ${project}`),
      h('span.role', `Your role here: ${role}`)),
    h('nav.tabs', { 'aria-label': 'Project' },
      h('ul', TABS.map(([key, title]) => h('li', h('a', {
        id: `tab-${key}`,
        href: `#/projects/${seg(project)}/${key}`,
        'aria-current': key === current ? 'page' : null,
      }, title))))),
    body);
  const context = { project, role, may, signal: view.signal, detail };
  if (doee) return doeeView(body, context, doee);
  switch (current) {
    case 'triggers': return triggersTab(body, context);
    case 'mqtt': return mqttTab(body, context);
    case 'invocations': return invocationsTab(body, context);
    case 'logs': return logsTab(body, context);
    case 'data': return dataTab(body, context);
    case 'secrets': return secretsTab(body, context);
    case 'members': return membersTab(body, context);
    default: return doeesTab(body, context);
  }
}

async function membersTab(body, { project, may, detail }) {
  const list = h('div');
  const draw = (members) => {
    if (!members.length) {
      fill(list, empty('This project has no members.'));
      return;
    }
    fill(list, table('Members', ['User', 'Role', ''], members.map((m) => [
      m.username,
      m.role,
      may('admin')
        ? confirmButton('Remove', `Remove ${m.username} from ${project}?`, `Remove ${m.username}`, async () => {
          const done = await attempt(`Removing ${m.username}`, () => del(`projects/${seg(project)}/members/${seg(m.username)}`));
          if (done !== undefined) {
            notify(`Removed ${m.username}.`);
            draw(await get(`projects/${seg(project)}/members`));
          }
        })
        : '',
    ])));
  };
  draw(detail.members);

  const username = h('input', { type: 'text', name: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' });
  const role = h('select', { name: 'role' },
    h('option', { value: 'viewer' }, 'viewer: reads'),
    h('option', { value: 'developer' }, 'developer: deploys, invokes, runs SQL'),
    h('option', { value: 'admin' }, 'admin: also manages members'));
  const add = h('button', { type: 'submit' }, 'Add member');
  const form = h('form.inline-form', { 'aria-labelledby': 'add-member' },
    h('h2#add-member', 'Add a member'),
    h('div.row', field('Username', username, 'An existing user (admins create users with isms user create).'), field('Role', role)),
    h('div.actions', add));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!username.value.trim()) {
      username.focus();
      return;
    }
    add.disabled = true;
    const added = await attempt('Adding the member', () => post(`projects/${seg(project)}/members`, { username: username.value.trim(), role: role.value }));
    add.disabled = false;
    if (added) {
      notify(`${added.username} is now ${added.role} of ${project}.`);
      username.value = '';
      draw(await get(`projects/${seg(project)}/members`));
    }
  });

  const quotas = detail.quotas;
  fill(body,
    h('h2', 'Members'),
    list,
    may('admin') ? form : h('p.muted', 'Project admins add and remove members.'),
    h('h2', 'Quotas'),
    h('ul.facts',
      h('li', `Doees: at most ${quotas.max_doees}`),
      h('li', `Workers (the sum of the Doees' concurrency): at most ${quotas.max_workers}`),
      h('li', `Upload: at most ${Math.round(quotas.max_upload_bytes / 1048576)} MiB`),
      h('li', `Dependencies (crates, wheels): at most ${Math.round(quotas.max_dependencies_bytes / 1048576)} MiB`)),
    may('admin') ? h('section.danger-zone', { 'aria-labelledby': 'danger' },
      h('h2#danger', 'Delete this project'),
      h('p', 'Deleting removes its Doees, triggers, records and logs. It cannot be undone.'),
      confirmButton(`Delete ${project}`, `Delete the project ${project} and everything in it?`, `Delete ${project} for good`, async () => {
        const done = await attempt('Deleting the project', () => del(`projects/${seg(project)}`));
        if (done !== undefined) {
          notify(`Deleted project ${project}.`);
          navigate('#/projects');
        }
      })) : null);
}
