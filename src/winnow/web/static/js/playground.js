import { $, api, el, errorOf, fillSelect, flash, number, requireSession, session } from './common.js';

await requireSession();
let history = [];
let controller = null;

function bubble(role, text = '') {
  const body = el('span', { class: 'content' }, text);
  const node = el('div', { class: `msg ${role}` }, el('span', { class: 'role' }, role), body);
  $('#conversation').append(node);
  return body;
}

// A turn that got no answer leaves the conversation as it was before it: its message stays on
// screen, marked with the error (and left out of the history the next send carries), and its text
// goes back into the box to edit and send again.
function failed(turn, text, outputs, message) {
  history.splice(history.indexOf(turn), 1);
  for (const output of outputs) output.parentElement.remove();
  const bubbleNode = turn.node.parentElement;
  bubbleNode.classList.add('failed');
  bubbleNode.append(el('div', { class: 'error small', role: 'alert' }, `Not sent: ${message}. This message is left out of the conversation.`));
  if (!$('#p-message').value) $('#p-message').value = text;
}

// Server-sent events from a fetch() body: "data: {json}" blocks separated by a blank line.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, '');
      const data = block.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
      if (!data) continue;
      if (data === '[DONE]') return;
      yield JSON.parse(data);
    }
  }
}

// Thumbs on a streamed answer: feedback on that generation (POST /api/v1/feedback).
function rating(generationId, index) {
  const status = el('span', { class: 'muted small', 'aria-live': 'polite' });
  const rate = async (value) => {
    try {
      await api('/api/v1/feedback', { method: 'POST', json: { generation_id: generationId, index, rating: value } });
      status.textContent = ` rated ${value}`;
    } catch (err) {
      status.textContent = ` not rated: ${err.message}`;
    }
  };
  return el('div', { class: 'actions rate' },
    el('button', { type: 'button', class: 'secondary', 'aria-label': `Rate answer ${index + 1} up`, onclick: () => rate('up') }, 'Up'),
    el('button', { type: 'button', class: 'secondary', 'aria-label': `Rate answer ${index + 1} down`, onclick: () => rate('down') }, 'Down'),
    status);
}

async function send(event) {
  event.preventDefault();
  const text = $('#p-message').value;
  if (!text.trim()) return;
  const system = $('#p-system').value.trim();
  const n = Number($('#p-n').value) || 1;
  const turn = { role: 'user', content: text };
  history.push(turn);
  Object.defineProperty(turn, 'node', { value: bubble('user', text), enumerable: false });
  $('#p-message').value = '';
  const outputs = Array.from({ length: n }, () => bubble('assistant'));
  const answers = outputs.map(() => '');
  const messages = system ? [{ role: 'system', content: system }, ...history] : [...history];
  controller = new AbortController();
  $('#send').disabled = true;
  $('#stop').disabled = false;
  $('#stats').textContent = 'waiting for the first token…';
  const started = performance.now();
  let firstToken = null;
  let chunks = 0;
  let usage = null;
  let generationId = null;
  try {
    const response = await fetch('/v1/chat/completions', {
      method: 'POST',
      signal: controller.signal,
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${session().key}` },
      body: JSON.stringify({
        model: $('#p-model').value, messages, stream: true, stream_options: { include_usage: true },
        temperature: Number($('#p-temp').value), max_tokens: Number($('#p-max').value), n,
      }),
    });
    if (!response.ok) throw await errorOf(response);
    for await (const chunk of events(response)) {
      if (chunk.usage) usage = chunk.usage;
      if (chunk.id) generationId = chunk.id;
      for (const choice of chunk.choices || []) {
        const delta = choice.delta && choice.delta.content;
        if (!delta) continue;
        if (firstToken === null) firstToken = performance.now() - started;
        chunks += 1;
        answers[choice.index] += delta;
        outputs[choice.index].textContent = answers[choice.index];
      }
    }
    history.push({ role: 'assistant', content: answers[0] });
    if (generationId) outputs.forEach((output, index) => output.after(rating(generationId, index)));
    flash('');
  } catch (err) {
    if (err.name === 'AbortError' && answers[0]) {
      history.push({ role: 'assistant', content: answers[0] }); // stopped: what came is the answer
    } else {
      failed(turn, text, outputs, err.name === 'AbortError' ? 'stopped before the first token' : err.message);
    }
  } finally {
    const total = performance.now() - started;
    const tokens = usage
      ? `${number(usage.prompt_tokens)} prompt + ${number(usage.completion_tokens)} completion tokens`
      : `${number(chunks)} streamed chunks`;
    const first = firstToken === null ? '' : `first token ${number(firstToken)} ms · `;
    $('#stats').textContent = `${first}total ${number(total)} ms · ${tokens}`;
    $('#send').disabled = false;
    $('#stop').disabled = true;
    controller = null;
  }
}

$('#chat').addEventListener('submit', send);
$('#p-message').addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) $('#chat').requestSubmit();
});
$('#stop').addEventListener('click', () => controller && controller.abort());
$('#clear').addEventListener('click', () => {
  history = [];
  $('#conversation').replaceChildren();
  $('#stats').textContent = '';
});

// ?model=<id> preselects a model (the fine-tuning page's "Try it" link); else the shipped chat model
// when it is configured (else the first).
api('/api/v1/models')
  .then((body) => fillSelect(
    $('#p-model'),
    body.models.filter((m) => m.task !== 'embedding').map((m) => m.id),
    new URLSearchParams(location.search).get('model') ?? $('#p-model').dataset.default,
  ))
  .catch((err) => flash(err.message));
