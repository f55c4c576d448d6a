#!/usr/bin/env bash
# Installs the Node side of the side-by-side benchmark: BullMQ, pinned by
# bench/bullmq/package-lock.json, into bench/bullmq/node_modules with `npm ci`.
# npm's cache lives under the tools cache (tools/lib.sh). Idempotent: when node_modules was
# installed from the same lockfile with the same Node, it only checks (seconds).
# Install scripts are skipped: the only one (msgpackr-extract) would build a
# native add-on that the prebuilt @msgpackr-extract/* package already provides.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bench="$root/bench/bullmq"
cache="${RELAYQ_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/relayq/tools}/npm"

log() { printf '[bench-tools] %s\n' "$*" >&2; }

for bin in node npm; do
  if ! command -v "$bin" >/dev/null 2>&1; then
    log "$bin not found on PATH; install Node.js 20 or newer"
    exit 1
  fi
done

stamp="$bench/node_modules/.relayq-bench.stamp"
want=$( { cat "$bench/package.json" "$bench/package-lock.json"; node --version; } | sha256sum | cut -d' ' -f1)
if [ -d "$bench/node_modules/bullmq" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  log "ready: bullmq $(node -p 'require("'"$bench"'/node_modules/bullmq/package.json").version') (node_modules up to date)"
  exit 0
fi

log "npm ci in bench/bullmq"
mkdir -p "$cache"
(cd "$bench" && npm ci --cache "$cache" --ignore-scripts --no-audit --no-fund --loglevel=error)
echo "$want" > "$stamp"
log "ready: bullmq $(node -p 'require("'"$bench"'/node_modules/bullmq/package.json").version')"
