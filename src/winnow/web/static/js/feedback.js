import {
  $, ApiError, Pager, allPages, api, definitions, download, el, flash, messageText, number, promptText, requireSession, when,
} from './common.js';

await requireSession();
const SDG = '/api/v1/synthetic_data_generation';
const params = new URLSearchParams(location.search);

function ratingText(item) {
  if (item.rating === null || item.rating === undefined) return '';
  return item.rating_scale === 'stars' || typeof item.rating === 'number' ? `${item.rating}★` : String(item.rating);
}

// --- the review queue: a completed job's rows, one at a time -----------------------------------
let jobId = '';
let rows = [];
let nextOffset = 0;
let position = 0;
const given = new Map(); // "id#index" -> the latest feedback on that row
const references = new Map(); // prompt id -> its other fields in the prompts file (e.g. answer)

const keyOf = (row) => `${row.id}#${row.index}`;

async function loadMore() {
  if (nextOffset === null) return false;
  const page = await api(`${SDG}/jobs/${encodeURIComponent(jobId)}/rows?offset=${nextOffset}&limit=100`);
  rows.push(...page.rows);
  for (const [id, fields] of Object.entries(page.references || {})) references.set(id, fields);
  nextOffset = page.next_offset;
  return page.rows.length > 0;
}

function describe(item) {
  if (!item) return 'none';
  const parts = [ratingText(item), item.labels.length ? `labels: ${item.labels.join(', ')}` : '',
    item.comment ? `comment: ${item.comment}` : '', item.corrected_response ? 'corrected' : ''];
  return parts.filter(Boolean).join(' · ') || 'none';
}

function show(note = '') {
  const row = rows[position];
  const total = nextOffset === null ? `${rows.length}` : `${rows.length}+`;
  const reviewed = rows.filter((r) => given.has(keyOf(r))).length;
  $('#q-where').textContent = `Sample ${position + 1} of ${total} · ${reviewed} reviewed${note ? ` · ${note}` : ''}`;
  $('#q-progress').max = Math.max(rows.length, 1);
  $('#q-progress').value = reviewed;
  if (!row) return;
  $('#q-id').textContent = `${row.id} #${row.index}`;
  $('#q-prompt').textContent = promptText(row.prompt);
  $('#q-response').textContent = messageText(row.response);
  $('#q-score').textContent = `score ${number(row.score, 4)} · raw ${number(row.raw_score, 4)}`;
  const reference = Object.entries(references.get(row.id) || {});
  $('#q-reference').replaceChildren(...definitions(reference.map(([name, value]) => [name, typeof value === 'string' ? value : JSON.stringify(value)])));
  $('#q-reference-box').hidden = reference.length === 0;
  const current = given.get(keyOf(row));
  $('#q-current').textContent = describe(current);
  $('#q-labels').value = current ? current.labels.join(', ') : '';
  $('#q-comment').value = current?.comment || '';
  $('#q-correction').value = current?.corrected_response || '';
}

const unreviewedOnly = () => $('#q-unreviewed').checked;

// The next row in direction ``step`` (1 or -1), skipping reviewed rows when "Unreviewed only" is on;
// pages of the output are read as the queue reaches them. False when there is none.
async function move(step) {
  let target = position + step;
  for (;;) {
    if (target < 0) return false;
    if (target >= rows.length && !(await loadMore())) {
      show(unreviewedOnly() ? 'no unreviewed sample after this one' : 'the last sample');
      return false;
    }
    if (!unreviewedOnly() || !given.has(keyOf(rows[target]))) break;
    target += step;
  }
  position = target;
  show();
  return true;
}


async function give(judgement) {
  const row = rows[position];
  if (!row) return null;
  try {
    const item = await api('/api/v1/feedback', { method: 'POST', json: { job_id: jobId, id: row.id, index: row.index, ...judgement } });
    given.set(keyOf(row), item);
    flash('');
    refreshList();
    return item;
  } catch (err) {
    flash(`Feedback not saved: ${err.message}${err.details ? ` (${err.details})` : ''}`);
    return null;
  }
}

async function rate(value) {
  const rating = /^[1-5]$/.test(value) ? Number(value) : value;
  if (await give({ rating })) {
    await move(1);
  }
}

// A queue over the job's rows from byte ``offset`` (a page of the sample browser) on, at row ``at``.
async function openJob(id, offset = 0, at = '') {
  jobId = id;
  rows = [];
  nextOffset = offset;
  position = 0;
  given.clear();
  $('#queue').hidden = !id;
  if (!id) return;
  references.clear();
  const existing = await allPages('/api/v1/feedback', { job_id: id });
  for (const item of existing.reverse()) given.set(`${item.row_id}#${item.index}`, item);
  await loadMore();
  position = Math.max(rows.findIndex((row) => keyOf(row) === at), 0);
  if (!at && unreviewedOnly() && rows[position] && given.has(keyOf(rows[position]))) {
    if (!(await move(1))) position = 0;
  }
  show();
  $('#flt-job').value = id;
  listPager.reset();
  refreshList();
}

