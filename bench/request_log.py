"""What the request log adds to a forwarded call: p50 at 1 connection (wrk) of
/v1/chat/completions to an upstream on loopback through four gateways at once: this tree with the
log on (bodies off, the default), with bodies kept, with the log off, and git revision REV (its
``src``, from ``git archive``). Rounds interleave the four, so that a loaded machine slows them
alike; the medians and their differences are printed. First, without any server, the CPU time
(process time, so that waiting for a core on a loaded box does not count) that the log's hooks add
to one routed call: begin, watch, the key/model/attempt/usage notes, finish.

    python bench/request_log.py --baseline REV [--rounds 7] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway import ROOT, UPSTREAM, free_port, wait, wrk

LIMITS = {"generation": "100000000/minute", "other": "100000000/minute", "batch": "1000/minute"}
GATEWAYS = {"log on": {}, "bodies on": {"bodies": True}, "log off": {"enabled": False}, "baseline": None}


def start(name: str, src: Path, up_port: int, tmp: Path, procs: list[subprocess.Popen[bytes]]) -> tuple[str, str]:
    """A gateway on ``src`` whose request log is configured as GATEWAYS[name]: (url, key)."""
    relay = {"id": "relay", "type": "commercial", "provider": "openai", "upstream_model": "m"}
    config: dict[str, object] = {
        "models": [{**relay, "base_url": f"http://127.0.0.1:{up_port}/v1"}],
        "workers": 0,
        "log_level": "WARNING",
        "rate_limits": LIMITS,
    }
    if GATEWAYS[name] is not None:
        config["request_log"] = GATEWAYS[name]
    slug = name.replace(" ", "-")
    (tmp / f"{slug}.yaml").write_text(json.dumps(config))
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "WINNOW_DATA_DIR": str(tmp / slug),
        "WINNOW_CONFIG": str(tmp / f"{slug}.yaml"),
    }
    create = [sys.executable, "-m", "winnow", "keys", "create", "bench"]
    key = subprocess.run(create, env=env, capture_output=True, text=True, check=True).stdout.split()[-1]
    port = free_port()
    procs.append(subprocess.Popen([sys.executable, "-m", "winnow", "serve", "--port", str(port)], env=env))
    return f"http://127.0.0.1:{port}", key


def hooks_cpu_us(bodies: bool, calls: int = 20000) -> float:
    """CPU microseconds the request log adds to one routed call's path (see the docstring)."""
    import asyncio
    from types import SimpleNamespace

    from winnow.requests import capture, context
    from winnow.requests.config import RequestLogConfig
    from winnow.requests.log import RequestLog

    log = RequestLog(None, RequestLogConfig(bodies=bodies))  # type: ignore[arg-type]  # never written here
    app = SimpleNamespace(state=SimpleNamespace(runtime=SimpleNamespace(requests=log)))
    body = json.dumps({"model": "relay", "messages": [{"role": "user", "content": "What is 40+2?"}]}).encode()

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(_message: object) -> None:
        pass

    async def calls_through(logged: bool) -> None:
        for _ in range(calls):
            scope = {"type": "http", "path": "/v1/chat/completions", "method": "POST", "app": app, "state": {}}
            if not logged:
                await receive()
                await send({"type": "http.response.start"})
                await send({"type": "http.response.body"})
                continue
            opened = capture.begin(scope, "rid", time.perf_counter())
            assert opened is not None
            got, sent = capture.watch(opened[0], scope, receive, send)  # type: ignore[arg-type]
            await got()
            context.key(1)
            context.model("relay")
            with context.attempt("relay", "d1"):
                pass
            context.usage("relay", 9, 1, 0.0, "chatcmpl-1", "d1", 1, False)
            await sent({"type": "http.response.start", "status": 200, "headers": []})
            await sent({"type": "http.response.body", "body": b'{"id": "chatcmpl-1"}'})
            capture.finish(scope, opened, 200, 0.001)
        log._buffer.clear()

    def cpu(logged: bool) -> float:
        started = time.process_time()
        asyncio.run(calls_through(logged))
        return time.process_time() - started

    return min(cpu(True) - cpu(False) for _ in range(5)) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="a git revision to measure beside this tree")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    for bodies in (False, True):
        print(f"request-path CPU of the log, bodies {'on' if bodies else 'off'}: {hooks_cpu_us(bodies):.1f} us a call")
    tmp = Path(tempfile.mkdtemp(prefix="winnow-reqlog-bench-"))
    (tmp / "upstream.py").write_text(UPSTREAM)
    archive = subprocess.run(["git", "archive", args.baseline, "src"], cwd=ROOT, capture_output=True, check=True)
    (tmp / "old").mkdir()
    subprocess.run(["tar", "-x", "-C", str(tmp / "old")], input=archive.stdout, check=True)
    up_port = free_port()
    uvicorn = [sys.executable, "-m", "uvicorn", "upstream:app", "--port", str(up_port), "--log-level", "warning"]
    procs: list[subprocess.Popen[bytes]] = [subprocess.Popen(uvicorn, cwd=tmp)]
    try:
        gateways = {
            name: start(name, tmp / "old" / "src" if name == "baseline" else ROOT / "src", up_port, tmp, procs)
            for name in GATEWAYS
        }
        wait(f"http://127.0.0.1:{up_port}/v1/models")
        for url, key in gateways.values():
            wait(f"{url}/api/v1/health")
            wrk(f"{url}/v1/chat/completions", key, "relay", 4, 1)  # warm up
        p50: dict[str, list[float]] = {name: [] for name in gateways}
        for round_ in range(args.rounds):
            for name, (url, key) in gateways.items():
                time.sleep(1)
                p50[name].append(wrk(f"{url}/v1/chat/completions", key, "relay", 1, args.seconds).p50_ms)
            print(f"round {round_ + 1}: " + ", ".join(f"{n} {v[-1]:.3f} ms" for n, v in p50.items()), flush=True)
        median = {name: sorted(values)[len(values) // 2] for name, values in p50.items()}
        print("median p50 at 1 connection: " + ", ".join(f"{n} {v:.3f} ms" for n, v in median.items()))
        print(
            f"log on over {args.baseline}: {median['log on'] - median['baseline']:+.3f} ms (target <= +0.1); "
            f"log on over log off: {median['log on'] - median['log off']:+.3f} ms; "
            f"bodies on over {args.baseline}: {median['bodies on'] - median['baseline']:+.3f} ms"
        )
    finally:
        for proc in procs:
            proc.terminate()


if __name__ == "__main__":
    main()
