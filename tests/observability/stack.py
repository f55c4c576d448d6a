"""A real Prometheus and Alertmanager on loopback, configured for relayq's targets and rules."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from relayq.dev.servers import LocalServer, free_port
from tests.observability.rules import RULES, binary, load_yaml

# Fast enough that a test sees a scrape, a rule evaluation and a notification
# within seconds.
INTERVAL = "1s"


def fast_rules(path: Path) -> Path:
    """The rule file with every `for:` cut to 1 s, so an alert fires as soon as it is true."""
    doc = load_yaml(RULES)
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def prometheus_server(
    workdir: Path, targets: dict[str, list[str]], rules: Path, alertmanager_port: int
) -> LocalServer:
    """Prometheus scraping `targets` (job -> host:port list) every second."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL},
        "rule_files": [str(rules)],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]
        },
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": hosts}]}
            for job, hosts in targets.items()
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [
        binary("prometheus"),
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    return LocalServer("prometheus", port, workdir, argv)


def alertmanager_server(workdir: Path, webhook_url: str) -> LocalServer:
    """Alertmanager sending every alert to `webhook_url` at once; no cluster port."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "route": {
            "receiver": "webhook",
            "group_by": ["alertname", "priority"],
            "group_wait": INTERVAL,
            "group_interval": INTERVAL,
            "repeat_interval": "1h",
        },
        "receivers": [
            {"name": "webhook", "webhook_configs": [{"url": webhook_url, "send_resolved": False}]}
        ],
    }
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [
        binary("prometheus-alertmanager", "alertmanager"),
        f"--config.file={workdir / 'alertmanager.yml'}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]
    return LocalServer("alertmanager", port, workdir, argv)


class PrometheusApi:
    """The HTTP API of one Prometheus."""

    def __init__(self, port: int) -> None:
        self.root = f"http://127.0.0.1:{port}"
        self.base = f"{self.root}/api/v1"

    def wait_ready(self, timeout: float = 30.0) -> PrometheusApi:
        """Block until Prometheus answers queries (it refuses them while it starts)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.root}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def get(self, path: str, **params: str | float) -> Any:
        url = f"{self.base}/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]

    def query_range(self, expr: str, start: float, end: float | None = None) -> list[Any]:
        """What Grafana asks for: the series of `expr` over [start, end] at 1 s steps."""
        data = self.get("query_range", query=expr, start=start, end=end or time.time(), step="1s")
        result: list[Any] = data["result"]
        return result

    def query(self, expr: str) -> list[Any]:
        result: list[Any] = self.get("query", query=expr)["result"]
        return result

    def targets_up(self) -> dict[str, int]:
        """Healthy scrape targets per job."""
        up: dict[str, int] = {}
        for target in self.get("targets")["activeTargets"]:
            job = target["labels"]["job"]
            up[job] = up.get(job, 0) + (target["health"] == "up")
        return up
