"""The router's decisions on their own (no network): the latency strategy learns which deployment
is faster, and a refusal of the request is sorted by what it says: a context-window or
content-policy error goes to that kind's fallbacks, any other 400 back to the client at once."""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson
import pytest

from winnow.config import ModelConfig
from winnow.errors import InvalidRequest
from winnow.models.providers.passthrough import UpstreamFailure, UpstreamHTTP, status_failure
from winnow.models.router import Deployment, Router


def _router(model_id: str, *names: str, **config: object) -> Router:
    model = ModelConfig.model_validate({"id": model_id, "provider": "openai", **config})
    deployments = [
        Deployment(
            id=name, model_id=model_id, upstream_model="m", http=UpstreamHTTP(model_id, "m", None, "k", 5), sdk=None
        )
        for name in names
    ]
    return Router(model, deployments)


def _refusal(message: str, code: str | None = None) -> UpstreamFailure:
    payload = orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "code": code}})
    return status_failure("big", 400, payload, {})


def test_the_latency_strategy_sends_calls_to_the_faster_deployment() -> None:
    router = _router("m", "slow", "fast", routing_strategy="latency")

    async def call(deployment: Deployment) -> str:
        if deployment.id == "slow":
            await asyncio.sleep(0.02)  # the upstream's own latency, not a wait for anything
        return deployment.id

    async def run() -> list[str]:
        return [(await router.call(call)).value for _ in range(20)]

    served = asyncio.run(run())
    assert served[:2] == ["slow", "fast"]  # neither measured yet: each is tried
    assert Counter(served[2:]) == {"fast": 18}
    latency = {d.id: d.latency_s for d in router.deployments}
    assert latency["slow"] is not None and latency["fast"] is not None and latency["fast"] < latency["slow"]


@pytest.mark.parametrize(
    ("message", "code", "answered_by"),
    [
        ("This model's maximum context length is 8192 tokens.", "context_length_exceeded", "long"),
        ("The response was filtered due to our content management policy.", "content_filter", "lenient"),
    ],
)
def test_context_window_and_content_policy_refusals_go_to_their_own_fallbacks(
    message: str, code: str, answered_by: str
) -> None:
    big = _router(
        "big",
        "b1",
        "b2",
        fallbacks=["other"],
        context_window_fallbacks=["long"],
        content_policy_fallbacks=["lenient"],
    )
    peers = {r.model_id: r for r in (big, _router("long", "l1"), _router("lenient", "c1"), _router("other", "o1"))}
    big.peers = peers
    asked: list[str] = []

    async def call(deployment: Deployment) -> str:
        asked.append(deployment.id)
        if deployment.model_id == "big":
            raise _refusal(message, code)
        return deployment.model_id

    routed = asyncio.run(big.call(call))
    assert (routed.value, routed.attempts) == (answered_by, 2)
    assert asked == ["b1", peers[answered_by].deployments[0].id]  # b2 would refuse it too: not asked


def test_any_other_refusal_goes_back_to_the_client_at_once() -> None:
    big = _router("big", "b1", "b2", fallbacks=["other"])
    big.peers = {"big": big, "other": _router("other", "o1")}
    asked: list[str] = []

    async def call(deployment: Deployment) -> str:
        asked.append(deployment.id)
        raise _refusal("'messages' must not be empty", "invalid_value")

    with pytest.raises(InvalidRequest, match="rejected") as refused:
        asyncio.run(big.call(call))
    assert asked == ["b1"] and refused.value.headers["x-winnow-attempts"] == "1"
    assert big.deployments[0].state(0.0) == "healthy"  # it answered: not its fault
