import {
  $, PREFIX, Pager, api, badge, duration, el, flash, number, promptText, requireSession, usd, watcher, when,
} from './common.js';

await requireSession();
const ACTIVE = new Set(['queued', 'running', 'paused']);
const params = new URLSearchParams(location.search);
let selected = params.get('id') || '';
let shown = null; // the id whose completed table is on screen
const watch = watcher(() => refresh(), 1500);

function progress(e) {
  const c = e.counts;
  const done = e.status === 'completed' ? Math.max(c.rows_total, 1) : c.rows_done;
  return el('div', { class: 'progress-cell' },
    el('progress', { max: Math.max(c.rows_total, 1), value: done, 'aria-label': `${e.id} progress` }),
    el('div', { class: 'small muted' }, `${number(c.rows_done)} / ${number(c.rows_total)} rows · ${number(c.generations)} generations`
      + (c.errors ? ` · ${number(c.errors)} errors` : '') + (ACTIVE.has(e.status) && e.eta_seconds != null ? ` · ETA ${duration(e.eta_seconds)}` : '')));
}

function choose(id) {
  selected = id;
  const url = new URL(location.href);
  url.searchParams.set('id', id);
  history.replaceState(null, '', url);
  refresh().catch((err) => flash(err.message));
}

const pager = new Pager($('#evals-pager'), 'evaluations', async (after) => {
  const list = await api(`/api/v1/evaluations?limit=25${after ? `&after=${encodeURIComponent(after)}` : ''}`);
  $('#evals tbody').replaceChildren(...list.evaluations.map((e) => el('tr', { 'data-eval-id': e.id, 'data-status': e.status },
    el('td', {}, el('a', { href: `${PREFIX}/evals?id=${encodeURIComponent(e.id)}`, onclick: (ev) => { ev.preventDefault(); choose(e.id); } }, e.name || e.id),
      e.name ? el('div', { class: 'small muted' }, e.id) : null),
    el('td', {}, badge(e.status)), el('td', {}, progress(e)), el('td', {}, when(e.created)),
    el('td', {}, ((e.params || {}).models || []).join(', ')),
    el('td', {}, ACTIVE.has(e.status) ? el('button', { type: 'button', class: 'danger', 'aria-label': `Cancel ${e.id}`,
      onclick: () => api(`/api/v1/evaluations/${encodeURIComponent(e.id)}/cancel`, { method: 'POST' }).then(refresh).catch((err) => flash(err.message)) }, 'Cancel') : null))));
  $('#evals-empty').hidden = list.evaluations.length > 0;
  return list;
});

async function refresh() {
  const list = await pager.refresh();
  // The chosen evaluation, also when it is on another page of the list.
  const current = list.evaluations.find((e) => e.id === selected)
    || (selected ? await api(`/api/v1/evaluations/${encodeURIComponent(selected)}`) : null);
  if (current) await detail(current);
  const active = list.evaluations.some((e) => ACTIVE.has(e.status));
  $('#evals-updated').textContent = active ? `updating · ${new Date().toLocaleTimeString()}` : '';
  return active;
}

let chart = null;
let results = [];

function drawChart(table) {
  const target = $('#eval-chart');
  if (chart) chart.destroy();
  target.replaceChildren();
  const labels = table.map((r) => `${r.template} · ${r.model}`);
  const xs = labels.map((_, i) => i);
  chart = new window.uPlot({
    width: Math.max(target.clientWidth, 280),
    height: 240,
    scales: { x: { time: false, range: [-0.6, labels.length - 0.4] }, y: { range: (u, lo, hi) => [Math.min(0, lo), Math.max(hi, 1e-9) * 1.1] } },
    axes: [{ splits: () => xs, values: (u, ticks) => ticks.map((t) => labels[t] ?? '') }, { size: 60 }],
    series: [
      { label: 'pair', value: (u, v) => (v == null ? '' : labels[v]) },
      { label: 'mean score', stroke: '#2457c5', fill: '#2457c555', width: 2, paths: window.uPlot.paths.bars({ size: [0.6, 80] }), points: { show: false },
        value: (u, v) => (v == null ? '' : number(v, 4)) },
    ],
  }, [xs, table.map((r) => r.mean_score)], target);
}

function renderResults() {
  const template = $('#r-template').value;
  const model = $('#r-model').value;
  const query = $('#r-search').value.trim().toLowerCase();
  const rows = results.filter((r) => (!template || r.template === template) && (!model || r.model === model)
    && (!query || `${r.id} ${promptText(r.prompt, null)} ${r.response || r.error || ''}`.toLowerCase().includes(query)));
  const shownRows = rows.slice(0, 200);
  $('#r-count').textContent = `${shownRows.length} of ${rows.length} rows`;
  $('#results tbody').replaceChildren(...shownRows.map((r) => el('tr', {},
    el('td', {}, r.id), el('td', {}, r.template), el('td', {}, r.model), el('td', { class: 'text' }, promptText(r.prompt, null)),
    el('td', { class: 'text' }, r.error ? el('span', { class: 'error' }, r.error) : r.response),
    el('td', { class: 'num' }, r.score === undefined ? '' : number(r.score, 4)), el('td', { class: 'num' }, number(r.latency_ms, 1)))));
}

