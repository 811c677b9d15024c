"""Fine-tuning data preparation in constant memory, off the API server: lines checked and written one
at a time (a line longer than ``fine_tuning_max_line_bytes`` named, the error list capped with a
count), the held-out split streamed and seeded, and on a real `winnow serve` a ~200 MB file prepared
by the worker with the server's and the worker's peak RSS each growing < 100 MB; a cancel stops the
preparation within a heartbeat."""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient

from tests.conftest import LiveServer, bearer, wait_for
from tests.finetune.test_api import FT, job_body, training_rows, upload
from winnow.config import Settings
from winnow.errors import InvalidRequest
from winnow.finetune.data import MAX_REPORTED_ERRORS, Holdout, check_training_file, normalize

BAD = '{"prompt": "a prompt without its completion"}\n'


def _lines(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_errors_are_capped_with_their_count_in_constant_memory(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    with path.open("w") as out:
        out.write(BAD * 50_000)  # 2.3 MB of bad lines
    tracemalloc.start()
    try:
        with pytest.raises(InvalidRequest) as raised:
            check_training_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert raised.value.message == "Not a training file: 50000 invalid line(s)"
    details = raised.value.details or ""
    assert details.count("line ") == MAX_REPORTED_ERRORS and details.endswith("(and 49990 more)")
    assert peak < 2 << 20, peak  # the errors kept are the first ten, not 50k strings
    with pytest.raises(InvalidRequest) as raised:
        normalize(path, "sft", False, tmp_path / "out.jsonl", "training_file")
    assert raised.value.message == "training_file has 50000 invalid line(s)"
    assert (raised.value.details or "").endswith("(and 49990 more)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]  # nothing written


def test_a_line_over_the_cap_is_named_and_never_read_whole(tmp_path: Path) -> None:
    rows = [{"prompt": "What is 1+1?", "completion": "2"}] * 3
    path = tmp_path / "long.jsonl"
    with path.open("w") as out:
        out.write(json.dumps(rows[0]) + "\n")
        out.write(json.dumps({"prompt": "x" * (16 << 20), "completion": "y"}) + "\n")  # 16 MB
        out.write(json.dumps(rows[1]) + "\n" + json.dumps(rows[2]))  # the last line without a newline
    tracemalloc.start()
    try:
        with pytest.raises(InvalidRequest) as raised:
            check_training_file(path, max_line_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert raised.value.details == (f"line 2: longer than {1 << 20} bytes (setting fine_tuning_max_line_bytes)"), (
        raised.value.details
    )
    assert peak < 8 << 20, peak  # a few times the cap, never the line
    assert check_training_file(path, max_line_bytes=32 << 20) == 4  # the long row is a valid one
    exact = tmp_path / "exact.jsonl"
    line = json.dumps({"prompt": "p" * 1000, "completion": "c"}).encode()
    exact.write_bytes(line + b"\n" + line)
    assert check_training_file(exact, max_line_bytes=len(line)) == 2  # the newline is not counted
    with pytest.raises(InvalidRequest):
        check_training_file(exact, max_line_bytes=len(line) - 1)


def test_the_validation_split_is_exact_seeded_and_streamed(tmp_path: Path) -> None:
    source = _lines(tmp_path / "rows.jsonl", training_rows(1000))
    picks = []
    for run in range(2):
        train, held = normalize(
            source, "sft", False, tmp_path / f"t{run}.jsonl", "f", Holdout(0.1, 7, tmp_path / f"v{run}.jsonl")
        )
        assert held is not None and (train.rows, held.rows) == (900, 100)
        picks.append(held.path.read_text())
        train_lines = set(train.path.read_text().splitlines())
        assert len(train_lines) == 900 and not train_lines & set(picks[-1].splitlines())
    assert picks[0] == picks[1]
    _, other = normalize(source, "sft", False, tmp_path / "t.jsonl", "f", Holdout(0.1, 8, tmp_path / "v.jsonl"))
    assert other is not None and other.path.read_text() != picks[0]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".checked")) == []


def test_an_upload_with_a_long_line_is_a_400_naming_it(tmp_path: Path) -> None:
    from winnow.api import create_app

    settings = Settings(data_dir=tmp_path / "data", workers=0, fine_tuning_max_line_bytes=4096)
    body = json.dumps({"prompt": "a", "completion": "b"}) + "\n" + json.dumps({"prompt": "x" * 5000, "completion": "y"})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        key = client.app.state.runtime.keys.create("admin", admin=True).key  # type: ignore[attr-defined]
        refused = upload(client, key, body + "\n")
    assert refused.status_code == 400, refused.text
    assert "line 2: longer than 4096 bytes" in refused.json()["details"]


def test_submitting_reads_no_rows_the_worker_prepares_them(client: TestClient, admin_key: str, runtime: Any) -> None:
    """The submit answers before any row is read (a bad row is the worker's to find): the job is queued
    with no rows yet, and nothing is written beside it."""
    folder = runtime.settings.data_dir / "shared"
    folder.mkdir(parents=True)
    path = folder / "bad.jsonl"
    path.write_text(BAD * 3)
    submitted = client.post(FT, json=job_body(str(path)), headers=bearer(admin_key))
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert (job["status"], job["stage"], job["training_rows"]) == ("queued", "queued", 0)
    assert not (runtime.settings.data_dir / "jobs" / job["id"] / "train.jsonl").exists()


def _peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


@pytest.mark.slow  # a real `winnow serve` and its worker over a 200 MB file, twice
def test_a_200_mb_training_file_is_prepared_in_constant_memory_and_a_cancel_stops_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    live = LiveServer(data, env={"WINNOW_WORKERS": "1", "WINNOW_JOB_LEASE_S": "3"}).start()
    try:
        key = live.cli("keys", "create", "k", "--admin").stdout.split()[-1]
        line = json.dumps({"prompt": "What is 1+1? " + "x" * 400, "completion": "2 " + "y" * 100}) + "\n"
        rows = (201 << 20) // len(line)
        big = data / "shared" / "big.jsonl"
        big.parent.mkdir(parents=True)
        with big.open("w") as out:
            for _ in range(rows // 1000):
                out.write(line * 1000)
            out.write(BAD)  # the last line is bad: the worker reads every line, then fails the job
        bad_line = rows // 1000 * 1000 + 1
        assert big.stat().st_size > 200 << 20
        assert live.proc is not None
        (worker,) = [p for p in psutil.Process(live.proc.pid).children() if "worker" in " ".join(p.cmdline())]
        with httpx.Client(base_url=live.url, headers=bearer(key), timeout=60) as http:
            # The server loads the base model's tokenizer once (to see whether it chats): before measuring.
            warm = _lines(data / "shared" / "warm.jsonl", training_rows(4))
            first = http.post(FT, json=job_body(str(warm))).json()
            http.post(f"{FT}/{first['id']}/cancel")
            wait_for(http, key, f"{FT}/{first['id']}", until=("cancelled", "failed"))
            server_before, worker_before = _peak_rss(live.proc.pid), _peak_rss(worker.pid)

            job = http.post(FT, json=job_body(str(big)))
            assert job.status_code == 202, job.text
            assert job.json()["status"] == "queued" and job.json()["training_rows"] == 0
            failed = wait_for(http, key, f"{FT}/{job.json()['id']}", timeout=300)
            assert failed["status"] == "failed", failed
            assert failed["error"].startswith("training_file has 1 invalid line(s): line ")
            assert f"line {bad_line}: a prompt row needs a completion" in failed["error"], failed["error"]
            server_growth = _peak_rss(live.proc.pid) - server_before
            worker_growth = _peak_rss(worker.pid) - worker_before
            print(f"peak RSS growth: server {server_growth >> 20} MB, worker {worker_growth >> 20} MB")
            assert server_growth < 100 << 20, server_growth
            assert worker_growth < 100 << 20, worker_growth  # (243 MB when every row is kept in a list)
            assert not list((data / "jobs" / failed["id"]).glob("*.checked"))

            # Again, cancelled while it prepares: the heartbeat (a second here) hears of it, the pass stops.
            os.truncate(big, big.stat().st_size - len(BAD))  # all good now: only the cancel can stop it
            job_id = http.post(FT, json=job_body(str(big))).json()["id"]
            deadline = time.monotonic() + 120
            while (stage := http.get(f"{FT}/{job_id}").json()["stage"]) != "preparing":
                assert time.monotonic() < deadline, stage
                time.sleep(0.05)
            assert http.post(f"{FT}/{job_id}/cancel").status_code == 200
            done = wait_for(http, key, f"{FT}/{job_id}", until=("cancelled", "failed", "completed"))
            assert done["status"] == "cancelled" and done["training_rows"] == 0, done
            events = http.get(f"{FT}/{job_id}/events").json()["data"]
            assert [e["message"] for e in events] == ["cancelled while preparing the data"], events
            assert not (data / "jobs" / job_id / "train.jsonl").exists()
    finally:
        live.stop()
