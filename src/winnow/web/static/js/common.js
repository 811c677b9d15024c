// Shared by every page: the session (an API key in this tab's sessionStorage), API calls with
// Bearer auth, and DOM building that only ever inserts data as text (never as HTML).

export const PREFIX = '/ui';
const KEY = 'winnow.key';
const WHO = 'winnow.who';

export function session() {
  const key = sessionStorage.getItem(KEY);
  if (!key) return null;
  let who = {};
  try { who = JSON.parse(sessionStorage.getItem(WHO) || '{}'); } catch { who = {}; }
  return { key, name: who.name || '', admin: Boolean(who.admin) };
}

export function saveSession(key, who) {
  sessionStorage.setItem(KEY, key);
  sessionStorage.setItem(WHO, JSON.stringify(who));
}

// reason: a code the sign-in page turns into its message (signin.js REASONS), or nothing.
export function signOut(reason) {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(WHO);
  const params = new URLSearchParams();
  if (reason) params.set('reason', reason);
  const here = location.pathname + location.search;
  if (!here.startsWith(`${PREFIX}/signin`)) params.set('next', here);
  location.assign(`${PREFIX}/signin?${params}`);
}

export class ApiError extends Error {
  constructor(status, message, details) {
    super(message);
    this.status = status;
    this.details = details;
  }
}

export async function errorOf(response) {
  let body = {};
  try { body = await response.json(); } catch { body = {}; }
  const message = body.message || (body.error && body.error.message) || response.statusText || `HTTP ${response.status}`;
  return new ApiError(response.status, message, body.details);
}

// fetch() against the API with the session's key; a 401 (wrong or revoked key) signs out.
export async function api(path, { method = 'GET', json, body, key, raw = false, signal } = {}) {
  const secret = key ?? session()?.key;
  const headers = new Headers();
  if (secret) headers.set('Authorization', `Bearer ${secret}`);
  if (json !== undefined) {
    headers.set('Content-Type', 'application/json');
    body = JSON.stringify(json);
  }
  const response = await fetch(path, { method, headers, body, signal });
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401 && key === undefined) signOut('key-refused');
    throw error;
  }
  return raw ? response : response.json();
}

// el('td', {class: 'num'}, text...): children are text or nodes; attributes are set as attributes.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// A message's text ({role, content}); content that is not a string shows as JSON.
export function messageText(message) {
  if (!message) return '';
  return typeof message.content === 'string' ? message.content : JSON.stringify(message.content);
}

// A prompt as text: a plain string, or its messages of the given roles (all roles: null).
export function promptText(prompt, roles = ['user']) {
  if (typeof prompt === 'string') return prompt;
  return (prompt || []).filter((m) => !roles || roles.includes(m.role)).map(messageText).join('\n');
}

// <dt>/<dd> pairs for a <dl> from [term, description...] items.
export function definitions(items) {
  return items.flatMap(([term, ...description]) => [el('dt', {}, term), el('dd', {}, ...description)]);
}

export function $(selector) { return document.querySelector(selector); }

export function flash(message) {
  const box = $('#flash');
  box.textContent = message;
  box.hidden = !message;
}

export function badge(text) { return el('span', { class: `badge ${text}` }, text); }

