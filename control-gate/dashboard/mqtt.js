// A project's MQTT: its devices (credentials for the embedded broker,
// the password shown once) and its dead letters (messages whose Doee kept
// failing: run them again, or forget them).

import { get, post, del, seg } from './api.js';
import { h, fill, field, table, empty, formatTime, confirmButton, copyLine } from './dom.js';
import { attempt, notify } from './messages.js';

/** Where devices reach the embedded broker, or null with an external one. */
export function brokerUrl() {
  const meta = document.querySelector('meta[name="isms-mqtt-url"]');
  const raw = meta ? meta.content : '';
  if (!raw || raw.includes('{{')) return null;
  // Listening on every address: reach it by the name this page was reached by.
  return raw.replace(/^mqtt:\/\/(0\.0\.0\.0|\[::\])(?=:)/, `mqtt://${location.hostname}`);
}

function quote(text) {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

/** A mosquitto_pub line publishing as a device, on a topic of its own. */
export function publishLine(url, project, device, username, password) {
  const { hostname, port } = new URL(url.replace(/^mqtt:/, 'http:'));
  const topic = `${project}/${device}/hello`;
  return `mosquitto_pub -h ${hostname} -p ${port || 1883} -u ${quote(username)} -P ${quote(password)} -q 1 -t ${quote(topic)} -m hello`;
}

export async function mqttTab(body, context) {
  const devices = h('section', { 'aria-labelledby': 'devices' });
  const letters = h('section', { 'aria-labelledby': 'dead-letters' });
  fill(body, devices, letters);
  await Promise.all([devicesSection(devices, context), deadLettersSection(letters, context)]);
}

async function devicesSection(section, { project, may, signal }) {
  const url = brokerUrl();
  const list = h('div');
  const created = h('div', { 'aria-live': 'polite' });
  const draw = async () => {
    const devices = await get(`projects/${seg(project)}/devices`, { signal });
    if (!devices.length) {
      fill(list, empty('No devices yet.', may('developer')
        ? 'Create one below: it gets a username and a password to sign in to the broker.'
        : 'Developers of this project create them.'));
      return;
    }
    fill(list, table('Devices', ['Device', 'MQTT username', 'Created', ''], devices.map((d) => [
      d.name,
      h('code', d.username),
      formatTime(d.created_ms),
      may('developer')
        ? confirmButton('Revoke', `Revoke ${d.name}? It is disconnected at once.`, `Revoke ${d.name}`, async () => {
          const done = await attempt(`Revoking ${d.name}`, () => del(`projects/${seg(project)}/devices/${seg(d.name)}`));
          if (done !== undefined) {
            notify(`Revoked ${d.name}: it is disconnected and may not sign in again.`);
            fill(created);
            await draw();
          }
        })
        : '',
    ])));
  };

  const name = h('input', { type: 'text', name: 'device', required: true, autocapitalize: 'none', spellcheck: 'false' });
  const create = h('button', { type: 'submit' }, 'Create device');
  const form = h('form.inline-form', { 'aria-labelledby': 'new-device' },
    h('h3#new-device', 'Create a device'),
    h('div.row', field('Device name', name, 'Lowercase letters, digits and dashes, e.g. greenhouse-1.'), h('div.actions', create)));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!name.value.trim()) {
      name.focus();
      return;
    }
    create.disabled = true;
    const device = await attempt('Creating the device', () => post(`projects/${seg(project)}/devices`, { name: name.value.trim() }));
    create.disabled = false;
    if (!device) return;
    name.value = '';
    fill(created, h('div.msg.ok.secret',
      h('p', h('strong', `Created ${device.name}.`), ' Copy its password now: it is not shown again.'),
      h('p.label', 'MQTT username'),
      copyLine(device.username, 'MQTT username'),
      h('p.label', 'MQTT password'),
      copyLine(device.secret, 'MQTT password'),
      url ? [h('p.label', 'Try it'), copyLine(publishLine(url, project, device.name, device.username, device.secret), 'mosquitto_pub line')] : null));
    await draw();
  });

  fill(section,
    h('h2#devices', 'Devices'),
    h('p.hint', url
      ? ['Devices sign in to the broker at ', h('code', url), ' with a username and password made here, and publish and subscribe only inside this project\'s topics (', h('code', `${project}/#`), ' and what an admin granted).']
      : 'This platform uses an external MQTT broker: devices sign in with the credentials that broker knows, not these.'),
    list,
    created,
    may('developer') ? form : h('p.muted', 'Developers of this project create and revoke devices.'));
  await draw();
}

function payloadText(letter) {
  if (letter.payload_encoding === 'utf8') {
    return letter.payload.length > 120 ? `${letter.payload.slice(0, 120)}…` : letter.payload;
  }
  const padding = (letter.payload.match(/=*$/) || [''])[0].length;
  return h('span.muted', `(binary, ${(letter.payload.length * 3) / 4 - padding} bytes)`);
}

async function deadLettersSection(section, { project, may, signal }) {
  const list = h('div');
  const actions = h('div.actions');
  const act = async (verb, ids) => {
    const path = `projects/${seg(project)}/mqtt/dead-letters/${verb}`;
    const what = ids ? `dead letter ${ids[0]}` : 'the dead letters';
    const done = await attempt(verb === 'retry' ? `Running ${what} again` : `Purging ${what}`, () => post(path, ids ? { ids } : {}));
    if (!done) return;
    const n = verb === 'retry' ? done.retried : done.purged;
    const noun = n === 1 ? 'message' : 'messages';
    notify(verb === 'retry' ? `Running ${n} ${noun} again.` : `Purged ${n} ${noun}.`);
    await draw();
  };
  const draw = async () => {
    const letters = await get(`projects/${seg(project)}/mqtt/dead-letters`, { signal });
    fill(actions);
    if (!letters.length) {
      fill(list, empty('No dead letters.', 'A message lands here when its Doee failed on every attempt.'));
      return;
    }
    if (may('developer')) {
      fill(actions,
        h('button.secondary', { type: 'button', onclick: () => act('retry') }, 'Retry all'),
        confirmButton('Purge all', `Forget all ${letters.length} dead letters of ${project}?`, 'Purge them', () => act('purge')));
    }
    fill(list, table('Dead letters', ['Received', 'Doee', 'Topic', 'Payload', 'Attempts', 'Last error', ''], letters.map((l) => [
      formatTime(l.received_ms),
      h('a', { href: `#/projects/${seg(project)}/doees/${seg(l.doee)}` }, l.doee),
      h('code', l.topic),
      payloadText(l),
      String(l.attempts),
      h('span.bad-text', l.error),
      may('developer')
        ? h('span.controls',
          h('button.secondary.small', { type: 'button', 'aria-label': `Retry dead letter ${l.id}`, onclick: () => act('retry', [l.id]) }, 'Retry'),
          confirmButton('Purge', `Forget dead letter ${l.id}?`, `Purge ${l.id}`, () => act('purge', [l.id])))
        : '',
    ]), { className: 'dead-letters' }));
  };
  fill(section,
    h('div.title-row', h('h2#dead-letters', 'Dead letters'), actions),
    h('p.hint', 'MQTT messages whose Doee failed on every attempt, kept with the last error. Retrying runs them again, with all their attempts.'),
    list);
  await draw();
}
