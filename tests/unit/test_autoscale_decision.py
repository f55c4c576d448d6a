"""The autoscaler's decision, table by table: ratio, clamps, activation, SLA,
stabilization (anti-flapping), step limits, pause and scale-to-zero."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import pytest

from relayq.operator.decision import (
    Decision,
    Direction,
    QueueSnapshot,
    Recommendation,
    decide,
    prune,
)
from relayq.operator.spec import AutoscalerSpec, ScalingRules, SpecError

BASE = ScalingRules(
    min_replicas=0,
    max_replicas=10,
    target_backlog_per_replica=10,
    up_window_seconds=0,
    down_window_seconds=0,
)
NOW = 1000.0


def snap(backlog: int, in_flight: int = 0, age: float = 0.0, paused: bool = False) -> QueueSnapshot:
    return QueueSnapshot(
        backlog=backlog, oldest_age_seconds=age, in_flight=in_flight, paused=paused
    )


def rec(ago: float, replicas: int, idle: bool = False, sla_step: bool = False) -> Recommendation:
    return Recommendation(at=NOW - ago, replicas=replicas, idle=idle, sla_step=sla_step)


@dataclass(frozen=True)
class Case:
    name: str
    snapshot: QueueSnapshot
    current: int
    expected: int
    rules: ScalingRules = BASE
    history: tuple[Recommendation, ...] = field(default_factory=tuple)
    reason_has: str = ""


CASES = [
    # Ratio and clamps.
    Case("exact ratio", snap(40, 5), 1, 4),
    Case("ratio rounds up", snap(41, 5), 1, 5),
    Case("one job wakes one replica", snap(1), 0, 1),
    Case("clamped to max", snap(500, 20), 2, 10, reason_has="clamped to 10"),
    Case("clamped to min", snap(0), 3, 2, replace(BASE, min_replicas=2), reason_has="clamped"),
    Case("steady at the ratio", snap(30, 30), 3, 3),
    Case("max 1 stays 1 under load", snap(99), 1, 1, replace(BASE, max_replicas=1)),
    # Activation.
    Case(
        "below activation stays at zero",
        snap(4),
        0,
        0,
        replace(BASE, activation_backlog=5),
        reason_has="below activation",
    ),
    Case("at activation wakes", snap(5), 0, 1, replace(BASE, activation_backlog=5)),
    Case(
        "below activation but in flight keeps ratio",
        snap(3, in_flight=3),
        1,
        1,
        replace(BASE, activation_backlog=5),
    ),
    Case(
        "below activation with waiting jobs keeps one replica",
        snap(3),
        2,
        1,
        replace(BASE, activation_backlog=5),
        reason_has="not idle",
    ),
    Case(
        "below activation with waiting jobs never drops the last replica",
        snap(3),
        1,
        1,
        replace(BASE, activation_backlog=5),
        reason_has="held: not idle",
    ),
    Case(
        "activation honours min", snap(2), 2, 2, replace(BASE, activation_backlog=5, min_replicas=2)
    ),
    # Scale to zero.
    Case("idle with no window goes to zero", snap(0), 3, 0),
    Case(
        "idle for the whole window goes to zero",
        snap(0),
        2,
        0,
        replace(BASE, down_window_seconds=60),
        (rec(70, 0, idle=True), rec(30, 0, idle=True)),
    ),
    Case(
        "idle window not yet observed holds",
        snap(0),
        2,
        2,
        replace(BASE, down_window_seconds=60),
        (rec(30, 0, idle=True),),
        reason_has="until 60s have been observed",
    ),
    Case(
        "busy moment in the window keeps replicas",
        snap(0),
        2,
        2,
        replace(BASE, down_window_seconds=60),
        (rec(70, 0, idle=True), rec(40, 2), rec(10, 0, idle=True)),
        reason_has="scale-down window",
    ),
    # SLA.
    Case(
        "SLA breach adds a replica the ratio would not",
        snap(5, 5, age=12),
        1,
        2,
        replace(BASE, sla_target_seconds=10),
        reason_has="SLA",
    ),
    Case(
        "SLA breach wakes a priority below activation",
        snap(2, age=31),
        0,
        1,
        replace(BASE, activation_backlog=5, sla_target_seconds=30),
    ),
    Case(
        "SLA within target changes nothing",
        snap(5, 5, age=9),
        1,
        1,
        replace(BASE, sla_target_seconds=10),
    ),
    Case(
        "SLA breach ignores the scale-up window",
        snap(5, 5, age=12),
        1,
        2,
        replace(BASE, sla_target_seconds=10, up_window_seconds=30),
        (rec(10, 1),),
    ),
    Case(
        "one SLA step per SLA period",
        snap(5, 5, age=14),
        2,
        2,
        replace(BASE, sla_target_seconds=10, down_window_seconds=30),
        (rec(40, 1), rec(4, 2, sla_step=True)),
    ),
    Case(
        "SLA step again after the SLA period",
        snap(5, 5, age=24),
        2,
        3,
        replace(BASE, sla_target_seconds=10),
        (rec(11, 2, sla_step=True),),
    ),
    Case(
        "SLA never passes max",
        snap(30, 30, age=99),
        3,
        3,
        replace(BASE, sla_target_seconds=10, max_replicas=3),
    ),
    Case(
        "ratio above the SLA step wins",
        snap(80, 10, age=99),
        1,
        8,
        replace(BASE, sla_target_seconds=10),
    ),
    # Stabilization windows.
    Case(
        "scale-up window takes its minimum",
        snap(90),
        1,
        3,
        replace(BASE, up_window_seconds=10),
        (rec(8, 3), rec(4, 6)),
        reason_has="scale-up window",
    ),
    Case(
        "scale-up window ignores older recommendations",
        snap(90),
        1,
        9,
        replace(BASE, up_window_seconds=10),
        (rec(12, 1),),
    ),
    Case(
        "scale-down window takes its maximum",
        snap(10, 10),
        5,
        4,
        replace(BASE, down_window_seconds=60),
        (rec(70, 8), rec(50, 4), rec(20, 2)),
    ),
    Case(
        "a dip inside the down window does not drop replicas",
        snap(10, 10),
        5,
        5,
        replace(BASE, down_window_seconds=60),
        (rec(70, 5), rec(30, 5)),
        reason_has="scale-down window",
    ),
    Case(
        "scale-down happens once the window passed",
        snap(10, 10),
        5,
        1,
        replace(BASE, down_window_seconds=60),
        (rec(70, 5), rec(59, 1)),
    ),
    Case(
        "no history after a restart holds a scale-down",
        snap(0),
        4,
        4,
        replace(BASE, down_window_seconds=60),
        reason_has="observed",
    ),
    Case(
        "no history does not hold a scale-up", snap(70), 1, 7, replace(BASE, down_window_seconds=60)
    ),
    # Step limits.
    Case(
        "scale-up step limit",
        snap(100),
        1,
        3,
        replace(BASE, up_max_step=2),
        reason_has="scale-up step limited to 2",
    ),
    Case(
        "scale-down step limit",
        snap(0),
        9,
        6,
        replace(BASE, down_max_step=3),
        reason_has="scale-down step limited to 3",
    ),
    Case("step limit not reached", snap(20), 1, 2, replace(BASE, up_max_step=2)),
    # Paused queue.
    Case("paused never scales up", snap(100, paused=True), 1, 1, reason_has="paused"),
    Case("paused from zero stays at zero", snap(100, paused=True), 0, 0),
    Case(
        "paused does not add an SLA step",
        snap(5, 5, age=99, paused=True),
        1,
        1,
        replace(BASE, sla_target_seconds=10),
    ),
    Case("paused and idle may still scale down", snap(0, paused=True), 3, 0),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decision_table(case: Case) -> None:
    decision = decide(case.snapshot, case.current, case.rules, case.history, NOW)
    assert decision.desired == case.expected, decision.reason
    assert case.reason_has in decision.reason
    if case.expected > case.current:
        assert decision.direction is Direction.UP
    elif case.expected < case.current:
        assert decision.direction is Direction.DOWN
    else:
        assert decision.direction is Direction.NONE


def test_recommendation_records_the_clamped_value_before_stabilization() -> None:
    rules = replace(BASE, down_window_seconds=60)
    decision = decide(snap(30, 30), 5, rules, [rec(70, 5), rec(50, 5)], NOW)
    assert decision.recommendation == Recommendation(at=NOW, replicas=3, idle=False)
    assert decision.desired == 5


def test_idle_flag_needs_empty_queue_and_no_work_in_flight() -> None:
    assert snap(0).idle
    assert not snap(1).idle
    assert not QueueSnapshot(backlog=0, oldest_age_seconds=0, in_flight=1).idle


def simulate(
    rules: ScalingRules, polls: list[tuple[float, int]], start: int = 0
) -> list[tuple[float, int]]:
    """Poll at each (time, backlog), applying every decision; returns (time, replicas)."""
    history: list[Recommendation] = []
    current = start
    seen: list[tuple[float, int]] = []
    for at, backlog in polls:
        decision: Decision = decide(
            snap(backlog, in_flight=min(backlog, 1)), current, rules, history, at
        )
        history = prune([*history, decision.recommendation], rules, at)
        current = decision.desired
        seen.append((at, current))
    return seen


def changes(seen: list[tuple[float, int]]) -> int:
    return sum(1 for (_, a), (_, b) in itertools.pairwise(seen) if a != b)


def test_oscillating_backlog_does_not_flap() -> None:
    rules = replace(BASE, down_window_seconds=30)
    # Backlog alternates between 80 and 10 every 2 s poll for two minutes.
    polls = [(t * 2.0, 80 if t % 2 == 0 else 10) for t in range(60)]
    seen = simulate(rules, polls, start=1)
    assert {r for _, r in seen} == {8}, seen
    assert changes(seen) == 0


def test_without_down_window_the_same_backlog_flaps() -> None:
    """The control for the test above: the window is what stops the flapping."""
    polls = [(t * 2.0, 80 if t % 2 == 0 else 10) for t in range(60)]
    seen = simulate(BASE, polls, start=1)
    assert changes(seen) > 50


def test_burst_then_drain_scales_up_at_once_and_down_after_the_window() -> None:
    rules = replace(BASE, down_window_seconds=20)
    polls = [(float(t), 100 if t < 10 else 0) for t in range(0, 60)]
    seen = dict(simulate(rules, polls, start=0))
    assert seen[0.0] == 10
    # The last busy poll was at t=9: the 20 s window holds the replicas until t=29.
    assert all(seen[float(t)] == 10 for t in range(0, 29))
    assert all(seen[float(t)] == 0 for t in range(29, 60))


def test_short_spikes_inside_the_down_window_keep_the_replicas_up() -> None:
    rules = replace(BASE, down_window_seconds=15)
    # A 50-job spike every 10 s on an otherwise idle queue.
    polls = [(float(t), 50 if t % 10 == 0 else 0) for t in range(0, 60)]
    seen = simulate(rules, polls, start=0)
    assert {r for _, r in seen} == {5}, seen


def test_slow_ramp_with_up_window_rises_stepwise_without_overshoot() -> None:
    rules = replace(BASE, up_window_seconds=4, down_window_seconds=30, max_replicas=20)
    polls = [(float(t), 10 * t) for t in range(0, 21)]
    seen = simulate(rules, polls, start=1)
    replicas = [r for _, r in seen]
    assert replicas == sorted(replicas), "never goes down while the backlog rises"
    for (at, r), (_, backlog) in zip(seen, polls, strict=True):
        assert r <= max(1, backlog // 10), f"overshoot at {at}: {r} for backlog {backlog}"
    # The lowest recommendation of the last 4 s (t=17..20): backlog 170.
    assert replicas[-1] == 17


def test_sla_steps_are_spaced_by_the_sla_target() -> None:
    rules = replace(BASE, sla_target_seconds=5, down_window_seconds=60)
    history: list[Recommendation] = []
    current = 1
    steps = []
    for t in range(0, 12):
        # A stuck queue: 3 jobs, the oldest ever older.
        d = decide(snap(3, 3, age=10 + t), current, rules, history, float(t))
        history = prune([*history, d.recommendation], rules, float(t))
        if d.desired > current:
            steps.append(t)
        current = d.desired
    assert steps == [0, 5, 10]
    assert current == 4


def test_prune_keeps_the_windows_and_one_older_observation() -> None:
    rules = replace(BASE, up_window_seconds=5, down_window_seconds=30)
    history = [rec(100, 1), rec(40, 2), rec(31, 3), rec(20, 4), rec(1, 5)]
    kept = prune(history, rules, NOW)
    assert [r.replicas for r in kept] == [3, 4, 5]
    assert prune([], rules, NOW) == []


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("min_replicas", -1),
        ("max_replicas", 0),
        ("target_backlog_per_replica", 0),
        ("activation_backlog", -1),
        ("up_max_step", 0),
        ("down_window_seconds", -1.0),
        ("sla_target_seconds", 0.0),
    ],
)
def test_rules_refuse_values_the_schema_refuses(field_name: str, value: float) -> None:
    with pytest.raises(SpecError):
        replace(BASE, **{field_name: value})


def test_rules_refuse_max_below_min() -> None:
    with pytest.raises(SpecError):
        ScalingRules(min_replicas=3, max_replicas=2, target_backlog_per_replica=1)


def test_spec_reads_the_resource_with_defaults() -> None:
    spec = AutoscalerSpec.from_spec(
        {
            "scaleTargetRef": {"name": "worker-high"},
            "priority": "high",
            "redis": {"secretRef": {"name": "redis", "key": "url"}},
            "targetBacklogPerReplica": 20,
            "maxReplicas": 8,
        }
    )
    assert spec.target == "worker-high"
    assert spec.priority.value == "high"
    assert spec.key_prefix == "relayq"
    assert spec.polling_seconds == 2.0
    assert spec.rules == ScalingRules(
        min_replicas=0,
        max_replicas=8,
        target_backlog_per_replica=20,
        up_window_seconds=0,
        down_window_seconds=60,
    )
    assert spec.redis.sentinels is None
    assert not spec.paused


def test_spec_reads_every_field() -> None:
    spec = AutoscalerSpec.from_spec(
        {
            "scaleTargetRef": {"name": "w"},
            "priority": "batch",
            "redis": {
                "secretRef": {"name": "r", "key": "url"},
                "sentinel": {"sentinelsKey": "s", "masterNameKey": "m", "passwordKey": "p"},
            },
            "keyPrefix": "other",
            "targetBacklogPerReplica": 5,
            "activationBacklog": 3,
            "minReplicas": 1,
            "maxReplicas": 4,
            "pollingIntervalSeconds": 1,
            "scaleUp": {"stabilizationWindowSeconds": 5, "maxStep": 2},
            "scaleDown": {"stabilizationWindowSeconds": 9, "maxStep": 1},
            "slaTargetSeconds": 30,
            "paused": True,
        }
    )
    assert spec.redis.sentinels is not None and spec.redis.sentinels.key == "s"
    assert spec.redis.master is not None and spec.redis.master.key == "m"
    assert spec.redis.password is not None and spec.redis.password.name == "r"
    assert spec.rules.up_max_step == 2 and spec.rules.down_max_step == 1
    assert spec.rules.sla_target_seconds == 30.0
    assert spec.key_prefix == "other" and spec.polling_seconds == 1.0 and spec.paused


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"scaleTargetRef": {"name": "w"}, "priority": "urgent", "maxReplicas": 1},
        {
            "scaleTargetRef": {"name": "w"},
            "priority": "low",
            "redis": {"secretRef": {"name": "r", "key": "u"}},
            "targetBacklogPerReplica": "many",
            "maxReplicas": 1,
        },
        {
            "scaleTargetRef": {"name": "w"},
            "priority": "low",
            "redis": {"secretRef": {"name": "r", "key": "u"}},
            "targetBacklogPerReplica": 1,
            "maxReplicas": 1,
            "pollingIntervalSeconds": 0,
        },
    ],
)
def test_spec_errors_name_the_problem(spec: dict[str, object]) -> None:
    with pytest.raises(SpecError):
        AutoscalerSpec.from_spec(spec)
