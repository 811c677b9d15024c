import { $, PREFIX, api, badge, definitions, el, flash, number, requireSession, usd, when } from './common.js';

await requireSession();
const id = document.body.dataset.requestId;

function summary(call) {
  const items = [
    ['Time', when(call.created_at)],
    ['Call', `${call.method} ${call.path}`],
    ['Status', badge(call.status < 400 ? 'ok' : 'bad'), ` ${call.status}${call.error_code ? ` · ${call.error_code}` : ''}`],
    ['Key', call.key || '— (no valid key)'],
    ['Model', call.model || '—'],
    ['Deployment', call.deployment ? `${call.deployment} after ${call.attempts} attempt(s)` : '—'],
    ['Cache', call.cached ? 'hit (no upstream cost)' : 'no'],
    ['Latency', `${number(call.latency_ms, 1)} ms`],
    ['First byte', call.ttft_ms == null ? '—' : `${number(call.ttft_ms, 1)} ms`],
    ['Tokens', `${number(call.input_tokens)} in · ${number(call.output_tokens)} out`],
    ['Cost', usd(call.cost_usd)],
    ['Request id', el('code', {}, call.request_id)],
    ['Generation id', call.generation_id ? el('code', {}, call.generation_id) : '—'],
  ];
  $('#summary').replaceChildren(...definitions(items));
}

function attempts(call) {
  const total = Math.max(call.latency_ms, 1);
  $('#attempts tbody').replaceChildren(...call.attempt_log.map((a, i) => {
    const bar = el('span', { class: `bar ${a.error ? 'bad' : 'ok'}` });
    bar.style.marginLeft = `${Math.min(100, (a.start_ms / total) * 100)}%`;
    bar.style.width = `${Math.max(1, Math.min(100, (a.duration_ms / total) * 100))}%`;
    return el('tr', { 'data-deployment': a.deployment },
      el('td', {}, String(i + 1)), el('td', {}, a.deployment), el('td', { class: 'model-id' }, a.model),
      el('td', { class: 'num' }, number(a.start_ms, 1)), el('td', { class: 'num' }, number(a.duration_ms, 1)),
      el('td', {}, a.error ? badge('bad') : badge('ok'), ` ${a.error || 'answered'}`),
      el('td', { class: 'timeline' }, bar));
  }));
  $('#attempts-none').hidden = call.attempt_log.length > 0;
}

function bodies(call) {
  $('#request-body').textContent = call.request_body ?? '';
  $('#response-body').textContent = call.response_body ?? '';
  $('#bodies-none').hidden = call.bodies_stored;
  for (const pre of document.querySelectorAll('pre.body')) pre.hidden = !call.bodies_stored;
}

async function feedback(call) {
  const box = $('#feedback');
  if (!call.generation_id) {
    box.replaceChildren(el('p', { class: 'muted' }, 'No generation to rate (the call produced none).'));
    return;
  }
  const list = await api(`/api/v1/feedback?generation_id=${encodeURIComponent(call.generation_id)}`);
  box.replaceChildren(list.items.length
    ? el('ul', {}, list.items.map((f) => el('li', {}, `${when(f.created_at)} · rating ${f.rating ?? '—'}`,
      f.comment ? ` · ${f.comment}` : '', (f.labels || []).length ? ` · ${f.labels.join(', ')}` : '')))
    : el('p', { class: 'muted' }, 'No feedback yet.'));
  const status = el('span', { class: 'muted small', 'aria-live': 'polite' });
  const rate = async (value) => {
    try {
      await api('/api/v1/feedback', { method: 'POST', json: { generation_id: call.generation_id, index: 0, rating: value } });
      status.textContent = ` rated ${value}`;
      await feedback(call);
    } catch (err) {
      status.textContent = ` not rated: ${err.message}`;
    }
  };
  $('#give').replaceChildren(
    el('button', { type: 'button', class: 'secondary', onclick: () => rate('up') }, 'Rate up'),
    el('button', { type: 'button', class: 'secondary', onclick: () => rate('down') }, 'Rate down'),
    el('a', { href: `${PREFIX}/feedback` }, 'Review feedback'), status);
}

try {
  const call = await api(`/api/v1/requests/${encodeURIComponent(id)}`);
  summary(call);
  attempts(call);
  bodies(call);
  await feedback(call);
} catch (err) {
  flash(err.message);
}
