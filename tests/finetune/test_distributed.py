"""One fine-tuning job on two processes (PyTorch DDP, gloo on this CPU box; NCCL on GPUs is the
same code with one process per GPU): the processes train exactly the model one process trains,
a killed worker takes its training processes with it and the job resumes from its checkpoint on
the next worker, and a cancel stops every process at the same step."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from tests.conftest import LiveServer, bearer
from tests.finetune.test_api import FT, training_rows
from tests.finetune.test_resume import _events, _job, _saved_steps
from winnow.cli import app
from winnow.config import Settings
from winnow.finetune.service import model_dir

pytestmark = pytest.mark.slow  # training processes started and killed


def _ranks(worker: psutil.Process) -> list[psutil.Process]:
    """The training processes a worker started (multiprocessing's spawn children)."""
    found = []
    for child in worker.children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def _trained(tmp_path: Path, processes: int, train: Path) -> dict[str, Any]:
    env = {"WINNOW_DATA_DIR": str(tmp_path / f"data-{processes}")}
    args = ["ft", "run", "--file", str(train), "--epochs", "1", "--batch-size", "8", "--suffix", f"p{processes}"]
    args += ["--processes", str(processes)]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    job: dict[str, Any] = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    return job


def test_two_processes_train_the_model_one_process_trains(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in training_rows(64)))
    one, two = _trained(tmp_path, 1, train), _trained(tmp_path, 2, train)
    assert (one["metrics"]["processes"], two["metrics"]["processes"]) == (1, 2)
    assert one["progress"]["step"] == two["progress"]["step"] == 8  # each process takes 4 of a batch of 8
    # The gradients of the two halves are averaged (all-reduce) into the whole batch's: the same
    # loss and the same adapter, up to float rounding. Two processes training alone would diverge.
    assert two["metrics"]["train_loss"] == pytest.approx(one["metrics"]["train_loss"], rel=1e-4)
    weights = [
        load_file(
            str(
                model_dir(Settings(data_dir=tmp_path / f"data-{n}"), job["fine_tuned_model"])
                / "adapter"
                / "adapter_model.safetensors"
            )
        )
        for n, job in ((1, one), (2, two))
    ]
    assert weights[0].keys() == weights[1].keys() and weights[0]
    for name, tensor in weights[0].items():
        assert (tensor - weights[1][name]).abs().max().item() < 1e-4, name


def test_a_killed_worker_takes_its_processes_and_the_job_resumes_then_a_cancel_stops_all(tmp_path: Path) -> None:
    live = LiveServer(tmp_path / "data", env={"WINNOW_WORKERS": "1", "WINNOW_FINE_TUNING_PROCESSES": "2"}).start()
    try:
        key = live.cli("keys", "create", "k", "--admin").stdout.split()[-1]
        train = "".join(json.dumps(r) + "\n" for r in training_rows(800))
        uploaded = httpx.post(
            f"{live.url}/api/v1/files",
            files={"file": ("train.jsonl", train.encode(), "application/jsonl")},
            data={"purpose": "fine-tune"},
            headers=bearer(key),
        )
        assert uploaded.status_code == 201, uploaded.text
        body = {
            "base_model": "demo-lm",
            "training_file": uploaded.json()["path"],
            "suffix": "ddp",
            "hyperparameters": {"epochs": 1, "batch_size": 8, "learning_rate": 3e-3, "checkpoint_steps": 10},
        }
        job_id = httpx.post(f"{live.url}{FT}", json=body, headers=bearer(key), timeout=60).json()["id"]
        assert live.proc is not None
        (worker,) = [p for p in psutil.Process(live.proc.pid).children() if "worker" in " ".join(p.cmdline())]
        deadline = time.monotonic() + 240
        while not _saved_steps(_events(live, key, job_id)):
            assert _job(live, key, job_id)["status"] in ("queued", "running"), _job(live, key, job_id)
            assert time.monotonic() < deadline, "no checkpoint was saved"
            time.sleep(0.05)
        ranks = _ranks(worker)
        assert len(ranks) == 2, ranks
        for process in (worker, *ranks):  # frozen: what they recorded is what they die with
            process.suspend()
        saved = _saved_steps(_events(live, key, job_id))[-1]
        os.kill(worker.pid, signal.SIGKILL)
        for process in ranks:
            process.resume()
        _, alive = psutil.wait_procs(ranks, timeout=30)
        assert not alive, f"training processes outlived their worker: {alive}"

        deadline = time.monotonic() + 300
        while (done := _job(live, key, job_id))["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, done
            time.sleep(0.2)
        assert done["status"] == "completed" and done["attempts"] == 2, done
        assert done["progress"]["resumed_from_step"] == saved and done["metrics"]["processes"] == 2
        assert done["progress"]["step"] == done["metrics"]["steps"] == 100
        answer = httpx.post(
            f"{live.url}/api/v1/generate",
            json={"prompt": "What is 17+25?", "model_id": done["fine_tuned_model"], "max_tokens": 6, "temperature": 0},
            headers=bearer(key),
            timeout=60,
        )
        assert answer.status_code == 200 and answer.json()["text"].strip() == "42", answer.text

        # A cancel reaches rank 0 through the worker; every rank stops at the same step.
        body = {**body, "suffix": "stopped", "hyperparameters": {**body["hyperparameters"], "epochs": 3}}
        second = httpx.post(f"{live.url}{FT}", json=body, headers=bearer(key), timeout=60).json()["id"]
        deadline = time.monotonic() + 240
        while _job(live, key, second)["progress"].get("step", 0) == 0:
            assert time.monotonic() < deadline, _job(live, key, second)
            time.sleep(0.05)
        (replacement,) = [p for p in psutil.Process(live.proc.pid).children() if "worker" in " ".join(p.cmdline())]
        ranks = _ranks(replacement)
        assert len(ranks) == 2, ranks
        assert httpx.post(f"{live.url}{FT}/{second}/cancel", headers=bearer(key)).status_code == 200
        deadline = time.monotonic() + 120
        while (stopped := _job(live, key, second))["status"] not in ("cancelled", "completed", "failed"):
            assert time.monotonic() < deadline, stopped
            time.sleep(0.1)
        assert stopped["status"] == "cancelled" and stopped["fine_tuned_model"] is None, stopped
        assert stopped["progress"]["step"] < stopped["progress"]["total_steps"]
        _, alive = psutil.wait_procs(ranks, timeout=30)
        assert not alive and replacement.is_running()
    finally:
        live.stop()
