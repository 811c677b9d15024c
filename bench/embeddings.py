"""Served embeddings against the bare ``SentenceTransformer.encode`` at batch 64, on minilm-l6.

In one run, on the same texts:
  (a) bare   - ``SentenceTransformer.encode(texts, batch_size=64)`` in this process, with torch on
               every core (its default), and on one core less (what the server gives its models)
  (b) served - ``POST /v1/embeddings`` on a real ``winnow serve`` (default config), with wrk as the
               load: 64 connections sending one text each (the batcher gathers them), and one
               connection sending 64 texts per request
and prints texts/s and served ÷ bare (the target is >= 0.8).

    python bench/embeddings.py                 # 512 texts, 3 rounds of 10 s per served load
    python bench/embeddings.py --seconds 5 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CORES = os.cpu_count() or 1
LESS = max(1, CORES - 1)  # the server's torch threads by default (one core left to its event loop)
sys.path.insert(0, str(ROOT / "src"))

SUBJECTS = ["The old farmer", "A young engineer", "My neighbour's cat", "The city council", "A travelling musician"]
VERBS = ["carefully repaired", "quietly watched", "argued about", "painted", "wrote a long letter about"]
OBJECTS = ["the broken bridge", "the winter market", "a forgotten garden", "the new library", "the river at dawn"]
ENDINGS = ["before the storm arrived.", "while everyone else slept.", "for the third time this year.", "in June."]


def texts(count: int) -> list[str]:
    """Sentences of 12-20 tokens, all different."""
    out = []
    for i in range(count):
        s, v, o, e = (SUBJECTS[i % 5], VERBS[(i // 5) % 5], OBJECTS[(i // 25) % 5], ENDINGS[(i // 125) % 4])
        out.append(f"{s} {v} {o} {e} (note {i})")
    return out


class Bare:
    """``SentenceTransformer.encode`` at batch 64 in this process (torch's default threads)."""

    def __init__(self, model_dir: Path) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)

    def texts_per_s(self, sentences: list[str], threads: int) -> float:
        import torch

        torch.set_num_threads(threads)
        started = time.perf_counter()
        self.model.encode(sentences, batch_size=64, normalize_embeddings=True)
        return len(sentences) / (time.perf_counter() - started)


def wrk_script(path: Path, key: str, bodies: list[str]) -> Path:
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
        f"local bodies = {{{', '.join(json.dumps(b) for b in bodies)}}}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #bodies + 1\n"
        '  return wrk.format(nil, "/v1/embeddings", nil, bodies[i])\n'
        "end\n"
    )
    return path


def run(sentences: list[str], seconds: int, repeat: int) -> list[dict[str, float]]:
    """``repeat`` rounds, each a bare run then every served load (the server idles while the bare
    run works): ratios taken within a round, so that a busy machine slows both sides alike."""
    data = Path(tempfile.mkdtemp(prefix="winnow-bench-"))
    env = {
        **os.environ,
        "WINNOW_DATA_DIR": str(data),
        "WINNOW_RATE_LIMITS__GENERATION": "1000000/minute",
        "WINNOW_LOG_LEVEL": "WARNING",
        "WINNOW_WORKERS": "0",
    }
    cli = [sys.executable, "-m", "winnow"]
    key = subprocess.run([*cli, "keys", "create", "bench"], env=env, capture_output=True, text=True, check=True)
    secret = key.stdout.split()[-1]
    port = 18000 + os.getpid() % 1000
    server = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    loads = {
        "64 connections x 1 text": (64, [json.dumps({"model": "minilm-l6", "input": t}) for t in sentences], 1),
        "1 connection x 64 texts": (
            1,
            [json.dumps({"model": "minilm-l6", "input": sentences[i : i + 64]}) for i in range(0, len(sentences), 64)],
            64,
        ),
    }
    try:
        _wait_ready(base, secret)
        bare = Bare(data / "models" / "minilm-l6")  # the folder the server unpacked
        bare.texts_per_s(sentences[:64], CORES)
        rounds = []
        for _ in range(repeat):
            figures = {
                "bare": bare.texts_per_s(sentences, CORES),
                "bare, 1 thread less": bare.texts_per_s(sentences, LESS),
            }
            for name, (connections, bodies, per_request) in loads.items():
                script = wrk_script(data / f"{connections}.lua", secret, bodies)
                figures[name] = _wrk(base, script, connections, seconds) * per_request
            print("# " + ", ".join(f"{k}: {v:.0f} texts/s" for k, v in figures.items()), flush=True)
            rounds.append(figures)
        return rounds
    finally:
        server.terminate()
        server.wait(10)


def _wait_ready(base: str, key: str) -> None:
    for _ in range(600):
        try:
            httpx.get(f"{base}/api/v1/health", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    warm = httpx.post(
        f"{base}/v1/embeddings",
        json={"model": "minilm-l6", "input": ["warm up"] * 64},
        headers={"Authorization": f"Bearer {key}"},
        timeout=300,
    )
    warm.raise_for_status()  # unpacks and loads the model


def _wrk(base: str, script: Path, connections: int, seconds: int) -> float:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "-s", str(script), base],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"errors under load:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rounds = run(texts(args.texts), args.seconds, args.repeat)
    print(f"bare encode (batch 64): median {statistics.median(r['bare'] for r in rounds):.0f} texts/s")
    for name in [k for k in rounds[0] if k != "bare"]:  # each against bare at every core
        ratios = [r[name] / r["bare"] for r in rounds]
        print(
            f"served, {name}: median {statistics.median(r[name] for r in rounds):.0f} texts/s; served / bare "
            f"per round {', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f})"
        )


if __name__ == "__main__":
    main()
