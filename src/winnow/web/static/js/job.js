import {
  $, PREFIX, api, badge, definitions, download, duration, el, flash, messageText, number, poll, promptText, requireSession, usd, when,
} from './common.js';
import { ACTIVE, progressOf } from './progress.js';

await requireSession();
const JOB_ID = document.body.dataset.jobId;
const BASE = `/api/v1/synthetic_data_generation/jobs/${encodeURIComponent(JOB_ID)}`;

let loadedResults = false;

async function status() {
  const job = await api(`/api/v1/synthetic_data_generation/job_status?job_id=${encodeURIComponent(JOB_ID)}`);
  const p = job.params || {};
  const f = p.filtering_function || {};
  $('#progress').replaceChildren(progressOf(job));
  const items = [
    ['Job', job.job_id], ['Status', badge(job.status)], ['Stage', job.stage || ''],
    ['Model', p.model || ''], ['Reward model', p.reward_model || ''], ['Scoring', p.scoring_function || ''],
    ['Filter', `${f.name || ''}${f.params && Object.keys(f.params).length ? ` ${JSON.stringify(f.params)}` : ''}`],
    ['Prompts file', p.prompts_path || ''],
    ['Generations per prompt (n)', number(p.num_generations)],
    ['Temperature', number(p.temperature, 3)], ['Top p', number(p.top_p, 3)],
    ['Max tokens per response', number(p.max_gen_len)],
    ['Seed', p.seed === null || p.seed === undefined ? 'none (random)' : String(p.seed)],
    ['Batch size', number(p.batch_size)],
    ['Created', when(job.created)], ['Started', when(job.started)], ['Finished', when(job.finished)],
    ['Duration', job.duration_seconds == null ? '—' : `${duration(job.duration_seconds)}${job.finished ? '' : ' so far'}`],
    ['Tokens', `${number(job.counts.input_tokens)} in · ${number(job.counts.output_tokens)} out`],
    ['Cost', `${usd(job.cost_usd)}${job.finished ? '' : ' so far'}`],
  ];
  if (p.system_prompt) items.splice(4, 0, ['System prompt', p.system_prompt]);
  if (ACTIVE.has(job.status) && job.eta_seconds != null) items.push(['ETA', duration(job.eta_seconds)]);
  if (job.error) items.push(['Error', el('span', { class: 'error' }, job.error)]);
  $('#summary').replaceChildren(...definitions(items));
  $('#cancel').hidden = !ACTIVE.has(job.status);
  if (job.status === 'completed' && !loadedResults) {
    loadedResults = true;
    await results();
  }
  return ACTIVE.has(job.status);
}

async function results() {
  $('#download').hidden = false;
  $('#review').hidden = false;
  const summary = await api(`${BASE}/summary`);
  const extra = [];
  if (summary.kept_ratio !== undefined) extra.push(['Kept ratio', number(summary.kept_ratio, 3)]);
  for (const [name, stats] of Object.entries(summary)) {
    if (stats && typeof stats === 'object' && 'mean' in stats) {
      extra.push([name.replaceAll('_', ' '), `mean ${number(stats.mean, 3)} · min ${number(stats.min, 3)} · max ${number(stats.max, 3)} · n ${number(stats.count)}`]);
    }
  }
  const d = summary.diversity; // jobs with a semantic filter (winnow.sdg.semantic)
  if (d) {
    const sampled = d.sampled < d.responses ? ` (a sample of ${number(d.sampled)} of ${number(d.responses)})` : '';
    extra.push(['Diversity', `mean pairwise cosine distance ${number(d.mean_pairwise_cosine_distance, 3)}${sampled}`]);
    extra.push(['Clusters', `${number(d.clusters)} at cosine ${number(d.threshold, 2)} (${d.model})`]);
  }
  $('#summary').append(...definitions(extra));
  const png = await api(`${BASE}/histogram`, { raw: true });
  $('#histogram').src = URL.createObjectURL(await png.blob());
  $('#hist-card').hidden = false;
  $('#rows-card').hidden = false;
  await loadPage(0);
}

// The sample browser: pages by byte offset; Previous walks back through the offsets seen.
let offsets = [0];
let current = null;

async function loadPage(offset) {
  const limit = Number($('#rows-limit').value);
  current = await api(`${BASE}/rows?offset=${offset}&limit=${limit}`);
  renderRows();
  $('#rows-prev').disabled = offsets.length <= 1;
  $('#rows-next').disabled = current.next_offset === null;
  const page = offsets.length;
  $('#rows-where').textContent = `page ${page} · bytes ${number(current.offset)}–${number(current.next_offset ?? current.size_bytes)} of ${number(current.size_bytes)}`;
}

function renderRows() {
  const query = $('#rows-search').value.trim().toLowerCase();
  const order = $('#rows-sort').value;
  let rows = current.rows.map((r) => {
    return { ...r, promptText: promptText(r.prompt), responseText: messageText(r.response) };
  });
  if (query) rows = rows.filter((r) => `${r.id} ${r.promptText} ${r.responseText}`.toLowerCase().includes(query));
  if (order !== 'file') rows.sort((a, b) => (order === 'desc' ? b.score - a.score : a.score - b.score));
  $('#rows tbody').replaceChildren(...rows.map((r) => el('tr', {},
    el('td', {}, r.id), el('td', { class: 'num' }, String(r.index)),
    el('td', { class: 'text' }, r.promptText), el('td', { class: 'text' }, r.responseText),
    el('td', { class: 'num' }, number(r.score, 4)), el('td', { class: 'num' }, number(r.raw_score, 4)),
    el('td', {}, el('a', { href: reviewLink(r), 'aria-label': `Rate ${r.id} #${r.index}` }, 'Rate')))));
}

// The review queue, starting at this page of the output, on this row.
function reviewLink(row) {
  const query = new URLSearchParams({ job: JOB_ID, offset: String(current.offset), at: `${row.id}#${row.index}` });
  return `${PREFIX}/feedback?${query}`;
}

$('#rows-next').addEventListener('click', () => {
  if (current.next_offset === null) return;
  offsets.push(current.next_offset);
  loadPage(current.next_offset).catch((err) => flash(err.message));
});
$('#rows-prev').addEventListener('click', () => {
  if (offsets.length <= 1) return;
  offsets.pop();
  loadPage(offsets[offsets.length - 1]).catch((err) => flash(err.message));
});
$('#rows-limit').addEventListener('change', () => { offsets = [0]; loadPage(0).catch((err) => flash(err.message)); });
$('#rows-search').addEventListener('input', renderRows);
$('#rows-sort').addEventListener('change', renderRows);

$('#download').addEventListener('click', async () => {
  try {
    const response = await api(`${BASE}/output`, { raw: true });
    download(await response.blob(), `${JOB_ID}.jsonl`);
  } catch (err) {
    flash(`Download failed: ${err.message}`);
  }
});

$('#cancel').addEventListener('click', async () => {
  try {
    await api(`${BASE}/cancel`, { method: 'POST' });
    await status();
  } catch (err) {
    flash(`Could not cancel: ${err.message}`);
  }
});

poll(status, 1500);
