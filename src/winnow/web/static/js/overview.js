import { $, api, badge, definitions, el, errorOf, flash, number, requireSession, usd, when } from './common.js';

await requireSession();
const DAYS = 14;
const INTEGER_STEPS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8].map((p) => m * p)).sort((a, b) => a - b);
const COLORS = ['#2457c5', '#e8710a', '#1f7a3d', '#b42318', '#7b3fb5', '#0f8b8d', '#a15c00', '#5b6475'];

async function health() {
  const list = $('#health');
  const [live, readyResponse] = await Promise.all([api('/api/v1/health'), fetch('/api/v1/ready')]);
  const ready = readyResponse.status === 200 || readyResponse.status === 503 ? await readyResponse.json() : null;
  if (!ready) throw await errorOf(readyResponse);
  const rows = [
    ['Liveness', badge(live.status === 'healthy' ? 'ok' : 'bad'), ` ${live.status}`],
    ['Version', live.version],
    ['Ready', badge(ready.ready ? 'ok' : 'bad'), ready.ready ? ' ready' : ` not ready: ${ready.failing.join(', ')}`],
  ];
  for (const [name, value] of Object.entries(ready.checks || {})) {
    rows.push([`check: ${name}`, typeof value === 'object' ? JSON.stringify(value) : String(value)]);
  }
  list.replaceChildren(...definitions(rows));
}

async function models() {
  const body = await api('/api/v1/models');
  $('#models tbody').replaceChildren(...body.models.map((m) => el('tr', {},
    el('td', {}, el('strong', {}, m.id), m.name && m.name !== m.id ? el('div', { class: 'muted small' }, m.name) : null),
    el('td', {}, m.type), el('td', {}, m.provider), el('td', {}, badge(m.status)),
    el('td', { class: 'num' }, number(m.context_length)))));
}

async function budget() {
  const b = await api('/api/v1/usage/budget');
  const box = $('#budget');
  const items = [['Key', b.key]];
  if (!b.budget || (b.budget.usd == null && b.budget.tokens == null)) {
    items.push(['Budget', 'none (no cap)']);
    box.replaceChildren(el('dl', { class: 'kv' }, definitions(items)));
    return;
  }
  const cap = b.budget;
  items.push(['Period', `${cap.period}${b.resets_at ? `, resets ${when(b.resets_at)}` : ''}`]);
  const meters = [];
  if (cap.usd != null) {
    items.push(['Spend', `${usd(b.spent_usd)} of ${usd(cap.usd)} · ${usd(b.remaining_usd)} left`]);
    meters.push(el('label', {}, 'USD used', el('meter', { min: 0, max: cap.usd, value: b.spent_usd, high: cap.usd * 0.8, optimum: 0 })));
  }
  if (cap.tokens != null) {
    items.push(['Tokens', `${number(b.spent_tokens)} of ${number(cap.tokens)} · ${number(b.remaining_tokens)} left`]);
    meters.push(el('label', {}, 'Tokens used', el('meter', { min: 0, max: cap.tokens, value: b.spent_tokens, high: cap.tokens * 0.8, optimum: 0 })));
  }
  box.replaceChildren(el('dl', { class: 'kv' }, definitions(items)), ...meters);
}

let chart = null;
let daily = null;

