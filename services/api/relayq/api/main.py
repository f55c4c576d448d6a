"""Entry point: `relayq api` serves the gateway until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from aiohttp import web

from relayq.api.app import create_app
from relayq.api.metrics import serve_metrics
from relayq.api.settings import ApiSettings, check_metrics_port
from relayq.core.settings import Settings, SettingsError
from relayq.core.telemetry import configure_logging
from relayq.core.tracing import configure_tracing, shutdown_tracing


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="relayq api", description=__doc__)
    parser.add_argument("--host", help="default RELAYQ_API_HOST (127.0.0.1)")
    parser.add_argument("--port", type=int, help="default RELAYQ_API_PORT (8080)")
    parser.add_argument(
        "--metrics-port", type=int, help="default RELAYQ_API_METRICS_PORT (9100); 0 for none"
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        api = ApiSettings.from_env()
        port = args.port or api.port
        metrics_port = api.metrics_port if args.metrics_port is None else args.metrics_port
        check_metrics_port(port, metrics_port)
    except SettingsError as exc:
        parser.exit(2, f"relayq api: {exc}\n")
    configure_logging(settings.log_level)
    configure_tracing("relayq-api")  # a no-op unless an OTLP endpoint is set
    # run_app handles SIGTERM/SIGINT: stop accepting, let in-flight requests
    # finish within shutdown_timeout, then run the cleanup (closing clients).
    host = args.host or api.host
    app = create_app(settings, api)
    if metrics_port:
        serve_metrics(app, host, metrics_port)
    web.run_app(
        app,
        host=host,
        port=port,
        shutdown_timeout=api.shutdown_seconds,
        access_log=None,
        print=None,
    )
    shutdown_tracing()  # export the spans still buffered
