"""docs/metrics.md lists exactly the metrics the code defines, with their types and labels."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from redis.asyncio import Redis

from relayq.core.keys import Keys
from relayq.dev.servers import REPO_ROOT, LocalServer

CATALOG = REPO_ROOT / "docs/metrics.md"
# Every module that defines relayq metrics.
MODULES = (
    "relayq.core.telemetry",
    "relayq.relayer.chain.metrics",
    "relayq.core.recovery_report",
    "relayq.core.reconcile_report",
    "relayq.operator.metrics",
    "relayq.worker.runner",
    "relayq.api.auth",
    "relayq.signer.metrics",
)
# Rows of metrics the alerts rely on that their component does not export yet.
# When one appears in the registry, this test fails: remove it from here.
NOT_YET_DEFINED: set[str] = set()
ROW = re.compile(r"^\| `(relayq_[a-z0-9_]+)` \|\s*(\w+)\s*\|([^|]*)\|[^|]+\|([^|]+)\|$")


@dataclass(frozen=True)
class Row:
    type: str
    labels: frozenset[str]
    emitted_by: str


def catalog() -> dict[str, Row]:
    rows: dict[str, Row] = {}
    for line in CATALOG.read_text().splitlines():
        m = ROW.match(line)
        if m is None:
            continue
        name, kind, labels, emitted_by = m.groups()
        assert name not in rows, f"{name} listed twice"
        rows[name] = Row(kind, frozenset(re.findall(r"`(\w+)`", labels)), emitted_by.strip())
    return rows


def exported_name(family: Metric) -> str:
    # prometheus_client strips `_total` from a counter family's name; the
    # series (and this catalog) carry it.
    return f"{family.name}_total" if family.type == "counter" else str(family.name)


def label_names(family: Metric) -> frozenset[str]:
    from_samples = {k for s in family.samples for k in s.labels if k not in ("le", "quantile")}
    if from_samples:
        return frozenset(from_samples)
    # A labelled metric with no child yet has no samples: ask the metric itself.
    collector = REGISTRY._names_to_collectors.get(exported_name(family))
    return frozenset(getattr(collector, "_labelnames", ()))


def registered() -> Iterator[Metric]:
    for family in REGISTRY.collect():
        if family.name.startswith("relayq_"):
            yield family


@pytest.fixture
async def modules_loaded(redis_srv: LocalServer) -> None:
    """Import every metrics module; give recovery's collector a report so all its gauges show."""
    for module in MODULES:
        importlib.import_module(module)
    from relayq.core.reconcile_report import reconcile_collector, record_reconcile_run
    from relayq.core.recovery_report import recovery_collector

    keys = Keys("catalog")
    redis = Redis(port=redis_srv.port, decode_responses=True)
    try:
        await redis.hset(
            keys.recovery_report,
            mapping={"last_duration_seconds": 1, "last_run_ts": 1, "last_success_ts": 1},
        )
        await recovery_collector().refresh(redis, keys)
        await redis.delete(keys.recovery_report)
        await record_reconcile_run(redis, keys, {"unrecorded_credit": 0})
        await reconcile_collector().refresh(redis, keys)
        await redis.delete(keys.reconcile_report)
    finally:
        await redis.aclose()


async def test_every_registered_metric_is_in_the_catalog_with_its_type_and_labels(
    modules_loaded: None,
) -> None:
    rows = catalog()
    seen = list(registered())

    assert len(seen) >= 30, "the metrics modules registered too little"
    for family in seen:
        name = exported_name(family)
        assert name in rows, f"{name} is not in docs/metrics.md"
        assert rows[name].type == family.type, f"{name}: catalog says {rows[name].type}"
        assert rows[name].labels == label_names(family), f"{name}: labels differ"


async def test_every_catalog_row_is_a_metric_the_code_defines(modules_loaded: None) -> None:
    defined = {exported_name(f) for f in registered()}
    rows = catalog()

    table_lines = [x for x in CATALOG.read_text().splitlines() if x.startswith("| `relayq_")]
    assert len(rows) == len(table_lines), "a row of docs/metrics.md does not parse"
    assert set(rows) - defined == NOT_YET_DEFINED
    for name, row in rows.items():
        assert set(re.split(r",\s*|\s+\(", row.emitted_by)) & {
            "api", "worker", "operator", "recovery", "signer",
        }, f"{name}: emitted by {row.emitted_by!r}"  # fmt: skip
