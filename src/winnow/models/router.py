"""The router: the deployments of one upstream model, which one a call goes to, and what a failure does.

A model of an OpenAI-compatible provider has one deployment or several (``deployments`` in its
config; none: its ``base_url`` is the one). A call goes to the deployment the model's
``routing_strategy`` picks: ``round_robin`` (weighted), ``least_busy`` (fewest calls in flight) or
``latency`` (lowest moving average, spread over those within 10% of it). A failure that is the
deployment's (connection error, timeout, 429, 5xx, 401/403/404) moves the call to a deployment not
yet tried, at once; once each has been tried, ``max_retries`` more tries go after a capped
exponential backoff with jitter, or the upstream's Retry-After. A deployment that fails
``cooldown.allowed_fails`` times in a row (a 429 or a refused connection at once) is cooled down:
skipped for ``cooldown_s`` or the upstream's longer Retry-After, then probed by one call, which
either brings it back or cools it again; calls that find no other deployment wait for the probe
(at most its ``timeout_s``) rather than fail. A model's only deployment is never cooled down (as
in LiteLLM's Router, which this follows): that would refuse calls it might still answer. Only
real rpm/tpm caps make a 429.

When every deployment has failed, the model's ``fallbacks`` are tried in order, each with its own
deployments (not its own fallbacks); a context-window or content-policy refusal goes to
``context_window_fallbacks`` / ``content_policy_fallbacks`` instead. Any other refusal of the
request (a 400) goes back to the client at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit

from winnow.config import ModelConfig
from winnow.errors import InvalidRequest, RateLimitExceeded, ServiceUnavailable, WinnowError
from winnow.models.providers.passthrough import UpstreamFailure, UpstreamHTTP
from winnow.requests import context as request_context

log = logging.getLogger("winnow.router")
T = TypeVar("T")
FailureKind = Literal["deployment", "request", "context_window", "content_policy"]
PIN_HEADER = "x-winnow-deployment"  # a request header pins a deployment; the response's names it
ATTEMPTS_HEADER = "x-winnow-attempts"
_MAX_BACKOFF_S = 8.0
_MAX_RETRY_AFTER_S = 60.0
_EWMA_ALPHA = 0.3
_LATENCY_SPREAD = 1.1
_CONTEXT = re.compile(r"context[_ ](length|window)|maximum context|too many tokens|prompt is too long", re.I)
_CONTENT = re.compile(r"content[_ ](filter|policy|management)|safety system|flagged", re.I)


@dataclass(eq=False)
class Deployment:
    """One upstream of a model, with what the router knows of it."""

    id: str
    model_id: str
    upstream_model: str
    http: UpstreamHTTP
    sdk: Any  # openai.AsyncOpenAI for the SDK's calls (jobs, /generate), with no retries of its own
    weight: float = 1.0
    rpm: int | None = None
    tpm: int | None = None
    in_flight: int = 0
    latency_s: float | None = None  # moving average of successful calls (to the first chunk for streams)
    fails: int = 0  # in a row
    cooled_until: float = 0.0  # time.monotonic()
    timeout_s: float = 60.0  # the bound of one call (and so of a probe)
    probing: bool = False  # back from a cooldown, not yet proven by a success
    probe_out: bool = False  # the one probing call is in flight
    probe_ended: asyncio.Event | None = field(default=None, repr=False)  # set when that call ends
    waiting: int = 0  # calls waiting for its probe to end
    requests: int = 0
    failures: int = 0
    cooldowns: int = 0
    _minute: int = -1
    _minute_requests: int = 0
    _minute_tokens: int = 0
    _current: float = field(default=0.0, repr=False)  # smooth weighted round robin

    def state(self, now: float) -> Literal["healthy", "cooldown", "probing"]:
        if now < self.cooled_until:
            return "cooldown"
        return "probing" if self.probing else "healthy"

    def _roll(self, now: float) -> None:
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self._minute_requests, self._minute_tokens = minute, 0, 0

    def capped(self, now: float) -> bool:
        """At its rpm or tpm cap for the current minute."""
        if self.rpm is None and self.tpm is None:
            return False
        self._roll(now)
        return (self.rpm is not None and self._minute_requests >= self.rpm) or (
            self.tpm is not None and self._minute_tokens >= self.tpm
        )

    def usable(self, now: float) -> bool:
        return now >= self.cooled_until and not (self.probing and self.probe_out) and not self.capped(now)

    def count_tokens(self, tokens: int) -> None:
        """Tokens a call through it used, for its ``tpm`` cap."""
        if self.tpm is not None:
            self._roll(time.monotonic())
            self._minute_tokens += tokens

    def status(self, now: float) -> dict[str, Any]:
        """What /api/v1/models shows of it."""
        return {
            "id": self.id,
            "state": self.state(now),
            "cooldown_remaining_s": round(max(0.0, self.cooled_until - now), 3),
            "in_flight": self.in_flight,
            "latency_ms": None if self.latency_s is None else round(self.latency_s * 1000, 3),
            "requests": self.requests,
            "failures": self.failures,
            "cooldowns": self.cooldowns,
            "waiting": self.waiting,
        }

    def probe_in_flight(self, now: float) -> bool:
        """Its probe is out, and nothing else (a cooldown, a cap) keeps calls from it."""
        return self.probe_out and now >= self.cooled_until and not self.capped(now)

    def start_probe(self) -> None:
        if self.probe_ended is None:  # a pinned call may go to it with a probe already out
            self.probe_ended = asyncio.Event()
        self.probe_out = True

    def end_probe(self) -> None:
        """The probing call ended (either way): calls waiting for it may pick again."""
        self.probe_out = False
        if self.probe_ended is not None:
            self.probe_ended.set()
            self.probe_ended = None


@dataclass
class Routed(Generic[T]):
    """A call's result, the deployment that answered it and the upstream calls it took."""

    value: T
    deployment: Deployment
    attempts: int
    router: Router

    def release(self) -> None:
        """The end of a held call (a stream): it no longer counts as in flight."""
        self.deployment.in_flight -= 1

    def failed(self, error: WinnowError) -> None:
        """The held answer broke after it began (a stream cut off): it counts against the
        deployment (towards its cooldown) though the call can no longer move."""
        self.router._failed(self.deployment, UpstreamFailure(error, retryable=True))


