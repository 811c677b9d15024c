"""Logging set-up: plain lines by default, one JSON object a line with ``WINNOW_LOG_JSON=1``; secrets
(Winnow's upstream keys, bearer tokens, URL userinfo) masked in either (``winnow.redact``)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from winnow.redact import redact

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return redact(json.dumps(payload, default=str))


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        line = base + ("" if not extra else " " + " ".join(f"{k}={v}" for k, v in extra.items()))
        return redact(line)  # an upstream's echoed key or token never reaches a log


def configure_logging(level: str = "INFO", as_json: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if as_json else PlainFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger("winnow")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
