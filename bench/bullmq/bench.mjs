// BullMQ side of the relayq side-by-side benchmark.
//
// Usage: node bench.mjs <redis-port> <jobs> <concurrency>
//
// Same protocol as bench/competitors/*.py:
//   1. enqueue: <jobs> no-op jobs with Queue.add, at most 100 calls in flight
//      (chunks of 100 awaited together), timed;
//   2. process: with those jobs queued, one Worker with <concurrency> and a
//      no-op processor, timed until the processor has run <jobs> times, then
//      the worker is closed.
// Prints one JSON line: {"enqueue_per_s": ..., "process_per_s": ...}.
// Redis is expected to be empty (the caller flushes it).

import { performance } from "node:perf_hooks";
import { Queue, Worker } from "bullmq";

const IN_FLIGHT = 100;
const QUEUE_NAME = "bench";
const PROCESS_TIMEOUT_MS = 600_000;

function parseArgs(argv) {
  if (argv.length !== 3) {
    throw new Error("usage: node bench.mjs <redis-port> <jobs> <concurrency>");
  }
  const [port, jobs, concurrency] = argv.map((value) => Number.parseInt(value, 10));
  if (![port, jobs, concurrency].every((n) => Number.isInteger(n) && n > 0)) {
    throw new Error(`bad arguments: ${argv.join(" ")}`);
  }
  return { port, jobs, concurrency };
}

async function enqueue(queue, jobs) {
  const started = performance.now();
  for (let sent = 0; sent < jobs; sent += IN_FLIGHT) {
    const chunk = [];
    for (let i = sent; i < Math.min(sent + IN_FLIGHT, jobs); i += 1) {
      chunk.push(queue.add("noop", { i }));
    }
    await Promise.all(chunk);
  }
  return (performance.now() - started) / 1000;
}

async function process_(connection, jobs, concurrency) {
  let done = 0;
  let resolveAll;
  const allDone = new Promise((resolve) => {
    resolveAll = resolve;
  });
  const started = performance.now();
  const worker = new Worker(
    QUEUE_NAME,
    async () => {
      done += 1;
      if (done === jobs) {
        resolveAll();
      }
    },
    { connection, concurrency },
  );
  worker.on("error", (err) => {
    console.error(`bullmq worker error: ${err}`);
  });
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`only ${done}/${jobs} jobs done in ${PROCESS_TIMEOUT_MS} ms`)),
      PROCESS_TIMEOUT_MS,
    );
  });
  try {
    await Promise.race([allDone, timeout]);
    return (performance.now() - started) / 1000;
  } finally {
    clearTimeout(timer);
    await worker.close();
  }
}

async function main() {
  const { port, jobs, concurrency } = parseArgs(process.argv.slice(2));
  const connection = { host: "127.0.0.1", port };
  const queue = new Queue(QUEUE_NAME, { connection });
  try {
    await queue.waitUntilReady();
    const enqueueSeconds = await enqueue(queue, jobs);
    const waiting = await queue.getWaitingCount();
    if (waiting !== jobs) {
      throw new Error(`expected ${jobs} waiting jobs, found ${waiting}`);
    }
    const processSeconds = await process_(connection, jobs, concurrency);
    console.log(
      JSON.stringify({
        enqueue_per_s: jobs / enqueueSeconds,
        process_per_s: jobs / processSeconds,
      }),
    );
  } finally {
    await queue.close();
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
});
