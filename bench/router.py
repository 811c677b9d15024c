"""The router's own cost per call on the single-deployment path, in process: what ``forward`` does
around the upstream call (Winnow's body fields, ``Router.call``, the response headers) against
awaiting the same call directly. bench/gateway.py measures the whole request path, where this
is lost in the noise of a shared machine.

    python bench/router.py [--calls 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from winnow.api.passthrough import _overrides, _routing_headers
from winnow.config import ModelConfig
from winnow.models.providers.passthrough import UpstreamHTTP
from winnow.models.router import Deployment, Router


def _router(deployments: int) -> Router:
    config = ModelConfig(id="m", provider="openai")
    return Router(
        config,
        [
            Deployment(
                id=f"d{i}", model_id="m", upstream_model="m", http=UpstreamHTTP("m", "m", None, "k", 5), sdk=None
            )
            for i in range(deployments)
        ],
    )


async def _upstream(_deployment: Deployment) -> dict[str, Any]:
    return {}


async def _measure(calls: int, deployments: int) -> tuple[float, float]:
    router = _router(deployments)
    sent = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    started = time.perf_counter()
    for _ in range(calls):
        await _upstream(router.deployments[0])
    direct = (time.perf_counter() - started) / calls
    started = time.perf_counter()
    for _ in range(calls):
        _body, fallbacks = _overrides(sent)
        routed = await router.call(_upstream, fallbacks=fallbacks)
        _routing_headers(routed)
    return direct, (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    for deployments in (1, 2):
        direct, routed = asyncio.run(_measure(args.calls, deployments))
        print(
            f"{deployments} deployment(s): direct {direct * 1e6:.2f} us, routed {routed * 1e6:.2f} us,"
            f" the router adds {(routed - direct) * 1e6:.2f} us a call (target: < 200 us)"
        )


if __name__ == "__main__":
    main()
