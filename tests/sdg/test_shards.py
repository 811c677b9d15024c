"""Several workers on one SDG job: shards merge to exactly a one-worker run's output, and two
`winnow worker` processes on a real PostgreSQL share a 5k-prompt job, one of them killed mid-way."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import DEMO_PROMPTS, bearer, running_worker, wait_for_job
from winnow.api.app import create_app
from winnow.config import Settings
from winnow.db import Database, JobShard, SdgJob
from winnow.schemas.sdg import FilteringFunction, SubmitJobRequest
from winnow.sdg.reward import open_registries
from winnow.sdg.runner import LocalRunner
from winnow.sdg.service import build_plan, check_spec
from winnow.sdg.workfiles import FileCheckpoint


@pytest.mark.parametrize("filter_name", ["best_of_n", "top_p"])
def test_shards_merge_to_exactly_the_one_worker_output(tmp_path: Path, filter_name: str) -> None:
    settings = Settings(data_dir=tmp_path / "data", workers=0, data_roots=[DEMO_PROMPTS.parent])
    params = {"p": 0.5} if filter_name == "top_p" else {}
    spec = SubmitJobRequest(
        model="demo-lm",
        prompts_path=str(DEMO_PROMPTS),
        batch_size=16,
        temperature=1.0,
        max_gen_len=6,
        num_generations=2,
        reward_model="demo-rm",
        filtering_function=FilteringFunction(name=filter_name, params=params),
        seed=5,
    )

    async def run() -> tuple[bytes, bytes]:
        async with open_registries(settings) as (models, rewards):
            plan = build_plan(spec, check_spec(spec, settings, models, rewards), models, rewards)
            whole = tmp_path / "whole" / "output.jsonl"
            await LocalRunner(plan, tmp_path / "whole" / "work", whole, FileCheckpoint(tmp_path / "whole.json")).run()
            states = []
            for index, first in enumerate(range(0, 500, 160)):  # shards of 10 chunks; the last is short
                checkpoint = FileCheckpoint(tmp_path / f"shard-{index}.json")
                shard = LocalRunner(
                    plan,
                    tmp_path / "shards" / str(index),
                    tmp_path / "unused",
                    checkpoint,
                    rows=(first, min(160, 500 - first)),
                    final=False,
                )
                await shard.run()
                states.append(checkpoint.load())
            merged = tmp_path / "merged" / "output.jsonl"
            summary = await LocalRunner(
                plan, tmp_path / "merged" / "work", merged, FileCheckpoint(tmp_path / "m.json")
            ).finish_from(states)
            assert summary["counts"]["prompts_read"] == 500
            return whole.read_bytes(), merged.read_bytes()

    whole, merged = asyncio.run(run())
    assert merged == whole and whole.count(b"\n") > 0


def _shards(db: Database, job_id: str) -> list[JobShard]:
    with db.session() as session:
        rows = list(session.scalars(select(JobShard).where(JobShard.job_id == job_id).order_by(JobShard.shard)))
        session.expunge_all()
        return rows


@pytest.mark.slow  # two worker processes on PostgreSQL, kill -9
def test_two_workers_on_postgresql_share_a_job_and_the_killed_ones_shard_is_taken_over(
    tmp_path: Path, postgres_url: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    lines = DEMO_PROMPTS.read_text().splitlines()
    prompts = data / "prompts-5k.jsonl"
    with prompts.open("w") as handle:
        for copy in range(5):
            for line in lines:
                row = json.loads(line)
                handle.write(json.dumps({**row, "id": f"{row['id']}-{copy}"}) + "\n")
    env = {
        "WINNOW_DATABASE_URL": postgres_url,
        "WINNOW_DATA_DIR": str(data),
        "WINNOW_JOB_SHARD_ROWS": "128",
        # Long enough that a busy (not dead) worker keeps its shard on a loaded 2-core box; the
        # killed worker's shard is taken over once it runs out.
        "WINNOW_JOB_LEASE_S": "10",
        "WINNOW_LOCAL_TORCH_THREADS": "1",
    }
    settings = Settings(data_dir=data, database_url=postgres_url, workers=0)
    with TestClient(create_app(settings)) as client:
        runtime: Any = client.app.state.runtime  # type: ignore[attr-defined]
        key = runtime.keys.create("owner").key
        body = {
            "model": "demo-lm",
            "prompts_path": str(prompts),
            "batch_size": 64,
            "temperature": 0,
            "max_gen_len": 4,
            "num_generations": 1,
            "reward_model": "demo-rm",
            "filtering_function": {"name": "none"},
        }
        job = client.post("/api/v1/synthetic_data_generation/submit_job", json=body, headers=bearer(key)).json()
        logs = [(tmp_path / f"worker-{i}.log").open("wb") for i in range(2)]
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "winnow", "worker"], env={**os.environ, **env}, stdout=log, stderr=log
            )
            for log in logs
        ]
        db = Database(postgres_url)
        try:
            # Wait until both workers have finished a shard, then kill one while it holds another. The
            # worker is frozen (SIGSTOP) before the shard table is read, so the shard it holds then is
            # the one it holds when it dies: it cannot finish that shard in between.
            deadline = time.monotonic() + 100
            victim, held = None, None
            while time.monotonic() < deadline and victim is None:
                if len({s.worker for s in _shards(db, job["job_id"]) if s.status == "done"}) == 2:
                    for proc in workers:
                        os.kill(proc.pid, signal.SIGSTOP)
                        holding = [
                            s.shard
                            for s in _shards(db, job["job_id"])
                            if s.status == "running" and s.worker and s.worker.split(":")[1] == str(proc.pid)
                        ]
                        if holding:
                            victim, held = proc, holding[0]
                            break
                        os.kill(proc.pid, signal.SIGCONT)
                time.sleep(0.05)
            assert victim is not None, [(s.shard, s.status, s.worker) for s in _shards(db, job["job_id"])]
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()

            status = wait_for_job(client, key, job["job_id"], timeout=150)
            assert status["status"] == "completed", (status, [log.name for log in logs])
        finally:
            for proc in workers:
                proc.kill()
                proc.wait()
            for log in logs:
                log.close()
        shards = _shards(db, job["job_id"])
        with db.session() as session:
            attempts = session.scalar(select(SdgJob.attempts).where(SdgJob.id == job["job_id"]))
        db.dispose()
    assert len(shards) == 20 and all(s.status == "done" for s in shards)
    assert len({s.worker for s in shards}) == 2  # each worker did part of the job
    # The very shard the killed worker held was finished by the other worker, on a later attempt.
    (taken_over,) = [s for s in shards if s.shard == held]
    survivor = next(proc for proc in workers if proc is not victim)
    assert taken_over.attempts > 1 and taken_over.worker.split(":")[1] == str(survivor.pid), taken_over.worker
    assert attempts == 1  # one merge
    rows = [json.loads(line) for line in Path(status["output_file_path"]).read_text().splitlines()]
    keys = [(r["id"], r["index"]) for r in rows]
    assert len(keys) == 2500 and len(set(keys)) == 2500
    assert [r["id"] for r in rows] == [json.loads(line)["id"] for line in prompts.read_text().splitlines()]
    assert status["counts"]["prompts_read"] == 2500 and status["counts"]["rows_kept"] == 2500


def test_a_prompts_file_changed_after_submit_fails_the_job(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", workers=0)
    with TestClient(create_app(settings)) as client:
        runtime: Any = client.app.state.runtime  # type: ignore[attr-defined]
        key = runtime.keys.create("owner").key
        prompts = settings.data_dir / "prompts.jsonl"
        prompts.write_text("".join(line + "\n" for line in DEMO_PROMPTS.read_text().splitlines()[:20]))
        body = {"model": "demo-lm", "prompts_path": str(prompts), "reward_model": "demo-rm", "max_gen_len": 4}
        job = client.post("/api/v1/synthetic_data_generation/submit_job", json=body, headers=bearer(key)).json()
        prompts.write_text(prompts.read_text().replace("What", "Who"))  # same rows, other content
        with running_worker(settings):
            status = wait_for_job(client, key, job["job_id"], timeout=60)
    assert status["status"] == "failed" and "changed since the job was submitted" in status["error"]
