import { $, api, el, fillSelect, flash, requireSession, usd, when } from './common.js';

const me = await requireSession();
if (!me.admin) flash('Only an admin key can manage keys.');

function budgetOf(key) {
  const b = key.budget;
  if (!b || (b.usd == null && b.tokens == null)) return '';
  const parts = [];
  if (b.usd != null) parts.push(usd(b.usd));
  if (b.tokens != null) parts.push(`${b.tokens} tokens`);
  return `${parts.join(' + ')} / ${b.period}`;
}

async function revoke(button, key) {
  if (button.dataset.confirm !== 'yes') {
    button.dataset.confirm = 'yes';
    button.textContent = `Confirm revoking ${key.name}`;
    button.setAttribute('aria-label', `Confirm revoking ${key.name}`);
    return;
  }
  try {
    await api(`/api/v1/keys/${encodeURIComponent(key.name)}`, { method: 'DELETE' });
    flash('');
  } catch (err) {
    flash(`Could not revoke ${key.name}: ${err.message}${err.details ? ` (${err.details})` : ''}`);
  }
  await refresh();
}

async function refresh() {
  const all = $('#k-revoked').checked;
  const [body, stats] = await Promise.all([
    api(`/api/v1/keys${all ? '?include_revoked=true' : ''}`), api('/api/v1/requests/stats?days=30'),
  ]);
  const spend = new Map(stats.keys.map((k) => [k.key, k]));
  const chosen = $('#b-key').value;
  fillSelect($('#b-key'), body.keys.filter((k) => !k.revoked_at).map((k) => k.name), chosen);
  $('#keys tbody').replaceChildren(...body.keys.map((key) => {
    const button = key.revoked_at ? null : el('button', { type: 'button', class: 'danger', 'aria-label': `Revoke ${key.name}` }, 'Revoke');
    if (button) button.addEventListener('click', () => revoke(button, key));
    return el('tr', { 'data-key': key.name },
      el('td', {}, key.name), el('td', {}, el('code', {}, key.prefix)), el('td', {}, key.admin ? 'yes' : 'no'),
      el('td', {}, budgetOf(key)),
      el('td', { class: 'num' }, usd(spend.get(key.name)?.cost_usd ?? 0)), el('td', {}, when(spend.get(key.name)?.last_used) || 'never'),
      el('td', {}, Object.entries(key.rate_limits || {}).map(([k, v]) => `${k} ${v}`).join(', ')),
      el('td', {}, when(key.created_at)), el('td', {}, when(key.revoked_at)), el('td', {}, button));
  }));
}

$('#create').addEventListener('submit', async (event) => {
  event.preventDefault();
  const body = { name: $('#k-name').value.trim(), admin: $('#k-admin').checked };
  const budget = budgetFrom('#k-usd', '#k-tokens', '#k-period');
  if (budget) body.budget = budget;
  const limits = {};
  for (const klass of ['generation', 'batch', 'other']) {
    const value = $(`#k-rl-${klass}`).value.trim();
    if (value) limits[klass] = value;
  }
  if (Object.keys(limits).length) body.rate_limits = limits;
  try {
    const created = await api('/api/v1/keys', { method: 'POST', json: body });
    $('#secret-value').textContent = created.key;
    $('#secret').hidden = false;
    $('#create').reset();
    flash('');
    await refresh();
  } catch (err) {
    $('#secret').hidden = true;
    flash(`Could not create the key: ${err.message}${err.details ? ` (${err.details})` : ''}`);
  }
});
function budgetFrom(usdField, tokensField, periodField) {
  const budget = { period: $(periodField).value };
  if ($(usdField).value !== '') budget.usd = Number($(usdField).value);
  if ($(tokensField).value !== '') budget.tokens = Number($(tokensField).value);
  return budget.usd === undefined && budget.tokens === undefined ? null : budget;
}

async function setBudget(clear) {
  const name = $('#b-key').value;
  const budget = budgetFrom('#b-usd', '#b-tokens', '#b-period');
  if (!clear && !budget) {
    flash('Give a USD or token amount, or remove the budget.');
    return;
  }
  try {
    await api(`/api/v1/keys/${encodeURIComponent(name)}/budget`, clear ? { method: 'DELETE' } : { method: 'PUT', json: budget });
    flash('');
    $('#budget').reset();
    await refresh();
  } catch (err) {
    flash(`Budget not set: ${err.message}${err.details ? ` (${err.details})` : ''}`);
  }
}

$('#budget').addEventListener('submit', (event) => {
  event.preventDefault();
  setBudget(false);
});
$('#b-clear').addEventListener('click', () => setBudget(true));
$('#k-revoked').addEventListener('change', () => refresh().catch((err) => flash(err.message)));

if (me.admin) refresh().catch((err) => flash(err.message));
