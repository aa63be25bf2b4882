// A project's secrets: their names, set and deleted here; a value is typed
// once and never shown (the API has no way to answer one).

import { get, put, del, seg } from './api.js';
import { h, fill, field, table, empty, formatTime, confirmButton } from './dom.js';
import { attempt, notify } from './messages.js';

const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

export async function secretsTab(body, { project, may, signal }) {
  if (!may('developer')) {
    fill(body, h('h2', 'Secrets'),
      h('p.muted', 'Developers and admins of this project see and set its secrets.'));
    return;
  }
  const list = h('div');
  const draw = async () => {
    const secrets = await get(`projects/${seg(project)}/secrets`, { signal });
    if (!secrets.length) {
      fill(list, empty('No secrets yet.', 'Set one below; Doees read it with ctx.secret(name).'));
      return;
    }
    fill(list, table('Secrets', ['Secret', 'Set', ''], secrets.map((s) => [
      h('code', s.name),
      formatTime(s.updated_ms),
      confirmButton('Delete', `Delete ${s.name}? Doees that read it fail until it is set again.`, `Delete ${s.name}`, async () => {
        const done = await attempt(`Deleting ${s.name}`, () => del(`projects/${seg(project)}/secrets/${seg(s.name)}`));
        if (done !== undefined) {
          notify(`Deleted ${s.name}.`);
          await draw();
        }
      }),
    ])));
  };

  const name = h('input', { type: 'text', name: 'secret-name', required: true, autocapitalize: 'none', spellcheck: 'false', autocomplete: 'off', pattern: NAME.source });
  // new-password: a browser neither fills in the user's login nor offers
  // to save the value as one.
  const value = h('input', { type: 'password', name: 'secret-value', required: true, autocomplete: 'new-password' });
  const save = h('button', { type: 'submit' }, 'Set secret');
  const form = h('form.inline-form', { 'aria-labelledby': 'set-secret' },
    h('h3#set-secret', 'Set a secret'),
    h('div.row',
      field('Name', name, 'Letters, digits and _, e.g. WEATHER_KEY. An existing name gets the new value.'),
      field('Value', value, 'Not shown again, here or anywhere.')),
    h('div.actions', save));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const wanted = name.value.trim();
    if (!NAME.test(wanted)) {
      name.focus();
      return;
    }
    save.disabled = true;
    const done = await attempt(`Setting ${wanted}`, () => put(`projects/${seg(project)}/secrets/${seg(wanted)}`, { value: value.value }));
    save.disabled = false;
    if (done === undefined) return;
    value.value = '';
    name.value = '';
    notify(`Set ${wanted}; Doees read the new value from their next invocation.`);
    await draw();
  });

  fill(body,
    h('h2', 'Secrets'),
    h('p.hint', 'Values a project\'s Doees read with ', h('code', 'ctx.secret(name)'), ', stored sealed and never shown back.'),
    list,
    form);
  await draw();
}
