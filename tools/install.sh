#!/usr/bin/env bash
# Installs what `make run` needs: Redis and Sentinel (Debian packages), uv, and
# the local MongoDB wire-protocol server. Nothing of Kubernetes: the tests'
# control plane comes from tools/install-test.sh. Idempotent: a second run only
# checks and links, and takes seconds.
set -euo pipefail
# shellcheck source=tools/lib.sh
source "$(dirname "$0")/lib.sh"

# Redis 7 and Sentinel. The packages also start a system service on 6379 and
# 26379; relayq never uses those: tests and `make run` start their own servers.
apt_install redis-server redis-sentinel

# uv, the Python package manager, bootstrapped once into its own venv.
if [ ! -x "$tools/uv/bin/uv" ]; then
  log "installing uv"
  python3 -m venv "$tools/uv"
  "$tools/uv/bin/pip" install -q "uv==0.13.*"
fi
ln -sf "$tools/uv/bin/uv" "$bin/uv"

# The local MongoDB: secantusd-rs (crate secantus-mdb, on WiredTiger). Its
# guarded findAndModify is atomic per document and its filters use indexes,
# which the store conformance suite (tests/store_conformance) checks. Pinned:
# .193's findAndModify was 5 ms and grew with the collection. GPL-2.0-only: a
# binary for tests and `make run`, never shipped in an image.
SECANTUS_VERSION=0.5.3-beta.196
secantus_build() {
  # CARGO_TARGET_DIR outside the clone, so an interrupted build resumes.
  CARGO_TARGET_DIR="$cache/.cargo-target" cargo install secantus-mdb \
    --version "$SECANTUS_VERSION" --locked --ignore-rust-version --quiet --root "$out"
}
if ! command -v cargo >/dev/null; then
  log "cargo not found on PATH: the MongoDB stand-in is built with Rust's cargo"
  exit 1
fi
entry=$(cached_build "secantus-mdb-$SECANTUS_VERSION-$(hash_text "$(cargo --version)")" \
  "secantusd-rs $SECANTUS_VERSION, the local MongoDB" \
  "it compiles WiredTiger: about 8 minutes on 2 cores, once per machine" secantus_build)
link_bins "$entry" secantusd-rs

log "ready: redis-server $(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/'), secantusd-rs $SECANTUS_VERSION, uv $("$bin/uv" --version | cut -d' ' -f2)"
