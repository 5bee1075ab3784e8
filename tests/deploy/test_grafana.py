"""deploy/grafana/ecallgw.json: a provisionable dashboard whose every expression parses (promtool)
and names only metrics the gateway exports.

promtool has no command that parses a bare PromQL expression, so the expressions are written into a
temporary rules file as recording rules and ``promtool check rules`` parses them there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.promkit import DEPLOY, exported_metric_names, metric_names, rules_file, run_promtool

DASHBOARD = DEPLOY / "grafana" / "ecallgw.json"
# Grafana's variables as a query would see them (a range, a job, "All" instances).
VARIABLES = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "6h",
    "job": "ecallgw",
    "instance": ".*",
}
# Scrape health comes from Prometheus, not from the gateway.
NOT_FROM_THE_GATEWAY = frozenset({"up"})
# The sections the dashboard must have (issue 11).
ROWS = {"Overview", "Ingest", "Triage", "Delivery", "Store", "Replicas and sequencer"}


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested ones (collapsed rows hold theirs) included."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _substitute(expr: str) -> str:
    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in VARIABLES:
            raise AssertionError(f"unknown dashboard variable ${name} in {expr!r}")
        return VARIABLES[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


def _exprs() -> list[tuple[str, str]]:
    """(panel title, expression with the variables substituted) of every query."""
    out = []
    for panel in _panels(_dashboard()["panels"]):
        for target in panel.get("targets", []):
            out.append((panel["title"], _substitute(target["expr"])))
    return out


def _variable_queries() -> list[str]:
    out = []
    for var in _dashboard()["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out.append(query)
    return out


def test_dashboard_is_provisionable() -> None:
    dash = _dashboard()
    # A provisioned dashboard has no id (Grafana assigns one) and a fixed uid (links survive).
    assert dash["id"] is None
    assert dash["uid"] == "ecallgw"
    assert dash["title"] and dash["schemaVersion"] >= 36
    assert "__inputs" not in dash, "an export for import, not a provisionable dashboard"
    names = [v["name"] for v in dash["templating"]["list"]]
    assert names[0] == "datasource" and {"job", "instance"} <= set(names)
    ids = [p["id"] for p in _panels(dash["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert {p["title"] for p in dash["panels"] if p["type"] == "row"} >= ROWS
    provider = (DEPLOY / "grafana" / "dashboards.yml").read_text()
    assert "type: file" in provider and "apiVersion: 1" in provider


def test_every_panel_queries_the_chosen_data_source() -> None:
    for panel in _panels(_dashboard()["panels"]):
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"{panel['title']}: no query"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_every_expression_parses(tmp_path: Path) -> None:
    exprs = [expr for _, expr in _exprs()]
    assert len(exprs) > 30
    result = run_promtool("check", "rules", rules_file(exprs, tmp_path / "dashboard.rules.yml"))
    assert result.returncode == 0, result.stdout
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout, result.stdout


def test_variable_queries_parse(tmp_path: Path) -> None:
    selectors = []
    for query in _variable_queries():
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert m is not None, query
        selectors.append(_substitute(m.group(1)))
    result = run_promtool("check", "rules", rules_file(selectors, tmp_path / "variables.rules.yml"))
    assert result.returncode == 0, result.stdout


def test_panels_name_only_metrics_the_gateway_exports() -> None:
    allowed = exported_metric_names() | NOT_FROM_THE_GATEWAY
    unknown = {}
    for title, expr in _exprs():
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        if names - allowed:
            unknown[title] = sorted(names - allowed)
    for query in _variable_queries():
        names = metric_names(query.removeprefix("label_values(").rsplit(",", 1)[0])
        if names - allowed:
            unknown[query] = sorted(names - allowed)
    assert unknown == {}


@pytest.mark.parametrize(
    "metric",
    [
        "ecallgw_signals_received_total",
        "ecallgw_end_to_end_latency_seconds_bucket",
        "ecallgw_triage_outcomes_total",
        "ecallgw_deliveries_total",
        "ecallgw_outbox_depth",
        "ecallgw_store_commit_seconds_bucket",
        "ecallgw_mqtt_connected",
        "ecallgw_sequencer_leader",
        "ecallgw_sequencer_lag_seconds",
        "ecallgw_sequencer_takeovers_total",
    ],
)
def test_dashboard_shows(metric: str) -> None:
    # Throughput, latency, triage, deliveries by receiver, outbox, store, MQTT, replicas/sequencer.
    assert any(metric in metric_names(expr) for _, expr in _exprs())
