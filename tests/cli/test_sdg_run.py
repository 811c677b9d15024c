"""``winnow sdg run`` in this process: a finished run is not redone (``--force`` redoes it), an
interrupted one says where it resumes, and model loading prints no progress bars of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import DEMO_PROMPTS
from winnow.cli import app
from winnow.sdg.workfiles import FileCheckpoint


def _python_path() -> dict[str, str]:
    """The interpreter's module path for a child process (only what is needed of this one's environment)."""
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}


runner = CliRunner()


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(line + "\n" for line in DEMO_PROMPTS.read_text().splitlines()[:12]))
    return path


def _sdg_run(prompts: Path, output: Path, *extra: str) -> Any:
    args = ["sdg", "run", "--prompts", str(prompts), "-o", str(output), "--max-gen-len", "4", "--batch-size", "4"]
    env = {"WINNOW_DATA_DIR": str(output.parent / "data"), "COLUMNS": "200"}
    return runner.invoke(app, [*args, "--seed", "7", *extra], env=env)


def test_a_finished_run_is_not_redone_unless_forced(prompts: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    first = _sdg_run(prompts, output)
    assert first.exit_code == 0, first.output
    written = output.stat().st_mtime_ns, output.read_bytes()
    assert len(written[1].splitlines()) == 12

    again = _sdg_run(prompts, output)
    assert again.exit_code == 0, again.output
    assert f"{output} is already complete (12 rows from 12 prompts)" in again.stderr
    assert "--force" in again.stderr and again.stdout.strip() == str(output)
    assert "kept" not in again.stderr  # no run: nothing generated, scored or written
    assert (output.stat().st_mtime_ns, output.read_bytes()) == written

    other = _sdg_run(prompts, output, "--max-gen-len", "3")  # other parameters: a run of its own
    assert other.exit_code == 0 and "already complete" not in other.stderr, other.output
    assert output.stat().st_mtime_ns != written[0]

    forced = _sdg_run(prompts, output, "--max-gen-len", "3", "--force")
    assert forced.exit_code == 0 and "already complete" not in forced.stderr, forced.output
    assert "kept 12 of 12 responses" in forced.stderr


class DiesOnSecondSave(FileCheckpoint):
    """Saves the first chunk's checkpoint, then dies saving the second (after its rows were written)."""

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.saves = getattr(self, "saves", 0) + 1
        if self.saves == 2:
            raise KeyboardInterrupt("crash")
        super().save(*args, **kwargs)


def test_an_interrupted_run_says_where_it_resumes(
    prompts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "out.jsonl"
    with monkeypatch.context() as patch:
        patch.setattr("winnow.cli.sdg.FileCheckpoint", DiesOnSecondSave)
        crashed = _sdg_run(prompts, output)
    assert crashed.exit_code != 0 and not output.exists()
    resumed = _sdg_run(prompts, output)
    assert resumed.exit_code == 0, resumed.output
    assert "Resuming at chunk 2 of 3 (4 prompts done)" in resumed.stderr
    assert len(output.read_text().splitlines()) == 12


@pytest.mark.slow  # a `winnow generate` process loading torch and the model
def test_loading_models_prints_no_progress_bars(tmp_path: Path) -> None:
    env = {**_python_path(), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "WINNOW_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [sys.executable, "-m", "winnow", "generate", "What is 1+1?", "--max-tokens", "2", "--temperature", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Loading weights" not in done.stderr and "it/s" not in done.stderr, done.stderr
