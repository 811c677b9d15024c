"""The router's decisions on their own (no network): the latency strategy learns which deployment
is faster, and a refusal of the request is sorted by what it says: a context-window or
content-policy error goes to that kind's fallbacks, any other 400 back to the client at once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import orjson
import pytest

from winnow.config import ModelConfig
from winnow.errors import InvalidRequest, RateLimitExceeded, ServiceUnavailable, UpstreamError
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


def _probing(router: Router) -> None:
    """Every deployment back from a cooldown: each is proven (or cooled again) by one call."""
    for deployment in router.deployments:
        deployment.probing = True


async def _until(check: Callable[[], bool]) -> None:
    """Let the event loop run the other calls until ``check`` holds (no clock involved)."""
    for _ in range(10_000):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError("the calls never got there")


def test_calls_wait_for_probes_in_flight_and_never_get_a_429_without_caps() -> None:
    router = _router("m", "a", "b")
    _probing(router)

    async def run() -> list[str | BaseException]:
        answer = asyncio.Event()

        async def call(deployment: Deployment) -> str:
            await answer.wait()  # the upstream takes its time
            return deployment.id

        calls = [asyncio.ensure_future(router.call(call)) for _ in range(8)]
        await _until(lambda: sum(d.waiting for d in router.deployments) == 6 or any(c.done() for c in calls))
        answer.set()
        done = await asyncio.gather(*calls, return_exceptions=True)
        return [r if isinstance(r, BaseException) else r.value for r in done]

    served = asyncio.run(run())
    assert all(isinstance(s, str) for s in served), served
    assert [d.state(0.0) for d in router.deployments] == ["healthy", "healthy"]


def test_when_the_probes_fail_the_waiting_calls_get_a_503_not_a_429() -> None:
    router = _router("m", "a", "b")
    _probing(router)

    async def run() -> list[BaseException | object]:
        answer = asyncio.Event()

        async def call(deployment: Deployment) -> str:
            await answer.wait()
            raise UpstreamFailure(UpstreamError("down"), 503, retryable=True)

        calls = [asyncio.ensure_future(router.call(call)) for _ in range(4)]
        await _until(lambda: sum(d.waiting for d in router.deployments) == 2 or any(c.done() for c in calls))
        answer.set()
        return list(await asyncio.gather(*calls, return_exceptions=True))

    failed = asyncio.run(run())
    assert all(isinstance(f, UpstreamError) for f in failed[:2]), failed  # the probes
    assert all(isinstance(f, ServiceUnavailable) for f in failed[2:]), failed  # cooling again: not a cap


def test_real_rpm_caps_are_a_429() -> None:
    router = _router("m", "a", "b")
    for deployment in router.deployments:
        deployment.rpm = 1

    async def call(deployment: Deployment) -> str:
        return deployment.id

    async def run() -> None:
        assert {(await router.call(call)).value for _ in range(2)} == {"a", "b"}
        with pytest.raises(RateLimitExceeded, match="rpm/tpm cap"):
            await router.call(call)

    asyncio.run(run())
