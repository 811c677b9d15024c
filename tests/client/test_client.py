"""The SDK (``winnow.client``) against a real ``winnow serve`` with a worker, sync and async: every
resource, a small job waited for and streamed, the retry after a 429, and the typed errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import datasets
import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import ROOT, LiveServer
from tests.sdg.jobs import write_prompts
from winnow.cli import app
from winnow.client import (
    AsyncWinnow,
    AuthenticationError,
    BudgetExceeded,
    Conflict,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ValidationFailed,
    Winnow,
)
from winnow.client.params import SubmitJobParams
from winnow.schemas.evals import EvaluationDetails
from winnow.schemas.files import FileInfo
from winnow.schemas.sdg import JobDetails, PromptResponseScore

pytestmark = pytest.mark.slow  # a real `winnow serve` and its worker process

MISSING_JOB = "job-" + "0" * 24
MAX_UPLOAD = 64 * 1024
EXAMPLE = ROOT / "examples" / "sdk_quickstart.py"


@dataclass
class Served:
    live: LiveServer
    admin: Winnow
    user: Winnow
    user_key: str
    prompts: FileInfo  # 4 prompts the user uploaded
    job: JobDetails  # the user's job over them, as sdg.wait returned it

    def job_args(self, **overrides: Any) -> SubmitJobParams:
        """A cheap job: one 4-token response per prompt, every row kept."""
        body: dict[str, Any] = {
            "model": "demo-lm",
            "reward_model": "demo-rm",
            "prompts_path": self.prompts.path,
            "batch_size": 2,
            "temperature": 1.0,
            "max_gen_len": 4,
            "seed": 7,
        }
        return cast(SubmitJobParams, body | overrides)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("sdk")
    env = {"WINNOW_WORKERS": "1", "WINNOW_MAX_UPLOAD_BYTES": str(MAX_UPLOAD)}
    live = LiveServer(root / "data", env=env).start()
    try:
        admin_key = live.cli("keys", "create", "admin", "--admin").stdout.split()[-1]
        with Winnow(live.url, admin_key) as admin:
            user_key = admin.keys.create("user").key
            with Winnow(live.url, user_key) as user:
                prompts = user.files.upload(write_prompts(root / "four.jsonl", 4))
                submitted = user.sdg.submit(
                    model="demo-lm",
                    reward_model="demo-rm",
                    prompts_path=prompts.path,
                    batch_size=2,
                    temperature=1.0,
                    max_gen_len=4,
                    seed=7,
                )
                assert submitted.status == "queued"
                job = user.sdg.wait(submitted.job_id, progress=True, timeout=180)
                yield Served(live, admin, user, user_key, prompts, job)
    finally:
        live.stop()


# -- sync ---------------------------------------------------------------------------------------
def test_files_upload_answers_the_servers_file_info(served: Served) -> None:
    assert isinstance(served.prompts, FileInfo)
    assert served.prompts.rows == 4 and served.prompts.filename == "four.jsonl"
    assert Path(served.prompts.path).is_relative_to(served.live.data_dir)


def test_files_list_retrieve_delete_and_a_keys_storage_quota(served: Served, tmp_path: Path) -> None:
    created = served.admin.keys.create("filer", storage_quota_bytes=10_000)
    assert created.storage_quota_bytes == 10_000
    with Winnow(served.live.url, created.key) as filer:
        first = filer.files.upload(write_prompts(tmp_path / "a.jsonl", 3))
        second = filer.files.upload(write_prompts(tmp_path / "b.jsonl", 2))
        page = filer.files.list(limit=1)
        assert [f.id for f in page.data] == [second.id] and page.has_more and page.quota_bytes == 10_000
        assert [f.id for f in filer.files.list(after=page.last_id).data] == [first.id]
        assert filer.files.retrieve(first.id) == first
        assert filer.files.delete(first.id).deleted is True
        assert not Path(first.path).exists()
        with pytest.raises(NotFound):
            filer.files.retrieve(first.id)
        with pytest.raises(NotFound):  # another key's file
            filer.files.delete(served.prompts.id)
        assert served.admin.keys.set_storage_quota("filer", second.bytes).storage_quota_bytes == second.bytes
        with pytest.raises(PayloadTooLarge) as full:
            filer.files.upload(write_prompts(tmp_path / "c.jsonl", 1))
        assert "Storage quota exceeded" in str(full.value)
        assert served.admin.keys.clear_storage_quota("filer").storage_quota_bytes is None
        assert filer.files.upload(write_prompts(tmp_path / "c.jsonl", 1)).rows == 1


def test_sdg_wait_returns_the_job_a_worker_completed(served: Served) -> None:
    job = served.job
    assert isinstance(job, JobDetails)
    assert job.status == "completed", job
    assert job.counts.prompts_read == 4 and job.counts.rows_kept == 4


def test_sdg_dry_run_estimates_and_queues_nothing(served: Served) -> None:
    before = served.user.sdg.list().count
    dry = served.user.sdg.submit(**served.job_args(dry_run=True, num_generations=2))
    assert dry.status == "dry_run" and dry.estimate is not None
    assert dry.estimate.prompts == 4 and dry.estimate.generations == 8
    assert dry.estimate.max_output_tokens == 8 * 4
    assert served.user.sdg.list().count == before


def test_sdg_status_and_list(served: Served) -> None:
    status = served.user.sdg.status(served.job.job_id)
    assert status.status == "completed" and status.counts == served.job.counts
    listed = served.user.sdg.list(status="completed")
    assert served.job.job_id in [job.job_id for job in listed.jobs]
    assert served.job.job_id in [job.job_id for job in served.admin.sdg.list().jobs]  # an admin sees every job


def test_sdg_rows_stream_the_output_and_download_writes_it_whole(served: Served, tmp_path: Path) -> None:
    rows = list(served.user.sdg.rows(served.job.job_id))
    assert len(rows) == 4 and all(isinstance(row, PromptResponseScore) for row in rows)
    assert {row.id for row in rows} == {f"r{i}-" + row.id.split("-", 1)[1] for i, row in enumerate(rows)}
    target = served.user.sdg.download(served.job.job_id, tmp_path / "out.jsonl")
    assert target == tmp_path / "out.jsonl"
    assert [PromptResponseScore.model_validate_json(line) for line in target.read_text().splitlines()] == rows
    assert list(tmp_path.iterdir()) == [target]  # no .part left behind
    summary = served.user.sdg.summary(served.job.job_id)
    assert summary["counts"]["rows_kept"] == 4


def test_sdg_cancel_stops_a_job_and_an_ended_job_is_a_conflict(served: Served) -> None:
    big = served.user.files.upload(write_prompts(served.live.data_dir.parent / "forty.jsonl", 40))
    job = served.user.sdg.submit(**served.job_args(prompts_path=big.path))
    cancelled = served.user.sdg.cancel(job.job_id)
    assert cancelled.job_id == job.job_id and cancelled.status in ("cancelled", "running")
    assert served.user.sdg.wait(job.job_id, progress=False, timeout=180).status == "cancelled"
    with pytest.raises(Conflict) as ended:
        served.user.sdg.cancel(job.job_id)
    assert ended.value.status == 409 and ended.value.code == "conflict"


def test_models_list_and_retrieve(served: Served) -> None:
    listed = served.user.models.list()
    assert "demo-lm" in [model.id for model in listed.models]
    assert listed.count == len(listed.models)
    assert served.user.models.retrieve("demo-lm").model.id == "demo-lm"
    with pytest.raises(NotFound) as missing:
        served.user.models.retrieve("no-such-model")
    assert missing.value.code == "model_not_found"


def test_generate_and_generate_batch(served: Served) -> None:
    one = served.user.generate("What is 17+25?", model_id="demo-lm", max_tokens=8, temperature=0)
    assert one.model_id == "demo-lm" and one.text and one.metrics.output_tokens >= 1
    batch = served.user.generate_batch(["What is 1+2?", "What is 3+4?"], model_id="demo-lm", max_tokens=4)
    assert [result.index for result in batch.results] == [0, 1]
    assert batch.metrics.successful_generations == 2


def test_usage_and_budget(served: Served) -> None:
    report = served.admin.usage("key")
    assert report.group_by == "key" and report.total.requests >= 0
    assert served.user.usage(start=served.job.created).group_by == "model"
    assert served.user.budget().key == "user"
    assert served.admin.budget("user").key == "user"
    with pytest.raises(PermissionDenied):
        served.user.budget("admin")


def test_feedback_create_list_and_export(served: Served) -> None:
    generation = served.user.generate("What is 8+9?", model_id="demo-lm", max_tokens=8, temperature=0)
    generation_id = generation.metadata["generation_id"]
    item = served.user.feedback.create(
        generation_id=generation_id, rating="down", labels=["wrong"], corrected_response="seventeen"
    )
    assert item.target == "generation" and item.response == generation.text and item.rating == "down"
    listed = served.user.feedback.list(generation_id=generation_id)
    assert [found.id for found in listed.items] == [item.id]
    pairs = served.user.feedback.export("preference")
    assert pairs.empty_reason is None
    assert {"prompt": "What is 8+9?", "chosen": "seventeen", "rejected": generation.text} in pairs.rows
    assert any(row.get("completion") == "seventeen" for row in served.user.feedback.export("sft").rows)
    with Winnow(served.live.url, served.admin.keys.create("silent").key) as silent:
        nothing = silent.feedback.export()
    assert nothing.rows == [] and nothing.empty_reason and "no feedback" in nothing.empty_reason


def test_evals_create_get_list_results_and_cancel(served: Served) -> None:
    created = served.user.evals.create(
        dataset_path=served.prompts.path,
        templates=[{"name": "plain", "template": "{prompt}"}],
        models=["demo-lm"],
        scoring_function="exact_match",
        max_tokens=4,
    )
    assert isinstance(created, EvaluationDetails) and created.status == "queued"
    done = _poll_eval(served.user, created.id)
    assert done.status == "completed" and done.table is not None and done.table[0].rows == 4
    assert created.id in [found.id for found in served.user.evals.list().evaluations]
    results = list(served.user.evals.results(created.id))
    assert len(results) == 4 and {row["template"] for row in results} == {"plain"}
    with pytest.raises(Conflict):
        served.user.evals.cancel(created.id)


def _poll_eval(client: Winnow, evaluation_id: str, timeout: float = 180.0) -> EvaluationDetails:
    deadline = time.monotonic() + timeout
    while (found := client.evals.get(evaluation_id)).status not in ("completed", "failed", "cancelled"):
        assert time.monotonic() < deadline, found
        time.sleep(0.1)
    return found


def test_keys_create_list_budget_and_revoke_for_admins(served: Served) -> None:
    created = served.admin.keys.create("spender", rate_limits={"generation": "50/minute"})
    assert created.name == "spender" and created.key.startswith(created.prefix)
    assert "spender" in [key.name for key in served.admin.keys.list().keys]
    capped = served.admin.keys.set_budget("spender", tokens=1, period="day")
    assert capped.budget is not None and capped.budget.tokens == 1
    with Winnow(served.live.url, created.key) as spender:
        with pytest.raises(BudgetExceeded) as refused:
            spender.generate("What is 17+25?", model_id="demo-lm", max_tokens=4)
        assert refused.value.status == 402 and refused.value.code == "budget_exceeded"
        assert served.admin.keys.clear_budget("spender").budget is None
        assert served.admin.keys.revoke("spender").revoked_at is not None
        with pytest.raises(AuthenticationError):
            spender.models.list()
    with pytest.raises(Conflict):
        served.admin.keys.create("user")
    with pytest.raises(PermissionDenied) as denied:
        served.user.keys.list()
    assert denied.value.status == 403 and denied.value.code == "forbidden"


def test_errors_are_typed_and_carry_the_error_response(served: Served, tmp_path: Path) -> None:
    with pytest.raises(NotFound) as missing:
        served.user.sdg.status(MISSING_JOB)
    error = missing.value
    assert error.status == 404 and error.error is not None and error.code == "not_found"
    assert error.request_id and MISSING_JOB not in (error.request_id or "")

    with Winnow(served.live.url, "wn-not-a-key") as stranger, pytest.raises(AuthenticationError) as unknown:
        stranger.models.list()
    assert unknown.value.status == 401 and unknown.value.code == "unauthorized"

    with pytest.raises(ValidationFailed) as invalid:
        served.user.sdg.submit(**served.job_args(temperature=5.0))
    assert invalid.value.status == 400 and "temperature" in (invalid.value.details or "")

    large = tmp_path / "large.jsonl"
    large.write_text("".join(f'{{"id": "p{i}", "prompt": "What is 1+{i}?"}}\n' for i in range(3000)))
    assert large.stat().st_size > MAX_UPLOAD
    with pytest.raises(PayloadTooLarge) as too_large:
        served.user.files.upload(large)
    assert too_large.value.status == 413 and too_large.value.code == "payload_too_large"


def _recorder(statuses: list[int]) -> httpx.Client:
    """A connection pool that notes the status of every answer (retried ones included)."""
    return httpx.Client(event_hooks={"response": [lambda response: statuses.append(response.status_code)]})


def test_a_429_is_retried_after_retry_after(served: Served) -> None:
    limited = served.admin.keys.create("limited", rate_limits={"other": "1/second"})
    statuses: list[int] = []
    with _recorder(statuses) as http, Winnow(served.live.url, limited.key, max_retries=3, http_client=http) as client:
        for _ in range(3):
            assert client.models.list().count >= 1
    assert statuses.count(200) == 3 and 429 in statuses, statuses  # each refused call came back later


def test_rate_limited_carries_retry_after_when_not_retried(served: Served) -> None:
    limited = served.admin.keys.create("strict", rate_limits={"other": "1/minute"})
    with Winnow(served.live.url, limited.key, max_retries=0) as client:
        client.models.list()
        with pytest.raises(RateLimited) as refused:
            client.models.list()
    assert refused.value.status == 429 and refused.value.code == "rate_limit_exceeded"
    assert refused.value.retry_after is not None and 1 <= refused.value.retry_after <= 60


def test_training_sets_of_a_server_job_as_records_exports_and_a_dataset(served: Served, tmp_path: Path) -> None:
    args = served.job_args(
        num_generations=4,
        scoring_function="exact_match",
        max_gen_len=8,
        filtering_function={"name": "best_of_n"},
        outputs=["preference", "sft"],
    )
    job = served.user.sdg.submit(**args)
    assert served.user.sdg.wait(job.job_id, progress=False, timeout=180).status == "completed"
    pairs = list(served.user.sdg.records(job.job_id, "preference"))
    assert pairs and all(pair["margin"] == 1.0 for pair in pairs)
    assert served.user.sdg.summary(job.job_id)["preference"]["pairs"] == len(pairs)
    sft = list(served.user.sdg.records(job.job_id, "sft"))
    assert [row["id"] for row in sft] == [row.id for row in served.user.sdg.rows(job.job_id)]
    dataset = served.user.sdg.to_dataset(job.job_id)
    assert dataset.num_rows == len(pairs) and dataset["chosen"] == [pair["chosen"] for pair in pairs]
    exported = served.user.sdg.export(job.job_id, tmp_path / "pairs.parquet", "parquet", "preference")
    assert list(pd.read_parquet(exported)["rejected"]) == [pair["rejected"] for pair in pairs]
    env = {"WINNOW_URL": served.live.url, "WINNOW_API_KEY": served.user_key}
    target = tmp_path / "sft-hf"
    result = CliRunner().invoke(
        app, ["sdg", "export", job.job_id, "--format", "hf", "--output", "sft", "--to", str(target)], env=env
    )
    assert result.exit_code == 0, result.output
    assert datasets.load_from_disk(str(target))["id"] == [row["id"] for row in sft]
    with pytest.raises(NotFound):  # a job that asked for none has none
        list(served.user.sdg.records(served.job.job_id, "preference"))


# -- the CLI's remote commands, on the SDK -----------------------------------------------------
def test_cli_files_upload_then_submit_dry_run_and_wait(served: Served, tmp_path: Path) -> None:
    env = {"WINNOW_URL": served.live.url, "WINNOW_API_KEY": served.user_key}
    runner = CliRunner()
    uploaded = runner.invoke(app, ["files", "upload", str(write_prompts(tmp_path / "cli.jsonl", 2))], env=env)
    assert uploaded.exit_code == 0, uploaded.output
    info = FileInfo.model_validate_json(uploaded.stdout)
    assert info.rows == 2 and info.filename == "cli.jsonl"
    body = json.dumps(served.job_args(prompts_path=info.path))
    dry = runner.invoke(app, ["sdg", "submit", body, "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert JobDetails.model_validate_json(dry.stdout).status == "dry_run"
    job = JobDetails.model_validate_json(runner.invoke(app, ["sdg", "submit", body], env=env).stdout)
    waited = runner.invoke(app, ["sdg", "wait", job.job_id], env=env)
    assert waited.exit_code == 0, waited.output
    assert JobDetails.model_validate_json(waited.stdout).status == "completed"
    missing = runner.invoke(app, ["sdg", "wait", MISSING_JOB], env=env)
    assert missing.exit_code == 1 and missing.output.strip() == f"error: Job not found ({MISSING_JOB})"


def test_cli_files_list_and_delete(served: Served, tmp_path: Path) -> None:
    env = {"WINNOW_URL": served.live.url, "WINNOW_API_KEY": served.user_key}
    runner = CliRunner()
    uploaded = runner.invoke(app, ["files", "upload", str(write_prompts(tmp_path / "gone.jsonl", 2))], env=env)
    info = FileInfo.model_validate_json(uploaded.stdout)
    listed = runner.invoke(app, ["files", "list", "--limit", "1"], env=env)
    assert listed.exit_code == 0, listed.output
    page = json.loads(listed.stdout)
    assert [f["id"] for f in page["data"]] == [info.id] and page["has_more"] is True
    deleted = runner.invoke(app, ["files", "delete", info.id], env=env)
    assert deleted.exit_code == 0 and json.loads(deleted.stdout) == {"id": info.id, "object": "file", "deleted": True}
    assert info.id not in runner.invoke(app, ["files", "list"], env=env).stdout
    again = runner.invoke(app, ["files", "delete", info.id], env=env)
    assert again.exit_code == 1 and again.output.startswith("error: No file with this id"), again.output


def test_the_quickstart_example_runs_end_to_end(served: Served, tmp_path: Path) -> None:
    env = {**os.environ, "WINNOW_URL": served.live.url, "WINNOW_API_KEY": served.user_key}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "completed, kept 20 of 80" in done.stdout and "preference pairs, mean margin" in done.stdout
    assert len(list(tmp_path.glob("job-*.jsonl"))) == 1


# -- async --------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_async_client_submits_waits_and_streams_a_job(served: Served, tmp_path: Path) -> None:
    async with AsyncWinnow(served.live.url, served.user_key) as client:
        prompts = await client.files.upload(write_prompts(tmp_path / "two.jsonl", 2))
        assert prompts.rows == 2
        dry = await client.sdg.submit(**served.job_args(prompts_path=prompts.path, dry_run=True))
        assert dry.status == "dry_run" and dry.estimate is not None and dry.estimate.prompts == 2
        job = await client.sdg.submit(**served.job_args(prompts_path=prompts.path))
        done = await client.sdg.wait(job.job_id, progress=False, timeout=180)
        assert done.status == "completed" and done.counts.rows_kept == 2
        assert (await client.sdg.status(job.job_id)).status == "completed"
        assert job.job_id in [found.job_id for found in (await client.sdg.list()).jobs]
        rows = [row async for row in client.sdg.rows(job.job_id)]
        assert len(rows) == 2 and all(isinstance(row, PromptResponseScore) for row in rows)
        target = await client.sdg.download(job.job_id, tmp_path / "out.jsonl")
        assert [PromptResponseScore.model_validate_json(line) for line in target.read_text().splitlines()] == rows
        assert (await client.sdg.summary(job.job_id))["counts"]["rows_kept"] == 2
        assert [row async for row in client.sdg.records(job.job_id, "rows")] == [r.model_dump() for r in rows]
        as_dataset = await client.sdg.to_dataset(job.job_id, "rows")
        assert as_dataset["id"] == [row.id for row in rows]
        exported = await client.sdg.export(job.job_id, tmp_path / "rows.jsonl", "jsonl")
        assert exported.read_text() == target.read_text()
        with pytest.raises(Conflict):
            await client.sdg.cancel(job.job_id)


@pytest.mark.anyio
async def test_async_resources(served: Served) -> None:
    async with AsyncWinnow(served.live.url, served.user_key) as user:
        assert "demo-lm" in [model.id for model in (await user.models.list()).models]
        assert (await user.models.retrieve("demo-lm")).model.id == "demo-lm"
        generated = await user.generate("What is 2+2?", model_id="demo-lm", max_tokens=4, temperature=0)
        batch = await user.generate_batch(["What is 1+1?"], model_id="demo-lm", max_tokens=4)
        assert generated.text and batch.metrics.successful_generations == 1
        assert (await user.usage("day")).group_by == "day"
        assert (await user.budget()).key == "user"
        item = await user.feedback.create(generation_id=generated.metadata["generation_id"], rating=5)
        assert item.rating == 5 and item.rating_scale == "stars"
        assert item.id in [found.id for found in (await user.feedback.list()).items]
        assert (await user.feedback.export("sft")).format == "sft"
        evaluations = await user.evals.list()
        assert evaluations.count == len(evaluations.evaluations)
        with pytest.raises(NotFound):
            await user.evals.get("eval-" + "0" * 24)
        with pytest.raises(PermissionDenied):
            await user.keys.list()
    async with AsyncWinnow(served.live.url, served.admin.api_key) as admin:
        created = await admin.keys.create("async-key", budget={"usd": 1.0})
        assert created.budget is not None and created.budget.usd == 1.0
        assert (await admin.keys.set_budget("async-key", usd=2.0)).budget.usd == 2.0  # type: ignore[union-attr]
        assert (await admin.keys.clear_budget("async-key")).budget is None
        assert (await admin.keys.set_storage_quota("async-key", 5)).storage_quota_bytes == 5
        assert (await admin.keys.clear_storage_quota("async-key")).storage_quota_bytes is None
        assert "async-key" in [key.name for key in (await admin.keys.list()).keys]
        assert (await admin.keys.revoke("async-key")).revoked_at is not None


@pytest.mark.anyio
async def test_async_errors_are_typed_and_a_429_is_retried(served: Served) -> None:
    async with AsyncWinnow(served.live.url, "wn-not-a-key") as stranger:
        with pytest.raises(AuthenticationError) as unknown:
            await stranger.models.list()
    assert unknown.value.status == 401 and unknown.value.request_id
    limited = served.admin.keys.create("async-limited", rate_limits={"other": "1/second"})
    statuses: list[int] = []

    async def record(response: httpx.Response) -> None:
        statuses.append(response.status_code)

    async with (
        httpx.AsyncClient(event_hooks={"response": [record]}) as http,
        AsyncWinnow(served.live.url, limited.key, max_retries=3, http_client=http) as client,
    ):
        with pytest.raises(NotFound):
            await client.sdg.status(MISSING_JOB)
        for _ in range(2):
            assert (await client.models.list()).count >= 1
    assert statuses.count(200) == 2 and 429 in statuses, statuses
