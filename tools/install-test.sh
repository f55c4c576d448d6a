#!/usr/bin/env bash
# Installs what `make test` needs: everything `make run` needs (tools/install.sh),
# Prometheus, Alertmanager and promtool, and the Kubernetes control plane
# (tools/install-k8s.sh). Idempotent: a second run only checks and links.
set -euo pipefail
here=$(dirname "$0")
bash "$here/install.sh"
# shellcheck source=tools/lib.sh
source "$here/lib.sh"

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
# openssl makes the test control plane's certificates.
apt_install openssl

bash "$here/install-k8s.sh"
