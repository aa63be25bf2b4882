// Logging in: POST /api/v1/auth/login, the token kept for this tab.

import { post, saveSession, describe } from './api.js';
import { h, fill, field } from './dom.js';

export async function loginView(main, view, { message, done }) {
  const username = h('input', { type: 'text', name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const submit = h('button', { type: 'submit' }, 'Log in');
  const problem = h('div.form-error', { role: 'alert', id: 'login-error' });
  const form = h('form.card.login', { 'aria-labelledby': 'login-title', novalidate: true },
    h('h1#login-title', 'Log in to ISMS'),
    message ? h('p.msg.info', { role: 'alert' }, message) : null,
    field('Username', username),
    field('Password', password),
    problem,
    h('div.actions', submit),
    h('p.hint', 'The first administrator is ', h('code', 'admin'), '; ', h('code', 'isms up'),
      ' printed where its password is stored (', h('code', '<data-dir>/initial-admin-password'), ').'),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    fill(problem);
    if (!username.value.trim() || !password.value) {
      fill(problem, 'Enter a username and a password.');
      (username.value.trim() ? password : username).focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = 'Logging in…';
    try {
      const answer = await post('auth/login', { username: username.value.trim(), password: password.value });
      saveSession({ token: answer.token, user: answer.user, role: answer.role, expires_ms: answer.expires_ms });
      done();
    } catch (err) {
      fill(problem, err.status === 401 ? `Login refused: ${err.message}` : describe(err));
      password.value = '';
      password.setAttribute('aria-invalid', 'true');
      password.focus();
    } finally {
      submit.disabled = false;
      submit.textContent = 'Log in';
    }
  });
  fill(main, h('div.center', form));
  username.focus();
}
