"""A job's usage matches its output exactly once: a worker killed after a chunk is generated and
written but before its checkpoint is saved has the chunk redone, and billed, by the next one only
once (sharded SDG jobs, evaluations, and in-process runs whose checkpoint is a file)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from tests.conftest import DEMO_PROMPTS, bearer, running_worker, wait_for, wait_for_job
from winnow.api.app import create_app
from winnow.config import Settings
from winnow.db import Database, JobShard, SdgJob, UsageRecord
from winnow.jobs.shards import ShardStore
from winnow.jobs.store import JobStore
from winnow.jobs.worker import Worker
from winnow.runtime import Runtime
from winnow.schemas.sdg import FilteringFunction, SubmitJobRequest
from winnow.sdg.reward import open_registries
from winnow.sdg.runner import LocalRunner
from winnow.sdg.service import build_plan, check_spec
from winnow.sdg.workfiles import FileCheckpoint


class Killed(BaseException):
    """A kill -9 as the code it stops sees it: nothing after it runs, not even ``except Exception``."""


def kill_on_save(monkeypatch: pytest.MonkeyPatch, store: type[JobStore] | type[ShardStore], n: int) -> None:
    """The ``n``-th checkpoint save through ``store.renew`` dies before it reaches the database: the
    chunk's rows and files are written, its checkpoint is not (heartbeats renew as usual)."""
    original = store.renew
    saves = [0]

    def renew(self: Any, *args: Any, **kwargs: Any) -> bool:
        if len(args) >= 3:  # (job or claim, worker, checkpoint, ...): a save, not a heartbeat
            saves[0] += 1
            if saves[0] == n:
                raise Killed
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "renew", renew)


def job_usage(db: Database, job_id: str) -> tuple[int, int, int]:
    """A job's usage rows, input tokens and output tokens."""
    with db.session() as session:
        count, tokens_in, tokens_out = session.execute(
            select(func.count(), func.sum(UsageRecord.input_tokens), func.sum(UsageRecord.output_tokens)).where(
                UsageRecord.job_id == job_id
            )
        ).one()
    return int(count), int(tokens_in or 0), int(tokens_out or 0)


def dies_on_save(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    store: type[JobStore] | type[ShardStore],
    n: int,
    job_id: str,
    work: Callable[[Worker], Awaitable[None]],
) -> None:
    """A worker doing ``work`` is killed on its ``n``-th checkpoint save; then its leases run out."""
    doomed = Worker(settings)
    kill_on_save(monkeypatch, store, n)

    async def die() -> None:
        try:
            await work(doomed)
        finally:
            await doomed.close_models()
            doomed.db.dispose()

    with pytest.raises(Killed):
        asyncio.run(die())
    monkeypatch.undo()
    past = datetime.now(UTC) - timedelta(seconds=1)
    with doomed.db.session() as session:
        session.execute(update(JobShard).where(JobShard.job_id == job_id).values(lease_until=past))
        session.execute(update(SdgJob).where(SdgJob.id == job_id, SdgJob.worker.is_not(None)).values(lease_until=past))
    doomed.db.dispose()


async def first_shard(worker: Worker) -> None:
    """Split the oldest queued SDG job into shards and run its first."""
    worker.shards.housekeeping()
    claim = worker.shards.claim(worker.id)
    assert claim is not None and claim.shard == 0
    await worker.run_shard(claim)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, Runtime, str]]:
    settings = Settings(data_dir=tmp_path / "data", workers=0, job_shard_rows=8, usage_flush_s=0.2)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        lines = DEMO_PROMPTS.read_text().splitlines()[:20]
        (settings.data_dir / "prompts.jsonl").write_text("".join(line + "\n" for line in lines))
        yield client, runtime, runtime.keys.create("owner").key


