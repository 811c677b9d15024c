"""The Grafana dashboard in examples/grafana: every metric its queries name is one Winnow's
/metrics serves (a counter's _total, a histogram's _bucket/_sum/_count), and every panel reads the
dashboard's Prometheus data source."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT

DASHBOARD = ROOT / "examples" / "grafana" / "winnow.json"
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",)}


def served_names(text: str) -> set[str]:
    """Every series name the exposition can carry, from its families' names and types (so a family
    with no samples yet still counts)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


def named_metrics(dashboard: dict[str, Any]) -> dict[str, str]:
    """Metric name -> the first query that names it, over every panel's targets."""
    found: dict[str, str] = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            for name in re.findall(r"\bwinnow_[a-z0-9_]+", target["expr"]):
                found.setdefault(name, target["expr"])
    return found


def test_every_metric_the_dashboard_names_is_served(client: TestClient) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    named = named_metrics(dashboard)
    assert len(named) >= 15  # requests, latency, tokens, spend, deployments, jobs
    served = served_names(client.get("/metrics").text)
    missing = {name: expr for name, expr in named.items() if name not in served}
    assert not missing, f"the dashboard names metrics /metrics does not serve: {missing}"
    assert "winnow_made_up_total" not in served  # the check can tell a wrong name


def test_every_panel_reads_the_prometheus_variable() -> None:
    dashboard = json.loads(Path(DASHBOARD).read_text())
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource"}
    graphs = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert graphs and all(p["datasource"]["uid"] == "${datasource}" and p["targets"] for p in graphs)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
