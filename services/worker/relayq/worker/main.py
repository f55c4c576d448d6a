"""Entry point of a worker process: `relayq worker --priority P`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence

from prometheus_client import start_http_server

from relayq.core.clients import open_clients
from relayq.core.modules import ProcessContext, started
from relayq.core.priorities import Priority
from relayq.core.settings import Settings, SettingsError
from relayq.core.telemetry import configure_logging, log_event
from relayq.core.tracing import configure_tracing, shutdown_tracing
from relayq.worker.executor import TaskExecutor
from relayq.worker.runner import Worker, WorkerConfig

log = logging.getLogger("relayq.worker")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--priority", required=True, type=Priority.parse, help="queue to serve")
    parser.add_argument("--concurrency", type=int, help="jobs at once (default: the class's)")
    parser.add_argument(
        "--metrics-port", type=int, help="Prometheus port, 0 for none (default RELAYQ_METRICS_PORT)"
    )


async def serve(
    settings: Settings,
    priority: Priority,
    *,
    concurrency: int | None = None,
    metrics_port: int | None = None,
) -> None:
    """Run a worker until SIGTERM or SIGINT, then drain within settings.drain_seconds."""
    cls = settings.priority_class(priority)
    port = settings.metrics_port if metrics_port is None else metrics_port
    if port:
        start_http_server(port)
    async with (
        open_clients(settings) as clients,
        started(settings.job_modules, ProcessContext(clients)) as process,
    ):
        executor = TaskExecutor(
            settings, clients.service.registry, clients.service.lifecycle, clients.queue, process
        )
        worker = Worker(
            clients.queue,
            executor,
            WorkerConfig(
                priority=priority,
                consumer=settings.worker_id,
                concurrency=concurrency or cls.concurrency,
                lease_seconds=settings.lease_seconds,
                max_deliveries=settings.max_deliveries,
                drain_seconds=settings.drain_seconds,
            ),
            poison_handler=executor.poison,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _on_signal, worker, sig)
        await worker.run()


def _on_signal(worker: Worker, sig: signal.Signals) -> None:
    log_event(log, logging.INFO, "stop requested", signal=sig.name, in_flight=worker.in_flight)
    worker.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="relayq worker", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        parser.exit(2, f"relayq worker: {exc}\n")
    configure_logging(settings.log_level)
    configure_tracing("relayq-worker")  # a no-op unless an OTLP endpoint is set
    asyncio.run(
        serve(settings, args.priority, concurrency=args.concurrency, metrics_port=args.metrics_port)
    )
    shutdown_tracing()  # export the spans still buffered
