"""`relayq reconcile`: one reconciliation run, then exit (the CronJob); `--loop S` repeats.

Compares the chain with the purchases created in the last `--window` seconds
(those older than `--settle`), prints the report as JSON on stdout, logs each
discrepancy, and records the counts for the API's /metrics
(`relayq_reconcile_discrepancies{kind}`). Exit status: 0 after a run that
completed, whatever it found (the metric and its alert carry the findings);
1 after a run that could not complete (chain, Redis or MongoDB unreachable);
2 for bad settings.
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
from datetime import UTC, datetime, timedelta

from relayq.core.clients import open_clients
from relayq.core.env import SettingsError
from relayq.core.reconcile_report import record_reconcile_run
from relayq.core.settings import Settings
from relayq.core.telemetry import configure_logging, log_event
from relayq.relayer.chain.settings import ChainSettings
from relayq.relayer.reconcile import DEFAULT_SETTLE_SECONDS, ReconcileReport, reconcile
from relayq.relayer.relayer import open_relayer

log = logging.getLogger("relayq.reconcile")
DEFAULT_WINDOW_SECONDS = 86_400.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--window",
        type=float,
        default=DEFAULT_WINDOW_SECONDS,
        metavar="SECONDS",
        help="reconcile the purchases created this long ago and since (default: one day)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=DEFAULT_SETTLE_SECONDS,
        metavar="SECONDS",
        help="leave out purchases younger than this: their transfer may still be in flight",
    )
    parser.add_argument(
        "--loop",
        type=float,
        metavar="SECONDS",
        help="keep running, one run every SECONDS (make run); default: one run, then exit",
    )


async def run_once(
    settings: Settings, chain: ChainSettings, window: float, settle: float
) -> ReconcileReport:
    """Connect, reconcile once, record the counts, close. Raises when it cannot complete."""
    async with open_clients(settings, ensure_indexes=False) as clients:
        relayer = await open_relayer(chain, clients)
        try:
            since = datetime.now(UTC) - timedelta(seconds=window)
            try:
                report = await reconcile(relayer, since, settle_seconds=settle)
            except Exception:
                await record_reconcile_run(clients.redis, clients.queue.keys, None)
                raise
            await record_reconcile_run(clients.redis, clients.queue.keys, report.counts)
            return report
        finally:
            await relayer.close()


async def _one(settings: Settings, chain: ChainSettings, args: argparse.Namespace) -> bool:
    started = time.perf_counter()
    try:
        report = await run_once(settings, chain, args.window, args.settle)
    except Exception as exc:
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        error = f"{type(exc).__name__}: {first}"
        log_event(log, logging.ERROR, "reconciliation failed", error=error)
        print(json.dumps({"outcome": "failure", "error": error}), flush=True)
        return False
    for d in report.discrepancies:
        log_event(log, logging.WARNING, "reconciliation discrepancy", **d.to_json())
    if report.clean:
        log_event(log, logging.INFO, "reconciliation clean: the chain matches the records",
                  purchases=report.purchases, transactions=report.transactions)  # fmt: skip
    out = {"outcome": "success", **report.to_json()}
    out["durationSeconds"] = round(time.perf_counter() - started, 3)
    print(json.dumps(out), flush=True)
    return True


async def _loop(settings: Settings, chain: ChainSettings, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        await _one(settings, chain, args)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.loop)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="relayq reconcile", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        chain = ChainSettings.from_env()
        if not chain.configured:
            raise SettingsError(
                "reconcile needs the relayer's settings: RELAYQ_RELAYER_KEYPAIR_FILE,"
                " RELAYQ_CONTRACT_OWNER and RELAYQ_BASKETS_FILE"
            )
        if args.window <= 0 or args.settle < 0 or (args.loop is not None and args.loop <= 0):
            raise SettingsError("--window and --loop must be positive, --settle not negative")
    except (SettingsError, ValueError) as exc:
        print(json.dumps({"error": "invalid-settings", "message": str(exc)}), file=sys.stderr)
        sys.exit(2)
    configure_logging(settings.log_level)
    if args.loop is not None:
        asyncio.run(_loop(settings, chain, args))
        return
    sys.exit(0 if asyncio.run(_one(settings, chain, args)) else 1)
