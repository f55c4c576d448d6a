"""Side-by-side benchmark: relayq against SAQ, arq, taskiq and BullMQ.

    python -m bench.run [--jobs 20000] [--concurrency 50] [--engines relayq,saq,...]

Starts one throwaway redis-server and one local MongoDB on free loopback ports, runs
every engine one after the other on that same Redis (flushed before each) with
the same job count and worker concurrency, prints a table and writes
bench/results.json. An engine that fails is reported as an error row; the
others still run. Every engine follows the protocol in bench.competitors.common.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import redis

from bench import relayq_bench
from bench.api_bench import measure_api
from bench.competitors import arq_bench, bullmq_bench, common, saq_bench, taskiq_bench
from bench.e2e_bench import measure_e2e
from relayq.dev.servers import LocalServer, mongo_server, redis_server

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results.json"
INSTALL_SCRIPT = REPO_ROOT / "tools" / "install-bench.sh"
ENGINE_TIMEOUT_S = 3 * common.PROCESS_TIMEOUT_S

Measure = Callable[[str, int, int], Awaitable[dict[str, float]]]


@dataclass(frozen=True)
class Engine:
    """One row of the benchmark.

    Attributes:
        name: the engine's key in results.json.
        label: how the table shows it.
        needs_store: whether it also takes the MongoDB URL (relayq with its store).
    """

    name: str
    label: str
    needs_store: bool = False


ENGINES: tuple[Engine, ...] = (
    Engine("relayq", "relayq"),
    Engine("saq", "saq"),
    Engine("arq", "arq"),
    Engine("taskiq", "taskiq"),
    Engine("bullmq", "bullmq"),
    Engine("relayq_store", "relayq + store", needs_store=True),
)
COMPETITORS: dict[str, Measure] = {
    "relayq": relayq_bench.measure_engine,
    "saq": saq_bench.measure,
    "arq": arq_bench.measure,
    "taskiq": taskiq_bench.measure,
    "bullmq": bullmq_bench.measure,
}

Result = dict[str, Any]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20000, help="jobs per engine (default 20000)")
    parser.add_argument(
        "--concurrency", type=int, default=50, help="worker concurrency (default 50)"
    )
    parser.add_argument(
        "--engines",
        default=",".join(engine.name for engine in ENGINES),
        help="comma-separated subset of: " + ", ".join(engine.name for engine in ENGINES),
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=3,
        help="rounds of every engine, and of every API rate, one after the other; each "
        "figure is the median over the rounds, each ratio the median of the rounds' "
        "ratios (default 3)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="results file")
    parser.add_argument(
        "--api-rates",
        type=lambda v: [int(r) for r in v.split(",") if r] if v else [],
        default=[250, 500, 1000],
        help="POST /v1/jobs request rates to offer, comma-separated ('' for none)",
    )
    parser.add_argument("--api-seconds", type=float, default=5.0, help="seconds per API rate")
    parser.add_argument(
        "--e2e-jobs",
        type=int,
        default=10000,
        help="jobs POSTed to a running localstack until completed (0 for none)",
    )
    parser.add_argument(
        "--autoscale-rounds",
        type=int,
        default=5,
        help="bursts for the autoscaler reaction benchmark (0 for none)",
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="do not run tools/install-bench.sh (BullMQ's node_modules) first",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.concurrency < 1 or args.trials < 1:
        parser.error("--jobs, --concurrency and --trials must be positive")
    known = {engine.name for engine in ENGINES}
    chosen = [name.strip() for name in args.engines.split(",") if name.strip()]
    unknown = sorted(set(chosen) - known)
    if unknown or not chosen:
        parser.error(f"unknown engines: {', '.join(unknown) or '(none given)'}")
    args.engines = [engine for engine in ENGINES if engine.name in chosen]
    return args


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def install_node_side() -> None:
    """Run tools/install-bench.sh; a failure only costs the BullMQ row."""
    try:
        subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        log(f"tools/install-bench.sh failed ({exc}); BullMQ will be reported as an error")


def flush(redis_port: int) -> None:
    client = redis.Redis(host="127.0.0.1", port=redis_port)
    try:
        client.flushall()
    finally:
        client.close()


def run_engine(
    engine: Engine,
    redis_url: str,
    mongo_url: str | None,
    args: argparse.Namespace,
    servers: dict[str, int] | None = None,
) -> Result:
    """Measure one engine in a fresh process of its own (`python -m bench.engine_once`).

    In this process, the heap and the garbage each earlier engine run left
    behind slowed the later ones (the store path ran at about 3,700 jobs/s
    here, 4,100 to 5,300 alone, minutes apart). `servers` (name -> pid) are
    the server processes whose CPU the store path reports beside its own.
    A run that fails or times out becomes {"error": ...}.
    """
    started = time.monotonic()
    argv = [
        sys.executable, "-m", "bench.engine_once", engine.name, redis_url, mongo_url or "",
        str(args.jobs), str(args.concurrency), json.dumps(servers or {}),
    ]  # fmt: skip
    try:
        done = subprocess.run(
            argv, stdout=subprocess.PIPE, check=True, timeout=ENGINE_TIMEOUT_S + 30, cwd=REPO_ROOT
        )
        out: Result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except subprocess.CalledProcessError as exc:
        out = {"error": f"its process exited with status {exc.returncode} (stderr above)"}
    except subprocess.TimeoutExpired:
        out = {"error": f"no result within {ENGINE_TIMEOUT_S + 30:.0f} s"}
    except (OSError, ValueError, IndexError) as exc:
        out = {"error": f"{type(exc).__name__}: {exc}"}
    if "error" in out:
        log(f"{engine.label}: {out['error']}")
    log(f"{engine.label}: done in {time.monotonic() - started:.1f}s")
    return out


def measure_here(
    engine: Engine,
    redis_url: str,
    mongo_url: str | None,
    jobs: int,
    concurrency: int,
    servers: dict[str, int],
) -> Result:
    """Measure one engine in a fresh event loop of this process; an exception becomes
    {"error": ...}."""

    async def measure() -> dict[str, float]:
        if engine.needs_store:
            if mongo_url is None:
                raise RuntimeError("the MongoDB server did not start")
            call: Awaitable[dict[str, float]] = relayq_bench.measure_with_store(
                redis_url, mongo_url, jobs, concurrency, servers
            )
        else:
            call = COMPETITORS[engine.name](redis_url, jobs, concurrency)
        return await asyncio.wait_for(call, ENGINE_TIMEOUT_S)

    try:
        result = asyncio.run(measure())
        missing = {"enqueue_per_s", "process_per_s"} - set(result)
        if missing:
            raise RuntimeError(f"measure returned no {', '.join(sorted(missing))}")
        out: Result = {
            "enqueue_per_s": float(result["enqueue_per_s"]),
            "process_per_s": float(result["process_per_s"]),
        }
        # Where the store path's processing time went (relayq_bench.measure_with_store).
        out.update({k: float(v) for k, v in result.items() if k.startswith("process_cpu_")})
    except NotImplementedError as exc:
        out = {"error": f"NotImplementedError: {exc}"}
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        out = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def _pid(server: LocalServer | None) -> int | None:
    return server.process.pid if server is not None and server.process is not None else None


def ratio(
    rounds: list[dict[str, Result]], engine: str, other: str, key: str = "process_per_s"
) -> float | None:
    """The median over the rounds of `engine`'s rate over `other`'s in the same round.

    Engines that ran one after the other in one round shared the machine's
    state (other tenants, caches), so a round's ratio is steadier than the
    ratio of two medians taken over rounds apart.
    """
    ratios = [
        float(round_[engine][key]) / float(round_[other][key])
        for round_ in rounds
        if key in round_.get(engine, {}) and key in round_.get(other, {})
    ]
    return statistics.median(ratios) if ratios else None


def combine(trials: list[Result]) -> Result:
    """One engine's rounds as one row: the median of each figure, and every round's rates.

    Rounds that failed are counted; if all failed, the row is the first error.
    """
    ok = [trial for trial in trials if "error" not in trial]
    if not ok:
        return trials[0]
    out = _medians(ok, ("enqueue_per_s", "process_per_s"))
    if len(ok) < len(trials):
        out["failed_rounds"] = len(trials) - len(ok)
    return out


def combine_api(rounds: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    """Each API rate's rounds as one step: the median of each figure, and every round's p99."""
    return [_medians(list(same_rate), ("p99_ms",)) for same_rate in zip(*rounds, strict=True)]


def _medians(rows: list[dict[str, Any]], kept: tuple[str, ...]) -> dict[str, Any]:
    """The median of each figure over the rounds, and every round's value of `kept`."""
    out: dict[str, Any] = {key: statistics.median(float(r[key]) for r in rows) for key in rows[0]}
    out.update({f"{key}_rounds": [round(float(r[key]), 1) for r in rows] for key in kept})
    return out