for (const button of document.querySelectorAll('[data-rating]')) {
  button.addEventListener('click', () => rate(button.dataset.rating));
}
$('#q-next').addEventListener('click', () => move(1));
$('#q-prev').addEventListener('click', () => move(-1));
$('#q-unreviewed').addEventListener('change', async () => {
  if (unreviewedOnly() && rows[position] && given.has(keyOf(rows[position]))) await move(1);
  else show();
});
$('#q-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const labels = $('#q-labels').value.split(',').map((l) => l.trim()).filter(Boolean);
  const judgement = { labels };
  if ($('#q-comment').value.trim()) judgement.comment = $('#q-comment').value;
  if ($('#q-correction').value.trim()) judgement.corrected_response = $('#q-correction').value;
  const current = given.get(keyOf(rows[position]));
  if (current && current.rating !== null && current.rating !== undefined) judgement.rating = current.rating;
  if (!labels.length && !judgement.comment && !judgement.corrected_response) {
    flash('Write a label, a comment or a correction first.');
    return;
  }
  if (await give(judgement)) {
    show();
    document.activeElement.blur();
  }
});

const FOCUS = { l: '#q-labels', c: '#q-comment', e: '#q-correction' };
document.addEventListener('keydown', (event) => {
  if ($('#queue').hidden || event.altKey || event.metaKey) return;
  const typing = event.target.closest('input, textarea, select');
  if (typing) {
    if (event.key === 'Escape') event.target.blur();
    else if (event.key === 'Enter' && event.ctrlKey && event.target.closest('#q-form')) $('#q-form').requestSubmit();
    return;
  }
  if (event.ctrlKey) return;
  const key = event.key;
  let handled = true;
  if (key === 'u') rate('up');
  else if (key === 'd') rate('down');
  else if (/^[1-5]$/.test(key)) rate(key);
  else if (key === 'j' || key === 'ArrowRight') move(1);
  else if (key === 'k' || key === 'ArrowLeft') move(-1);
  else if (FOCUS[key]) $(FOCUS[key]).focus();
  else handled = false;
  if (handled) event.preventDefault();
});

$('#q-job').addEventListener('change', () => {
  const url = new URL(location.href);
  if ($('#q-job').value) url.searchParams.set('job', $('#q-job').value);
  else url.searchParams.delete('job');
  history.replaceState(null, '', url);
  openJob($('#q-job').value).catch((err) => flash(err.message));
});

// --- the feedback list and the exports ------------------------------------------------------------
const listPager = new Pager($('#feedback-pager'), 'feedback', async (after) => {
  const query = new URLSearchParams({ limit: '50' });
  if ($('#flt-job').value.trim()) query.set('job_id', $('#flt-job').value.trim());
  if ($('#flt-label').value.trim()) query.set('label', $('#flt-label').value.trim());
  if (after) query.set('after', after);
  const body = await api(`/api/v1/feedback?${query}`);
  $('#feedback-empty').hidden = body.items.length > 0;
  $('#feedback tbody').replaceChildren(...body.items.map((item) => el('tr', { 'data-feedback-id': item.id },
      el('td', {}, when(item.created_at)),
      el('td', {}, item.target === 'sdg_row' ? `${item.job_id} ${item.row_id} #${item.index}` : `${item.generation_id} #${item.index}`),
      el('td', {}, ratingText(item)),
      el('td', {}, item.labels.map((label) => el('span', { class: 'label' }, label))),
      el('td', { class: 'text' }, item.comment || ''),
      el('td', { class: 'text' }, item.response || ''),
      el('td', { class: 'text' }, item.corrected_response || ''))));
  return body;
});

async function refreshList() {
  try {
    await listPager.refresh();
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 400) throw err;
    flash(`Filter refused: ${err.message}`);
  }
}

$('#filters').addEventListener('submit', (event) => {
  event.preventDefault();
  listPager.reset();
  refreshList().catch((err) => flash(err.message));
});

async function exportAs(format) {
  const response = await api(`/api/v1/feedback/export?format=${format}`, { raw: true });
  const count = response.headers.get('X-Winnow-Rows') || '0';
  const why = response.headers.get('X-Winnow-Empty-Reason');
  $('#export-result').textContent = `${format}: ${count} rows${why ? ` (empty: ${why})` : ''}`;
  download(await response.blob(), `feedback-${format}.jsonl`);
}
$('#export-preference').addEventListener('click', () => exportAs('preference').catch((err) => flash(err.message)));
$('#export-sft').addEventListener('click', () => exportAs('sft').catch((err) => flash(err.message)));

const jobs = await api(`${SDG}/jobs?status=completed&limit=1000`);
const select = $('#q-job');
select.append(...jobs.jobs.map((j) => el('option', { value: j.job_id }, `${j.job_id} · ${(j.params || {}).model || ''} · ${when(j.created)}`)));
const wanted = params.get('job');
if (wanted) {
  if (![...select.options].some((o) => o.value === wanted)) select.append(el('option', { value: wanted }, wanted));
  select.value = wanted;
  await openJob(wanted, Number(params.get('offset')) || 0, params.get('at') || '').catch((err) => flash(err.message));
} else {
  await refreshList();
}