class _Exhausted(Exception):
    """Every try of one model failed; fallbacks may still answer."""

    def __init__(self, failure: UpstreamFailure, kind: FailureKind, attempts: int) -> None:
        super().__init__(failure.error.message)
        self.failure, self.kind, self.attempts = failure, kind, attempts


def classify(failure: UpstreamFailure) -> FailureKind:
    """Whose failure it is: the deployment's (try another), or the request's (a context-window or
    content-policy refusal, which fallbacks may answer, or any other, which goes back at once)."""
    status = failure.status
    if status is None or failure.retryable or status in (401, 403, 404):
        return "deployment"
    said = f"{failure.code or ''} {failure.error.details or ''}"
    if _CONTEXT.search(said):
        return "context_window"
    if _CONTENT.search(said):
        return "content_policy"
    return "request"


def backoff_s(retry: int, retry_after: float | None) -> float:
    """The wait before retry number ``retry`` (from 0): the upstream's Retry-After when it names one
    of up to a minute, else 0.5 s doubling to 8 s, less up to a quarter of it at random."""
    if retry_after is not None and retry_after <= _MAX_RETRY_AFTER_S:
        return retry_after
    return float(min(0.5 * 2**retry, _MAX_BACKOFF_S) * (1 - 0.25 * random.random()))


def with_attempts(error: WinnowError, attempts: int) -> WinnowError:
    error.headers[ATTEMPTS_HEADER] = str(attempts)
    return error


