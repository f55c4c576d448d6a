#!/usr/bin/env bash
# Installs what relayq's tests and `make run` need, into the system (Debian
# packages) and into .tools/ (everything built). Idempotent: a second run only
# checks, and takes seconds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools/bin"

log() { printf '[tools] %s\n' "$*" >&2; }

apt_updated=0
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if [ $apt_updated -eq 0 ]; then
    log "apt-get update"
    $sudo apt-get update -qq
    apt_updated=1
  fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Redis 7 and Sentinel. The packages also start a system service on 6379 and
# 26379; relayq never uses those: tests and `make run` start their own servers.
apt_install redis-server redis-sentinel

# Prometheus, Alertmanager and promtool for the alert-rule and observability
# tests. The tests start their own servers on free ports with their own config
# and data dirs; the system services the packages may start (on a machine with
# systemd) are stopped and disabled, but only when this script installed them.
if ! command -v promtool >/dev/null || ! command -v prometheus-alertmanager >/dev/null; then
  apt_install prometheus prometheus-alertmanager
  if [ -d /run/systemd/system ]; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo systemctl disable --now prometheus prometheus-alertmanager >/dev/null 2>&1 || true
  fi
fi

# uv, the Python package manager, bootstrapped once into its own venv.
if [ ! -x "$tools/uv/bin/uv" ]; then
  log "installing uv"
  python3 -m venv "$tools/uv"
  "$tools/uv/bin/pip" install -q "uv==0.13.*"
fi
ln -sf "$tools/uv/bin/uv" "$tools/bin/uv"

# FerretDB v1.24.2 with the SQLite backend, built from the Go module proxy
# through tools/ferretdb (see main.go there for why a wrapper is needed).
ferret_stamp="$tools/bin/.ferretdb.stamp"
ferret_src=$(cat "$root/tools/ferretdb/go.mod" "$root/tools/ferretdb/go.sum" "$root/tools/ferretdb/main.go" | sha256sum | cut -d' ' -f1)
if [ ! -x "$tools/bin/ferretdb" ] || [ "$(cat "$ferret_stamp" 2>/dev/null)" != "$ferret_src" ]; then
  log "building FerretDB (a few minutes on a fresh machine)"
  (cd "$root/tools/ferretdb" && go build -trimpath -o "$tools/bin/ferretdb" .)
  echo "$ferret_src" > "$ferret_stamp"
fi
bash "$root/tools/install-k8s.sh"
log "ready: redis-server $(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/'), ferretdb, uv $("$tools/bin/uv" --version | cut -d' ' -f2)"
