import {
  $, PREFIX, Pager, api, badge, definitions, el, fillSelect, flash, number, requireSession, usd, watcher, when,
} from './common.js';
import { ACTIVE, progressOf } from './progress.js';

await requireSession();
const JOBS = '/api/v1/synthetic_data_generation';

function filterOf(job) {
  const f = (job.params || {}).filtering_function;
  if (!f) return '';
  const params = f.params && Object.keys(f.params).length ? ` ${JSON.stringify(f.params)}` : '';
  return `${f.name}${params}`;
}

async function cancel(job) {
  try {
    await api(`${JOBS}/jobs/${encodeURIComponent(job.job_id)}/cancel`, { method: 'POST' });
    flash('');
  } catch (err) {
    flash(`Could not cancel ${job.job_id}: ${err.message}`);
  }
  refresh();
}

function row(job) {
  const link = el('a', { href: `${PREFIX}/jobs/${encodeURIComponent(job.job_id)}` }, job.job_id);
  const action = ACTIVE.has(job.status)
    ? el('button', { type: 'button', class: 'danger', onclick: () => cancel(job), 'aria-label': `Cancel ${job.job_id}` }, 'Cancel')
    : null;
  return el('tr', { 'data-job-id': job.job_id, 'data-status': job.status },
    el('td', {}, link), el('td', {}, badge(job.status), job.stage && job.stage !== job.status ? el('div', { class: 'small muted' }, job.stage) : null),
    el('td', {}, progressOf(job)), el('td', {}, when(job.created)), el('td', {}, (job.params || {}).model || ''),
    el('td', {}, filterOf(job)), el('td', {}, action));
}

// The list's filters as the API's query: status, model, and a window of local calendar days.
function filters() {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if ($('#flt-status').value) query.set('status', $('#flt-status').value);
  if ($('#flt-model').value.trim()) query.set('model', $('#flt-model').value.trim());
  const from = $('#flt-from').valueAsDate;
  const to = $('#flt-to').valueAsDate;
  // valueAsDate is UTC midnight of the chosen day; the user means their own day.
  const local = (d, days = 0) => new Date(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + days).toISOString();
  if (from) query.set('created_after', local(from));
  if (to) query.set('created_before', local(to, 1));
  return query;
}

const PAGE_SIZE = 50;
const pager = new Pager($('#jobs-pager'), 'jobs', async (after) => {
  const query = filters();
  if (after) query.set('after', after);
  const list = await api(`${JOBS}/jobs?${query}`);
  $('#jobs tbody').replaceChildren(...list.jobs.map(row));
  const filtered = [...query.keys()].some((k) => k !== 'limit' && k !== 'after');
  $('#jobs-empty').textContent = filtered ? 'No jobs match these filters.' : 'No jobs yet.';
  $('#jobs-empty').hidden = list.jobs.length > 0;
  return list;
});

async function refresh() {
  const list = await pager.refresh();
  const active = list.jobs.some((j) => ACTIVE.has(j.status));
  $('#jobs-updated').textContent = active ? `updating · ${new Date().toLocaleTimeString()}` : '';
  return active;
}

$('#job-filters').addEventListener('submit', (event) => {
  event.preventDefault();
  pager.reset();
  refresh().then((active) => { if (active) watch(); }).catch((err) => flash(err.message));
});

const watch = watcher(refresh, 1500);

// The submit form: upload the file once per choice, dry-run for the estimate, then submit.
const form = $('#submit');
const submitButton = $('#submit-job');
let uploaded = null;
let estimated = null;

function invalidate() {
  estimated = null;
  submitButton.disabled = true;
  $('#estimate-out').replaceChildren();
}

form.addEventListener('input', invalidate);
$('#f-file').addEventListener('change', () => { uploaded = null; });

async function upload() {
  const file = $('#f-file').files[0];
  if (!file) throw new Error('Choose a prompts file first');
  if (uploaded && uploaded.file === file) return uploaded.info;
  const body = new FormData();
  body.append('file', file, file.name);
  const info = await api('/api/v1/files', { method: 'POST', body });
  uploaded = { file, info };
  return info;
}

function spec(path) {
  let params;
  try { params = JSON.parse($('#f-params').value || '{}'); } catch { throw new Error('Filter params must be JSON, e.g. {"threshold": 0.5}'); }
  return {
    model: $('#f-model').value,
    reward_model: $('#f-reward').value,
    prompts_path: path,
    scoring_function: $('#f-scoring').value,
    filtering_function: { name: $('#f-filter').value, params },
    num_generations: Number($('#f-n').value),
    max_gen_len: Number($('#f-max').value),
    temperature: Number($('#f-temp').value),
    batch_size: Number($('#f-batch').value),
  };
}

function showEstimate(info, e) {
  const items = [
    ['File', `${info.filename} · ${number(info.rows)} prompts · ${number(info.bytes)} bytes`],
    ['Generations', number(e.generations)],
    ['Input tokens', number(e.input_tokens)],
    ['Output tokens (at most)', number(e.max_output_tokens)],
    ['Cost (at most)', usd(e.max_cost_usd)],
    ['Fits the key\'s budget', e.fits_budget ? 'yes' : 'no'],
  ];
  if (e.budget_remaining_usd != null) items.push(['Budget left', usd(e.budget_remaining_usd)]);
  $('#estimate-out').replaceChildren(el('div', { class: 'notice' }, el('strong', {}, 'Dry-run estimate'),
    el('dl', { class: 'kv', id: 'estimate-table' }, definitions(items))));
}

$('#estimate').addEventListener('click', async () => {
  invalidate();
  try {
    const info = await upload();
    const body = spec(info.path);
    const answer = await api(`${JOBS}/submit_job`, { method: 'POST', json: { ...body, dry_run: true } });
    estimated = body;
    showEstimate(info, answer.estimate);
    submitButton.disabled = false;
    flash('');
  } catch (err) {
    flash(`Estimate failed: ${err.message}${err.details ? ` (${err.details})` : ''}`);
  }
});

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  if (!estimated) return;
  try {
    const job = await api(`${JOBS}/submit_job`, { method: 'POST', json: estimated });
    invalidate();
    $('#estimate-out').replaceChildren(el('p', { class: 'notice', role: 'status' }, 'Submitted ',
      el('a', { href: `${PREFIX}/jobs/${encodeURIComponent(job.job_id)}` }, job.job_id), '.'));
    flash('');
    await refresh();
    watch();
  } catch (err) {
    flash(`Submit failed: ${err.message}${err.details ? ` (${err.details})` : ''}`);
  }
});

async function pickers() {
  const [models, functions] = await Promise.all([api('/api/v1/models'), api(`${JOBS}/functions`)]);
  fillSelect($('#f-model'), models.models.filter((m) => m.task !== 'embedding').map((m) => m.id));
  $('#flt-models').replaceChildren(...models.models.map((m) => el('option', { value: m.id })));
  fillSelect($('#f-reward'), functions.reward_models);
  fillSelect($('#f-scoring'), functions.scoring_functions, 'raw');
  fillSelect($('#f-filter'), functions.filters, 'none');
}

pickers().catch((err) => flash(err.message));
watch();
