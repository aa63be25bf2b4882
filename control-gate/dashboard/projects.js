// The project list and the form that creates one.

import { get, post, session, seg } from './api.js';
import { h, fill, field, table, empty, formatTime } from './dom.js';
import { attempt, notify, navigate } from './messages.js';

export async function projectsView(main, view) {
  const list = h('div');
  const name = h('input', { type: 'text', name: 'name', required: true, pattern: '[a-z0-9\\-]{1,63}', maxlength: '63', autocapitalize: 'none', spellcheck: 'false' });
  const create = h('button', { type: 'submit' }, 'Create project');
  const problem = h('div.form-error', { role: 'alert' });
  const form = h('form.inline-form', { 'aria-labelledby': 'new-project' },
    h('h2#new-project', 'New project'),
    field('Name', name, 'Lower-case letters, digits and -, up to 63 characters. It becomes part of each HTTP trigger URL.'),
    problem,
    h('div.actions', create));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    fill(problem);
    const value = name.value.trim();
    if (!/^[a-z0-9-]{1,63}$/.test(value)) {
      fill(problem, 'A project name is 1 to 63 lower-case letters, digits or -.');
      name.setAttribute('aria-invalid', 'true');
      name.focus();
      return;
    }
    name.removeAttribute('aria-invalid');
    create.disabled = true;
    const created = await attempt('Creating the project', () => post('projects', { name: value }));
    create.disabled = false;
    if (created) {
      notify(`Created project ${created.name}.`);
      navigate(`#/projects/${seg(created.name)}`);
    }
  });

  const me = session();
  fill(main,
    h('h1', 'Projects'),
    list,
    me && me.role === 'viewer'
      ? h('p.muted', 'Your platform role is viewer: an administrator or developer creates projects and adds you to them.')
      : form);

  const projects = await get('projects', { signal: view.signal });
  if (!projects.length) {
    fill(list, empty('No projects yet.',
      me && me.role !== 'viewer' ? 'Create the first one below; then deploy a Doee into it.' : 'Ask an administrator to add you to one.'));
    return;
  }
  fill(list, table('Your projects', ['Project', 'Doees', 'Created'],
    projects.map((p) => [
      h('a', { href: `#/projects/${seg(p.name)}` }, p.name),
      String(p.doees),
      formatTime(p.created_ms),
    ])));
}