function isBaseline(e, r) {
  if (r.baseline !== undefined) return r.baseline;
  return Boolean(e.baseline) && r.template === e.baseline.template && r.model === e.baseline.model;
}

// The baseline says so; a pair with no row to compare (all failed, on either side) has no win rate.
function winRate(e, r) {
  if (isBaseline(e, r)) return 'baseline';
  if (r.win_rate == null) return el('span', { class: 'muted', title: 'no row both this pair and the baseline answered' }, '— (no rows compared)');
  return `${number(r.win_rate * 100, 1)}% (${r.wins}/${r.ties}/${r.losses})`;
}

function options(select, values) {
  select.replaceChildren(el('option', { value: '' }, 'all'), ...values.map((v) => el('option', { value: v }, v)));
}

async function detail(e) {
  $('#detail').hidden = false;
  $('#detail-id').textContent = e.name ? `${e.name} (${e.id})` : e.id;
  const base = e.baseline ? `win rates against ${e.baseline.template} · ${e.baseline.model}` : '';
  $('#detail-summary').textContent = e.status === 'completed' ? base : `${e.status}: the table appears when it completes`;
  if (e.error) $('#detail-summary').append(el('div', { class: 'error' }, e.error));
  if (e.status !== 'completed' || !e.table || shown === e.id) return;
  shown = e.id;
  $('#comparison tbody').replaceChildren(...e.table.map((r) => el('tr', {},
    el('td', {}, r.template), el('td', {}, r.model), el('td', { class: 'num' }, number(r.rows)), el('td', { class: 'num' }, number(r.errors)),
    el('td', { class: 'num' }, r.mean_score == null ? '—' : `${number(r.mean_score, 4)} ± ${number(r.ci95, 4)}`),
    el('td', { class: 'num' }, r.min_score == null ? '—' : `${number(r.min_score, 3)} – ${number(r.max_score, 3)}`),
    el('td', { class: 'num' }, winRate(e, r)),
    el('td', { class: 'num' }, `${number(r.latency_p50_ms, 1)} / ${number(r.latency_p95_ms, 1)}`),
    el('td', { class: 'num' }, `${number(r.input_tokens)} / ${number(r.output_tokens)}`), el('td', { class: 'num' }, usd(r.cost_usd)))));
  drawChart(e.table);
  const response = await api(`/api/v1/evaluations/${encodeURIComponent(e.id)}/results`, { raw: true });
  results = (await response.text()).split('\n').filter(Boolean).map((line) => JSON.parse(line));
  options($('#r-template'), [...new Set(results.map((r) => r.template))]);
  options($('#r-model'), [...new Set(results.map((r) => r.model))]);
  renderResults();
}

for (const id of ['#r-template', '#r-model']) $(id).addEventListener('change', renderResults);
$('#r-search').addEventListener('input', renderResults);

$('#new-eval').addEventListener('submit', async (event) => {
  event.preventDefault();
  try {
    const templates = $('#e-templates').value.split('\n').map((l) => l.trim()).filter(Boolean).map((line) => {
      const cut = line.indexOf('=');
      if (cut < 1) throw new Error(`a template line must be name=template: ${line}`);
      return { name: line.slice(0, cut).trim(), template: line.slice(cut + 1) };
    });
    const file = $('#e-file').files[0];
    const form = new FormData();
    form.append('file', file, file.name);
    const uploaded = await api('/api/v1/files', { method: 'POST', body: form });
    const body = {
      dataset_path: uploaded.path, templates, models: [...$('#e-models').selectedOptions].map((o) => o.value),
      max_tokens: Number($('#e-max').value), temperature: Number($('#e-temp').value),
    };
    if ($('#e-name').value.trim()) body.name = $('#e-name').value.trim();
    if ($('#e-scoring').value.trim()) body.scoring_function = $('#e-scoring').value.trim();
    if ($('#e-reward').value) body.reward_model = $('#e-reward').value;
    const created = await api('/api/v1/evaluations', { method: 'POST', json: body });
    flash('');
    choose(created.id);
    watch();
  } catch (err) {
    flash(`Evaluation not started: ${err.message}${err.details ? ` (${err.details})` : ''}`);
  }
});

const [models, functions] = await Promise.all([api('/api/v1/models'), api('/api/v1/synthetic_data_generation/functions')]);
$('#e-models').replaceChildren(...models.models.filter((m) => m.task !== 'embedding').map((m, i) => el('option', { value: m.id, selected: i === 0 }, m.id)));
$('#e-reward').append(...functions.reward_models.map((r) => el('option', { value: r }, r)));
$('#e-scorings').replaceChildren(...functions.scoring_functions.map((f) => el('option', { value: f })));
watch();
