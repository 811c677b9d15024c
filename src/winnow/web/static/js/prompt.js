import { $, allPages, api, definitions, el, fillSelect, flash, requireSession, when } from './common.js';

await requireSession();
const name = document.body.dataset.name;
const base = `/api/v1/prompts/${encodeURIComponent(name)}`;
let versions = [];

function labelList(labels) {
  return labels.length ? labels.map((label) => el('span', { class: 'label' }, label)) : '—';
}

function params(version) {
  const entries = Object.entries(version.params).filter(([, value]) => value !== null);
  return entries.length ? entries.map(([key, value]) => `${key}: ${JSON.stringify(value)}`).join(', ') : '—';
}

function column(version) {
  return el('article', { class: 'version', 'data-version': version.version },
    el('h3', {}, `Version ${version.version} `, labelList(version.labels)),
    el('dl', { class: 'kv' }, definitions([
      ['System', el('pre', { class: 'prompt-text' }, version.system ?? '—')],
      ['Template', el('pre', { class: 'prompt-text' }, version.template)],
      ['Fields', version.fields.join(', ') || '—'],
      ['Params', params(version)],
      ['Model', version.model ?? '—'],
      ['Source', version.source],
      ['Message', version.message ?? '—'],
      ['Created', when(version.created_at)],
    ])));
}

const SIGN = { insert: '+ ', delete: '- ', equal: '  ' };

async function compare() {
  const before = Number($('#cmp-from').value);
  const after = Number($('#cmp-to').value);
  const pick = (n) => versions.find((v) => v.version === n);
  if (!pick(before) || !pick(after)) return;
  $('#side-by-side').replaceChildren(column(pick(before)), column(pick(after)));
  const diff = await api(`${base}/diff?from=${before}&to=${after}`);
  $('#diff').replaceChildren(...diff.fields.filter((f) => f.changed).map((f) => el('div', { class: 'diff-field' },
    el('h4', {}, f.field),
    el('pre', {}, f.lines.map((line) => el('span', { class: `diff-line ${line.op}` }, SIGN[line.op] + line.text))))));
  if (!$('#diff').children.length) $('#diff').replaceChildren(el('p', { class: 'muted' }, 'The two versions are the same.'));
}

async function refresh() {
  const prompt = await api(base);
  versions = await allPages(`${base}/versions`);
  $('#prompt-summary').replaceChildren(...definitions([
    ['Name', prompt.name], ['Description', prompt.description ?? '—'], ['Latest version', `v${prompt.latest_version}`],
    ['Created', when(prompt.created_at)], ['Updated', when(prompt.updated_at)],
  ]));
  $('#labels tbody').replaceChildren(...Object.entries(prompt.labels).map(([label, version]) =>
    el('tr', { 'data-label': label }, el('td', {}, label), el('td', { class: 'num' }, `v${version}`))));
  const numbers = versions.map((v) => String(v.version));
  fillSelect($('#ml-version'), numbers, $('#ml-version').value || numbers[0]);
  fillSelect($('#cmp-to'), numbers, $('#cmp-to').value || numbers[0]);
  fillSelect($('#cmp-from'), numbers, $('#cmp-from').value || numbers[Math.min(1, numbers.length - 1)]);
  $('#versions tbody').replaceChildren(...versions.map((v) => el('tr', { 'data-version': v.version },
    el('td', { class: 'num' }, `v${v.version}`), el('td', {}, labelList(v.labels)), el('td', {}, v.source),
    el('td', { class: 'model-id' }, v.model ?? ''), el('td', { class: 'text' }, v.message ?? ''), el('td', {}, when(v.created_at)))));
  await compare();
}

$('#cmp-from').addEventListener('change', () => compare().catch((err) => flash(err.message)));
$('#cmp-to').addEventListener('change', () => compare().catch((err) => flash(err.message)));
$('#move-label').addEventListener('submit', async (event) => {
  event.preventDefault();
  const label = $('#ml-label').value.trim();
  try {
    await api(`${base}/labels/${encodeURIComponent(label)}`, { method: 'PUT', json: { version: Number($('#ml-version').value) } });
    flash('');
    await refresh();
  } catch (err) {
    flash(`Could not move the label: ${err.message}${err.details ? ` (${err.details})` : ''}`);
  }
});

refresh().catch((err) => flash(err.message));
