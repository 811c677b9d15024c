"""The engine process's entry (``python -m winnow.models.engine_process_main``): load the model named
on stdin, say hello on stdout, then serve it over the socket it was handed (``engine_process``)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys

from winnow.config import ModelConfig, Settings
from winnow.models.engine_process import serve_model
from winnow.models.providers.transformers import LoadedModel


def main() -> None:
    # stdout carries the one hello line; whatever libraries print goes to stderr.
    hello = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    spec = json.loads(sys.stdin.buffer.readline())
    sys.setswitchinterval(float(spec["settings"]["switch_interval_ms"]) / 1000)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s engine %(levelname)s %(message)s")
    try:
        model = LoadedModel(ModelConfig.model_validate(spec["config"]), Settings.model_construct(**spec["settings"]))
    except Exception as exc:
        hello.write(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
        hello.flush()
        raise SystemExit(1) from exc
    hello.write(json.dumps({"ok": True, "nbytes": model.nbytes}) + "\n")
    hello.close()
    try:
        import uvloop  # the server's loop too (uvicorn's standard extra): cheaper wake-ups and timers
    except ImportError:
        asyncio.run(serve_model(model, int(spec["fd"])))
    else:
        uvloop.run(serve_model(model, int(spec["fd"])))
    os._exit(0)  # a batch still running on the model's thread has no one left to answer


if __name__ == "__main__":
    main()
