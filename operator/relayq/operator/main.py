"""`relayq-operator`: runs the autoscaling operator.

relayq-operator [--namespace NS ... | --all-namespaces] [--kubeconfig FILE]
                [--metrics-port 9100] [--liveness http://0.0.0.0:8080/healthz]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import kopf
from prometheus_client import start_http_server

from relayq.operator.handlers import OperatorConfig, build_registry


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="relayq-operator", description="Scales relayq worker Deployments on their backlog."
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        dest="namespaces",
        action="append",
        default=[],
        help="watch WorkerAutoscalers in this namespace (repeatable); "
        "default: $RELAYQ_OPERATOR_NAMESPACE, else all namespaces",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, $KUBECONFIG)")
    parser.add_argument(
        "--metrics-port", type=int, default=9100, help="Prometheus port, 0 for none (9100)"
    )
    parser.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        help="liveness endpoint URL, '' for none (http://0.0.0.0:8080/healthz)",
    )
    parser.add_argument(
        "--secret-refresh-seconds",
        type=float,
        default=10.0,
        help="re-read the Secrets naming Redis this often (10)",
    )
    parser.add_argument("--log-level", default=os.environ.get("RELAYQ_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    if not args.namespaces and not args.all_namespaces:
        env = os.environ.get("RELAYQ_OPERATOR_NAMESPACE", "").strip()
        args.namespaces = [n.strip() for n in env.split(",") if n.strip()]
        args.all_namespaces = not args.namespaces
    if args.metrics_port < 0 or args.secret_refresh_seconds <= 0:
        parser.error("--metrics-port must be >= 0 and --secret-refresh-seconds positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    if args.metrics_port:
        start_http_server(args.metrics_port)
    config = OperatorConfig(
        kubeconfig=args.kubeconfig, secret_refresh_seconds=args.secret_refresh_seconds
    )
    kopf.run(
        registry=build_registry(config),
        standalone=True,
        clusterwide=args.all_namespaces,
        namespaces=args.namespaces,
        liveness_endpoint=args.liveness or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
