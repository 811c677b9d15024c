"""Local models shipped as GGUF files (``gguf`` in a model's config), converted once for transformers.

transformers reads a GGUF file (with the ``gguf`` package), de-quantizing its tensors to float32,
which takes tens of seconds on a small CPU. So the first use writes the result into the data
directory as an ordinary safetensors folder (weights, config, tokenizer, chat template) and every
later load, fine-tune and tokenizer reads that folder: the model's ``path``. The conversion is
written to a temporary folder and renamed into place, under a file lock, so processes starting at
once (the server, its job workers, an engine process) convert it once and never see half a folder.
The conversion runs in a child process (``python -m winnow.models.gguf GGUF OUT``): the ~1 GB it
takes goes back to the system with it, not into the server's resident set.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from winnow.config import ModelConfig
from winnow.errors import ServiceUnavailable

log = logging.getLogger("winnow.models")


def gguf_file(spec: str) -> Path:
    """The GGUF file a config names: ``package:file`` (a file inside an installed package, found
    without importing the package) or a path."""
    package, sep, name = spec.partition(":")
    if sep and "/" not in package and package.isidentifier():
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise ServiceUnavailable(f"GGUF {spec!r}: package {package!r} is not installed", spec)
        return Path(next(iter(found.submodule_search_locations))) / name
    return Path(spec).expanduser()


def gguf_present(config: ModelConfig) -> bool:
    try:
        return bool(config.gguf) and gguf_file(str(config.gguf)).is_file()
    except ServiceUnavailable:
        return False


def converted(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def ensure_converted(config: ModelConfig) -> None:
    """Make ``config.path`` from ``config.gguf`` unless an earlier conversion did (blocking)."""
    if not config.gguf or not config.path or converted(Path(config.path)):
        return
    target = Path(config.path)
    source = gguf_file(config.gguf)
    if not source.is_file():
        raise ServiceUnavailable(f"Model {config.id!r}: its GGUF file is missing", str(source))
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process converting: wait for it, then use its folder
        if converted(target):
            return
        started = time.monotonic()
        log.info("converting %s from %s into %s (once)", config.id, source, target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            done = subprocess.run(
                [sys.executable, "-m", "winnow.models.gguf", str(source), str(tmp)], capture_output=True, text=True
            )
            if done.returncode != 0:
                raise ServiceUnavailable(f"Model {config.id!r} could not be converted", done.stderr[-2000:])
            if target.exists():  # a folder left without weights (not ours: we hold the lock)
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("converted %s in %.1f s", config.id, time.monotonic() - started)


def _convert(source: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name, local_files_only=True)
    model: Any = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32, local_files_only=True
    )
    # De-quantized, it is a plain float32 model: save it as one (transformers refuses to save a
    # model it still marks as GGUF-quantized).
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


if __name__ == "__main__":
    _convert(Path(sys.argv[1]), Path(sys.argv[2]))
