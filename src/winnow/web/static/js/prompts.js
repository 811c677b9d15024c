import { $, Pager, PREFIX, api, el, flash, requireSession, when } from './common.js';

await requireSession();

function firstLine(text) {
  const line = (text || '').split('\n')[0];
  return line.length > 80 ? `${line.slice(0, 80)}…` : line;
}

function row(prompt) {
  const link = el('a', { href: `${PREFIX}/prompts/${encodeURIComponent(prompt.name)}` }, prompt.name);
  const labels = Object.entries(prompt.labels).map(([label, version]) => el('span', { class: 'label' }, `${label} → v${version}`));
  return el('tr', { 'data-prompt': prompt.name },
    el('td', { class: 'model-id' }, link), el('td', { class: 'num' }, `v${prompt.latest_version}`),
    el('td', {}, labels), el('td', { class: 'text' }, firstLine(prompt.latest.template)), el('td', {}, when(prompt.updated_at)));
}

const pager = new Pager($('#prompts-pager'), 'prompts', async (after) => {
  const params = new URLSearchParams({ limit: '25' });
  if (after) params.set('after', after);
  const page = await api(`/api/v1/prompts?${params}`);
  $('#prompts tbody').replaceChildren(...page.data.map(row));
  $('#prompts-empty').hidden = page.data.length > 0;
  return page;
});

$('#new-prompt').addEventListener('submit', async (event) => {
  event.preventDefault();
  const body = { name: $('#np-name').value.trim(), template: $('#np-template').value };
  if ($('#np-system').value.trim()) body.system = $('#np-system').value;
  if ($('#np-label').value.trim()) body.labels = [$('#np-label').value.trim()];
  try {
    await api('/api/v1/prompts', { method: 'POST', json: body });
    $('#new-prompt').reset();
    flash('');
    pager.reset();
    await pager.refresh();
  } catch (err) {
    flash(`Could not create the prompt: ${err.message}${err.details ? ` (${err.details})` : ''}`);
  }
});

pager.refresh().catch((err) => flash(err.message));
