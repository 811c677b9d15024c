import {
  $, PREFIX, api, badge, definitions, el, flash, number, poll, requireSession, when,
} from './common.js';
import { trainingProgressOf } from './progress.js';

await requireSession();
const JOB_ID = document.body.dataset.jobId;
const BASE = `/api/v1/fine_tuning/jobs/${encodeURIComponent(JOB_ID)}`;
const RUNNING = new Set(['queued', 'running', 'paused']);

let finished = false; // the completed job's metrics, curve and model state are loaded once
let model = null; // the new model's id while it is served
let deleted = false;

// A value as the API sent it: integers grouped, fractions to six places, objects as key value pairs.
function value(v) {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'number') return Number.isInteger(v) ? number(v) : number(v, 6);
  if (typeof v === 'object') return Object.entries(v).map(([k, x]) => `${k} ${value(x)}`).join(' · ');
  return String(v);
}

function hyperparameters(h) {
  return Object.entries(h || {}).map(([name, v]) => [name.replaceAll('_', ' '),
    name === 'lora' && v === null ? 'none (every weight trains)' : value(v)]);
}

async function status() {
  const job = await api(BASE);
  if (job.status === 'completed' && !finished) {
    finished = true;
    await completed(job);
  }
  $('#ft-progress').replaceChildren(trainingProgressOf(job));
  const p = job.progress || {};
  const items = [
    ['Job', job.id], ['Status', badge(job.status)], ['Stage', job.stage],
    ['Base model', job.base_model], ['Method', job.method],
    ...(['queued', 'preparing'].includes(job.stage) ? [['Training rows', 'checked when a worker takes the job']]
      : [['Training rows', number(job.training_rows)], ['Validation rows', number(job.validation_rows)]]),
    ['New model', job.fine_tuned_model ? `${job.fine_tuned_model}${deleted ? ' (deleted)' : ''}` : '—'],
    ['Created', when(job.created)], ['Started', when(job.started)], ['Finished', when(job.finished)],
    ['Attempts', number(job.attempts)],
  ];
  if (p.tokens_per_second != null) items.push(['Tokens per second', number(p.tokens_per_second, 1)]);
  if (p.resumed_from_step != null) items.push(['Resumed from step', number(p.resumed_from_step)]);
  if (job.error) items.push(['Error', el('span', { class: 'error' }, job.error)]);
  $('#ft-summary').replaceChildren(...definitions(items));
  $('#ft-hyper').replaceChildren(...definitions(hyperparameters(job.hyperparameters)));
  $('#ft-cancel').hidden = !RUNNING.has(job.status);
  $('#ft-try').hidden = !model;
  $('#ft-delete').hidden = !model;
  if (model) $('#ft-try').href = `${PREFIX}/playground?model=${encodeURIComponent(model)}`;
  await loadEvents();
  return RUNNING.has(job.status);
}

async function completed(job) {
  if (job.metrics) {
    $('#ft-metrics').replaceChildren(...definitions(Object.entries(job.metrics).map(([k, v]) => [k.replaceAll('_', ' '), value(v)])));
    $('#ft-metrics-card').hidden = false;
  }
  const models = await api('/api/v1/models');
  model = models.models.some((m) => m.id === job.fine_tuned_model) ? job.fine_tuned_model : null;
  deleted = Boolean(job.fine_tuned_model) && !model;
  // An <img> cannot send the key, so the PNG comes through fetch() and shows from an object URL.
  const png = await api(`${BASE}/loss_curve`, { raw: true });
  $('#ft-curve').src = URL.createObjectURL(await png.blob());
  $('#ft-curve-card').hidden = false;
}

// The events, oldest first, a page at a time (after = how many to skip).
let after = 0;

async function loadEvents() {
  const limit = Number($('#ft-events-limit').value);
  const page = await api(`${BASE}/events?after=${after}&limit=${limit}`);
  $('#ft-events tbody').replaceChildren(...page.data.map((e, i) => el('tr', { 'data-type': e.type },
    el('td', { class: 'num' }, String(after + i + 1)),
    el('td', {}, when(new Date(e.created_at * 1000).toISOString())),
    el('td', {}, el('span', { class: `badge ${e.level === 'info' ? '' : 'bad'}` }, e.level)),
    el('td', { class: 'text' }, e.message))));
  $('#ft-events-prev').disabled = after === 0;
  $('#ft-events-next').disabled = !page.has_more;
  $('#ft-events-where').textContent = page.data.length
    ? `events ${number(after + 1)}–${number(after + page.data.length)}${page.has_more ? ', more after' : ''}` : 'no events';
}

function turn(to) {
  after = Math.max(0, to);
  loadEvents().catch((err) => flash(err.message));
}

$('#ft-events-next').addEventListener('click', () => turn(after + Number($('#ft-events-limit').value)));
$('#ft-events-prev').addEventListener('click', () => turn(after - Number($('#ft-events-limit').value)));
$('#ft-events-limit').addEventListener('change', () => turn(0));

$('#ft-cancel').addEventListener('click', async () => {
  try {
    await api(`${BASE}/cancel`, { method: 'POST' });
    await status();
    flash('');
  } catch (err) {
    flash(`Could not cancel: ${err.message}`);
  }
});

$('#ft-delete').addEventListener('click', async () => {
  if (!model || !window.confirm(`Delete the model ${model}? Every endpoint stops serving it and its files are removed.`)) return;
  try {
    await api(`/api/v1/models/${encodeURIComponent(model)}`, { method: 'DELETE' });
    model = null;
    deleted = true;
    flash('');
    await status();
  } catch (err) {
    flash(`Could not delete the model: ${err.message}`);
  }
});

poll(status, 1500);
