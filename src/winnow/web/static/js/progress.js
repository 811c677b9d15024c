import { duration, el, number } from './common.js';

export const ACTIVE = new Set(['queued', 'running']);

// A job's progress bar and counts, exactly as job_status reports them.
export function progressOf(job) {
  const c = job.counts || {};
  const total = c.prompts_total || 0;
  const done = c.prompts_generated || 0;
  const bar = el('progress', { max: Math.max(total, 1), value: job.status === 'completed' ? Math.max(total, 1) : done,
    'aria-label': `${job.job_id} progress` });
  const text = `${number(done)} / ${number(total)} prompts · ${number(c.responses_scored)} scored · ${number(c.rows_kept)} kept`
    + (c.errors ? ` · ${number(c.errors)} errors` : '')
    + (ACTIVE.has(job.status) && job.eta_seconds != null ? ` · ETA ${duration(job.eta_seconds)}` : '');
  return el('div', { class: 'progress-cell' }, bar, el('div', { class: 'small muted' }, text));
}

// A fine-tuning job's progress bar: step of total steps, with the latest losses, as the API reports them.
export function trainingProgressOf(job) {
  const p = job.progress || {};
  const total = p.total_steps || 0;
  const bar = el('progress', { max: Math.max(total, 1), value: job.status === 'completed' ? Math.max(total, 1) : p.step || 0,
    'aria-label': `${job.id} progress` });
  const parts = [total ? `${number(p.step)} / ${number(total)} steps` : `step ${number(p.step)}`];
  if (p.epoch) parts.push(`epoch ${number(p.epoch, 2)}`);
  if (p.train_loss != null) parts.push(`loss ${number(p.train_loss, 4)}`);
  if (p.validation_loss != null) parts.push(`validation loss ${number(p.validation_loss, 4)}`);
  if (ACTIVE.has(job.status) && p.eta_seconds != null) parts.push(`ETA ${duration(p.eta_seconds)}`);
  return el('div', { class: 'progress-cell' }, bar, el('div', { class: 'small muted' }, parts.join(' · ')));
}
