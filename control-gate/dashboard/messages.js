// The page's two message regions: errors (role=alert, read out at once,
// kept until dismissed or the next page) and short confirmations
// (role=status, read out politely, gone after a few seconds).

import { describe, session } from './api.js';
import { h, fill } from './dom.js';

const main = document.getElementById('main');
const messages = document.getElementById('messages');
const notice = document.getElementById('notice');

/** Shows an error in the page's alert region until dismissed or navigation. */
export function showError(err, context) {
  const text = typeof err === 'string' ? err : describe(err);
  const close = h('button.link', { type: 'button', 'aria-label': 'Dismiss this message' }, 'Dismiss');
  const item = h('div.msg.error', h('strong', context ? `${context}: ` : 'Error: '), h('span.msg-text', text), ' ', close);
  close.addEventListener('click', () => { item.remove(); main.focus(); });
  // One message at a time reads best; the newest is the one that matters.
  fill(messages, item);
}

export function clearErrors() {
  fill(messages);
}

let noticeTimer = null;
/** A short confirmation ("Deployed hello v2"), read out politely. */
export function notify(text) {
  notice.textContent = text;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { notice.textContent = ''; }, 6000);
}

export function clearNotice() {
  clearTimeout(noticeTimer);
  notice.textContent = '';
}

/** Runs an action, showing its failure; resolves to its result or undefined. */
export async function attempt(context, action) {
  try {
    return await action();
  } catch (err) {
    if (err && err.name === 'AbortError') return undefined;
    if (err && err.status === 401 && !session()) return undefined; // sent to login
    showError(err, context);
    return undefined;
  }
}

/** Goes to a page of the dashboard (drawn again if it is the current one). */
export function navigate(hash) {
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent('hashchange'));
  else location.hash = hash;
}

