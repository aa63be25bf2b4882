// The dashboard in a real browser (Debian's chromium, driven by
// playwright-core) against a real platform that tests/e2e/dashboard.rs
// started. Each step says what a user does and sees, and saves a
// screenshot; the first step that fails saves one more and ends the run
// with exit code 1.
//
// Environment (set by the Rust test):
//   ISMS_URL               the Control Gate, http://127.0.0.1:<port>
//   ISMS_TRIGGERS_URL      the HTTP triggers, http://127.0.0.1:<port>
//   ISMS_MQTT_PORT         the embedded MQTT broker's port on 127.0.0.1
//   ISMS_MQTT_DOEE_DIR     tests/doees/mqtt, a Doee on MQTT triggers (project `plant`)
//   ISMS_PYTHON_DOEE_DIR   the `isms new sensor --lang python` scaffold
//   ISMS_ADMIN_PASSWORD    the initial admin's password
//   ISMS_VIEWER            "user:password" of a platform viewer
//   ISMS_EXPIRED_TOKEN     a token the platform refuses as expired
//   ISMS_DOEE_DIR          a Doee folder (greets with "Hello", logs "greeted <name>")
//   ISMS_DOEE_V2_ARCHIVE   a .tar.gz of the same Doee greeting with "Howdy"
//   ISMS_SCREENSHOTS       where the screenshots go
//   ISMS_SQL_EXPECT        "rows" (default): the SQL console answers rows;
//                          "unavailable": the platform has no DBriver and the
//                          console must show its 503 message cleanly
//   CHROMIUM               the browser (default /usr/bin/chromium)

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) {
    console.error(`${name} is not set: run this through tests/e2e/dashboard.rs`);
    process.exit(2);
  }
  return value;
};

const URL_GATE = env('ISMS_URL');
const URL_TRIGGERS = env('ISMS_TRIGGERS_URL');
const MQTT_PORT = Number(env('ISMS_MQTT_PORT'));
const MQTT_DOEE_DIR = env('ISMS_MQTT_DOEE_DIR');
const PYTHON_DOEE_DIR = env('ISMS_PYTHON_DOEE_DIR');
const ADMIN_PASSWORD = env('ISMS_ADMIN_PASSWORD');
const [VIEWER, VIEWER_PASSWORD] = env('ISMS_VIEWER').split(':');
const EXPIRED_TOKEN = env('ISMS_EXPIRED_TOKEN');
const DOEE_DIR = env('ISMS_DOEE_DIR');
const DOEE_V2 = env('ISMS_DOEE_V2_ARCHIVE');
const SHOTS = env('ISMS_SCREENSHOTS');
const SQL_EXPECT = env('ISMS_SQL_EXPECT', 'rows');
const PROJECT = 'demo';
const BUILD_TIMEOUT = 10 * 60 * 1000; // a first Rust build on a cold machine
const UI_TIMEOUT = 30 * 1000; // generous: CI runs other platforms beside this one

mkdirSync(SHOTS, { recursive: true });

const browser = await chromium.launch({
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  headless: true,
  // CI runs as root; a container's /dev/shm may be too small for Chromium.
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});

const problems = [];
const shots = [];
let current = 'start';

