"""Dashboards and alert rules only use metrics the catalog (docs/metrics.md) lists."""

from __future__ import annotations

import re

from relayq.dev.servers import REPO_ROOT
from tests.observability.dashboards import committed, queries
from tests.observability.rules import RULES, load_yaml

CATALOG = REPO_ROOT / "docs/metrics.md"
METRIC = re.compile(r"\b(relayq_[a-z0-9_]+)")
RECORDED = re.compile(r"\b(relayq:[a-z0-9_:]+)")


def catalog_names() -> set[str]:
    return set(re.findall(r"^\| `(relayq[_:][a-z0-9_:]+)` \|", CATALOG.read_text(), re.M))


def base_name(series: str) -> str:
    return re.sub(r"_(bucket|count|sum)$", "", series)


def rule_exprs() -> list[str]:
    return [str(r["expr"]) for g in load_yaml(RULES)["groups"] for r in g["rules"]]


def test_every_metric_and_recording_rule_the_dashboards_and_rules_use_is_catalogued() -> None:
    listed = catalog_names()
    exprs = [expr for board in committed().values() for _, expr in queries(board)]
    exprs += rule_exprs()

    used = {base_name(m) for e in exprs for m in METRIC.findall(e)}
    recorded = {m for e in exprs for m in RECORDED.findall(e)}
    assert used, "no relayq metrics found in the queries"
    assert used - listed == set(), "metrics missing from docs/metrics.md"
    assert recorded - listed == set(), "recording rules missing from docs/metrics.md"


def test_every_recording_rule_the_dashboards_use_is_defined() -> None:
    defined = {r["record"] for g in load_yaml(RULES)["groups"] for r in g["rules"] if "record" in r}
    used = {
        m for board in committed().values() for _, expr in queries(board)
        for m in RECORDED.findall(expr)
    }  # fmt: skip

    assert used and used <= defined, used - defined
