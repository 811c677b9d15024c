"""Batches vs SDG: the same N small generations on demo-lm, once as an OpenAI batch (/v1/batches) and
once as an SDG job (/api/v1/synthetic_data_generation), each from submit to completed, on one real
job worker in this process. Reports both throughputs and batch/SDG (target >= 0.8). The SDG job also
scores each response with demo-rm (it must name a reward model), so it does a little more work.

    python bench/batches.py [--n 10000] [--max-tokens 8] [--chunk 64]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fastapi.testclient import TestClient  # noqa: E402

from winnow.api.app import create_app  # noqa: E402
from winnow.config import Settings  # noqa: E402
from winnow.jobs.worker import Worker  # noqa: E402


def _wait(client: TestClient, key: str, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
    while True:
        status: dict[str, Any] = client.get(path, params=params, headers={"Authorization": f"Bearer {key}"}).json()
        if status["status"] in ("completed", "failed", "cancelled"):
            assert status["status"] == "completed", status
            return status
        time.sleep(0.1)


def _batch(client: TestClient, key: str, n: int, max_tokens: int) -> float:
    auth = {"Authorization": f"Bearer {key}"}
    lines = "".join(
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "demo-lm",
                    "messages": [{"role": "user", "content": f"What is {i % 97}+1?"}],
                    "max_tokens": max_tokens,
                    "temperature": 1.0,
                },
            }
        )
        + "\n"
        for i in range(n)
    )
    upload = client.post(
        "/v1/files", files={"file": ("b.jsonl", io.BytesIO(lines.encode()))}, data={"purpose": "batch"}, headers=auth
    )
    body = {"input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    started = time.perf_counter()
    batch_id = client.post("/v1/batches", json=body, headers=auth).json()["id"]
    _wait(client, key, f"/v1/batches/{batch_id}")
    return time.perf_counter() - started


def _sdg(client: TestClient, key: str, data: Path, n: int, max_tokens: int, chunk: int) -> float:
    with (data / "prompts.jsonl").open("w") as out:
        for i in range(n):
            out.write(json.dumps({"id": f"p{i}", "prompt": f"What is {i % 97}+1?"}) + "\n")
    body = {
        "model": "demo-lm",
        "prompts_path": "prompts.jsonl",
        "batch_size": chunk,
        "temperature": 1.0,
        "max_gen_len": max_tokens,
        "num_generations": 1,
        "reward_model": "demo-rm",
    }
    started = time.perf_counter()
    submitted = client.post(
        "/api/v1/synthetic_data_generation/submit_job", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert submitted.status_code < 300, submitted.text
    _wait(client, key, "/api/v1/synthetic_data_generation/job_status", {"job_id": submitted.json()["job_id"]})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=64, help="batch_chunk_lines, and the SDG job's batch_size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        settings = Settings(data_dir=data, workers=0, data_roots=[data], batch_chunk_lines=args.chunk)
        stop, loop = asyncio.Event(), asyncio.new_event_loop()
        worker = Worker(settings, poll_s=0.05)
        thread = threading.Thread(target=loop.run_until_complete, args=(worker.run_forever(stop),), daemon=True)
        with TestClient(create_app(settings)) as client:
            key = client.app.state.runtime.keys.create("bench").key  # type: ignore[attr-defined]
            thread.start()
            _batch(client, key, min(args.n, 64), args.max_tokens)  # load the models first: neither run pays for it
            _sdg(client, key, data, min(args.n, 64), args.max_tokens, args.chunk)
            batch_s = _batch(client, key, args.n, args.max_tokens)
            sdg_s = _sdg(client, key, data, args.n, args.max_tokens, args.chunk)
            loop.call_soon_threadsafe(stop.set)
            thread.join(timeout=60)
    print(
        json.dumps(
            {
                "n": args.n,
                "max_tokens": args.max_tokens,
                "batch_s": round(batch_s, 2),
                "sdg_s": round(sdg_s, 2),
                "batch_per_s": round(args.n / batch_s, 1),
                "sdg_per_s": round(args.n / sdg_s, 1),
                "ratio": round(sdg_s / batch_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
