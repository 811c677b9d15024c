"""Gateway overhead: a /v1/chat/completions request through Winnow to an OpenAI-compatible upstream
on loopback, against the same request sent to the upstream directly and through LiteLLM's proxy, in
one run.

The upstream is a minimal OpenAI-compatible server (uvicorn, one canned completion), so that what
is measured is the gateway. Load comes from wrk (C, one thread, its own process) with a Lua script
for the POST: throughput at 64 connections, p50/p99 latency at 1 connection (measured first, on a
server idle for --settle seconds; the p99 at 1 connection right after the burst of 64 is printed
apart for Winnow). LiteLLM's proxy runs
from its own venv (never a Winnow dependency): --litellm PATH names its `litellm` executable
(default /tmp/litellm-venv/bin/litellm; make it with
`python -m venv /tmp/litellm-venv && /tmp/litellm-venv/bin/pip install 'litellm[proxy]'`); without
it only Winnow vs direct is printed.

    python bench/gateway.py [--seconds 5] [--repeat 1] [--baseline REV]

The router's cost: the gateway also serves ``relay2``, the same upstream as two deployments of one
model, and with ``--baseline REV`` a second gateway runs the code of git revision REV (its ``src``,
from ``git archive``, in its own data dir) on the one-deployment model, so that one run prints
the router's single-deployment path against the path before it (target: p50 <= +0.2 ms) and two
deployments against one.
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

UPSTREAM = """
import json, time
from starlette.applications import Starlette
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

BODY = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "42"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}}).encode()
MODELS = json.dumps({"object": "list", "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "x"}]}).encode()

CHUNK = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "m"}
EVENTS = [
    {**CHUNK, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
    {**CHUNK, "choices": [{"index": 0, "delta": {"content": "42"}, "finish_reason": None}]},
    {**CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {**CHUNK, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}},
]
STREAM = [f"data: {json.dumps(e)}\\n\\n".encode() for e in EVENTS] + [b"data: [DONE]\\n\\n"]

async def chat(request):
    body = json.loads(await request.body())
    if body.get("stream"):
        async def events():
            for event in STREAM:
                yield event
        return StreamingResponse(events(), media_type="text/event-stream")
    return Response(BODY, media_type="application/json")

async def models(request):
    return Response(MODELS, media_type="application/json")

app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models)])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(url: str, tries: int = 200) -> None:
    import httpx

    for _ in range(tries):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


LITELLM_CONFIG = """
model_list:
  - model_name: relay
    litellm_params: {{model: openai/m, api_base: "http://127.0.0.1:{port}/v1", api_key: not-set}}
litellm_settings: {{telemetry: false, drop_params: false}}
general_settings: {{disable_spend_logs: true}}
"""


LITELLM_KEY = "sk-winnow-bench-0123456789abcdef"


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def _ms(out: str, pct: str) -> float:
    found = re.search(rf"{pct}%\s+([\d.]+)(us|ms|s)\b", out)
    assert found is not None, out
    return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]


def wrk(url: str, key: str, model: str, connections: int, seconds: int) -> Load:
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
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors += sum(int(n) for n in sockets.groups()) if sockets else 0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return Load(rps, _ms(out, "50"), _ms(out, "99"), errors)


