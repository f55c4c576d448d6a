"""The scaling arithmetic: a pure function from what the queue shows to a replica count.

Rules, in the order they apply:

1. Ratio: ceil(backlog / targetBacklogPerReplica).
2. Activation: below activationBacklog with nothing in flight the priority is
   idle and the recommendation is 0 (then the floor, minReplicas, applies).
3. Clamp to [minReplicas, maxReplicas].
4. Stabilization, as the HPA does it: a scale-up goes to the lowest
   recommendation of the scale-up window, a scale-down to the highest of the
   scale-down window, so one dip inside the window never removes a replica.
   A scale-down also needs observations covering its whole window (after a
   restart the operator first watches for a window).
5. SLA: when the oldest waiting job is older than slaTargetSeconds, at least one
   replica more than now, whatever the ratio says; at most one such step per
   slaTargetSeconds, so a step has time to start before the next.
6. Scale to zero only when the queue and the in-flight set were empty on every
   observation of the whole scale-down window.
7. maxStep bounds the change in either direction.
8. A paused queue never scales up: its workers cannot claim, more would only idle.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from relayq.operator.spec import ScalingRules


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"
    NONE = "none"


@dataclass(frozen=True)
class QueueSnapshot:
    """What one poll of Redis showed for the priority.

    Attributes:
        backlog: undelivered + in flight + due delayed jobs.
        oldest_age_seconds: how long the oldest job that could start has waited.
        in_flight: jobs claimed by workers and not yet acknowledged.
        paused: claiming is stopped for the priority.
    """

    backlog: int
    oldest_age_seconds: float
    in_flight: int
    paused: bool = False

    @property
    def idle(self) -> bool:
        """Nothing waits and nothing runs."""
        return self.backlog == 0 and self.in_flight == 0


@dataclass(frozen=True)
class Recommendation:
    """One past recommendation, kept for stabilization.

    Attributes:
        at: when it was made (seconds, any monotonic clock shared with `now`).
        replicas: the clamped recommendation before stabilization.
        idle: the queue and the in-flight set were empty then.
        sla_step: it came from an SLA breach (rule 5).
    """

    at: float
    replicas: int
    idle: bool
    sla_step: bool = False


@dataclass(frozen=True)
class Decision:
    """The outcome of one decision.

    Attributes:
        desired: replicas the Deployment should have.
        reason: one line a person can read, for the status and the Event.
        direction: whether desired is above, below or equal to the current count.
        recommendation: what to append to the history for the next decision.
    """

    desired: int
    reason: str
    direction: Direction
    recommendation: Recommendation


def decide(
    snapshot: QueueSnapshot,
    current: int,
    rules: ScalingRules,
    history: Sequence[Recommendation],
    now: float,
) -> Decision:
    """Desired replicas for `current` running ones, given the recent `history`."""
    raw = math.ceil(snapshot.backlog / rules.target_backlog_per_replica)
    why = f"backlog {snapshot.backlog} at {rules.target_backlog_per_replica}/replica -> {raw}"
    if snapshot.backlog < rules.activation_backlog and snapshot.in_flight == 0:
        raw = 0
        why = f"backlog {snapshot.backlog} below activation {rules.activation_backlog} -> 0"
    recommended = min(max(raw, rules.min_replicas), rules.max_replicas)
    if recommended != raw:
        why += f", clamped to {recommended}"

    sla_step = False
    sla = rules.sla_target_seconds
    if (
        sla is not None
        and snapshot.oldest_age_seconds > sla
        and not snapshot.paused
        and recommended <= current
        and current < rules.max_replicas
        and not _recent_sla_step(history, now, sla)
    ):
        recommended = current + 1
        sla_step = True
        why = (
            f"oldest job waited {snapshot.oldest_age_seconds:.1f}s > SLA {sla:g}s -> {recommended}"
        )

    rec = Recommendation(at=now, replicas=recommended, idle=snapshot.idle, sla_step=sla_step)
    desired, why = _stabilize(rec, current, rules, history, now, why)

    if rules.down_max_step is not None and current - desired > rules.down_max_step:
        desired = current - rules.down_max_step
        why += f", scale-down step limited to {rules.down_max_step}"
    if rules.up_max_step is not None and desired - current > rules.up_max_step:
        desired = current + rules.up_max_step
        why += f", scale-up step limited to {rules.up_max_step}"
    if desired > current and snapshot.paused:
        desired = current
        why = f"queue paused: holding {current} ({why})"

    if desired > current:
        direction = Direction.UP
    elif desired < current:
        direction = Direction.DOWN
    else:
        direction = Direction.NONE
    return Decision(desired=desired, reason=why, direction=direction, recommendation=rec)


def _stabilize(
    rec: Recommendation,
    current: int,
    rules: ScalingRules,
    history: Sequence[Recommendation],
    now: float,
    why: str,
) -> tuple[int, str]:
    """HPA's rule: up to the window's minimum, down to the window's maximum."""
    up_cutoff = now - rules.up_window_seconds
    down_cutoff = now - rules.down_window_seconds
    up_recs = [r.replicas for r in history if r.at > up_cutoff]
    down_recs = [r for r in history if r.at > down_cutoff]
    # An SLA step is not delayed by the scale-up window: the breach is the evidence.
    up = rec.replicas if rec.sla_step else min([rec.replicas, *up_recs])
    down = max([rec.replicas, *(r.replicas for r in down_recs)])

    desired = current
    if desired < up:
        desired = up
        if up < rec.replicas:
            why += f", held to {up} by the {rules.up_window_seconds:g}s scale-up window"
    if desired > down:
        desired = down
    if desired >= current:
        if down > rec.replicas and rec.replicas < current:
            why += f", held at {desired} by the {rules.down_window_seconds:g}s scale-down window"
        return desired, why

    # Scaling down: only on a full window of observations (none after a restart).
    if rules.down_window_seconds > 0 and not _covers(history, down_cutoff):
        return current, why + (
            f", held at {current} until {rules.down_window_seconds:g}s have been observed"
        )
    if desired == 0 and not (rec.idle and all(r.idle for r in down_recs)):
        # Rule 6: zero only when nothing waited or ran over the whole window.
        floor = 1
        if current <= floor:
            return current, why + ", held: not idle for the whole scale-down window"
        desired = floor
        why += ", kept 1: not idle for the whole scale-down window"
    return desired, why


def _covers(history: Iterable[Recommendation], cutoff: float) -> bool:
    """Some observation is at least as old as the window's start."""
    return any(r.at <= cutoff for r in history)


def _recent_sla_step(history: Iterable[Recommendation], now: float, sla: float) -> bool:
    return any(r.sla_step and now - r.at < sla for r in history)


def prune(
    history: Sequence[Recommendation], rules: ScalingRules, now: float
) -> list[Recommendation]:
    """The history the next decision needs; one entry older than the longest window stays.

    That oldest entry proves the scale-down window is covered by observations.
    """
    horizon = max(rules.up_window_seconds, rules.down_window_seconds, rules.sla_target_seconds or 0)
    cutoff = now - horizon
    kept = [r for r in history if r.at > cutoff]
    older = [r for r in history if r.at <= cutoff]
    if older:
        kept.insert(0, max(older, key=lambda r: r.at))
    return kept
