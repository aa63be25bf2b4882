// The dashboard's shell: the session, the routes (in the URL's #fragment,
// so the Control Gate serves one page), messages, and the views' lifetimes.

import { session, clearSession, onSessionEnd, post, describe } from './api.js';
import { h, fill } from './dom.js';
import { clearErrors, clearNotice, navigate } from './messages.js';
import { sampler } from './charts.js';
import { loginView } from './login.js';
import { projectsView } from './projects.js';
import { projectView } from './project.js';
import { systemView } from './system.js';

const main = document.getElementById('main');

let leaving = null;
let loginMessage = null;
let returnTo = null;

onSessionEnd((message) => {
  const why = message.replace(/[:;,]?\s*log in again\.?$/i, '');
  loginMessage = `Your session has ended: ${why}. Log in again to go on.`;
  clearNotice();
  returnTo = location.hash && !location.hash.startsWith('#/login') ? location.hash : null;
  sampler.stop();
  navigate('#/login');
});

function updateChrome(current, section) {
  const nav = document.getElementById('nav');
  const who = document.getElementById('who');
  nav.hidden = !current;
  who.hidden = !current;
  if (current) {
    document.getElementById('who-name').textContent = `${current.user} (${current.role})`;
  }
  for (const link of nav.querySelectorAll('a')) {
    if (link.dataset.section === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

function parse(hash) {
  return hash.replace(/^#\/?/, '').split('/').filter(Boolean).map((part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part; // a malformed %-escape is just a name that does not exist
    }
  });
}

async function route() {
  if (leaving) leaving.abort();
  const lifetime = new AbortController();
  leaving = lifetime;
  clearErrors();
  const current = session();
  const parts = parse(location.hash);
  if (!current && parts[0] !== 'login') {
    returnTo = location.hash && location.hash !== '#/' ? location.hash : returnTo;
    navigate('#/login');
    return;
  }
  if (current && parts[0] === 'login') {
    navigate('#/projects');
    return;
  }
  const view = { signal: lifetime.signal };
  let section = null;
  let render;
  if (parts[0] === 'login') {
    const message = loginMessage;
    loginMessage = null;
    render = () => loginView(main, view, {
      message,
      done: () => {
        sampler.start();
        const target = returnTo || '#/projects';
        returnTo = null;
        navigate(target);
      },
    });
  } else if (parts[0] === 'system') {
    section = 'system';
    render = () => systemView(main, view);
  } else if (parts[0] === 'projects' && parts[1]) {
    section = 'projects';
    render = () => projectView(main, view, { project: parts[1], tab: parts[2] || 'doees', doee: parts[2] === 'doees' ? parts[3] : undefined });
  } else {
    section = 'projects';
    if (parts[0] !== 'projects') {
      history.replaceState(null, '', '#/projects');
    }
    render = () => projectsView(main, view);
  }
  updateChrome(current, section);
  fill(main);
  try {
    await render();
  } catch (err) {
    if (lifetime.signal.aborted) return;
    if (err && err.status === 401 && !session()) return;
    fill(main, h('h1', { tabindex: '-1' }, 'Something went wrong'), h('p', describe(err)),
      h('p', h('a', { href: '#/projects' }, 'Back to the projects')));
  }
  if (lifetime.signal.aborted) return;
  // Move focus to the new page's heading, unless the view chose a field.
  if (!main.contains(document.activeElement)) {
    const heading = main.querySelector('h1');
    if (heading) {
      heading.setAttribute('tabindex', '-1');
      heading.focus({ preventScroll: true });
    }
  }
  document.title = `${(main.querySelector('h1') || { textContent: '' }).textContent.trim() || 'Dashboard'} · ISMS`;
}

document.getElementById('logout').addEventListener('click', async () => {
  try {
    await post('auth/logout');
  } catch {
    // Logging out of a session that already ended is still logging out.
  }
  clearSession();
  sampler.stop();
  clearNotice();
  loginMessage = 'You have logged out.';
  returnTo = null;
  navigate('#/login');
});

// The skip link must not become a route: it moves focus to the content.
document.querySelector('.skip').addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});

window.addEventListener('hashchange', route);
if (session()) sampler.start();
route();
