"""Autoscaler reaction: from a burst of jobs to the scale patch and to Pods Running.

    python -m bench.autoscale_bench [--jobs 200] [--rounds 5] [--polling 2]

Starts a real control plane (tests/kube/cluster.py: etcd, kube-apiserver,
controller-manager, scheduler, KWOK), a throwaway Redis unless one is given,
and `relayq-operator` as its own process acting as a ServiceAccount with the
chart's RBAC rules. Each round starts from 0 replicas and an empty queue,
waits a random part of a polling interval (so the burst lands at any phase of
the poll), enqueues the burst, and times the Deployment's scale patch
(`to_patch_s`) and the moment every wanted Pod is Running (`to_running_s`,
KWOK starts fake pods, so this is the control plane's share only).
KEDA's default reaction is computed beside it from its documented defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client

from relayq.core.clients import connect_redis
from relayq.core.ids import new_task_id
from relayq.core.priorities import Priority
from relayq.core.queue import Message, Queue
from relayq.dev.servers import REPO_ROOT, redis_server
from tests.kube.cluster import KubeCluster
from tests.operator.kubeobjects import (
    OPERATOR_SA,
    autoscaler,
    create_autoscaler,
    create_deployment,
    create_secret,
    grant_operator,
    install_crd,
    rbac_rules,
    running_pods,
    spec_replicas,
    wait_for,
)

PRIORITY = Priority.HIGH
TARGET_PER_REPLICA = 20
MAX_REPLICAS = 10
SAMPLE_S = 0.02

# KEDA's documented defaults (ScaledObject and the HPA it creates).
KEDA_POLLING_INTERVAL_S = 30.0  # ScaledObject pollingInterval: activation (0 <-> 1) checks
HPA_SYNC_PERIOD_S = 15.0  # kube-controller-manager --horizontal-pod-autoscaler-sync-period
KEDA_COOLDOWN_S = 300.0  # ScaledObject cooldownPeriod: last active -> scale to zero
HPA_DOWN_STABILIZATION_S = 300.0  # HPA behavior.scaleDown.stabilizationWindowSeconds


def keda_defaults_on_paper() -> dict[str, float]:
    """Reaction of a KEDA Redis scaler with default settings, from its timers alone.

    From zero, KEDA's own poll (pollingInterval) activates the Deployment to one
    replica; past one, the HPA asks KEDA's metrics server on its sync period. A
    burst arriving at a random moment waits half of each timer on average and
    all of it in the worst case (API and pod start times come on top).
    """
    return {
        "zero_to_one_worst": KEDA_POLLING_INTERVAL_S,
        "zero_to_one_typical": KEDA_POLLING_INTERVAL_S / 2,
        "one_to_n_worst": HPA_SYNC_PERIOD_S,
        "one_to_n_typical": HPA_SYNC_PERIOD_S / 2,
        "burst_from_zero_to_n_worst": KEDA_POLLING_INTERVAL_S + HPA_SYNC_PERIOD_S,
        "burst_from_zero_to_n_typical": (KEDA_POLLING_INTERVAL_S + HPA_SYNC_PERIOD_S) / 2,
        "scale_to_zero_after_idle": KEDA_COOLDOWN_S,
        "scale_down_after_drop": HPA_DOWN_STABILIZATION_S,
    }


def log(message: str) -> None:
    print(f"[autoscale] {message}", file=sys.stderr, flush=True)


class Setup:
    """The namespace, objects and operator process of one benchmark run."""

    def __init__(self, cluster: KubeCluster, api: client.ApiClient, redis_url: str, polling: float):
        self.cluster = cluster
        self.api = api
        self.namespace = f"bench-{uuid.uuid4().hex[:8]}"
        self.deployment = "worker-high"
        client.CoreV1Api(api).create_namespace({"metadata": {"name": self.namespace}})
        install_crd(api)
        grant_operator(api, self.namespace, rbac_rules())
        self.kubeconfig = cluster.service_account_kubeconfig(self.namespace, OPERATOR_SA)
        create_secret(api, self.namespace, "redis", {"url": redis_url})
        create_deployment(api, self.namespace, self.deployment, 0)
        create_autoscaler(
            api,
            self.namespace,
            autoscaler(
                "high",
                self.deployment,
                PRIORITY.value,
                targetBacklogPerReplica=TARGET_PER_REPLICA,
                maxReplicas=MAX_REPLICAS,
                pollingIntervalSeconds=polling,
                # Back to zero right after each round, to start the next from scratch.
                scaleDown={"stabilizationWindowSeconds": 0},
            ),
        )
        self.log_path = cluster.workdir / f"operator-{self.namespace}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "relayq.operator",
                "--namespace",
                self.namespace,
                "--kubeconfig",
                str(self.kubeconfig),
                "--metrics-port",
                "0",
                "--liveness",
                "",
            ],
            cwd=REPO_ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def replicas(self) -> int:
        return spec_replicas(self.api, self.namespace, self.deployment)

    def running(self) -> int:
        return len(running_pods(self.api, self.namespace, self.deployment))


async def measure_rounds(
    setup: Setup, queue: Queue, jobs: int, rounds: int, polling: float
) -> list[dict[str, float]]:
    rng = random.Random(7)
    expected = min(MAX_REPLICAS, -(-jobs // TARGET_PER_REPLICA))
    results: list[dict[str, float]] = []
    for n in range(rounds):
        await queue.purge(PRIORITY)
        wait_for("back to 0 replicas", lambda: setup.replicas() == 0, timeout=60)
        wait_for("no pods", lambda: setup.running() == 0, timeout=60)
        await asyncio.sleep(polling + rng.uniform(0, polling))
        await queue.enqueue_many(PRIORITY, [Message(new_task_id(), "noop") for _ in range(jobs)])
        burst = time.monotonic()
        to_patch = to_full = to_running = None
        while to_running is None:
            now = time.monotonic() - burst
            if now > 120:
                raise TimeoutError(f"round {n}: no full scale-up within 120 s")
            replicas = setup.replicas()
            if to_patch is None and replicas > 0:
                to_patch = now
            if to_full is None and replicas == expected:
                to_full = now
            if to_full is not None and setup.running() == expected:
                to_running = time.monotonic() - burst
            await asyncio.sleep(SAMPLE_S)
        assert to_patch is not None and to_full is not None
        results.append({"to_patch_s": to_patch, "to_full_s": to_full, "to_running_s": to_running})
        log(
            f"round {n + 1}/{rounds}: patch {to_patch:.2f}s, "
            f"all {expected} Running {to_running:.2f}s"
        )
    await queue.purge(PRIORITY)
    return results


def summary(rounds: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in ("to_patch_s", "to_full_s", "to_running_s"):
        values = [r[key] for r in rounds]
        out[key] = statistics.median(values)
        out[key.replace("_s", "_max_s")] = max(values)
    return out


def measure(
    redis_url: str | None = None, jobs: int = 200, rounds: int = 5, polling: float = 2.0
) -> dict[str, Any]:
    """Run the benchmark; the result goes in results.json under "autoscale"."""
    with tempfile.TemporaryDirectory(prefix="relayq-autoscale-") as tmp:
        redis_srv = None
        if redis_url is None:
            redis_srv = redis_server(Path(tmp) / "redis").start()
            redis_url = f"redis://127.0.0.1:{redis_srv.port}/0"
        cluster = KubeCluster(Path(tmp) / "kube")
        try:
            cluster.start()
            log(f"control plane up in {cluster.startup_seconds:.1f}s")
            with cluster.api_client() as api:
                setup = Setup(cluster, api, redis_url, polling)
                try:
                    wait_for(
                        "the operator's first poll",
                        lambda: (
                            setup.process.poll() is None
                            and bool(
                                client.CustomObjectsApi(api)
                                .get_namespaced_custom_object(
                                    "relayq.io",
                                    "v1alpha1",
                                    setup.namespace,
                                    "workerautoscalers",
                                    "high",
                                )
                                .get("status", {})
                                .get("conditions")
                            )
                        ),
                        timeout=60,
                    )

                    async def run() -> list[dict[str, float]]:
                        redis = connect_redis(redis_url)
                        try:
                            return await measure_rounds(setup, Queue(redis), jobs, rounds, polling)
                        finally:
                            await redis.aclose()

                    results = asyncio.run(run())
                except BaseException:
                    setup.stop()
                    log(f"operator log:\n{setup.log_path.read_text(errors='replace')[-4000:]}")
                    raise
                setup.stop()
        finally:
            cluster.stop()
            if redis_srv is not None:
                redis_srv.stop()
    return {
        **summary(results),
        "rounds": len(results),
        "jobs": jobs,
        "replicas": min(MAX_REPLICAS, -(-jobs // TARGET_PER_REPLICA)),
        "polling_interval_s": polling,
        "keda_defaults_on_paper_s": keda_defaults_on_paper(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.autoscale_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--polling", type=float, default=2.0, help="pollingIntervalSeconds")
    args = parser.parse_args(argv)
    print(json.dumps(measure(jobs=args.jobs, rounds=args.rounds, polling=args.polling), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
