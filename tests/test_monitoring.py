"""monitoring/: every metric the Grafana dashboard queries is on a running appliance's /metrics,
and the Prometheus scrape example sends the token /metrics needs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "monitoring" / "grafana" / "switchboard.json"
SCRAPE = ROOT / "monitoring" / "prometheus.yml"

# What removing leaves only metric names and function or operator words in a PromQL expression.
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+")
_OFFSET = re.compile(r"\b(?:offset)\s+-?\w+|@\s*\S+")
_NUMBERS = re.compile(r"(?<![\w:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)")
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left", "group_right",
             "offset", "inf", "nan", "Inf", "NaN"}
_SUFFIXES = {"_bucket": ("histogram",), "_sum": ("histogram", "summary"), "_count": ("histogram", "summary")}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not its functions, labels or keywords)."""
    text = _STRINGS.sub(" ", expr)
    text = _VARIABLES.sub(" ", text)
    while _MATCHERS.search(text):  # a name in braces (`{__name__=...}`) is a label, not a metric
        text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    text = _NUMBERS.sub(" ", text)
    names = set()
    for match in _NAME.finditer(text):
        word = match.group(0)
        followed_by_call = re.match(r"\s*\(", text[match.end():]) is not None
        if not followed_by_call and word not in _KEYWORDS:
            names.add(word)
    return names


def template_metric_names(query: str) -> set[str]:
    """Grafana's label_values(METRIC, label) and query_result(EXPR) template queries."""
    match = re.fullmatch(r"\s*label_values\(\s*([^,()]+?)\s*,\s*\w+\s*\)\s*", query)
    if match:
        return metric_names(match.group(1))
    match = re.fullmatch(r"\s*query_result\((.*)\)\s*", query)
    return metric_names(match.group(1)) if match else set()


def exposed_families(exposition: str) -> dict[str, str]:
    """Metric family name → type, from the # TYPE lines (present even before a labelled metric has a sample)."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", exposition, flags=re.MULTILINE))


def family_of(name: str, families: dict[str, str]) -> str | None:
    """The family a queried series name belongs to: itself, or a histogram's or summary's own
    _bucket/_sum/_count series (a counter that happens to end in _count is not stripped)."""
    if name in families:
        return name
    for suffix, kinds in _SUFFIXES.items():
        base = name.removesuffix(suffix)
        if base != name and families.get(base) in kinds:
            return base
    return None


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels += panel.get("panels", [])  # a collapsed row holds its panels
    return panels


def _queried(dashboard: dict[str, Any]) -> dict[str, set[str]]:
    """Metric name → titles of the panels (or template variables) that query it."""
    queried: dict[str, set[str]] = {}
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            for name in metric_names(target["expr"]):
                queried.setdefault(name, set()).add(panel["title"])
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else ""
        for name in template_metric_names(query):
            queried.setdefault(name, set()).add(f"${variable['name']}")
    return queried


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (outcome) (rate(switchboard_calls_total{instance=~"$instance"}[$__rate_interval]))',
     {"switchboard_calls_total"}),
    ('histogram_quantile(0.95, sum by (le, queue) (rate(switchboard_queue_wait_seconds_bucket{queue!="a b"}[5m])))',
     {"switchboard_queue_wait_seconds_bucket"}),
    ("sum(rate(a_sum[1m])) / on (instance) group_left (site) sum(rate(a_count[1m] offset 1h)) > 1e-3",
     {"a_sum", "a_count"}),
    ("max_over_time(x:recorded:rate5m[1h:5m]) or vector(0) unless bool y", {"x:recorded:rate5m", "y"}),
    ('{__name__="hidden"} + label_replace(z, "dst", "$1", "src", "(.*)")', {"z"}),
])
def test_metric_names_are_found_in_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_suffixes_are_stripped_only_from_histograms_and_summaries() -> None:
    families = {"h_seconds": "histogram", "s": "summary", "jobs_count": "counter", "c_total": "counter"}
    assert family_of("h_seconds_bucket", families) == "h_seconds"
    assert family_of("h_seconds_count", families) == "h_seconds"
    assert family_of("s_sum", families) == "s"
    assert family_of("s_bucket", families) is None  # a summary has no buckets
    assert family_of("jobs_count", families) == "jobs_count"
    assert family_of("c_total_count", families) is None
    assert family_of("c_total", families) == "c_total"
    assert template_metric_names("label_values(switchboard_calls_active, instance)") == {"switchboard_calls_active"}


def test_the_dashboard_is_a_grafana_dashboard_over_a_prometheus_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    (datasource,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert datasource["query"] == "prometheus"
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": f"${{{datasource['name']}}}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            assert target["datasource"] == panel["datasource"]
    titles = " | ".join(p["title"] for p in panels).lower()
    for subject in ("calls", "responses", "queue wait", "persona turn", "tick lag", "workers"):
        assert subject in titles, f"no panel on {subject}"


def test_the_scrape_example_sends_a_token_from_a_file() -> None:
    (job,) = yaml.safe_load(SCRAPE.read_text())["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["credentials_file"]
    assert job["authorization"].get("type", "Bearer") == "Bearer"
    assert "bearer_token" not in job and "basic_auth" not in job


@pytest.mark.sip
def test_every_metric_the_dashboard_queries_is_on_a_running_appliance(appliance_factory) -> None:
    app = appliance_factory(workers=1, extra={"personas": {"workers": 0}})
    exposition = app.get("/metrics", role="supervisor").decode()
    families = exposed_families(exposition)
    assert "switchboard_calls_active" in families, exposition[:2000]

    queried = _queried(json.loads(DASHBOARD.read_text()))
    missing = {name: sorted(panels) for name, panels in queried.items() if family_of(name, families) is None}

    assert not missing, f"queried by the dashboard but not on /metrics: {missing}"
    # What the issue asks the dashboard to cover is there.
    for family in ("switchboard_calls_active", "switchboard_calls_total", "switchboard_sip_responses_total",
                   "switchboard_queue_wait_seconds", "switchboard_persona_turn_seconds",
                   "switchboard_hub_tick_lag_seconds", "switchboard_workers_up", "switchboard_worker_restarts_total"):
        assert any(family_of(name, families) == family for name in queried), family
