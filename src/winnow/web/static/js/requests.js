import { $, PREFIX, Pager, api, badge, el, flash, number, requireSession, usd, when } from './common.js';

const me = await requireSession();
const PAGE_SIZE = 50;
$('#flt-key-label').hidden = !me.admin;

function filters() {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const fields = { key: '#flt-key', model: '#flt-model', status: '#flt-status', q: '#flt-text' };
  for (const [name, selector] of Object.entries(fields)) {
    const value = $(selector).value.trim();
    if (value && !$(selector).closest('[hidden]')) query.set(name, value);
  }
  const local = (d, days = 0) => new Date(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + days).toISOString();
  if ($('#flt-from').valueAsDate) query.set('since', local($('#flt-from').valueAsDate));
  if ($('#flt-to').valueAsDate) query.set('until', local($('#flt-to').valueAsDate, 1));
  return query;
}

function row(call) {
  const link = el('a', { href: `${PREFIX}/requests/${encodeURIComponent(call.id)}` }, `${call.method} ${call.path}`);
  const ok = call.status < 400;
  return el('tr', { 'data-request-id': call.id, 'data-status': String(call.status) },
    el('td', {}, when(call.created_at)),
    el('td', {}, badge(ok ? 'ok' : 'bad'), ` ${call.status}`, call.error_code ? el('div', { class: 'small muted' }, call.error_code) : null),
    el('td', { class: 'text' }, link, call.cached ? el('div', { class: 'small muted' }, 'cache hit') : null),
    el('td', { class: 'model-id' }, call.model || '', call.deployment ? el('div', { class: 'small muted' }, `${call.deployment} · ${call.attempts} attempt(s)`) : null),
    el('td', {}, call.key || '—'),
    el('td', { class: 'num' }, number(call.latency_ms, 1)),
    el('td', { class: 'num' }, `${number(call.input_tokens)} / ${number(call.output_tokens)}`),
    el('td', { class: 'num' }, usd(call.cost_usd)));
}

const pager = new Pager($('#requests-pager'), 'calls', async (after) => {
  const query = filters();
  if (after) query.set('after', after);
  const list = await api(`/api/v1/requests?${query}`);
  $('#requests tbody').replaceChildren(...list.data.map(row));
  const filtered = [...query.keys()].some((k) => k !== 'limit' && k !== 'after');
  $('#requests-empty').textContent = filtered ? 'No calls match these filters.' : 'No calls yet.';
  $('#requests-empty').hidden = list.data.length > 0;
  return list;
});

async function load() {
  try {
    await pager.refresh();
    flash('');
  } catch (err) {
    flash(err.message);
  }
}

$('#req-filters').addEventListener('submit', (event) => {
  event.preventDefault();
  pager.reset();
  load();
});

// Live tail: the newest page again every 2 s while the box is ticked (paging back stops it).
let tail = null;
$('#tail').addEventListener('change', () => {
  clearInterval(tail);
  tail = null;
  $('#tail-status').textContent = '';
  if (!$('#tail').checked) return;
  pager.reset();
  const tick = async () => {
    if (document.hidden || pager.cursors.length > 1) return;
    await load();
    $('#tail-status').textContent = `live · ${new Date().toLocaleTimeString()}`;
  };
  tick();
  tail = setInterval(tick, 2000);
});

api('/api/v1/models')
  .then((models) => $('#flt-models').replaceChildren(...models.models.map((m) => el('option', { value: m.id }))))
  .catch(() => {});
load();
