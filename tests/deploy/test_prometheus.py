"""deploy/prometheus: the rules pass ``promtool check rules`` and their unit tests, name only metrics
the gateway exports, and agree with docs/operations.md (alert list, runbook entries).

promtool runs as a subprocess (Debian's ``prometheus`` package; ``./run test`` installs it).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.deploy.promkit import (
    DEPLOY,
    REPO,
    exported_metric_names,
    metric_names,
    rules_file,
    run_promtool,
    yaml_values,
)

PROM = DEPLOY / "prometheus"
RULES = PROM / "ecallgw.rules.yml"
RULES_TEST = PROM / "ecallgw.rules.test.yml"
OPERATIONS = REPO / "docs" / "operations.md"
# Series the rules read that Prometheus makes, not the gateway: scrape health, the blackbox probe.
NOT_FROM_THE_GATEWAY = frozenset({"up", "probe_success"})


def _rules_text() -> str:
    return RULES.read_text()


def _alerts() -> dict[str, dict[str, str]]:
    """Alert name -> {annotation or field: value}, from the rules file's layout (one block each)."""
    text = _rules_text()
    blocks = re.split(r"(?m)^(?=\s*- (?:alert|record):)", text)
    out: dict[str, dict[str, str]] = {}
    for block in blocks:
        m = re.match(r"\s*- alert:\s*(\S+)", block)
        if m is None:
            continue
        fields = {}
        for key in ("expr", "for", "severity", "summary", "description", "runbook"):
            values = yaml_values(block, key)
            if values:
                fields[key] = values[0][1]
        out[m.group(1)] = fields
    return out


def _records() -> set[str]:
    return {value for _, value in yaml_values(_rules_text(), "record")}


def _section(markdown: str, title: str) -> str:
    """The text of the ``## title`` section."""
    m = re.search(rf"(?ms)^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown)
    assert m is not None, f"docs/operations.md has no '## {title}' section"
    return m.group(1)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_promtool_check_rules() -> None:
    result = run_promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_of_the_rules() -> None:
    # Relative rule_files resolve against the test file's directory.
    result = run_promtool("test", "rules", RULES_TEST.name, cwd=PROM)
    assert result.returncode == 0, result.stdout
    assert "SUCCESS" in result.stdout


def test_every_alert_is_shown_firing_by_a_unit_test() -> None:
    text = RULES_TEST.read_text()
    fired: set[str] = set()
    for case in re.split(r"(?m)^\s*- eval_time:", text)[1:]:
        m = re.search(r"alertname:\s*(\S+)", case)
        if m is not None and "exp_labels" in case.split("- eval_time:")[0]:
            fired.add(m.group(1))
    assert set(_alerts()) - fired == set(), "alerts no unit test shows firing"


def test_rules_name_only_metrics_the_gateway_exports() -> None:
    exported = exported_metric_names()
    allowed = exported | _records() | NOT_FROM_THE_GATEWAY
    used: dict[str, set[str]] = {}
    for line, expr in yaml_values(_rules_text(), "expr"):
        names = metric_names(expr)
        assert names, f"line {line}: no metric found in {expr!r}"
        used[f"line {line}"] = names - allowed
    assert {k: v for k, v in used.items() if v} == {}


def test_exported_names_are_read_from_the_daemon() -> None:
    # The check above is only as good as this list: it must hold families with and without labels,
    # and the histogram suffixes.
    exported = exported_metric_names()
    for name in (
        "ecallgw_signals_received_total",
        "ecallgw_deliveries_total",
        "ecallgw_end_to_end_latency_seconds_bucket",
        "ecallgw_store_commit_seconds_count",
        "ecallgw_outbox_oldest_pending_age_seconds",
        "ecallgw_sequencer_leader",
        "ecallgw_sequencer_takeovers_total",
        "ecallgw_mqtt_connected",
    ):
        assert name in exported
    assert "ecallgw_no_such_metric" not in exported


def test_metric_names_of_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{x="y", le!="z"}[5m])))'
        ' > 1 and on (job) max_over_time(b[1d]) == 1 or absent(up{job="ecallgw"})'
        " unless c offset 5m / ignoring (instance) group_left (receiver) d"
    )
    assert metric_names(expr) == {"a_bucket", "b", "up", "c", "d"}


def test_every_alert_has_severity_summary_and_a_runbook_entry() -> None:
    doc = OPERATIONS.read_text()
    runbooks = _section(doc, "Runbooks")
    anchors = {_slug(h) for h in re.findall(r"(?m)^### (.+)$", runbooks)}
    alerts = _alerts()
    assert alerts
    for name, fields in alerts.items():
        assert fields.get("severity") in {"page", "warning"}, name
        assert fields.get("summary") and fields.get("description"), name
        runbook = fields.get("runbook", "")
        assert runbook.startswith("docs/operations.md#"), f"{name}: runbook {runbook!r}"
        anchor = runbook.split("#", 1)[1]
        assert anchor in anchors, f"{name}: no '### …' entry for #{anchor} under Runbooks"


def test_operations_md_lists_exactly_the_alerts_of_the_rules_file() -> None:
    section = _section(OPERATIONS.read_text(), "Alerts")
    listed = set(re.findall(r"(?m)^\| `(Ecall\w+)` \|", section))
    assert listed == set(_alerts())
    assert "deploy/prometheus/ecallgw.rules.yml" in section
    # The table's runbook links are the annotations' anchors.
    for name, fields in _alerts().items():
        row = re.search(rf"(?m)^\| `{name}` \|.*$", section)
        assert row is not None
        assert "(#" + fields["runbook"].split("#", 1)[1] + ")" in row.group(0), name
        assert f"| {fields['severity']} |" in row.group(0), name


def test_example_prometheus_config(tmp_path: Path) -> None:
    # promtool check config also checks the rule files it names and the token file exists: a copy
    # with the token in a temporary file.
    token = tmp_path / "ecallgw-sre.token"
    token.write_text("a-token-of-role-sre-0123456789\n")
    config = (PROM / "prometheus.yml").read_text()
    assert "/etc/prometheus/ecallgw-sre.token" in config
    (tmp_path / "prometheus.yml").write_text(config.replace("/etc/prometheus/ecallgw-sre.token", str(token)))
    shutil.copy(RULES, tmp_path / RULES.name)
    result = run_promtool("check", "config", tmp_path / "prometheus.yml")
    assert result.returncode == 0, result.stdout
    assert f"SUCCESS: {len(_alerts()) + len(_records())} rules found" in result.stdout, result.stdout
    # The job names the rules select on are the example's.
    assert re.search(r"(?m)^\s*- job_name: ecallgw$", config)
    assert re.search(r"(?m)^\s*- job_name: ecallgw-readyz$", config)
    assert 'job="ecallgw"' in _rules_text() and 'job="ecallgw-readyz"' in _rules_text()


@pytest.mark.parametrize("broken", ["rate(ecallgw_signals_received_total[5m]", "sum by (job ("])
def test_promtool_refuses_a_broken_expression(tmp_path: Path, broken: str) -> None:
    # The parse check of the dashboard relies on this.
    result = run_promtool("check", "rules", rules_file([broken], tmp_path / "bad.yml"))
    assert result.returncode != 0
