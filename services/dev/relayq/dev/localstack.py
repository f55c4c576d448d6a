"""`make run`: Redis, MongoDB, the API, workers, recovery and reconciliation, in the foreground.

Ports come from RELAYQ_REDIS_URL, RELAYQ_MONGO_URL and RELAYQ_API_PORT
(defaults 6379, 27017 and 8080 on 127.0.0.1); the API's metrics are on
RELAYQ_API_METRICS_PORT (default: the port below the workers', 9100), the
workers' on the ports from --metrics-base-port on; data lives under .run/ in the
repository. The client key and the admin token come from RELAYQ_API_KEY and
RELAYQ_ADMIN_TOKEN, or are generated and printed. Ctrl-C or SIGTERM stops
everything, the API and workers first so they drain.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from relayq.core.priorities import Priority
from relayq.core.settings import Settings
from relayq.dev.relayer_env import relayer_env
from relayq.dev.servers import (
    REPO_ROOT,
    LocalServer,
    devchain_server,
    mongo_server,
    redis_server,
    wait_for_port,
)

FIRST_METRICS_PORT = 9101
RELAYER_MODULE = "relayq.relayer.jobs"
RECOVERY_EVERY_SECONDS = 30
# Reconciliation: every minute, the last hour's purchases once 30 s old (finalized on the devchain).
RECONCILE_EVERY_SECONDS = 60
RECONCILE_WINDOW_SECONDS = 3600
RECONCILE_SETTLE_SECONDS = 30
SIGNER_PORT = 8090


def _local_port(url: str, default: int) -> int:
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"localstack runs servers on 127.0.0.1 only, not {host} ({url})")
    return parsed.port or default


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="relayq-dev localstack", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / ".run")
    parser.add_argument("--for", dest="duration", type=float, help="stop after this many seconds")
    parser.add_argument(
        "--metrics-base-port",
        type=int,
        default=FIRST_METRICS_PORT,
        help="workers' metrics ports start here, one per priority, the API's is the one "
        "below (unless RELAYQ_API_METRICS_PORT says); 0 for none",
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    servers: list[LocalServer] = []
    children: list[subprocess.Popen[bytes]] = []
    try:
        redis = redis_server(args.data_dir / "redis", _local_port(settings.redis_url, 6379))
        servers.append(redis.start())
        mongo = mongo_server(args.data_dir / "mongo", _local_port(settings.mongo_url, 27017))
        servers.append(mongo.start())
        env = dict(os.environ)
        if "RELAYQ_SOLANA_RPC_URL" not in env:
            # No cluster named: a local chain, and the relayer pointed at it.
            port = int(env.get("RELAYQ_DEVCHAIN_PORT") or 8899)
            chain = devchain_server(args.data_dir / "devchain", port)
            servers.append(chain.start())
            local = relayer_env(args.data_dir / "devchain" / "chain.json")
            for name, value in local.items():
                env.setdefault(name, value)
            env.setdefault("RELAYQ_JITO_RPS", "40")
            # For commands run by hand against this chain (`env $(cat .run/relayer.env) ...`).
            (args.data_dir / "relayer.env").write_text(
                "".join(f"{name}={env[name]}\n" for name in sorted(local))
            )
        # The relayer is a job module like any other: the API and workers load it by name.
        modules = [m for m in env.get("RELAYQ_JOB_MODULES", "").split(",") if m.strip()]
        if RELAYER_MODULE not in modules:
            env["RELAYQ_JOB_MODULES"] = ",".join([*modules, RELAYER_MODULE])
        env.setdefault("RELAYQ_API_KEY", secrets.token_urlsafe(24))
        env.setdefault("RELAYQ_ADMIN_TOKEN", secrets.token_urlsafe(24))
        relayer_on = bool(env.get("RELAYQ_RELAYER_KEYPAIR_FILE") or env.get("RELAYQ_SIGNER_URL"))
        if env.get("RELAYQ_RELAYER_KEYPAIR_FILE") and not env.get("RELAYQ_SIGNER_URL"):
            # The signer holds the key, as in the chart: the API and workers ask it to sign.
            signer_port = int(env.get("RELAYQ_SIGNER_PORT") or SIGNER_PORT)
            env.setdefault("RELAYQ_SIGNER_TOKEN", secrets.token_urlsafe(24))
            signer_env = {**env, "RELAYQ_SIGNER_HOST": "127.0.0.1"}
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "relayq.signer", "--port", str(signer_port)],
                    env=signer_env,
                )
            )
            wait_for_port(signer_port, children[-1], 60)
            env["RELAYQ_SIGNER_URL"] = f"http://127.0.0.1:{signer_port}"
            del env["RELAYQ_RELAYER_KEYPAIR_FILE"]
        api_port = int(env.get("RELAYQ_API_PORT") or 8080)
        default_metrics = args.metrics_base_port - 1 if args.metrics_base_port else 0
        env.setdefault("RELAYQ_API_METRICS_PORT", str(default_metrics))
        children.append(
            subprocess.Popen([sys.executable, "-m", "relayq.api", "--port", str(api_port)], env=env)
        )
        api = children[-1]
        for i, priority in enumerate(Priority):
            port = args.metrics_base_port + i if args.metrics_base_port else 0
            children.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "relayq.worker",
                        "--priority",
                        priority.value,
                        "--metrics-port",
                        str(port),
                    ],
                    env=env,
                )
            )
        # The recovery CronJob's stand-in: lost jobs dispatched again, retention.
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "relayq.recovery", "--loop", str(RECOVERY_EVERY_SECONDS)],
                env=env,
                stdout=subprocess.DEVNULL,
            )
        )
        if relayer_on:
            # The reconcile CronJob's stand-in: the chain against the purchase records.
            children.append(
                subprocess.Popen(
                    [
                        sys.executable, "-m", "relayq.cli", "reconcile",
                        "--loop", str(RECONCILE_EVERY_SECONDS),
                        "--window", str(RECONCILE_WINDOW_SECONDS),
                        "--settle", str(RECONCILE_SETTLE_SECONDS),
                    ],
                    env=env,
                    stdout=(args.data_dir / "reconcile.jsonl").open("a"),
                )
            )  # fmt: skip
        wait_for_port(api_port, api, 60)
        print(_banner(settings, args.metrics_base_port, env, api_port), flush=True)
        while not stop.wait(0.5):
            if args.duration is not None:
                args.duration -= 0.5
                if args.duration <= 0:
                    break
            for w in children:
                if w.poll() is not None:
                    print(f"worker {w.args!r} exited with {w.returncode}", file=sys.stderr)
                    stop.set()
    finally:
        for w in children:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in children:
            try:
                w.wait(settings.drain_seconds + 5)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
        for server in reversed(servers):
            server.stop()
        print("localstack stopped", flush=True)


def _banner(settings: Settings, metrics_base_port: int, env: dict[str, str], api_port: int) -> str:
    ports = ", ".join(f"{p.value}:{metrics_base_port + i}" for i, p in enumerate(Priority))
    if not metrics_base_port:
        ports = "off"
    return "\n".join(
        [
            "relayq localstack is up (Ctrl-C stops it)",
            f"  redis     {settings.redis_url}",
            f"  mongodb   {settings.mongo_url} (secantusd-rs)",
            f"  workers   one per priority; metrics ports {ports}",
            f"  chain     {env.get('RELAYQ_SOLANA_RPC_URL', 'none')} (Solana RPC; Jito at"
            f" {env.get('RELAYQ_JITO_URL', 'none')})",
            f"  recovery  every {RECOVERY_EVERY_SECONDS}s (summaries in the API's metrics)",
            f"  reconcile every {RECONCILE_EVERY_SECONDS}s, the last"
            f" {RECONCILE_WINDOW_SECONDS}s of purchases (reports in .run/reconcile.jsonl;"
            " relayq_reconcile_discrepancies in /metrics)"
            if env.get("RELAYQ_SIGNER_URL")
            else "  reconcile off (no relayer configured)",
            f"  signer    {env.get('RELAYQ_SIGNER_URL')} (holds the relayer's key)"
            if env.get("RELAYQ_SIGNER_URL")
            else "  signer    off (no relayer configured)",
            f"  api       http://127.0.0.1:{api_port} (docs at /docs)",
            f"  api metrics  http://127.0.0.1:{env['RELAYQ_API_METRICS_PORT']}/metrics"
            if env.get("RELAYQ_API_METRICS_PORT", "0") != "0"
            else "  api metrics  off",
            f"  client key   RELAYQ_API_KEY={env['RELAYQ_API_KEY']}",
            f"  admin token  RELAYQ_ADMIN_TOKEN={env['RELAYQ_ADMIN_TOKEN']}",
            "try, in another shell:",
            f"  curl -s -X POST http://127.0.0.1:{api_port}/v1/jobs"
            f" -H 'Authorization: Bearer {env['RELAYQ_API_KEY']}'"
            " -H 'Content-Type: application/json' -d '{\"type\": \"noop\"}'",
            f"  curl -s http://127.0.0.1:{api_port}/v1/bundles"
            f" -H 'Authorization: Bearer {env['RELAYQ_API_KEY']}'",
            f"  curl -s -X POST http://127.0.0.1:{api_port}/v1/buy-tokens"
            f" -H 'Authorization: Bearer {env['RELAYQ_API_KEY']}' -H 'Idempotency-Key: order-1'"
            " -H 'Content-Type: application/json'"
            ' -d \'{"wallet": "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin",'
            ' "solAmount": 0.5, "bundleId": "starter"}\'',
            "  .tools/bin/uv run relayq enqueue --type sleep --payload '{\"seconds\": 2}'",
            "  .tools/bin/uv run relayq queues",
            "  .tools/bin/uv run relayq status TASK_ID",
        ]
    )