export function when(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

export function number(value, digits = 0) {
  if (value === null || value === undefined) return '—';
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export function usd(value) {
  if (value === null || value === undefined) return '—';
  return `$${Number(value).toLocaleString(undefined, { maximumFractionDigits: 6 })}`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return '';
  if (seconds < 10) return `${Number(seconds).toFixed(1)}s`;
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

export function fillSelect(select, values, chosen) {
  select.replaceChildren(...values.map((v) => el('option', { value: v, selected: v === chosen }, v)));
}

export function download(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = el('a', { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// Every page but the sign-in page: a session, or a redirect to sign in (and a promise that never
// settles, so the page's module stops at its `await requireSession()`); fills the header.
export async function requireSession() {
  const current = session();
  if (!current) {
    signOut('');
    await new Promise(() => {});
  }
  $('#who').textContent = `${current.name}${current.admin ? ' (admin)' : ''}`;
  const out = $('#signout');
  out.hidden = false;
  out.addEventListener('click', () => signOut('signed-out'));
  for (const link of document.querySelectorAll('[data-admin-only]')) link.hidden = !current.admin;
  for (const link of document.querySelectorAll('header nav a')) {
    const path = new URL(link.href).pathname;
    const here = location.pathname;
    const active = path === `${PREFIX}/` ? here === path : here === path || here.startsWith(`${path}/`);
    if (active) link.setAttribute('aria-current', 'page');
  }
  return current;
}

// Repeats fn every ms while it returns true; pauses while the tab is hidden.
export function poll(fn, ms) {
  let timer = null;
  const tick = async () => {
    timer = null;
    let again = false;
    try {
      again = await fn();
    } catch (error) {
      flash(error.message);
      // A refusal (bad id, not yours, not found) will not change by asking again; a 429 or 5xx may.
      again = !(error instanceof ApiError && error.status < 500 && error.status !== 429);
    }
    if (again && !document.hidden) timer = setTimeout(tick, ms);
  };
  document.addEventListener('visibilitychange', () => { if (!document.hidden && timer === null) tick(); });
  tick();
}

// A poll that starts on demand and runs while fn() returns true; start() while it runs does nothing.
export function watcher(fn, ms) {
  let running = false;
  return function start() {
    if (running) return;
    running = true;
    poll(async () => {
      running = await fn();
      return running;
    }, ms);
  };
}

// Pages through an API list newest first with its cursor (limit, after, has_more, last_id): "Newer"
// and "Older" buttons in `nav`, and where the page is. `load(after)` fetches one page (after: null
// for the newest) and renders it; refresh() reloads the page on screen (a poll), reset() goes back
// to the newest (a filter changed).
export class Pager {
  constructor(nav, noun, load) {
    this.noun = noun;
    this.load = load;
    this.cursors = [null];
    this.page = null;
    this.where = el('span', { class: 'muted small', 'aria-live': 'polite' });
    this.newer = el('button', { type: 'button', class: 'secondary', onclick: () => this.step(-1) }, `← Newer ${noun}`);
    this.older = el('button', { type: 'button', class: 'secondary', onclick: () => this.step(1) }, `Older ${noun} →`);
    this.nav = nav;
    nav.classList.add('pager');
    nav.hidden = true;
    nav.replaceChildren(this.newer, this.where, this.older);
  }

  async refresh() {
    this.page = await this.load(this.cursors[this.cursors.length - 1]);
    const first = this.cursors.length === 1;
    this.nav.hidden = first && !this.page.has_more; // one page: nothing to page through
    this.newer.disabled = first;
    this.older.disabled = !this.page.has_more;
    const count = this.page.count ?? (this.page.data || []).length;
    const more = this.page.has_more ? ` · older ${this.noun} follow` : '';
    this.where.textContent = first && !this.page.has_more ? '' : `page ${this.cursors.length}${count ? ` (${count})` : ''}${more}`;
    return this.page;
  }

  async step(direction) {
    if (direction > 0 && this.page?.has_more) this.cursors.push(this.page.last_id);
    else if (direction < 0 && this.cursors.length > 1) this.cursors.pop();
    else return;
    try { await this.refresh(); } catch (err) { flash(err.message); }
  }

  reset() { this.cursors = [null]; }
}

// Every page of an API list (for the few lists a page needs whole, e.g. one job's feedback).
export async function allPages(path, query = {}) {
  const items = [];
  let after = null;
  for (;;) {
    const params = new URLSearchParams({ ...query, limit: '1000' });
    if (after) params.set('after', after);
    const page = await api(`${path}?${params}`);
    items.push(...(page.items || page.jobs || page.evaluations || page.data || []));
    if (!page.has_more) return items;
    after = page.last_id;
  }
}
