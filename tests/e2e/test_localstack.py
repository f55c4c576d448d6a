"""`make run`'s local stack: servers and workers up, a job through, clean stop."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from relayq.core.settings import Settings
from relayq.dev.servers import REPO_ROOT, free_port
from tests.conftest import settings_env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relayq.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_localstack_runs_a_job_end_to_end_and_stops_cleanly(
    settings: Settings, tmp_path: Path
) -> None:
    redis_port, mongo_port, api_port = free_port(), free_port(), free_port()
    metrics_port = free_port()
    env = settings_env(
        settings,
        RELAYQ_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        RELAYQ_MONGO_URL=f"mongodb://127.0.0.1:{mongo_port}/",
        RELAYQ_MONGO_DATABASE="relayq",
        RELAYQ_API_PORT=str(api_port),
        RELAYQ_API_METRICS_PORT=str(metrics_port),
        RELAYQ_DEVCHAIN_PORT=str(free_port()),
    )
    out = (tmp_path / "localstack.log").open("w+")
    stack = subprocess.Popen(
        [sys.executable, "-m", "relayq.dev", "localstack", "--data-dir", str(tmp_path / "run"),
         "--metrics-base-port", "0"],
        env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "relayq localstack is up" not in (tmp_path / "localstack.log").read_text():
            assert stack.poll() is None, (tmp_path / "localstack.log").read_text()
            assert time.monotonic() < deadline, "localstack did not come up"
            time.sleep(0.2)
        banner = (tmp_path / "localstack.log").read_text()
        assert "relayq localstack is up" in banner
        # The API's metrics on their own port, as printed; none on the API's port.
        assert f"api metrics  http://127.0.0.1:{metrics_port}/metrics" in banner
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            assert b'relayq_dependency_up{dependency="redis"} 1.0' in r.read()
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=10)
        # No key was given: one was generated and printed, and the API takes it.
        key = re.search(r"RELAYQ_API_KEY=(\S+)", banner)
        assert key is not None
        request = urllib.request.Request(
            f"http://127.0.0.1:{api_port}/v1/jobs",
            data=json.dumps({"type": "noop", "priority": "high"}).encode(),
            headers={"Authorization": f"Bearer {key.group(1)}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 202
            api_task = json.loads(resp.read())["taskId"]

        enqueued = _cli(env, "enqueue", "--type", "sleep", "--priority", "critical",
                        "--payload", '{"seconds": 0.2}')  # fmt: skip
        assert enqueued.returncode == 0, enqueued.stderr
        task_id = json.loads(enqueued.stdout)["taskId"]
        state = None
        deadline = time.monotonic() + 30
        while state != "completed" and time.monotonic() < deadline:
            status = _cli(env, "status", task_id)
            assert status.returncode == 0, status.stderr
            state = json.loads(status.stdout)["state"]
            time.sleep(0.2)
        assert state == "completed"
        api_status = json.loads(_cli(env, "status", api_task).stdout)
        assert api_status["state"] in ("queued", "active", "completed")
        # A purchase on the local chain the stack started: swap, transfer, records.
        buy = urllib.request.Request(
            f"http://127.0.0.1:{api_port}/v1/buy-tokens",
            data=json.dumps({"wallet": "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin",
                             "solAmount": 0.25, "bundleId": "starter"}).encode(),
            headers={"Authorization": f"Bearer {key.group(1)}", "Idempotency-Key": "order-1",
                     "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(buy, timeout=30) as resp:
            assert resp.status == 202
            purchase_task = json.loads(resp.read())["taskId"]
        view: dict[str, Any] = {}
        deadline = time.monotonic() + 60
        while view.get("state") != "completed" and time.monotonic() < deadline:
            read = urllib.request.Request(
                f"http://127.0.0.1:{api_port}/v1/tasks/{purchase_task}",
                headers={"Authorization": f"Bearer {key.group(1)}"},
            )
            with urllib.request.urlopen(read, timeout=10) as resp:
                view = json.loads(resp.read())
            time.sleep(0.3)
        assert view["state"] == "completed", view
        assert view["purchase"]["transfer"]["state"] == "confirmed"
        # Reconciliation by hand, with the relayer settings the stack wrote: clean once the
        # purchase's transactions are final on the chain.
        relayer = dict(
            line.split("=", 1) for line in (tmp_path / "run/relayer.env").read_text().split()
        )
        report: dict[str, Any] = {}
        deadline = time.monotonic() + 60
        while not report.get("clean") and time.monotonic() < deadline:
            run = _cli({**env, **relayer}, "reconcile", "--window", "600", "--settle", "0")
            assert run.returncode == 0, run.stdout + run.stderr
            report = json.loads(run.stdout)
            time.sleep(1)
        assert report["clean"] and report["purchases"] == 1, report
        # The stack's own loop wrote its reports too.
        loop_reports = (tmp_path / "run/reconcile.jsonl").read_text().splitlines()
        assert json.loads(loop_reports[0])["outcome"] == "success", loop_reports
        queues = json.loads(_cli(env, "queues").stdout)
        assert [q["priority"] for q in queues] == ["critical", "high", "medium", "low", "batch"]
    finally:
        stack.send_signal(signal.SIGINT)
        code = stack.wait(60)
    log = (tmp_path / "localstack.log").read_text()
    assert code == 0, log
    assert "localstack stopped" in log
    assert log.count('"worker stopped"') == 5