function watch(page, label) {
  page.on('pageerror', (err) => problems.push(`${label}: uncaught ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    // Chromium reports every 4xx answer as a console error; the refusals
    // this test provokes are expected. Anything else (a CSP violation, a
    // script error) is a defect.
    if (/Failed to load resource: the server responded with a status of (401|403|404|503)/.test(text)) return;
    problems.push(`${label}: console error: ${text}`);
  });
}

async function shot(page, name) {
  const path = join(SHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  shots.push(path);
  console.log(`screenshot: ${path}`);
}

async function step(name, page, body) {
  current = name;
  const started = Date.now();
  try {
    await body();
    console.log(`ok    ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  } catch (err) {
    console.log(`FAIL  ${name}: ${err.message}`);
    try {
      await shot(page, `failure-${name.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}`);
      const messages = await page.locator('#messages, .form-error, .msg').allInnerTexts();
      if (messages.length) console.log(`messages on the page: ${JSON.stringify(messages)}`);
    } catch { /* the page may be gone */ }
    throw err;
  }
}

/** Waits until `locator` is visible. */
async function see(locator, timeout = UI_TIMEOUT) {
  await locator.first().waitFor({ state: 'visible', timeout });
  return locator.first();
}

async function trigger(path, body) {
  const response = await fetch(`${URL_TRIGGERS}${path}`, { method: 'POST', body });
  return { status: response.status, text: await response.text() };
}

/**
 * A device on the embedded broker, as MQTT 3.1.1 packets written by hand
 * (a CONNECT with credentials, then QoS 1 PUBLISHes): resolves to the
 * CONNACK's return code and, when it is 0, the PUBACKs of `publishes`.
 */
function mqttDevice(username, password, publishes = []) {
  const str = (text) => {
    const bytes = Buffer.from(text, 'utf8');
    return Buffer.concat([Buffer.from([bytes.length >> 8, bytes.length & 255]), bytes]);
  };
  const packet = (first, body) => {
    const length = [];
    let n = body.length;
    do {
      length.push((n & 127) | (n > 127 ? 128 : 0));
      n >>= 7;
    } while (n > 0);
    return Buffer.concat([Buffer.from([first, ...length]), body]);
  };
  const hello = packet(0x10, Buffer.concat([str('MQTT'), Buffer.from([4, 0xc2, 0, 30]),
    str(`dashboard-${process.pid}`), str(username), str(password)]));
  return new Promise((resolve, reject) => {
    const socket = connect(MQTT_PORT, '127.0.0.1', () => socket.write(hello));
    const timer = setTimeout(() => { socket.destroy(); reject(new Error('the broker did not answer within 20 s')); }, 20000);
    let got = Buffer.alloc(0);
    let code = null;
    const acked = [];
    const done = () => { clearTimeout(timer); socket.destroy(); resolve({ code, acked }); };
    socket.on('data', (data) => {
      got = Buffer.concat([got, data]);
      while (got.length >= 4) { // CONNACK and PUBACK are both four bytes
        const [type, , a, b] = got;
        got = got.subarray(4);
        if (type === 0x20) {
          code = b;
          if (code !== 0 || !publishes.length) return done();
          publishes.forEach(([topic, text], i) => socket.write(packet(0x32,
            Buffer.concat([str(topic), Buffer.from([0, i + 1]), Buffer.from(text, 'utf8')]))));
        } else if (type === 0x40) {
          acked.push((a << 8) | b);
          if (acked.length === publishes.length) return done();
        }
      }
    });
    socket.on('error', (err) => { clearTimeout(timer); reject(err); });
    socket.on('close', done);
  });
}

async function login(page, username, password) {
  await see(page.getByRole('heading', { name: 'Log in to ISMS' }));
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
}

async function deployAndWait(page, chooser, what) {
  // The page may still be drawing its form again (a tab clicked while its
  // data loads), dropping a choice made on the old one: choose until the
  // form that is clicked says it holds one.
  const chosen = page.locator('p.chosen', { hasText: /^(Folder|Archive) / });
  const unchosen = page.getByText('Choose a folder or a .tar.gz archive first.');
  const deadline = Date.now() + UI_TIMEOUT;
  for (;;) {
    await chooser();
    await see(chosen);
    await page.getByRole('button', { name: 'Deploy' }).click();
    // The form checks its choice at once, before anything is sent.
    if (!(await unchosen.isVisible())) break;
    if (Date.now() > deadline) throw new Error(`the form would not take ${what}`);
  }
  const outcome = page.locator('.build .msg');
  await see(outcome, BUILD_TIMEOUT);
  const text = await outcome.first().innerText();
  if (!text.includes('built and is now active')) {
    const log = await page.locator('.build-log').first().innerText();
    throw new Error(`the build of ${what} did not succeed: ${text}\n${log}`);
  }
}

let exitCode = 0;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  watch(page, 'desktop');

  await step('a wrong password is refused clearly and the form still works', page, async () => {
    await page.goto(URL_GATE);
    await login(page, 'admin', 'not-the-password');
    const error = await see(page.locator('#login-error'));
    const text = await error.innerText();
    if (!/wrong username or password/i.test(text)) throw new Error(`login error says: ${text}`);
    // Focus is back on the password, ready for another try.
    const focused = await page.evaluate(() => document.activeElement && document.activeElement.name);
    if (focused !== 'password') throw new Error(`focus is on ${focused}, not the password`);
    await shot(page, '01-wrong-password');
  });

  await step('log in, with an empty project list', page, async () => {
    await page.getByLabel('Password').fill(ADMIN_PASSWORD);
    await page.getByRole('button', { name: 'Log in' }).click();
    await see(page.getByRole('heading', { name: 'Projects', exact: true }));
    await see(page.getByText('No projects yet.'));
    await shot(page, '02-projects-empty');
  });

  await step('create a project', page, async () => {
    await page.getByLabel('Name').fill(PROJECT);
    await page.getByRole('button', { name: 'Create project' }).click();
    await see(page.getByRole('heading', { name: `Project ${PROJECT}` }));
    await see(page.getByText('No Doees in this project yet.'));
  });

  await step('deploy a Doee by uploading its folder and watch the build finish', page, async () => {
    await deployAndWait(page, () => page.getByLabel('A folder').setInputFiles(DOEE_DIR), 'hello v1');
    const log = await page.locator('pre.build-log').first().innerText();
    if (!/Compiling|Finished|build/i.test(log)) throw new Error(`no build log shown: ${log}`);
    await see(page.getByRole('link', { name: 'hello', exact: true }));
    await see(page.locator('table td', { hasText: 'v1' }).filter({ hasText: 'succeeded' }));
    await shot(page, '03-deployed');
  });

  await step('triggers show the route with a curl line, and the schedule with its next firing', page, async () => {
    await page.getByRole('link', { name: 'Triggers' }).click();
    const curl = await see(page.getByLabel('curl line for /hello'));
    const line = await curl.inputValue();
    const expected = `curl -d 'world' ${URL_TRIGGERS}/${PROJECT}/hello`;
    if (line !== expected) throw new Error(`curl line is "${line}", expected "${expected}"`);
    const schedule = page.locator('table.schedules tbody tr', { hasText: 'cron "0 0 1 1 *" (Europe/Berlin)' });
    await see(schedule);
    // Midnight of New Year in Berlin, shown in the browser's time zone (UTC here).
    const next = await schedule.locator('td').nth(1).innerText();
    if (!/(12\/31\/\d{4}|\d{4}-12-31|31\.12\.\d{4}).*(11:00:00\s?PM|23:00:00)/.test(next)) {
      throw new Error(`the next firing shown is "${next}"`);
    }
    await shot(page, '04-triggers');
  });

  await step('an HTTP invocation appears live, with its output and log line', page, async () => {
    await page.getByRole('link', { name: 'Invocations' }).click();
    await see(page.getByText('No invocations yet.'));
    // Marks this very page: after the invocation shows up, the mark must
    // still be there, so nothing was reloaded.
    await page.evaluate(() => { window.__noReload = true; });
    const answer = await trigger(`/${PROJECT}/hello`, 'browser');
    if (answer.status !== 200 || answer.text !== 'Hello, browser!') {
      throw new Error(`the trigger answered ${answer.status} ${answer.text}`);
    }
    const row = page.locator('table.invocations tbody tr', { hasText: 'hello v1' });
    await see(row.filter({ hasText: 'succeeded' }));
    await see(row.filter({ hasText: 'HTTP POST /hello' }).filter({ hasText: 'Hello, browser!' }));
    if (!(await page.evaluate(() => window.__noReload))) throw new Error('the page was reloaded');
    await row.first().getByRole('button', { name: 'Details' }).click();
    await see(page.locator('tr.detail pre.output', { hasText: 'Hello, browser!' }));
    await see(page.locator('tr.detail', { hasText: 'greeted browser' }));
    await shot(page, '05-invocations-live');
  });

  await step('the log line arrives in the live log', page, async () => {
    await page.getByRole('link', { name: 'Logs' }).click();
    await see(page.locator('.logview li', { hasText: 'greeted browser' }));
    // A new line arrives while the page is open.
    await trigger(`/${PROJECT}/hello`, 'live-log');
    await see(page.locator('.logview li', { hasText: 'greeted live-log' }));
    await shot(page, '06-logs-live');
  });

  await step('run SQL queries; the document browser shows a clear state', page, async () => {
    await page.getByRole('link', { name: 'SQL and documents' }).click();
    const query = page.getByLabel('Query');
    const result = page.locator('form', { has: page.getByRole('heading', { name: 'SQL console' }) }).locator('.result');
    if (SQL_EXPECT === 'unavailable') {
      await query.fill('SELECT 1 AS one');
      await page.getByRole('button', { name: 'Run' }).click();
      await see(result.locator('.msg.error', { hasText: 'The query failed: Not available' }));
    } else {
      await query.fill('CREATE TABLE readings (room TEXT, temp REAL)');
      await page.getByRole('button', { name: 'Run' }).click();
      await see(result.getByText(/^Done in/));
      await query.fill('INSERT INTO readings (room, temp) VALUES (?, ?)');
      await page.getByLabel('Parameters (optional)').fill('["kitchen", 21.5]');
      await page.getByRole('button', { name: 'Run' }).click();
      await see(result.getByText(/1 row affected/));
      await query.fill('SELECT room, temp FROM readings');
      await page.getByLabel('Parameters (optional)').fill('');
      await query.press('Control+Enter'); // the keyboard shortcut
      await see(result.getByText('1 row in'));
      await see(result.locator('table.sql-result th', { hasText: 'room' }));
      await see(result.locator('table.sql-result td', { hasText: 'kitchen' }));
      await see(result.locator('table.sql-result td', { hasText: '21.5' }));
    }
    // The document browser shows a clear state either way: the (empty) list
    // of collections, or the platform's reason it has none to show. The
    // document store itself is DBriver's to test.
    const docs = await see(page.getByText(/^No collections yet\.$|^Cannot list the collections: Not available: /));
    console.log(`      documents: ${await docs.innerText()}`);
    await shot(page, '07-sql');
  });

  await step('deploy v2 from a .tar.gz, then roll back to v1', page, async () => {
    await page.getByRole('link', { name: 'Doees' }).click();
    await deployAndWait(page, () => page.getByLabel('or a .tar.gz archive').setInputFiles(DOEE_V2), 'hello v2');
    let answer = await trigger(`/${PROJECT}/hello`, 'v2');
    if (answer.text !== 'Howdy, v2!') throw new Error(`v2 answered ${answer.text}`);
    await page.getByRole('link', { name: 'hello', exact: true }).click();
    await see(page.getByRole('heading', { name: 'hello', exact: true }));
    await page.getByRole('button', { name: 'Make v1 active' }).click();
    await see(page.locator('#notice', { hasText: 'hello v1 is active again.' }));
    await see(page.getByText('Active version: v1'));
    answer = await trigger(`/${PROJECT}/hello`, 'again');
    if (answer.text !== 'Hello, again!') throw new Error(`after the rollback it answered ${answer.text}`);
    // And from the page itself.
    await page.getByLabel('Input (the request body)').fill('button');
    await page.getByRole('button', { name: 'Invoke' }).click();
    await see(page.locator('pre.output', { hasText: 'Hello, button!' }));
    await shot(page, '08-rolled-back');
  });

  await step('add a viewer to the project', page, async () => {
    await page.getByRole('link', { name: 'Members' }).click();
    await page.getByLabel('Username').fill(VIEWER);
    await page.getByLabel('Role').selectOption('viewer');
    await page.getByRole('button', { name: 'Add member' }).click();
    await see(page.locator('table td', { hasText: VIEWER }));
    await shot(page, '09-members');
  });

  await step('set a secret: its name is listed, its value shown nowhere', page, async () => {
    const value = `dashboard-secret-${process.pid}`;
    await page.getByRole('link', { name: 'Secrets' }).click();
    await see(page.getByText('No secrets yet.'));
    await page.getByLabel('Name', { exact: true }).fill('WEATHER_KEY');
    await page.getByLabel('Value', { exact: true }).fill(value);
    await page.getByRole('button', { name: 'Set secret' }).click();
    await see(page.locator('table td', { hasText: 'WEATHER_KEY' }));
    if ((await page.content()).includes(value)) throw new Error('the value is on the page');
    await shot(page, '09-secrets');
  });

  await step('an MQTT project: create it and deploy a Doee on MQTT triggers', page, async () => {
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Projects' }).click();
    await page.getByLabel('Name').fill('plant');
    await page.getByRole('button', { name: 'Create project' }).click();
    await see(page.getByRole('heading', { name: 'Project plant' }));
    await deployAndWait(page, () => page.getByLabel('A folder').setInputFiles(MQTT_DOEE_DIR), 'mqtt v1');
  });

  await step('a Python Doee deploys from its folder like any other', page, async () => {
    await page.getByRole('link', { name: 'Doees' }).click();
    await deployAndWait(page, () => page.getByLabel('A folder').setInputFiles(PYTHON_DOEE_DIR), 'sensor v1');
    await see(page.getByRole('link', { name: 'sensor', exact: true }));
    // The CommServer loads the new route as the deploy's event reaches it.
    let answer = { status: 0, text: '' };
    const deadline = Date.now() + UI_TIMEOUT;
    while (answer.status !== 200 && Date.now() < deadline) {
      answer = await trigger('/plant/sensor', 'browser');
      if (answer.status !== 200) await page.waitForTimeout(250);
    }
    if (answer.text !== 'Hello, browser!') throw new Error(`the Python Doee answered ${answer.status} ${answer.text}`);
    await see(page.locator('table td', { hasText: 'python' }));
    await shot(page, '09a-python');
  });

  let devicePassword = '';
  await step('create a device: its password is shown once, and signs in', page, async () => {
    await page.getByRole('link', { name: 'MQTT', exact: true }).click();
    await see(page.getByRole('heading', { name: 'Devices' }));
    await see(page.getByText('No devices yet.'));
    await see(page.getByText('No dead letters.'));
    await page.getByLabel('Device name').fill('gateway-1');
    await page.getByRole('button', { name: 'Create device' }).click();
    await see(page.getByText('Copy its password now: it is not shown again.'));
    devicePassword = await page.getByLabel('MQTT password').inputValue();
    const username = await page.getByLabel('MQTT username').inputValue();
    if (username !== 'plant/gateway-1') throw new Error(`the username shown is ${username}`);
    const line = await page.getByLabel('mosquitto_pub line').inputValue();
    if (!line.includes(`-p ${MQTT_PORT}`) || !line.includes(devicePassword)) throw new Error(`the example line is ${line}`);
    await see(page.locator('table td', { hasText: 'plant/gateway-1' }));
    const { code } = await mqttDevice(username, devicePassword);
    if (code !== 0) throw new Error(`the broker refused the new device's credentials: CONNACK ${code}`);
    await shot(page, '09b-mqtt-device');
    // Shown once: gone when the tab is drawn again.
    await page.getByRole('link', { name: 'Triggers' }).click();
    await page.getByRole('link', { name: 'MQTT', exact: true }).click();
    await see(page.locator('table td', { hasText: 'plant/gateway-1' }));
    if (await page.getByLabel('MQTT password').count()) throw new Error('the password is still on the page');
  });

  await step('a message the Doee fails on becomes a dead letter; retry it, then purge', page, async () => {
    // The fixture asked to publish outside its project fails; one attempt
    // is allowed (ISMS_COMMSERVER_MQTT_MAX_ATTEMPTS=1).
    const { code, acked } = await mqttDevice('plant/gateway-1', devicePassword, [['plant/gateway-1/in', 'publish elsewhere/x nope']]);
    if (code !== 0 || acked.length !== 1) throw new Error(`the device's publish: CONNACK ${code}, PUBACKs ${acked}`);
    const row = page.locator('table.dead-letters tbody tr', { hasText: 'plant/gateway-1/in' });
    const deadline = Date.now() + UI_TIMEOUT;
    while (!(await row.count()) && Date.now() < deadline) {
      await page.getByRole('link', { name: 'Triggers' }).click();
      await page.getByRole('link', { name: 'MQTT', exact: true }).click();
      await see(page.getByRole('heading', { name: 'Dead letters' }));
      await page.waitForTimeout(500);
    }
    await see(row.filter({ hasText: 'may not publish on `elsewhere/x`' }));
    await shot(page, '09c-dead-letter');
    const deadLettered = async () => {
      const text = await (await fetch(`${URL_GATE}/metrics`)).text();
      return Number((/^isms_mqtt_dead_lettered_total (\d+)$/m.exec(text) || [])[1]);
    };
    if ((await deadLettered()) !== 1) throw new Error(`isms_mqtt_dead_lettered_total is ${await deadLettered()}`);
    await row.getByRole('button', { name: /^Retry dead letter/ }).click();
    await see(page.locator('#notice', { hasText: 'Running 1 message again.' }));
    // It runs again, fails again, and is kept again.
    const again = Date.now() + UI_TIMEOUT;
    while ((await deadLettered()) < 2 && Date.now() < again) await page.waitForTimeout(250);
    if ((await deadLettered()) !== 2) throw new Error('the retried message did not run again');
    await page.getByRole('link', { name: 'Triggers' }).click();
    await page.getByRole('link', { name: 'MQTT', exact: true }).click();
    await see(row);
    await page.getByRole('button', { name: 'Purge all' }).click();
    await page.getByRole('button', { name: 'Purge them' }).click();
    await see(page.locator('#notice', { hasText: 'Purged 1 message.' }));
    await see(page.getByText('No dead letters.'));
  });

  await step('revoke the device: the broker refuses it', page, async () => {
    await page.getByRole('button', { name: 'Revoke', exact: true }).click();
    await page.getByRole('button', { name: 'Revoke gateway-1' }).click();
    await see(page.locator('#notice', { hasText: 'Revoked gateway-1' }));
    await see(page.getByText('No devices yet.'));
    const { code } = await mqttDevice('plant/gateway-1', devicePassword);
    if (code === 0) throw new Error('a revoked device signed in');
  });

  await step('the services page shows every service and the charts move', page, async () => {
    await page.getByRole('link', { name: 'System' }).click();
    await see(page.getByRole('heading', { name: 'System' }));
    for (const service of ['doer', 'resadmin', 'commserver', 'control-gate']) {
      await see(page.locator('table.services tbody th', { hasText: service }));
    }
    // Each instance's host (other hosts join with `isms join`).
    await see(page.getByRole('columnheader', { name: 'Host and labels' }));
    const hostCell = page.locator('table.services tbody tr', { hasText: 'doer-1' }).locator('td').first();
    const hostText = (await hostCell.innerText()).trim();
    if (!hostText || hostText === '—') throw new Error(`the doer's host shows "${hostText}"`);
    const rows = await page.locator('table.services tbody tr').count();
    const up = await page.locator('table.services tbody tr', { hasText: 'up' }).count();
    if (up !== rows) throw new Error(`${rows - up} of ${rows} services are not up`);
    // Traffic while the page samples /metrics: the rate chart's text
    // alternative reports it within a few samples.
    const deadline = Date.now() + 30000;
    let summary = '';
    while (Date.now() < deadline) {
      await Promise.all(Array.from({ length: 5 }, (_, i) => trigger(`/${PROJECT}/hello`, `load-${i}`)));
      summary = await page.locator('.chart-summary').first().innerText();
      if (/invocations\/s: now [0-9.]+\/s/.test(summary) && !/now 0\/s/.test(summary)) break;
      await page.waitForTimeout(500);
    }
    if (!/invocations\/s: now/.test(summary) || /now 0\/s/.test(summary)) throw new Error(`the rate chart says: ${summary}`);
    await see(page.locator('.chart-summary', { hasText: /p50: now/ }));
    await shot(page, '10-system');
  });

  await step('keyboard only: from the project list to a project', page, async () => {
    await page.getByRole('link', { name: 'Projects', exact: true }).click();
    await see(page.getByRole('link', { name: PROJECT, exact: true }));
    // The skip link shows when focused and moves focus to the content
    // without changing the page.
    const skip = page.getByRole('link', { name: 'Skip to content' });
    await skip.focus();
    await see(skip);
    await page.keyboard.press('Enter');
    const after = await page.evaluate(() => [document.activeElement.id, location.hash]);
    if (after[0] !== 'main' || after[1] !== '#/projects') throw new Error(`the skip link led to ${after}`);
    let reached = false;
    for (let i = 0; i < 20 && !reached; i += 1) {
      await page.keyboard.press('Tab');
      reached = await page.evaluate((name) => document.activeElement
        && document.activeElement.tagName === 'A' && document.activeElement.textContent === name, PROJECT);
    }
    if (!reached) throw new Error(`Tab never reached the link to ${PROJECT}`);
    const ring = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    if (ring === 'none') throw new Error('the focused link shows no focus ring');
    await page.keyboard.press('Enter');
    await see(page.getByRole('heading', { name: `Project ${PROJECT}` }));
  });

  await step('an expired session sends the user to log in, then back', page, async () => {
    await page.goto(`${URL_GATE}/#/projects`);
    await see(page.getByRole('heading', { name: 'Projects', exact: true }));
    await page.evaluate((token) => {
      const saved = JSON.parse(sessionStorage.getItem('isms.session'));
      saved.token = token;
      sessionStorage.setItem('isms.session', JSON.stringify(saved));
    }, EXPIRED_TOKEN);
    await page.getByRole('link', { name: PROJECT, exact: true }).click();
    await see(page.getByRole('heading', { name: 'Log in to ISMS' }));
    const said = await see(page.getByText('Your session has ended'));
    if (!/expired/.test(await said.innerText())) throw new Error(`the login page says: ${await said.innerText()}`);
    await shot(page, '11-session-expired');
    await login(page, 'admin', ADMIN_PASSWORD);
    await see(page.getByRole('heading', { name: `Project ${PROJECT}` }));
  });

  await step('a viewer who tries to deploy is told why not, and the page goes on', page, async () => {
    await page.getByRole('button', { name: 'Log out' }).click();
    await see(page.getByText('You have logged out.'));
    await login(page, VIEWER, VIEWER_PASSWORD);
    await see(page.getByRole('heading', { name: 'Projects', exact: true }));
    await page.getByRole('link', { name: PROJECT, exact: true }).click();
    await see(page.getByText('Your role here: viewer'));
    await see(page.getByText('Deploying needs the developer role in this project; yours is viewer.'));
    await page.getByLabel('A folder').setInputFiles(DOEE_DIR);
    await page.getByRole('button', { name: 'Deploy' }).click();
    const refusal = await see(page.locator('form.deploy .form-error', { hasText: 'Deploy refused' }));
    const text = await refusal.innerText();
    if (!/developer|role|may not/i.test(text)) throw new Error(`the refusal says: ${text}`);
    await shot(page, '12-viewer-refused');
    await page.getByRole('link', { name: 'Invocations' }).click();
    await see(page.locator('table.invocations tbody tr', { hasText: 'hello' }));
  });

  // The same dashboard on a phone-sized screen.
  const phone = await browser.newContext({ viewport: { width: 375, height: 812 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const small = await phone.newPage();
  watch(small, 'phone');
  await step('on a phone: log in, a project, the services', small, async () => {
    await small.goto(URL_GATE);
    await login(small, 'admin', ADMIN_PASSWORD);
    await see(small.getByRole('heading', { name: 'Projects', exact: true }));
    await small.getByRole('link', { name: PROJECT, exact: true }).click();
    await see(small.getByRole('link', { name: 'hello', exact: true }));
    const overflow = await small.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow > 1) throw new Error(`the page is ${overflow}px wider than the phone`);
    await shot(small, '13-phone-project');
    await small.getByRole('link', { name: 'System' }).click();
    await see(small.locator('table.services tbody tr').first());
    await shot(small, '14-phone-system');
  });
  await phone.close();

  await step('delete the Doee: its route is gone', page, async () => {
    await page.getByRole('button', { name: 'Log out' }).click();
    await login(page, 'admin', ADMIN_PASSWORD);
    await page.getByRole('link', { name: PROJECT, exact: true }).click();
    await page.getByRole('link', { name: 'hello', exact: true }).click();
    await page.getByRole('button', { name: 'Delete hello' }).click();
    // Asked again, with Cancel focused.
    const focused = await page.evaluate(() => document.activeElement.textContent);
    if (focused !== 'Cancel') throw new Error(`focus is on "${focused}" after asking to delete`);
    await page.getByRole('button', { name: 'Delete hello for good' }).click();
    await see(page.getByText('No Doees in this project yet.'));
    const answer = await trigger(`/${PROJECT}/hello`, 'gone');
    if (answer.status !== 404) throw new Error(`the deleted route answered ${answer.status}`);
    await shot(page, '15-deleted');
  });
  await context.close();

  if (problems.length) {
    throw new Error(`the browser reported problems:\n  ${problems.join('\n  ')}`);
  }
  console.log(`all steps passed; ${shots.length} screenshots in ${SHOTS}`);
} catch (err) {
  console.error(`dashboard test failed at "${current}": ${err.stack || err.message}`);
  if (problems.length) console.error(`browser problems:\n  ${problems.join('\n  ')}`);
  exitCode = 1;
} finally {
  await browser.close();
}
process.exit(exitCode);
