import {
  $, PREFIX, Pager, api, badge, el, flash, number, requireSession, watcher, when,
} from './common.js';
import { trainingProgressOf } from './progress.js';

await requireSession();
const FT = '/api/v1/fine_tuning/jobs';
const RUNNING = new Set(['queued', 'running', 'paused']);

function jobLink(job) {
  return el('a', { href: `${PREFIX}/fine-tuning/${encodeURIComponent(job.id)}` }, job.id);
}

async function cancel(job) {
  try {
    await api(`${FT}/${encodeURIComponent(job.id)}/cancel`, { method: 'POST' });
    flash('');
  } catch (err) {
    flash(`Could not cancel ${job.id}: ${err.message}`);
  }
  refresh().catch((err) => flash(err.message));
}

function row(job) {
  const action = RUNNING.has(job.status)
    ? el('button', { type: 'button', class: 'danger', onclick: () => cancel(job), 'aria-label': `Cancel ${job.id}` }, 'Cancel')
    : null;
  return el('tr', { 'data-job-id': job.id, 'data-status': job.status },
    el('td', {}, jobLink(job)),
    el('td', {}, badge(job.status), job.error ? el('div', { class: 'small error' }, job.error) : null),
    el('td', {}, job.base_model), el('td', {}, job.method),
    el('td', {}, trainingProgressOf(job)),
    el('td', { class: 'model-id' }, job.fine_tuned_model || ''),
    el('td', {}, when(job.created)), el('td', {}, action));
}

const pager = new Pager($('#ft-pager'), 'jobs', async (after) => {
  const list = await api(`${FT}?limit=25${after ? `&after=${encodeURIComponent(after)}` : ''}`);
  $('#ft-jobs tbody').replaceChildren(...list.data.map(row));
  $('#ft-empty').hidden = list.data.length > 0;
  return list;
});

async function refresh() {
  const list = await pager.refresh();
  const active = list.data.some((j) => RUNNING.has(j.status));
  $('#ft-updated').textContent = active ? `updating · ${new Date().toLocaleTimeString()}` : '';
  return active;
}

const watch = watcher(refresh, 1500);

// The form: the training data is an SDG job of this key's, or a file uploaded (and checked) when chosen.
const form = $('#ft-form');
let uploaded = null; // {file, info} of the file input's current choice

function source() { return form.querySelector('input[name="ft-source"]:checked').value; }

function showSource() {
  const file = source() === 'file';
  $('#ft-sdg-field').hidden = file;
  $('#ft-file-field').hidden = !file;
  $('#ft-file-info').hidden = !file || !uploaded;
}

function showError(prefix, err) {
  const box = $('#ft-error');
  if (!err) {
    box.replaceChildren();
    box.hidden = true;
    return;
  }
  box.replaceChildren(el('strong', {}, `${prefix}: ${err.message}`), err.details ? el('div', {}, String(err.details)) : null);
  box.hidden = false;
}

async function upload() {
  const file = $('#ft-file').files[0];
  if (!file) throw new Error('Choose a training file first');
  if (uploaded && uploaded.file === file) return uploaded.info;
  const body = new FormData();
  body.append('purpose', 'fine-tune');
  body.append('file', file, file.name);
  const info = await api('/api/v1/files', { method: 'POST', body });
  uploaded = { file, info };
  $('#ft-file-info').textContent = `Uploaded ${info.filename}: ${number(info.rows)} training rows, ${number(info.bytes)} bytes`;
  showSource();
  return info;
}

function request() {
  const rank = Number($('#ft-rank').value);
  const body = {
    base_model: $('#ft-base').value,
    method: $('#ft-method').value,
    hyperparameters: {
      epochs: Number($('#ft-epochs').value),
      learning_rate: Number($('#ft-lr').value),
      batch_size: Number($('#ft-batch').value),
      lora: rank > 0 ? { r: rank, alpha: 2 * rank } : null,
    },
  };
  const suffix = $('#ft-suffix').value.trim();
  if (suffix) body.suffix = suffix;
  return body;
}

for (const radio of form.querySelectorAll('input[name="ft-source"]')) radio.addEventListener('change', showSource);
$('#ft-file').addEventListener('change', async () => {
  uploaded = null;
  showSource();
  showError('', null);
  if (!$('#ft-file').files[0]) return;
  try {
    await upload();
  } catch (err) {
    showError('The file was refused', err);
  }
});

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  showError('', null);
  const start = $('#ft-start');
  start.disabled = true;
  try {
    const body = request();
    if (source() === 'file') body.training_file = (await upload()).path;
    else if ($('#ft-sdg').value) body.sdg_job = $('#ft-sdg').value;
    else throw new Error('No completed synthetic-data job to train on: run one, or upload a file');
    const job = await api(FT, { method: 'POST', json: body });
    $('#ft-started').replaceChildren(el('p', { class: 'notice', role: 'status' }, 'Started ', jobLink(job),
      ': a worker checks its training rows, then trains.'));
    await refresh();
    watch();
  } catch (err) {
    showError('Not started', err);
  } finally {
    start.disabled = false;
  }
});

async function pickers() {
  const [models, sdg] = await Promise.all([
    api('/api/v1/models'),
    api('/api/v1/synthetic_data_generation/jobs?status=completed&limit=1000'),
  ]);
  const local = models.models.filter((m) => m.provider === 'local' && m.task !== 'embedding');
  $('#ft-base').replaceChildren(...local.map((m) => el('option', { value: m.id }, m.id)));
  $('#ft-sdg').replaceChildren(...sdg.jobs.map((j) => el('option', { value: j.job_id },
    `${j.job_id} · ${(j.params || {}).model || ''} · ${number((j.counts || {}).rows_kept)} rows kept · ${when(j.created)}`)));
  if (!sdg.jobs.length) {
    $('#ft-sdg').append(el('option', { value: '' }, 'no completed synthetic-data jobs'));
    form.querySelector('input[name="ft-source"][value="file"]').click();
  }
}

pickers().catch((err) => flash(err.message));
watch();
