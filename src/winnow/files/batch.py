"""The check of a batch input file (OpenAI's ``purpose=batch``): JSONL of ``{custom_id, method, url,
body}`` requests, each ``custom_id`` once, for the endpoints a batch may call. Checked line by line at
upload, so a bad file is refused naming its lines before anything runs it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from winnow.errors import InvalidRequest
from winnow.finetune.data import LineErrors, file_lines

BATCH_URLS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


BodyCheck = Callable[[str, dict[str, Any]], None]  # (url, body): raises ValueError naming what is wrong


def _check_request(data: Any, seen: set[str], endpoint: str | None = None, body: BodyCheck | None = None) -> None:
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    missing = [name for name in ("custom_id", "method", "url", "body") if name not in data]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    extra = sorted(set(data) - {"custom_id", "method", "url", "body"})
    if extra:
        raise ValueError(f"unknown field(s) {', '.join(extra)}")
    custom_id = data["custom_id"]
    if not isinstance(custom_id, str) or not custom_id:
        raise ValueError("custom_id: expected a non-empty string")
    if custom_id in seen:
        raise ValueError(f"custom_id {custom_id!r} is not unique")
    seen.add(custom_id)
    if data["method"] != "POST":
        raise ValueError(f"method: {data['method']!r}; expected 'POST'")
    if data["url"] not in BATCH_URLS:
        raise ValueError(f"url: {data['url']!r}; expected one of {', '.join(BATCH_URLS)}")
    if endpoint is not None and data["url"] != endpoint:
        raise ValueError(f"url: {data['url']!r}; the batch's endpoint is {endpoint!r}")
    if not isinstance(data["body"], dict):
        raise ValueError("body: expected a JSON object")
    model = data["body"].get("model")
    if not isinstance(model, str) or not model:
        raise ValueError("body.model: expected a model id")
    if body is not None:
        body(data["url"], data["body"])


def check_batch_file(
    path: Path,
    max_line_bytes: int,
    endpoint: str | None = None,
    body: BodyCheck | None = None,
    max_requests: int | None = None,
) -> int:
    """How many requests a batch input file holds, or InvalidRequest naming its first bad lines. For a
    batch: every ``url`` is ``endpoint``, every body passes ``body``, at most ``max_requests`` lines."""
    errors = LineErrors()
    seen: set[str] = set()
    for number, data in file_lines(path, max_line_bytes):
        if max_requests is not None and len(seen) >= max_requests:
            raise InvalidRequest(
                "The batch input file holds too many requests",
                f"more than {max_requests} (setting batch_max_requests)",
                param="input_file_id",
            )
        try:
            if isinstance(data, ValueError):
                raise data
            _check_request(data, seen, endpoint, body)
        except ValueError as exc:
            errors.add(number, exc)
    if errors.count:
        raise InvalidRequest(f"Not a batch input file: {errors.count} invalid line(s)", errors.details(), param="file")
    if not seen:
        raise InvalidRequest("The batch input file has no requests", "the file is empty", param="file")
    return len(seen)