def table(
    engines: list[Engine], results: dict[str, Result], rounds: list[dict[str, Result]]
) -> str:
    """The results as a text table; an engine that failed gets its error on its row."""
    header = ("engine", "enqueue/s", "process/s", "relayq process ratio")
    rows: list[tuple[str, ...]] = []
    errors: dict[str, str] = {}
    for engine in engines:
        result = results[engine.name]
        if "error" in result:
            errors[engine.label] = str(result["error"])
            rows.append((engine.label,))
            continue
        if engine.name == "relayq_store":
            shown = ""
        else:
            value = ratio(rounds, "relayq", engine.name)
            shown = "n/a" if value is None else f"{value:.2f}x"
        rows.append(
            (
                engine.label,
                f"{result['enqueue_per_s']:,.0f}",
                f"{result['process_per_s']:,.0f}",
                shown,
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows] if len(row) > i) for i in range(4)]

    def line(row: tuple[str, ...]) -> str:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=False)]
        return "  ".join(cells).rstrip()

    lines = [line(header), "  ".join("-" * width for width in widths)]
    for row in rows:
        if row[0] in errors:
            lines.append(f"{row[0].ljust(widths[0])}  ERROR {errors[row[0]]}")
        else:
            lines.append(line(row))
    return "\n".join(lines)


