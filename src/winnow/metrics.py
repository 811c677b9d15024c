"""Prometheus metrics (``GET /metrics``).

Request, token, batching and rate-limit figures are counted in the API process where they happen.
Job figures are read from the job store at scrape time, so they are right however many worker
processes (or machines) run the jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """One registry per app, so that several apps in one process (tests) never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "winnow_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "winnow_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "winnow_generation_tokens", "Tokens in and out by model", ["model", "direction"], registry=self.registry
        )
        self.first_token = Histogram(
            "winnow_time_to_first_token_seconds",
            "Time to the first streamed token",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "winnow_rate_limit_rejections",
            "Requests refused by a rate limit, by class",
            ["rate_class"],
            registry=self.registry,
        )

        self.budget_rejections = Counter(
            "winnow_budget_rejections",
            "Requests refused because the key's budget is spent, by model",
            ["model"],
            registry=self.registry,
        )

    def add_callback(
        self, name: str, documentation: str, label: str, read: Callable[[], dict[str, float]], counter: bool = False
    ) -> None:
        """A gauge (or counter) family computed at scrape time by ``read()`` (label value -> value)."""
        self.add_family(name, documentation, [label], lambda: {(k,): v for k, v in read().items()}, counter)

    def add_family(
        self,
        name: str,
        documentation: str,
        labels: list[str],
        read: Callable[[], dict[tuple[str, ...], float]],
        counter: bool = False,
    ) -> None:
        """Like ``add_callback`` with several labels: ``read()`` gives label values -> value."""
        self.registry.register(_Callback(name, documentation, labels, read, counter))

    def add_usage(self, read: Callable[[], dict[tuple[str, str], list[float]]]) -> None:
        """Generations, tokens and spend by model and source, from the usage rows every process writes
        (API, job workers on any machine), so the figures are whole however the work is spread."""
        self.registry.register(_Usage(read))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Callback(Collector):
    def __init__(
        self,
        name: str,
        documentation: str,
        labels: list[str],
        read: Callable[[], dict[tuple[str, ...], float]],
        counter: bool,
    ) -> None:
        self.name, self.documentation, self.labels, self.read, self.counter = name, documentation, labels, read, counter

    def collect(self) -> Iterator[Any]:
        kind = CounterMetricFamily if self.counter else GaugeMetricFamily
        family = kind(self.name, self.documentation, labels=self.labels)
        for key, value in self.read().items():
            family.add_metric(list(key), value)
        yield family


class _Usage(Collector):
    def __init__(self, read: Callable[[], dict[tuple[str, str], list[float]]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Any]:
        labels = ["model", "source"]
        generations = CounterMetricFamily(
            "winnow_usage_generations", "Generations recorded (usage rows)", labels=labels
        )
        tokens = CounterMetricFamily(
            "winnow_usage_tokens", "Tokens recorded, by direction", labels=[*labels, "direction"]
        )
        spend = CounterMetricFamily("winnow_spend_usd", "Cost of recorded generations, in USD", labels=labels)
        for (model, source), (count, tokens_in, tokens_out, cost) in sorted(self.read().items()):
            generations.add_metric([model, source], count)
            tokens.add_metric([model, source, "input"], tokens_in)
            tokens.add_metric([model, source, "output"], tokens_out)
            spend.add_metric([model, source], cost)
        yield from (generations, tokens, spend)
