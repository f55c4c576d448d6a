"""kopf handlers of the operator, registered on a registry of their own.

`build_registry(config)` returns a registry holding only these handlers (no
implicit logins), so `main` and the tests run the same operator with the same
identity rules.

One daemon per WorkerAutoscaler rather than a timer: a kopf timer's interval is
fixed when the handler is registered, while `pollingIntervalSeconds` is per
object and may change; the daemon reads it from the live body on every round.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import kopf

from relayq.operator import metrics
from relayq.operator.autoscaler import AutoscalerLoop
from relayq.operator.kube import ApiException, Kube, connection_info, load_configuration
from relayq.operator.queue_reading import RedisPools
from relayq.operator.spec import GROUP, PLURAL, VERSION

# kopf's own annotations on each WorkerAutoscaler start with this.
ANNOTATIONS_PREFIX = "relayq.io"


@dataclass(frozen=True)
class OperatorConfig:
    """How the operator runs.

    Attributes:
        kubeconfig: kubeconfig file to act with; None for in-cluster (then $KUBECONFIG).
        secret_refresh_seconds: Secrets naming Redis are read again this often (and after
            every Redis error), so an edited Secret takes effect without a restart.
        watch_server_timeout: seconds after which the API server ends a watch.
        watch_client_timeout: seconds after which the operator gives up on a watch.
    """

    kubeconfig: str | None = None
    secret_refresh_seconds: float = 10.0
    watch_server_timeout: int = 60
    watch_client_timeout: float = 90.0


class Operator:
    """The handlers, sharing one Kubernetes client and the Redis pools."""

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.pools = RedisPools()
        self._kube: Kube | None = None
        self._loops: dict[tuple[str, str], AutoscalerLoop] = {}

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            raise RuntimeError("the operator has not logged in")
        return self._kube

    async def startup(self, settings: kopf.OperatorSettings, **_: Any) -> None:
        # The API server ends each watch after a minute and the client gives up
        # after 90 s, so a connection that died silently (a proxy, a node move)
        # is replaced within 1.5 minutes instead of hanging forever.
        settings.watching.server_timeout = self.config.watch_server_timeout
        settings.watching.client_timeout = self.config.watch_client_timeout
        settings.watching.connect_timeout = 10
        # kopf's state goes in annotations, not in .status: the CRD's status schema
        # prunes unknown fields and the operator writes .status itself.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix=ANNOTATIONS_PREFIX
        )
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=ANNOTATIONS_PREFIX
        )
        # Only kopf's warnings and errors become Events; routine handler logs would
        # bury the ScaledUp/ScaledDown/Paused/RedisUnreachable Events it posts.
        settings.posting.level = logging.WARNING
        # No watching of CRDs or namespaces (the CRD is installed with the chart,
        # before the operator), and no peering: one replica runs (Recreate). This
        # keeps the RBAC to files/operator-rbac.yaml's rules.
        settings.scanning.disabled = True
        settings.peering.standalone = True

    async def login(self, logger: kopf.Logger, **_: Any) -> kopf.ConnectionInfo:
        cfg = await load_configuration(self.config.kubeconfig)
        old, self._kube = self._kube, Kube(cfg)
        if old is not None:
            await old.close()
        logger.info(f"Logged in to {cfg.host}")
        return await connection_info(cfg)

    async def cleanup(self, **_: Any) -> None:
        await self.pools.close()
        if self._kube is not None:
            await self._kube.close()

    async def liveness(self, **_: Any) -> dict[str, Any]:
        # Reports, never fails on Redis: restarting the operator does not fix Redis.
        return {"autoscalers": len(self._loops), "redis": await self.pools.ping()}

    async def autoscale(
        self,
        body: kopf.Body,
        name: str | None,
        namespace: str | None,
        stopped: kopf.DaemonStopped,
        logger: kopf.Logger,
        **_: Any,
    ) -> None:
        if name is None or namespace is None:
            raise kopf.PermanentError("a WorkerAutoscaler must have a name and a namespace")
        key = (namespace, name)
        loop = self._loops[key] = AutoscalerLoop(
            namespace, name, self.kube, self.pools, self.config.secret_refresh_seconds
        )
        try:
            while not stopped:
                started = time.monotonic()
                try:
                    interval = await loop.poll(body, logger)
                except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
                    # The API server is briefly away: keep the history, try next round.
                    logger.warning(f"Poll failed, retrying: {type(exc).__name__}: {exc}")
                    interval = float(body.spec.get("pollingIntervalSeconds", 2) or 2)
                await stopped.wait(max(0.0, interval - (time.monotonic() - started)))
        finally:
            self._loops.pop(key, None)
            metrics.forget(namespace, name)


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    """A registry with the operator's handlers only."""
    registry = kopf.OperatorRegistry()
    operator = Operator(config)
    kopf.on.startup(registry=registry)(operator.startup)
    kopf.on.login(registry=registry, errors=kopf.ErrorsMode.PERMANENT)(operator.login)
    kopf.on.cleanup(registry=registry)(operator.cleanup)
    kopf.on.probe(id="relayq", registry=registry)(operator.liveness)
    kopf.daemon(
        GROUP,
        VERSION,
        PLURAL,
        id="autoscale",
        registry=registry,
        cancellation_timeout=10.0,
        backoff=5.0,
    )(operator.autoscale)
    return registry


__all__ = ["Operator", "OperatorConfig", "build_registry"]
