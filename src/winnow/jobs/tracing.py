"""A job's span while tracing is on (``winnow.telemetry``): what a worker runs of a job (the whole
job, a shard or the merge) is one ``job.run`` span, with the job's id, kind, owner and model, and at
its end the job's status and how many rows (prompts, evaluation rows, batch lines) are done."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from winnow.db import Job


def job_attributes(job: Job, part: str, shard: int | None = None) -> dict[str, Any]:
    """The span's attributes known when the work starts."""
    params = job.params or {}
    model = params.get("model") or params.get("base_model") or ",".join(params.get("models") or ())
    attributes: dict[str, Any] = {
        "winnow.job.id": job.id,
        "winnow.job.kind": job.kind,
        "winnow.job.part": part,  # job | shard | merge
        "winnow.job.attempt": job.attempts,
        "winnow.key_id": job.owner_key_id,
    }
    if model:
        attributes["gen_ai.request.model"] = model
    if shard is not None:
        attributes["winnow.job.shard"] = shard
    return attributes


def end_job(span: Span, job: Job) -> None:
    """The job's status and progress after the work, as its row says (a failed job's span is an error)."""
    from opentelemetry.trace import StatusCode

    checkpoint = job.checkpoint or {}
    counts = checkpoint.get("counts") or {}
    done = counts.get("prompts_read", counts.get("rows_done", checkpoint.get("lines")))
    attributes: dict[str, Any] = {"winnow.job.status": job.status, "winnow.job.stage": job.stage}
    optional = {
        "winnow.job.rows_done": done,
        "gen_ai.usage.input_tokens": counts.get("input_tokens"),
        "gen_ai.usage.output_tokens": counts.get("output_tokens"),
    }
    attributes.update({k: v for k, v in optional.items() if isinstance(v, int)})
    span.set_attributes(attributes)
    if job.status == "failed":
        span.set_status(StatusCode.ERROR, job.error or "failed")
