"""The operator against a real API server (KWOK runs the pods) and a real Redis,
acting as a ServiceAccount that holds exactly the chart's RBAC rules."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from typing import Any

from kubernetes import client, watch
from prometheus_client import REGISTRY

from relayq.core.ids import new_task_id
from relayq.core.priorities import Priority
from relayq.core.queue import Message, Queue
from relayq.dev.servers import free_port
from relayq.operator.kube import DELETION_COST
from tests.operator.conftest import RunOperator
from tests.operator.kubeobjects import (
    GROUP,
    MERGE_PATCH,
    PLURAL,
    VERSION,
    autoscaler,
    autoscaler_status,
    condition,
    create_autoscaler,
    create_deployment,
    create_secret,
    event_reasons,
    pods,
    replace_secret,
    running_pods,
    spec_replicas,
    wait_for,
)

POLL = 1.0
P = Priority.HIGH


def messages(n: int) -> list[Message]:
    return [Message(new_task_id(), "noop") for _ in range(n)]


def metric(sample: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(sample, labels) or 0.0


def liveness(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        body = json.loads(response.read())
    assert isinstance(body, dict)
    return body


def polled(api: client.ApiClient, namespace: str, name: str) -> bool:
    return bool(condition(autoscaler_status(api, namespace, name), "RedisReachable"))


async def test_burst_scales_up_within_two_polls_and_a_drain_waits_out_the_window(
    admin: client.ApiClient, namespace: str, queue: Queue, redis_url: str, run_operator: RunOperator
) -> None:
    window = 4.0
    create_secret(admin, namespace, "redis", {"url": redis_url})
    create_deployment(admin, namespace, "worker-high", 0)
    create_autoscaler(
        admin,
        namespace,
        autoscaler("high", "worker-high", "high", scaleDown={"stabilizationWindowSeconds": window}),
    )
    ups_before = metric("relayq_operator_decisions_total", priority="high", direction="up")
    port = free_port()
    with run_operator(f"--liveness=http://127.0.0.1:{port}/healthz"):
        wait_for("the first poll", lambda: polled(admin, namespace, "high"))
        assert spec_replicas(admin, namespace, "worker-high") == 0

        await queue.enqueue_many(P, messages(40))
        burst = time.monotonic()
        wait_for(
            "a scale-up to 4",
            lambda: spec_replicas(admin, namespace, "worker-high") == 4,
            timeout=10,
            interval=0.05,
        )
        # Two polling intervals, plus a second for the API round trips on a busy machine.
        assert time.monotonic() - burst <= 2 * POLL + 1.0
        wait_for("4 pods Running", lambda: len(running_pods(admin, namespace, "worker-high")) == 4)
        status = wait_for(
            "the status after the scale-up",
            lambda: (
                (s := autoscaler_status(admin, namespace, "high")).get("currentReplicas") == 4 and s
            ),
        )
        assert status["desiredReplicas"] == 4 and status["backlog"] == 40
        assert "lastScaleTime" in status and "backlog 40" in status["lastScaleReason"]
        assert condition(status, "Ready")["status"] == "True"
        assert "ScaledUp" in event_reasons(admin, namespace, "high")
        assert metric("relayq_operator_decisions_total", priority="high", direction="up") > (
            ups_before
        )
        assert metric("relayq_operator_desired_replicas", namespace=namespace, name="high") == 4
        assert liveness(port)["relayq"]["autoscalers"] == 1

        # Drain: a worker takes every job and acknowledges it.
        claim = await queue.claim(P, "drainer-1", 100)
        assert await queue.ack(P, [d.entry_id for d in claim.deliveries]) == 40
        drained = time.monotonic()
        # The last busy poll was at most one interval before the drain.
        while time.monotonic() - drained < window - POLL - 0.2:
            assert spec_replicas(admin, namespace, "worker-high") == 4
            await asyncio.sleep(0.1)
        wait_for(
            "the scale-down to 0",
            lambda: spec_replicas(admin, namespace, "worker-high") == 0,
            timeout=window + 3 * POLL,
        )
        assert time.monotonic() - drained >= window - POLL
        wait_for("no pods left", lambda: not pods(admin, namespace, "worker-high"))
        assert "ScaledDown" in event_reasons(admin, namespace, "high")


async def test_paused_autoscaler_and_paused_queue_hold_the_replicas(
    admin: client.ApiClient, namespace: str, queue: Queue, redis_url: str, run_operator: RunOperator
) -> None:
    create_secret(admin, namespace, "redis", {"url": redis_url})
    create_deployment(admin, namespace, "worker-low", 1)
    create_autoscaler(
        admin,
        namespace,
        autoscaler("low", "worker-low", "low", minReplicas=1, paused=True),
    )
    await queue.enqueue_many(Priority.LOW, messages(50))
    custom = client.CustomObjectsApi(admin)
    with run_operator():
        status = wait_for(
            "the paused autoscaler's status",
            lambda: (s := autoscaler_status(admin, namespace, "low")).get("backlog") == 50 and s,
        )
        assert condition(status, "ScalingActive")["reason"] == "Paused"
        await asyncio.sleep(2 * POLL)
        assert spec_replicas(admin, namespace, "worker-low") == 1
        assert "Paused" in event_reasons(admin, namespace, "low")

        # The queue paused, the autoscaler resumed: still no scale-up.
        await queue.pause(Priority.LOW)
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "low",
            {"spec": {"paused": False}},
            _content_type=MERGE_PATCH,
        )
        status = wait_for(
            "a decision on the paused queue",
            lambda: (
                "queue paused"
                in condition(s := autoscaler_status(admin, namespace, "low"), "ScalingActive").get(
                    "message", ""
                )
                and s
            ),
        )
        assert status["desiredReplicas"] == 1
        await asyncio.sleep(2 * POLL)
        assert spec_replicas(admin, namespace, "worker-low") == 1

        await queue.resume(Priority.LOW)
        wait_for(
            "the scale-up after the resume",
            lambda: spec_replicas(admin, namespace, "worker-low") == 5,
            timeout=3 * POLL + 2,
        )


async def test_unreachable_redis_leaves_the_replicas_and_says_so(
    admin: client.ApiClient, namespace: str, redis_url: str, run_operator: RunOperator
) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    create_secret(admin, namespace, "redis", {"url": closed})
    create_deployment(admin, namespace, "worker-medium", 2)
    # With Redis readable, an empty queue and no window would mean 0 replicas at once.
    create_autoscaler(
        admin,
        namespace,
        autoscaler(
            "medium", "worker-medium", "medium", scaleDown={"stabilizationWindowSeconds": 0}
        ),
    )
    errors_before = metric("relayq_operator_redis_errors_total", namespace=namespace, name="medium")
    with run_operator():
        status = wait_for(
            "RedisReachable=False",
            lambda: (
                condition(s := autoscaler_status(admin, namespace, "medium"), "RedisReachable").get(
                    "status"
                )
                == "False"
                and s
            ),
        )
        assert condition(status, "RedisReachable")["reason"] == "RedisUnreachable"
        assert condition(status, "Ready")["status"] == "False"
        await asyncio.sleep(2 * POLL)
        assert spec_replicas(admin, namespace, "worker-medium") == 2
        assert "RedisUnreachable" in event_reasons(admin, namespace, "medium")
        assert (
            metric("relayq_operator_redis_errors_total", namespace=namespace, name="medium")
            >= errors_before + 2
        )

        # The Secret fixed: the operator reads it again and acts.
        replace_secret(admin, namespace, "redis", {"url": redis_url})
        wait_for(
            "the scale-down once Redis is readable",
            lambda: spec_replicas(admin, namespace, "worker-medium") == 0,
            timeout=10,
        )
        wait_for(
            "RedisReachable=True",
            lambda: (
                condition(autoscaler_status(admin, namespace, "medium"), "RedisReachable").get(
                    "status"
                )
                == "True"
            ),
        )


async def test_busy_pods_get_a_deletion_cost_and_survive_the_scale_down(
    admin: client.ApiClient, namespace: str, queue: Queue, redis_url: str, run_operator: RunOperator
) -> None:
    create_secret(admin, namespace, "redis", {"url": redis_url})
    create_deployment(admin, namespace, "worker-critical", 3)
    names = wait_for(
        "3 pods Running",
        lambda: (r := running_pods(admin, namespace, "worker-critical")) and len(r) == 3 and r,
    )
    busy = names[1]
    # A worker in the busy pod holds 5 jobs (consumer name `<pod name>-<pid>`).
    await queue.enqueue_many(Priority.CRITICAL, messages(5))
    claim = await queue.claim(Priority.CRITICAL, f"{busy}-1", 5)
    assert len(claim.deliveries) == 5
    create_autoscaler(
        admin,
        namespace,
        autoscaler(
            "critical",
            "worker-critical",
            "critical",
            minReplicas=1,
            scaleDown={"stabilizationWindowSeconds": 2},
        ),
    )
    # A watch, not polling: KWOK deletes a pod at once, so a poll can miss the
    # annotation a removed pod carried; every event of a pod shows it.
    seen: dict[str, str] = {}
    stop = threading.Event()

    def record() -> None:
        pods = watch.Watch()
        while not stop.is_set():
            for event in pods.stream(
                client.CoreV1Api(admin).list_namespaced_pod,
                namespace,
                label_selector="app=worker-critical",
                timeout_seconds=1,
            ):
                pod = event["object"]
                cost = (pod.metadata.annotations or {}).get(DELETION_COST)
                if cost is not None:
                    seen[pod.metadata.name] = cost
                if stop.is_set():
                    pods.stop()

    recorder = threading.Thread(target=record, daemon=True)
    recorder.start()
    with run_operator():
        wait_for(
            "the scale-down to 1",
            lambda: spec_replicas(admin, namespace, "worker-critical") == 1,
            timeout=15,
            interval=0.05,
        )
        wait_for(
            "one pod left",
            lambda: running_pods(admin, namespace, "worker-critical") == [busy],
        )
    stop.set()
    recorder.join(10)
    assert seen[busy] == "500"
    assert all(seen.get(name) == "0" for name in names if name != busy), seen


async def test_missing_deployment_is_reported_and_picked_up_once_created(
    admin: client.ApiClient, namespace: str, queue: Queue, redis_url: str, run_operator: RunOperator
) -> None:
    create_secret(admin, namespace, "redis", {"url": redis_url})
    create_autoscaler(admin, namespace, autoscaler("batch", "worker-batch", "batch"))
    await queue.enqueue_many(Priority.BATCH, messages(15))
    with run_operator():
        status = wait_for(
            "TargetNotFound",
            lambda: (
                condition(s := autoscaler_status(admin, namespace, "batch"), "ScalingActive").get(
                    "reason"
                )
                == "TargetNotFound"
                and s
            ),
        )
        assert condition(status, "Ready")["status"] == "False"
        create_deployment(admin, namespace, "worker-batch", 0)
        wait_for(
            "the scale-up once the Deployment exists",
            lambda: spec_replicas(admin, namespace, "worker-batch") == 2,
            timeout=10,
        )


async def test_missing_secret_key_is_reported_and_replicas_are_left_alone(
    admin: client.ApiClient, namespace: str, redis_url: str, run_operator: RunOperator
) -> None:
    create_secret(admin, namespace, "redis", {"other": redis_url})
    create_deployment(admin, namespace, "worker-low", 2)
    create_autoscaler(
        admin,
        namespace,
        autoscaler("low", "worker-low", "low", scaleDown={"stabilizationWindowSeconds": 0}),
    )
    with run_operator():
        status = wait_for(
            "SecretInvalid",
            lambda: (
                condition(s := autoscaler_status(admin, namespace, "low"), "RedisReachable").get(
                    "reason"
                )
                == "SecretInvalid"
                and s
            ),
        )
        assert "has no key 'url'" in condition(status, "RedisReachable")["message"]
        await asyncio.sleep(2 * POLL)
        assert spec_replicas(admin, namespace, "worker-low") == 2
        replace_secret(admin, namespace, "redis", {"url": redis_url})
        wait_for(
            "the scale-down once the key exists",
            lambda: spec_replicas(admin, namespace, "worker-low") == 0,
            timeout=10,
        )