def command_output(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def machine(redis_port: int) -> str:
    """CPU model, cores, RAM, and the Python, Redis and Node versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown RAM"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
                break
    except OSError:
        pass
    client = redis.Redis(host="127.0.0.1", port=redis_port)
    try:
        info = cast(dict[str, Any], client.info("server"))
        redis_version = str(info["redis_version"])
    finally:
        client.close()
    node = command_output(["node", "--version"]) or "not found"
    return (
        f"{cpu}, {os.cpu_count()} cores, {ram}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, Redis {redis_version}, Node {node}"
    )


def versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in ("relayq-core", "saq", "arq", "taskiq", "taskiq-redis", "redis"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    try:
        manifest = bullmq_bench.BULLMQ_DIR / "node_modules" / "bullmq" / "package.json"
        found["bullmq"] = str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        found["bullmq"] = "not installed"
    return found


def write_results(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(path)


def start(server: LocalServer) -> LocalServer | None:
    try:
        return server.start()
    except Exception as exc:
        log(f"{server.name} did not start: {exc}")
        server.stop()
        return None


def run_autoscale(redis_url: str, rounds: int) -> Result:
    """The autoscaler's reaction (bench.autoscale_bench); a failure becomes {"error": ...}."""
    try:
        # Imported here: it needs the control-plane binaries only this part uses.
        from bench import autoscale_bench

        return autoscale_bench.measure(redis_url, rounds=rounds)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        log(f"autoscale: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}


def _api_summary(steps: list[dict[str, float]]) -> dict[str, Any]:
    """The highest offered rate as the headline, every step beside it."""
    if not steps:
        return {}
    top = max(steps, key=lambda s: s["rate_per_s"])
    return {**top, "steps": steps}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s: %(message)s")
    # SAQ's own stop cancels its idle dequeue tasks and warns about it every time.
    logging.getLogger("saq").setLevel(logging.ERROR)
    engines: list[Engine] = args.engines
    if not args.no_install and any(engine.name == "bullmq" for engine in engines):
        install_node_side()

    results: dict[str, Result] = {}
    rounds: list[dict[str, Result]] = []
    with tempfile.TemporaryDirectory(prefix="relayq-bench-") as tmp:
        redis_srv = redis_server(Path(tmp) / "redis")
        mongo_srv: LocalServer | None = None
        try:
            redis_srv.start()
            redis_url = f"redis://127.0.0.1:{redis_srv.port}/0"
            mongo_url: str | None = None
            if any(engine.needs_store for engine in engines):
                mongo_srv = start(mongo_server(Path(tmp) / "mongo"))
                if mongo_srv is not None:
                    mongo_url = f"mongodb://127.0.0.1:{mongo_srv.port}/"
            log(
                f"{args.jobs} jobs, concurrency {args.concurrency}, redis {redis_url}"
                + (f", mongodb {mongo_url}" if mongo_url else "")
            )
            pids = {"redis": _pid(redis_srv), "store": _pid(mongo_srv)}
            servers = {name: pid for name, pid in pids.items() if pid is not None}
            for n in range(1, args.trials + 1):
                round_: dict[str, Result] = {}
                for engine in engines:
                    flush(redis_srv.port)
                    log(f"{engine.label}: running (round {n} of {args.trials})")
                    round_[engine.name] = run_engine(engine, redis_url, mongo_url, args, servers)
                rounds.append(round_)
            results = {e.name: combine([r[e.name] for r in rounds]) for e in engines}
            api_steps: list[dict[str, float]] = []
            if args.api_rates:
                flush(redis_srv.port)
                if mongo_srv is None:
                    mongo_srv = start(mongo_server(Path(tmp) / "mongo"))
                if mongo_srv is not None:
                    log(f"api: POST /v1/jobs at {args.api_rates} requests/s, {args.trials} rounds")
                    api_steps = combine_api(
                        [
                            measure_api(
                                redis_url,
                                f"mongodb://127.0.0.1:{mongo_srv.port}/",
                                args.api_rates,
                                args.api_seconds,
                                Path(tmp),
                            )
                            for _ in range(args.trials)
                        ]
                    )
            e2e: dict[str, Any] = {}
            if args.e2e_jobs > 0:
                log(f"e2e: {args.e2e_jobs} jobs over HTTP to relayq-dev localstack")
                e2e = measure_e2e(args.e2e_jobs, 100, args.concurrency, Path(tmp))
            autoscale: Result = {}
            if args.autoscale_rounds > 0:
                flush(redis_srv.port)
                log(f"autoscale: {args.autoscale_rounds} bursts on a local control plane")
                autoscale = run_autoscale(redis_url, args.autoscale_rounds)
            machine_info = machine(redis_srv.port)
        finally:
            if mongo_srv is not None:
                mongo_srv.stop()
            redis_srv.stop()

    print(table(engines, results, rounds))
    if args.trials > 1:
        print(f"(medians of {args.trials} rounds; each ratio the median of the rounds' ratios)")
    store = results.get("relayq_store", {})
    if "process_cpu_busy_share" in store:
        split = ", ".join(
            f"{key.removeprefix('process_cpu_us_per_job_')} {value:.0f} us"
            for key, value in store.items()
            if key.startswith("process_cpu_us_per_job_")
        )
        print(
            f"relayq + store, CPU per job while processing: {split}; "
            f"cores busy {store['process_cpu_busy_share']:.0%}"
        )
    for step in api_steps:
        print(
            f"api  offered {step['rate_per_s']:>6.0f}/s  achieved {step['achieved_per_s']:>7.1f}/s"
            f"  p50 {step['p50_ms']:7.1f} ms  p99 {step['p99_ms']:7.1f} ms"
            f"  errors {step['errors']:.0f}"
        )
    if e2e:
        print(
            f"e2e  {e2e['jobs']} jobs  {e2e['per_s']:.0f}/s end to end"
            f"  p99 queue wait {e2e['p99_wait_ms']:.1f} ms"
        )
    if "to_patch_s" in autoscale:
        keda = autoscale["keda_defaults_on_paper_s"]
        print(
            f"autoscale  burst -> scale patch {autoscale['to_patch_s']:.2f} s (median), "
            f"-> Pods Running {autoscale['to_running_s']:.2f} s; KEDA defaults on paper: "
            f"{keda['burst_from_zero_to_n_typical']:.1f} s typical, "
            f"{keda['burst_from_zero_to_n_worst']:.0f} s worst"
        )
    document = {
        "engine": {
            engine.name: results[engine.name] for engine in engines if not engine.needs_store
        },
        "engine_with_store": (
            {"relayq": results["relayq_store"]} if "relayq_store" in results else {}
        ),
        "ratios": {
            "relayq_vs_saq_process": ratio(rounds, "relayq", "saq"),
            "relayq_vs_bullmq_process": ratio(rounds, "relayq", "bullmq"),
            "relayq_store_vs_bullmq_process": ratio(rounds, "relayq_store", "bullmq"),
            "relayq_vs_bullmq_enqueue": ratio(rounds, "relayq", "bullmq", "enqueue_per_s"),
        },
        "params": {
            "jobs": args.jobs,
            "rounds": args.trials,
            "concurrency": args.concurrency,
            "enqueue_in_flight": common.IN_FLIGHT,
            "arq_poll_delay_s": arq_bench.POLL_DELAY_S,
            "versions": versions(),
        },
        "api": _api_summary(api_steps),
        "e2e": e2e,
        "autoscale": autoscale,
        "machine": machine_info,
    }
    write_results(args.output, document)
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
