"""One engine's measurement in a process of its own, for bench.run.

    python -m bench.engine_once ENGINE REDIS_URL MONGO_URL JOBS CONCURRENCY SERVERS_JSON

Prints the result (bench.run.measure_here) as one JSON line; a failure is a
result too ({"error": ...}), with its traceback on stderr.
"""

from __future__ import annotations

import json
import logging
import sys

from bench.run import ENGINES, measure_here


def main(argv: list[str]) -> None:
    name, redis_url, mongo_url, jobs, concurrency, servers = argv
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s: %(message)s")
    # SAQ's own stop cancels its idle dequeue tasks and warns about it every time.
    logging.getLogger("saq").setLevel(logging.ERROR)
    engine = next(e for e in ENGINES if e.name == name)
    result = measure_here(
        engine, redis_url, mongo_url or None, int(jobs), int(concurrency), json.loads(servers)
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
