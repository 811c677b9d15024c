"""The Ray executor on a real local Ray (ray.init(num_cpus=2)): the same rows as the local executor,
crash-resume, and a job submitted with executor=ray run by a worker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import DEMO_PROMPTS, CrashAfter, bearer, running_worker, wait_for_job
from winnow.api.app import create_app
from winnow.config import RaySettings, Settings
from winnow.schemas.sdg import FilteringFunction, SubmitJobRequest
from winnow.sdg.reward import open_registries
from winnow.sdg.service import build_plan, check_spec, make_runner
from winnow.sdg.workfiles import FileCheckpoint

pytestmark = pytest.mark.slow  # a local Ray cluster

ray = pytest.importorskip("ray", reason="the ray extra is not installed")


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _spec(prompts: Path, executor: str) -> SubmitJobRequest:
    return SubmitJobRequest(
        model="demo-lm",
        prompts_path=str(prompts),
        batch_size=16,
        temperature=1.0,
        max_gen_len=6,
        num_generations=3,
        reward_model="demo-rm",
        filtering_function=FilteringFunction(name="top_k", params={"k": 2}),
        seed=21,
        executor=executor,  # type: ignore[arg-type]
    )


def test_ray_and_local_executors_give_identical_rows_and_ray_resumes_after_a_crash(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(line + "\n" for line in DEMO_PROMPTS.read_text().splitlines()[:90]))
    settings = Settings(
        data_dir=tmp_path / "data", workers=0, data_roots=[tmp_path], ray=RaySettings(generate_cpus=1, score_cpus=1)
    )

    async def run(executor: str, name: str, checkpoint: FileCheckpoint) -> tuple[Path, list[int]]:
        spec = _spec(prompts, executor)
        seen: list[int] = []
        async with open_registries(settings) as (models, rewards):
            plan = build_plan(spec, check_spec(spec, settings, models, rewards), models, rewards)
            output = tmp_path / name / "output.jsonl"
            runner = make_runner(
                plan, settings, tmp_path / name / "work", output, checkpoint, lambda p: seen.append(p.chunks_done)
            )
            await runner.run()
            return output, seen

    local, _ = asyncio.run(run("local", "local", FileCheckpoint(tmp_path / "local.json")))
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(run("ray", "ray", CrashAfter(tmp_path / "ray.json", 2)))
    remote, progress = asyncio.run(run("ray", "ray", FileCheckpoint(tmp_path / "ray.json")))
    assert progress[0] == 3 and progress[-2] == 6  # resumed after the 2 saved chunks; 6 chunks of 16 rows
    assert remote.read_bytes() == local.read_bytes()
    rows = [json.loads(line) for line in remote.read_text().splitlines()]
    assert len(rows) == 90 * 2 and len({(r["id"], r["index"]) for r in rows}) == 180


def test_a_job_with_executor_ray_runs_on_a_worker_and_records_usage(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", workers=0, usage_flush_s=0.2)
    with TestClient(create_app(settings)) as client:
        runtime: Any = client.app.state.runtime  # type: ignore[attr-defined]
        key = runtime.keys.create("ray-user").key
        prompts = settings.data_dir / "prompts.jsonl"
        prompts.write_text("".join(line + "\n" for line in DEMO_PROMPTS.read_text().splitlines()[:40]))
        body = _spec(prompts, "ray").model_dump(mode="json")
        job = client.post("/api/v1/synthetic_data_generation/submit_job", json=body, headers=bearer(key)).json()
        assert job["params"]["executor"] == "ray"

        with running_worker(settings):
            status = wait_for_job(client, key, job["job_id"], timeout=180)
        assert status["status"] == "completed", status
        assert status["counts"]["prompts_read"] == 40 and status["counts"]["rows_kept"] == 80
        usage = client.get("/api/v1/usage", headers=bearer(key)).json()["total"]
        assert usage["requests"] == 40 and usage["output_tokens"] == status["counts"]["output_tokens"]


def test_a_ray_job_killed_between_a_chunk_and_its_checkpoint_bills_each_prompt_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.usage.test_usage_once import dies_on_save, first_shard, job_usage
    from winnow.jobs.shards import ShardStore

    settings = Settings(data_dir=tmp_path / "data", workers=0, ray=RaySettings(generate_cpus=1, score_cpus=1))
    with TestClient(create_app(settings)) as client:
        runtime: Any = client.app.state.runtime  # type: ignore[attr-defined]
        key = runtime.keys.create("ray-user").key
        prompts = settings.data_dir / "prompts.jsonl"
        prompts.write_text("".join(line + "\n" for line in DEMO_PROMPTS.read_text().splitlines()[:40]))
        body = _spec(prompts, "ray").model_dump(mode="json")  # one shard: 3 chunks of 16 rows
        job_id = client.post("/api/v1/synthetic_data_generation/submit_job", json=body, headers=bearer(key)).json()[
            "job_id"
        ]
        # the driver saves chunk 1, and dies saving chunk 2
        dies_on_save(settings, monkeypatch, ShardStore, 2, job_id, first_shard)
        with running_worker(settings):
            status = wait_for_job(client, key, job_id, timeout=180)
        assert status["status"] == "completed", status
        counts = status["counts"]
        assert counts["prompts_read"] == 40
        assert job_usage(runtime.db, job_id) == (40, counts["input_tokens"], counts["output_tokens"])
