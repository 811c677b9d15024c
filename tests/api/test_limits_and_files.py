"""Claims of the README and the specs that no other test checks: the upload cap on POST /files
(declared and streamed bodies), the histogram PNG of a completed job, and the X-RateLimit-*
headers and OpenAI-shaped 429 of /v1."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import bearer, running_worker, wait_for_job
from tests.sdg.jobs import SDG, job_body, submit, write_prompts
from tests.spec import assert_error
from winnow.api import create_app
from winnow.config import Settings
from winnow.runtime import Runtime

UPLOAD_LIMIT = 2000
BOUNDARY = "winnow-test-boundary"


def _multipart(data: bytes) -> bytes:
    """A multipart/form-data body with ``data`` as its one file field, ``file``."""
    head = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="prompts.jsonl"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def _prompts_bytes(tmp_path: Path, rows: int) -> bytes:
    return write_prompts(tmp_path / f"prompts-{rows}.jsonl", rows).read_bytes()


def test_an_upload_over_max_upload_bytes_is_413_declared_or_streamed(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", workers=0, max_upload_bytes=UPLOAD_LIMIT)
    small, big = _prompts_bytes(tmp_path, 10), _prompts_bytes(tmp_path, 100)
    assert len(_multipart(small)) < UPLOAD_LIMIT < len(big)  # and the body cap of other routes is 10 MiB
    with TestClient(create_app(settings)) as client:
        key = client.app.state.runtime.keys.create("uploader").key  # type: ignore[attr-defined]
        headers = {**bearer(key), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}

        accepted = client.post("/api/v1/files", content=_multipart(small), headers=headers)
        assert accepted.status_code == 201, accepted.text
        assert accepted.json()["rows"] == 10

        sent: list[bytes] = []

        def chunks() -> Iterator[bytes]:
            whole = _multipart(big)
            for start in range(0, len(whole), 500):
                sent.append(whole[start : start + 500])
                yield sent[-1]

        # Declared too large: refused from its Content-Length, before any of the body is read.
        length = {"Content-Length": str(len(_multipart(big)))}
        declared = client.post("/api/v1/files", content=chunks(), headers=headers | length)
        body = assert_error(declared, 413, "payload_too_large")
        assert str(UPLOAD_LIMIT) in body["details"]
        assert sent == []

        # No Content-Length: the cap counts what arrives.
        streamed = client.post("/api/v1/files", content=chunks(), headers=headers)
        assert "content-length" not in streamed.request.headers
        assert_error(streamed, 413, "payload_too_large")

    stored = sorted(p.name for p in (settings.data_dir / "files").rglob("*") if p.is_file())
    assert stored == [Path(accepted.json()["path"]).name]  # only the accepted upload, no partial file


def test_a_completed_job_serves_its_histogram_as_a_png(client: TestClient, settings: Settings, user_key: str) -> None:
    prompts = write_prompts(settings.data_dir / "small.jsonl", 12)
    job = submit(client, user_key, job_body(prompts, num_generations=2))
    with running_worker(settings):
        done = wait_for_job(client, user_key, job["job_id"], ("completed", "failed", "cancelled"))
    assert done["status"] == "completed", done
    response = client.get(f"{SDG}/jobs/{job['job_id']}/histogram", headers=bearer(user_key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.format == "PNG"
        image.verify()
    pixels = matplotlib.image.imread(io.BytesIO(response.content), format="png")
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert float(np.ptp(pixels)) > 0  # something is drawn on it


def _chat(client: TestClient, key: str, **overrides: object) -> Any:  # the TestClient's response
    body = {"model": "demo-lm", "messages": [{"role": "user", "content": "What is 2+3?"}], "max_tokens": 4}
    return client.post("/v1/chat/completions", json=body | overrides, headers=bearer(key))


def _limits(response: Any) -> tuple[str, str, int]:
    headers = response.headers
    return headers["x-ratelimit-limit"], headers["x-ratelimit-remaining"], int(headers["x-ratelimit-reset"])


def test_v1_answers_carry_rate_limit_headers_and_its_429_is_openai_shaped(client: TestClient, runtime: Runtime) -> None:
    key = runtime.keys.create("tight", rate_limits={"generation": "3/minute"}).key
    now = int(time.time())

    ok = _chat(client, key)
    assert ok.status_code == 200, ok.text
    limit, remaining, reset = _limits(ok)
    assert (limit, remaining) == ("3", "2") and reset >= now

    bad = _chat(client, key, temperature=9)  # a 400 still counts, and says so
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"
    assert _limits(bad)[:2] == ("3", "1")

    streamed = _chat(client, key, stream=True)
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert _limits(streamed)[:2] == ("3", "0")

    refused = _chat(client, key)
    assert refused.status_code == 429
    error = refused.json()
    assert set(error) == {"error"} and set(error["error"]) == {"message", "type", "param", "code"}, error
    assert error["error"]["type"] == "requests" and error["error"]["code"] == "rate_limit_exceeded"  # as OpenAI's
    assert error["error"]["param"] is None and "generation" in error["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert _limits(refused)[:2] == ("3", "0") and _limits(refused)[2] >= now
