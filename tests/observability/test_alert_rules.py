"""The alert rules: valid for promtool, unit-tested case by case, each with its runbook."""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict

from tests.observability.rules import (
    RULE_TESTS,
    RULES,
    RUNBOOK_BASE,
    RUNBOOKS,
    alerts,
    binary,
    load_yaml,
)


def test_promtool_accepts_the_rule_file() -> None:
    result = subprocess.run(
        [binary("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_of_every_alert_pass() -> None:
    result = subprocess.run(
        [binary("promtool"), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        cwd=RULE_TESTS.parent,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases: dict[str, set[str]] = defaultdict(set)
    for test in load_yaml(RULE_TESTS)["tests"]:
        for case in test.get("alert_rule_test", []):
            cases[case["alertname"]].add("firing" if case["exp_alerts"] else "quiet")
    names = {a["alert"] for a in alerts()}

    assert names, "the rule file holds no alerts"
    missing = {n: {"firing", "quiet"} - cases[n] for n in names if cases[n] != {"firing", "quiet"}}
    assert not missing, f"alerts without both cases: {missing}"
    assert set(cases) <= names, f"tests of alerts that do not exist: {set(cases) - names}"


def test_every_alert_has_summary_description_and_a_runbook_section() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
        for line in RUNBOOKS.read_text().splitlines()
        if line.startswith("## ")
    }
    for alert in alerts():
        name = alert["alert"]
        notes = alert.get("annotations", {})
        assert notes.get("summary") and notes.get("description"), name
        assert notes.get("runbook_url") == RUNBOOK_BASE + name.lower(), name
        assert name.lower() in anchors, f"docs/runbooks.md has no section '## {name}'"
        assert alert.get("labels", {}).get("severity") in {"warning", "critical"}, name