class Router:
    """Routes one model's calls over its deployments (see the module's docstring)."""

    def __init__(self, config: ModelConfig, deployments: list[Deployment]) -> None:
        ids = [d.id for d in deployments]
        if len(set(ids)) != len(ids):
            raise ValueError(f"model {config.id!r}: deployment ids must differ, got {ids}")
        self.model_id = config.id
        self.deployments = deployments
        self.by_id = {d.id: d for d in deployments}
        self.strategy = config.routing_strategy
        self.cooldown = config.cooldown
        self.max_retries = config.max_retries
        self.fallbacks: dict[FailureKind, list[str]] = {
            "deployment": config.fallbacks,
            "context_window": config.context_window_fallbacks,
            "content_policy": config.content_policy_fallbacks,
        }
        self.peers: Mapping[str, Router] = {}  # every routed model by id, set by the registry
        self._only = deployments[0] if len(deployments) == 1 else None
        self._turn = 0

    # -- picking -----------------------------------------------------------------------------------
    def pick(self, tried: set[str], pin: str | None = None) -> Deployment | None:
        """The deployment for the next try: ``pin`` (whatever its state), else a usable one not in
        ``tried`` chosen by the strategy; None when there is none."""
        now = time.monotonic()
        if pin is not None:
            chosen: Deployment | None = self.by_id[pin] if pin not in tried else None
        elif self._only is not None:
            chosen = self._only if not tried and not self._only.capped(now) else None
        else:
            chosen = self._choose([d for d in self.deployments if d.id not in tried and d.usable(now)])
        if chosen is not None:
            chosen.requests += 1
            if chosen.probing:
                chosen.start_probe()
            if chosen.rpm is not None:
                chosen._minute_requests += 1
        return chosen

    def _choose(self, candidates: list[Deployment]) -> Deployment | None:
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        if self.strategy == "least_busy":
            fewest = min(d.in_flight for d in candidates)
            return self._rotate([d for d in candidates if d.in_flight == fewest])
        if self.strategy == "latency":
            fastest = min(d.latency_s or 0.0 for d in candidates)
            return self._rotate([d for d in candidates if (d.latency_s or 0.0) <= fastest * _LATENCY_SPREAD])
        total = 0.0  # smooth weighted round robin (nginx's): each gets its weight's share, interleaved
        for d in candidates:
            d._current += d.weight
            total += d.weight
        chosen = max(candidates, key=lambda d: d._current)
        chosen._current -= total
        return chosen

    def _rotate(self, candidates: list[Deployment]) -> Deployment:
        chosen = candidates[self._turn % len(candidates)]
        self._turn += 1
        return chosen

    # -- calling -----------------------------------------------------------------------------------
    async def call(
        self,
        attempt: Callable[[Deployment], Awaitable[T]],
        *,
        pin: str | None = None,
        fallbacks: bool = True,
        hold: bool = False,
    ) -> Routed[T]:
        """``attempt`` on deployments until one succeeds, then on fallback models' (unless
        ``fallbacks`` is off or a deployment is pinned). ``attempt`` raises ``UpstreamFailure`` for
        a failed upstream call. ``hold``: the answer is a stream, in flight until ``release()``.
        What still fails raises the client's error, with the attempts in its headers."""
        if pin is not None and pin not in self.by_id:
            raise InvalidRequest(
                f"No deployment {pin!r} of model {self.model_id!r}",
                f"{PIN_HEADER}: one of {', '.join(self.by_id)}",
            )
        try:
            return await self._route(attempt, pin, hold)
        except _Exhausted as exhausted:
            attempts = exhausted.attempts
            for model_id in self.fallbacks[exhausted.kind] if fallbacks and pin is None else ():
                router = self.peers.get(model_id)
                if router is None or router is self:
                    continue
                try:
                    routed = await router._route(attempt, None, hold)
                except _Exhausted as again:
                    attempts += again.attempts
                    continue
                routed.attempts += attempts
                log.info("%s answered for %s after %d failed attempts", model_id, self.model_id, attempts)
                return routed
            raise with_attempts(exhausted.failure.error, attempts) from None

    async def _route(self, attempt: Callable[[Deployment], Awaitable[T]], pin: str | None, hold: bool) -> Routed[T]:
        tried: set[str] = set()
        waited: set[str] = set()  # deployments whose probe this call waited for
        attempts = retries = 0
        last: UpstreamFailure | None = None
        while True:
            deployment = self.pick(tried, pin)
            if deployment is None and pin is None and await self._wait_for_probe(tried | waited, waited):
                continue
            if deployment is None:
                if last is not None and last.retryable and retries < self.max_retries:
                    deployment = self.pick(set(), pin)
                if deployment is None:
                    raise _Exhausted(last or self._none_usable(), "deployment", attempts)
                await asyncio.sleep(backoff_s(retries, last.retry_after if last else None))
                retries += 1
            attempts += 1
            deployment.in_flight += 1
            started = time.perf_counter()
            try:
                with request_context.attempt(deployment.model_id, deployment.id):  # timed for the request log
                    value = await attempt(deployment)
            except UpstreamFailure as failure:
                deployment.in_flight -= 1
                kind = classify(failure)
                if kind != "deployment":
                    self._alive(deployment)  # it answered: the request is what it refused
                    if kind == "request":
                        raise with_attempts(failure.error, attempts) from None
                    raise _Exhausted(failure, kind, attempts) from None
                self._failed(deployment, failure)
                tried.add(deployment.id)
                last = failure
                continue
            except BaseException:  # cancelled (the client went away), or a bug: not the deployment's
                deployment.in_flight -= 1
                deployment.end_probe()
                raise
            if not hold:
                deployment.in_flight -= 1
            self._succeeded(deployment, time.perf_counter() - started)
            return Routed(value, deployment, attempts, self)

    async def _wait_for_probe(self, skip: set[str], waited: set[str]) -> bool:
        """Wait for the probe of a deployment not in ``skip`` to end (at most its ``timeout_s``, which
        bounds the probing call too); False when no such probe is in flight."""
        now = time.monotonic()
        probing = next((d for d in self.deployments if d.id not in skip and d.probe_in_flight(now)), None)
        if probing is None or probing.probe_ended is None:
            return False
        waited.add(probing.id)
        ended = probing.probe_ended
        probing.waiting += 1
        try:
            async with asyncio.timeout(probing.timeout_s):
                await ended.wait()
        except TimeoutError:
            pass
        finally:
            probing.waiting -= 1
        return True

    def _none_usable(self) -> UpstreamFailure:
        """Why no deployment could be tried: all cooling down (503), a probe still out (503), or
        every one at its rpm/tpm cap (429)."""
        now = time.monotonic()
        cooling = [d.cooled_until - now for d in self.deployments if d.cooled_until > now]
        if cooling or any(d.probe_in_flight(now) for d in self.deployments):
            wait = min(cooling, default=1.0)
            error: WinnowError = ServiceUnavailable(
                f"Every deployment of {self.model_id!r} is cooling down or being probed after failures",
                f"the first is probed again in {wait:.1f} s" if cooling else "a probe is in flight",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        else:
            wait = 60 - now % 60
            error = RateLimitExceeded(
                f"Every deployment of {self.model_id!r} is at its rpm/tpm cap",
                "the caps' minute starts again",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return UpstreamFailure(error, None, wait, retryable=False)

    # -- what a try tells about a deployment ---------------------------------------------------------
    def _succeeded(self, deployment: Deployment, elapsed_s: float) -> None:
        self._alive(deployment)
        previous = deployment.latency_s
        deployment.latency_s = elapsed_s if previous is None else previous + _EWMA_ALPHA * (elapsed_s - previous)

    @staticmethod
    def _alive(deployment: Deployment) -> None:
        deployment.fails = 0
        deployment.probing = False
        deployment.end_probe()

    def _failed(self, deployment: Deployment, failure: UpstreamFailure) -> None:
        deployment.failures += 1
        deployment.fails += 1
        if self._only is not None:
            deployment.end_probe()
            return
        at_once = failure.connect or failure.status in (401, 403, 404, 429)
        if at_once or deployment.probing or deployment.fails >= self.cooldown.allowed_fails:
            wait = min(max(self.cooldown.cooldown_s, failure.retry_after or 0.0), self.cooldown.max_cooldown_s)
            deployment.cooled_until = time.monotonic() + wait
            deployment.probing, deployment.fails = True, 0
            deployment.cooldowns += 1
            log.warning(
                "deployment %s of %s cooled down for %.1f s: %s",
                deployment.id,
                self.model_id,
                wait,
                failure.error.details or failure.error.message,
            )
        deployment.end_probe()  # after the cooldown is set: a call waiting for it must not pick it

    # -- reporting -------------------------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [d.status(now) for d in self.deployments]


def deployment_id(base_url: str | None, taken: set[str]) -> str:
    """A deployment's default id: its host:port (never a URL's userinfo), numbered when another
    deployment has it."""
    host = urlsplit(base_url or "https://api.openai.com/v1").netloc.rpartition("@")[2] or "upstream"
    name, n = host, 1
    while name in taken:
        n += 1
        name = f"{host}-{n}"
    return name
