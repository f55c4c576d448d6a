"""`relayq recovery`: one recovery run, then exit (the CronJob); `--loop S` repeats every S seconds.

Prints each run's JSON summary on stdout. Exit status: 0 after a run that
succeeded or found the lock held, 1 after a failed run, 2 for bad settings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence

from relayq.core.clients import open_clients
from relayq.core.settings import Settings, SettingsError
from relayq.core.telemetry import configure_logging, log_event
from relayq.recovery.settings import RecoverySettings
from relayq.recovery.sweep import Recovery, Summary

log = logging.getLogger("relayq.recovery")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loop",
        type=float,
        metavar="SECONDS",
        help="keep running, one run every SECONDS (make run); default: one run, then exit",
    )


async def run_once(settings: Settings, recovery: RecoverySettings) -> Summary:
    """Connect, run once, close. Raises on Redis or MongoDB errors."""
    async with open_clients(
        settings, ensure_indexes=False, mongo_timeout_seconds=recovery.mongo_timeout_seconds
    ) as clients:
        return await Recovery(settings, recovery, clients.queue, clients.store).run_once()


async def _one(settings: Settings, recovery: RecoverySettings, indent: int | None) -> bool:
    started = time.perf_counter()
    try:
        summary = await run_once(settings, recovery)
        print(json.dumps(summary.to_public(), indent=indent), flush=True)
        return True
    except Exception as exc:
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        failure = {
            "outcome": "failure",
            "error": f"{type(exc).__name__}: {first}",
            "durationSeconds": round(time.perf_counter() - started, 4),
        }
        log_event(log, logging.ERROR, "recovery run failed", error=failure["error"])
        print(json.dumps(failure, indent=indent), flush=True)
        return False


async def _loop(settings: Settings, recovery: RecoverySettings, every: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        await _one(settings, recovery, None)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="relayq recovery", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        recovery = RecoverySettings.from_env()
    except SettingsError as exc:
        parser.exit(2, f"relayq recovery: {exc}\n")
    if args.loop is not None and args.loop <= 0:
        parser.exit(2, "relayq recovery: --loop needs a positive number of seconds\n")
    configure_logging(settings.log_level)
    if args.loop is not None:
        asyncio.run(_loop(settings, recovery, args.loop))
        return
    if not asyncio.run(_one(settings, recovery, 2)):
        sys.exit(1)