def test_a_sharded_job_killed_between_a_chunk_and_its_checkpoint_bills_each_prompt_once(
    app: tuple[TestClient, Runtime, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, rt, key = app
    body = {
        "model": "demo-lm",
        "prompts_path": "prompts.jsonl",
        "batch_size": 4,
        "max_gen_len": 4,
        "num_generations": 2,
        "temperature": 1.0,
        "reward_model": "demo-rm",
        "filtering_function": {"name": "none"},
        "seed": 1,
    }
    job_id = client.post("/api/v1/synthetic_data_generation/submit_job", json=body, headers=bearer(key)).json()[
        "job_id"
    ]
    # 3 shards of 8 rows; in shard 0, chunk 1 (rows 0-3) is saved, chunk 2 is written but not saved
    dies_on_save(rt.settings, monkeypatch, ShardStore, 2, job_id, first_shard)
    with running_worker(rt.settings):
        status = wait_for_job(client, key, job_id, timeout=90)
    assert status["status"] == "completed", status
    rows = [json.loads(line) for line in Path(status["output_file_path"]).read_text().splitlines()]
    assert len(rows) == 40 and len({(r["id"], r["index"]) for r in rows}) == 40
    counts = status["counts"]
    assert job_usage(rt.db, job_id) == (20, counts["input_tokens"], counts["output_tokens"])


def test_an_evaluation_killed_between_a_chunk_and_its_checkpoint_bills_each_prompt_once(
    app: tuple[TestClient, Runtime, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, rt, key = app
    body = {
        "dataset_path": "prompts.jsonl",
        "templates": [{"name": "plain", "template": "{prompt}"}, {"name": "terse", "template": "Only: {prompt}"}],
        "models": ["demo-lm"],
        "scoring_function": "exact_match",
        "max_tokens": 4,
        "temperature": 0,
        "batch_size": 4,
    }
    eval_id = client.post("/api/v1/evaluations", json=body, headers=bearer(key)).json()["id"]

    async def evaluate(worker: Worker) -> None:
        job = worker.store.claim(worker.id)
        assert job is not None and job.id == eval_id
        await worker.run_job(job)

    dies_on_save(rt.settings, monkeypatch, JobStore, 3, eval_id, evaluate)  # chunks 1 and 2 saved, 3 not
    with running_worker(rt.settings):
        status = wait_for(client, key, f"/api/v1/evaluations/{eval_id}", timeout=90)
    assert status["status"] == "completed", status
    results = [json.loads(line) for line in Path(status["results_path"]).read_text().splitlines()]
    assert len(results) == 40
    tokens_in = sum(r["input_tokens"] for r in results)
    tokens_out = sum(r["output_tokens"] for r in results)
    assert job_usage(rt.db, eval_id) == (40, tokens_in, tokens_out)  # 20 rows x 2 templates, once each


class DiesWritingTheFile(FileCheckpoint):
    """Commits the ``n``-th chunk's usage rows, then dies before its checkpoint file is replaced."""

    def __init__(self, path: Path, usage: Any, n: int) -> None:
        super().__init__(path, usage)
        self.left = n

    def _write(self, state: dict[str, Any]) -> None:
        if "counts" in state:
            self.left -= 1
            if self.left < 0:
                raise Killed
        super()._write(state)


def test_an_in_process_run_killed_between_its_usage_and_its_checkpoint_file_bills_each_prompt_once(
    tmp_path: Path,
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(line + "\n" for line in DEMO_PROMPTS.read_text().splitlines()[:20]))
    settings = Settings(data_dir=tmp_path / "data", workers=0, data_roots=[tmp_path])
    spec = SubmitJobRequest(
        model="demo-lm",
        prompts_path=str(prompts),
        batch_size=4,
        max_gen_len=4,
        num_generations=2,
        temperature=1.0,
        reward_model="demo-rm",
        filtering_function=FilteringFunction(name="none"),
        seed=2,
    )
    work, output = tmp_path / "work", tmp_path / "out.jsonl"
    from winnow.usage.service import cli_usage

    async def run(make: Any) -> tuple[dict[str, Any], str]:
        async with open_registries(settings) as (models, rewards), cli_usage(settings) as usage:
            plan = build_plan(spec, check_spec(spec, settings, models, rewards), models, rewards)
            checkpoint = make(usage)
            plan.meter = checkpoint.meter(spec.model)
            return await LocalRunner(plan, work, output, checkpoint).run(), checkpoint.run_id

    with pytest.raises(Killed):
        asyncio.run(run(lambda usage: DiesWritingTheFile(work / "checkpoint.json", usage, 2)))
    summary, run_id = asyncio.run(run(lambda usage: FileCheckpoint(work / "checkpoint.json", usage)))
    db = Database(settings.effective_database_url)
    counts = summary["counts"]
    assert job_usage(db, run_id) == (20, counts["input_tokens"], counts["output_tokens"])
    with db.session() as session:
        assert set(session.scalars(select(UsageRecord.source).where(UsageRecord.job_id == run_id))) == {"cli"}
    db.dispose()
