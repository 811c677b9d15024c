"""``winnow ft``: ``run`` in this process (the model lands in the data dir's database and `winnow
models list` shows it), and the remote commands against a real ``winnow serve`` with its worker."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.conftest import LiveServer, bearer
from tests.finetune.test_api import training_rows
from winnow.cli import app


def _train_file(path: Path, rows: int) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in training_rows(rows)))
    return path


def test_ft_run_trains_here_and_registers_the_model(tmp_path: Path) -> None:
    env = {"WINNOW_DATA_DIR": str(tmp_path / "data")}
    train = _train_file(tmp_path / "train.jsonl", 32)
    runner = CliRunner()
    result = runner.invoke(
        app, ["ft", "run", "--file", str(train), "--epochs", "1", "--batch-size", "8", "--suffix", "here"], env=env
    )
    assert result.exit_code == 0, result.output
    model = result.stdout.strip().splitlines()[-1]
    assert model.startswith("demo-lm:ft-here-")
    job = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert job["status"] == "completed" and job["progress"]["step"] == 4 and job["fine_tuned_model"] == model
    listed = runner.invoke(app, ["models", "list", "--json"], env=env)
    assert model in [m["id"] for m in json.loads(listed.stdout)]
    bad = runner.invoke(app, ["ft", "run", "--file", str(train), "--base", "nope"], env=env)
    assert bad.exit_code == 1 and "base_model" in bad.output


@pytest.mark.slow  # a real `winnow serve` and its worker process
def test_ft_remote_commands_against_a_server(tmp_path: Path) -> None:
    live = LiveServer(tmp_path / "data", env={"WINNOW_WORKERS": "1"}).start()
    try:
        key = live.cli("keys", "create", "k").stdout.split()[-1]
        env = {"WINNOW_URL": live.url, "WINNOW_API_KEY": key}
        runner = CliRunner()
        train = _train_file(tmp_path / "train.jsonl", 24)
        submitted = runner.invoke(
            app,
            [
                "ft",
                "submit",
                "--file",
                str(train),
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--suffix",
                "remote",
                "--wait",
            ],
            env=env,
        )
        assert submitted.exit_code == 0, submitted.output
        job = json.loads(submitted.stdout)
        assert job["status"] == "completed" and job["training_rows"] == 24
        model = job["fine_tuned_model"]
        status = json.loads(runner.invoke(app, ["ft", "status", job["id"]], env=env).stdout)
        assert status["fine_tuned_model"] == model
        listed = json.loads(runner.invoke(app, ["ft", "list"], env=env).stdout)
        assert [j["id"] for j in listed["data"]] == [job["id"]]
        events = runner.invoke(app, ["ft", "events", job["id"]], env=env).stdout
        assert "validated 24 training row(s)" in events and f"completed: the new model is {model}" in events
        ended = runner.invoke(app, ["ft", "cancel", job["id"]], env=env)
        assert ended.exit_code == 1 and "already ended" in ended.output
        answer = httpx.post(
            f"{live.url}/api/v1/generate",
            json={"prompt": "What is 17+25?", "model_id": model, "max_tokens": 6},
            headers=bearer(key),
        )
        assert answer.status_code == 200
        deleted = runner.invoke(app, ["ft", "delete", model], env=env)
        assert deleted.exit_code == 0 and json.loads(deleted.stdout)["deleted"] is True
        assert runner.invoke(app, ["ft", "delete", model], env=env).exit_code == 1
    finally:
        live.stop()