def ttfb(url: str, key: str, model: str, requests: int) -> tuple[float, float]:
    """Time to the first byte of a streamed body (p50, p99 in ms) over ``requests`` sequential
    streamed chat requests on one keep-alive connection; each stream is read to its end."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "What is 40+2?"}],
            "max_tokens": 4,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        connection.request("POST", parts.path, body, headers)
        response = connection.getresponse()
        first = response.read(1)
        times.append((time.perf_counter() - start) * 1000)
        rest = response.read()
        assert response.status == 200 and (first + rest).rstrip().endswith(b"[DONE]"), (response.status, rest)
    connection.close()
    times.sort()
    return times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.99))]


def start_litellm(executable: str, up_port: int, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = tmp / "litellm.yaml"
    config.write_text(LITELLM_CONFIG.format(port=up_port))
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": LITELLM_KEY,  # its proxy refuses to start without one
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "PYTHONPATH": "",
    }
    log = (tmp / "litellm.log").open("wb")
    proc = subprocess.Popen(
        [executable, "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc, f"http://127.0.0.1:{port}"


def start_baseline(rev: str, config: Path, tmp: Path, procs: list[subprocess.Popen[bytes]]) -> tuple[int, str]:
    """A gateway running the code of git revision ``rev`` (its src only) on the same config: (port, key)."""
    src = tmp / "baseline"
    src.mkdir()
    archive = subprocess.run(["git", "archive", rev, "src"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    old = json.loads(config.read_text())
    old["models"] = [m for m in old["models"] if "deployments" not in m]  # what the old code knows
    (tmp / "baseline.yaml").write_text(json.dumps(old))
    env = {
        **os.environ,
        "PYTHONPATH": str(src / "src"),
        "WINNOW_DATA_DIR": str(tmp / "baseline-data"),
        "WINNOW_CONFIG": str(tmp / "baseline.yaml"),
    }
    key = subprocess.run(
        [sys.executable, "-m", "winnow", "keys", "create", "bench"], env=env, capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    port = free_port()
    procs.append(subprocess.Popen([sys.executable, "-m", "winnow", "serve", "--port", str(port)], env=env))
    return port, key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every measurement (each printed)")
    parser.add_argument("--stream-requests", type=int, default=1000, help="streams for the time to first byte")
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before each 1-connection run")
    parser.add_argument("--litellm", default="/tmp/litellm-venv/bin/litellm", help="LiteLLM's executable")
    parser.add_argument("--baseline", help="a git revision whose gateway to measure beside this one")
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
                    },
                    {
                        "id": "relay2",
                        "type": "commercial",
                        "provider": "openai",
                        "upstream_model": "m",
                        "deployments": [
                            {"id": name, "base_url": f"http://127.0.0.1:{up_port}/v1"} for name in ("d1", "d2")
                        ],
                    },
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
    targets = {  # name: (url, key, model)
        "direct upstream": (f"http://127.0.0.1:{up_port}/v1/chat/completions", key, "m"),
        "winnow gateway": (f"http://127.0.0.1:{gw_port}/v1/chat/completions", key, "relay"),
        "winnow 2 deploys": (f"http://127.0.0.1:{gw_port}/v1/chat/completions", key, "relay2"),
    }
    if args.baseline:
        base_port, base_key = start_baseline(args.baseline, config, tmp, procs)
        targets["winnow baseline"] = (f"http://127.0.0.1:{base_port}/v1/chat/completions", base_key, "relay")
    if Path(args.litellm).exists():
        litellm, litellm_url = start_litellm(args.litellm, up_port, tmp)
        procs.append(litellm)
        targets["litellm proxy"] = (f"{litellm_url}/v1/chat/completions", LITELLM_KEY, "relay")
    else:
        print(f"LiteLLM proxy: not measured ({args.litellm} not found; see the docstring)")
    try:
        wait(f"http://127.0.0.1:{up_port}/v1/models")
        wait(f"http://127.0.0.1:{gw_port}/api/v1/health")
        if args.baseline:
            wait(f"http://127.0.0.1:{base_port}/api/v1/health")
        if "litellm proxy" in targets:
            wait(f"{litellm_url}/health/liveliness", tries=900)
        for url, secret, model in targets.values():  # warm up pooled clients
            wrk(url, secret, model, 8, 1)
        print(f"{'':<16} {'req/s @64':>10} {'p50 @1':>9} {'p99 @1':>9} {'errors':>7} {'p99 @1 after @64':>17}")
        router_p50: list[float] = []
        for round_ in range(args.repeat):
            results: dict[str, tuple[Load, Load]] = {}
            for name, (url, secret, model) in targets.items():
                # Latency at 1 connection first, with the server idle since its last burst; then
                # throughput at 64; then 1 connection again while the server still works off the
                # burst (a gateway's usage rows are written after the responses), printed apart.
                time.sleep(args.settle)
                one = wrk(url, secret, model, 1, args.seconds)
                many = wrk(url, secret, model, 64, args.seconds)
                after = wrk(url, secret, model, 1, args.seconds) if name == "winnow gateway" else None
                results[name] = (many, one)
                print(
                    f"{name:<16} {many.rps:10.0f} {one.p50_ms:7.2f}ms {one.p99_ms:7.2f}ms {many.errors + one.errors:7d}"
                    + (f" {after.p99_ms:15.2f}ms" if after else "")
                )
            direct, gateway = results["direct upstream"], results["winnow gateway"]
            line = (
                f"round {round_ + 1}: winnow over direct at 1 connection: p50 {gateway[1].p50_ms - direct[1].p50_ms:+.2f} ms"
                f" (target <= +1), p99 {gateway[1].p99_ms - direct[1].p99_ms:+.2f} ms (target <= +3)"
            )
            if "litellm proxy" in results:
                litellm_load = results["litellm proxy"]
                line += (
                    f"; winnow / litellm req/s at 64: {gateway[0].rps / litellm_load[0].rps:.1f}x (target >= 10x);"
                    f" litellm over direct p50 {litellm_load[1].p50_ms - direct[1].p50_ms:+.2f} ms"
                )
            two = results["winnow 2 deploys"]
            line += f"; 2 deployments over 1: p50 {two[1].p50_ms - gateway[1].p50_ms:+.2f} ms"
            if "winnow baseline" in results:
                base = results["winnow baseline"]
                router_p50.append(gateway[1].p50_ms - base[1].p50_ms)
                line += (
                    f"; router (1 deployment) over {args.baseline}: p50 {router_p50[-1]:+.2f} ms (target <= +0.2),"
                    f" req/s at 64 {gateway[0].rps / base[0].rps:.2f}x"
                )
            if args.stream_requests:
                stream = {
                    name: ttfb(*targets[name], args.stream_requests) for name in ("direct upstream", "winnow gateway")
                }
                (d50, d99), (w50, w99) = stream["direct upstream"], stream["winnow gateway"]
                line += (
                    f"; stream time to first byte over direct ({args.stream_requests} streams):"
                    f" p50 {w50 - d50:+.2f} ms (target <= +1), p99 {w99 - d99:+.2f} ms"
                )
            print(line + "\n")
        if router_p50:
            ordered = sorted(router_p50)
            print(
                f"router over {args.baseline}, p50 at 1 connection, median of {len(ordered)} rounds: "
                f"{ordered[len(ordered) // 2]:+.2f} ms"
            )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