function drawChart() {
  const metric = $('#usage-metric').value;
  const target = $('#usage-chart');
  const xs = daily.days.map((d) => Date.parse(`${d}T00:00:00Z`) / 1000);
  const index = new Map(daily.days.map((d, i) => [d, i]));
  const series = daily.models.map(() => daily.days.map(() => 0));
  for (const row of daily.rows) series[daily.models.indexOf(row.model)][index.get(row.day)] = row[metric];
  if (chart) chart.destroy();
  target.replaceChildren();
  if (daily.models.length === 0) {
    target.append(el('p', { class: 'muted' }, 'No usage in these days.'));
    chart = null;
    return;
  }
  const bars = window.uPlot.paths.bars({ size: [0.8, 48], align: 0 });
  const width = Math.max(target.clientWidth, 280);
  chart = new window.uPlot({
    width,
    height: 280,
    tzDate: (ts) => window.uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
    scales: {
      x: { time: true, range: (u, lo, hi) => [lo - 43200, hi + 43200] },
      y: { range: (u, lo, hi) => [0, Math.max(hi, metric === 'cost_usd' ? 1e-6 : 1) * 1.1] },
    },
    axes: [{}, {
      size: 70,
      incrs: metric === 'cost_usd' ? undefined : INTEGER_STEPS,
      values: (u, ticks) => ticks.map((v) => (metric === 'cost_usd' ? usd(v) : number(v))),
    }],
    series: [
      { label: 'day (UTC)', value: (u, v) => (v == null ? '' : new Date(v * 1000).toISOString().slice(0, 10)) },
      ...daily.models.map((model, i) => ({
        label: model,
        stroke: COLORS[i % COLORS.length],
        fill: `${COLORS[i % COLORS.length]}55`,
        width: 2,
        paths: daily.models.length === 1 ? bars : undefined,
        points: { show: true },
        value: (u, v) => (metric === 'cost_usd' ? usd(v) : number(v)),
      })),
    ],
  }, [xs, ...series], target);
}

async function usage() {
  daily = await api(`/api/v1/usage/daily?days=${DAYS}`);
  $('#usage-days').textContent = String(daily.days.length);
  drawChart();
  const from = encodeURIComponent(daily.from);
  const totals = await api(`/api/v1/usage?group_by=model&from=${from}`);
  $('#usage-table tbody').replaceChildren(...totals.rows.map((r) => el('tr', {},
    el('td', {}, r.group), el('td', { class: 'num' }, number(r.requests)), el('td', { class: 'num' }, number(r.total_tokens)),
    el('td', { class: 'num' }, usd(r.cost_usd)), el('td', { class: 'num' }, number(r.avg_latency_ms, 1)))));
}

let stats = null;

function drawSpend() {
  const by = $('#spend-by').value;
  $('#spend-group').textContent = by === 'key' ? 'Key' : 'Model';
  const sums = new Map();
  for (const r of stats.spend) {
    const name = `${r.day}\u0000${r[by]}`;
    const sum = sums.get(name) || { day: r.day, group: r[by], requests: 0, cost_usd: 0 };
    sum.requests += r.requests;
    sum.cost_usd += r.cost_usd;
    sums.set(name, sum);
  }
  const rows = [...sums.values()].sort((a, b) => b.day.localeCompare(a.day) || b.cost_usd - a.cost_usd);
  $('#spend tbody').replaceChildren(...rows.map((r) => el('tr', {}, el('td', {}, r.day), el('td', { class: 'model-id' }, r.group),
    el('td', { class: 'num' }, number(r.requests)), el('td', { class: 'num' }, usd(r.cost_usd)))));
  $('#spend-empty').hidden = rows.length > 0;
}

async function traffic() {
  stats = await api(`/api/v1/requests/stats?days=${DAYS}`);
  const a = stats.api;
  const ms = (v) => (v == null ? '—' : `${number(v, 1)} ms`);
  $('#api-stats').replaceChildren(...definitions([
    ['Calls', number(a.requests)], ['Errors', number(a.errors)],
    ['p50', ms(a.p50_ms)], ['p95', ms(a.p95_ms)], ['p99', ms(a.p99_ms)], ['First byte p50', ms(a.ttft_p50_ms)],
  ]));
  $('#traffic tbody').replaceChildren(...stats.traffic.map((t) => el('tr', { 'data-kind': t.kind },
    el('td', {}, t.kind === 'api' ? 'API calls' : 'Jobs (SDG, evaluations, CLI)'),
    el('td', { class: 'num' }, number(t.requests)), el('td', { class: 'num' }, usd(t.cost_usd)))));
  drawSpend();
}

$('#spend-by').addEventListener('change', drawSpend);
$('#usage-metric').addEventListener('change', drawChart);
let resizeTimer = null;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => { if (chart) chart.setSize({ width: Math.max($('#usage-chart').clientWidth, 280), height: 280 }); }, 100);
});

const results = await Promise.allSettled([health(), models(), budget(), usage(), traffic()]);
const failed = results.filter((r) => r.status === 'rejected').map((r) => r.reason.message);
if (failed.length) flash(failed.join(' · '));
