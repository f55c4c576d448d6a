"""The pure parts around the handlers: status conditions and the command line."""

from __future__ import annotations

import pytest

from relayq.operator.autoscaler import Condition, merge_conditions
from relayq.operator.main import parse_args

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"


def test_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    old = [{"type": "Ready", "status": "True", "reason": "Polling", "lastTransitionTime": T0}]
    merged = merge_conditions(old, {"Ready": Condition(True, "Polling", "again")}, T1)
    assert merged == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Polling",
            "message": "again",
            "lastTransitionTime": T0,
        }
    ]


def test_condition_moves_its_transition_time_on_a_status_change() -> None:
    old = [{"type": "RedisReachable", "status": "True", "lastTransitionTime": T0}]
    merged = merge_conditions(old, {"RedisReachable": Condition(False, "RedisUnreachable")}, T1)
    assert merged[0]["status"] == "False" and merged[0]["lastTransitionTime"] == T1


def test_conditions_not_reported_this_time_are_kept_and_ordered() -> None:
    old = [
        {"type": "ScalingActive", "status": "True", "lastTransitionTime": T0},
        {"type": "RedisReachable", "status": "True", "lastTransitionTime": T0},
    ]
    merged = merge_conditions(old, {"Ready": Condition(False, "TargetNotFound")}, T1)
    assert [c["type"] for c in merged] == ["Ready", "RedisReachable", "ScalingActive"]
    assert merged[2] == old[0]


def test_cli_defaults_to_every_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELAYQ_OPERATOR_NAMESPACE", raising=False)
    args = parse_args([])
    assert args.all_namespaces and args.namespaces == []
    assert args.metrics_port == 9100 and args.liveness == "http://0.0.0.0:8080/healthz"


def test_cli_takes_namespaces_from_flags_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RELAYQ_OPERATOR_NAMESPACE", "a, b")
    assert parse_args([]).namespaces == ["a", "b"]
    args = parse_args(["-n", "x", "--namespace", "y", "--kubeconfig", "/k"])
    assert args.namespaces == ["x", "y"] and not args.all_namespaces and args.kubeconfig == "/k"


@pytest.mark.parametrize(
    "argv",
    [["-n", "x", "--all-namespaces"], ["--metrics-port", "-1"], ["--secret-refresh-seconds", "0"]],
)
def test_cli_refuses_contradictions_and_bad_numbers(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
