#!/usr/bin/env bash
# Builds the Kubernetes test control plane into .tools/bin from the Go module
# proxy: helm, kwok (fake nodes and pods), etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler. Each binary carries a stamp with
# the hash of what it is built from, and is rebuilt only when that changes, so
# a second run takes seconds. Called by tools/install.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.tools/bin"
share="$root/.tools/share"
mkdir -p "$bin" "$share"

HELM_VERSION=v3.21.4
KWOK_VERSION=v0.8.0
# The Kubernetes version is pinned in tools/kubernetes/go.mod; etcd's in tools/etcd/go.mod.
K8S_VERSION=$(sed -nE 's/^\s*(require )?k8s\.io\/kubernetes (v[0-9.]+)( .*)?$/\2/p' "$root/tools/kubernetes/go.mod")
[ -n "$K8S_VERSION" ] || { echo "no k8s.io/kubernetes version in tools/kubernetes/go.mod" >&2; exit 1; }

# Modules may ask for a newer Go than the one installed: build with this one.
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

log() { printf '[tools] %s\n' "$*" >&2; }

# build "NAME..." HASH COMMAND...: runs COMMAND, which makes the binaries
# .tools/bin/NAME..., unless they all exist and the stamp of the first holds HASH.
build() {
  local names=$1 hash=$2
  shift 2
  local stamp="$bin/.${names%% *}.stamp" name fresh=1
  for name in $names; do [ -x "$bin/$name" ] || fresh=0; done
  if [ $fresh -eq 1 ] && [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ]; then
    return 0
  fi
  log "building $names (minutes on a fresh machine)"
  local start=$SECONDS
  "$@"
  echo "$hash" >"$stamp"
  log "built $names in $((SECONDS - start))s"
}

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

go_install() { GOBIN="$bin" go install "$@"; }

# The flags helm's own release build sets: its version, and the Kubernetes
# version that `helm template` and `helm lint` assume without a cluster (that
# of its client-go, as in helm's Makefile; unset, helm assumes v1.20).
helm_build() {
  local gomod client_minor flags=("-s" "-w" "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION")
  gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -nE 's/^\s*"GoMod": "(.*)",$/\1/p')
  client_minor=$(sed -nE 's/^\s*k8s\.io\/client-go v0\.([0-9]+)\..*/\1/p' "$gomod")
  for pkg in chartutil lint/rules; do
    flags+=("-X helm.sh/helm/v3/pkg/$pkg.k8sVersionMajor=1" "-X helm.sh/helm/v3/pkg/$pkg.k8sVersionMinor=$client_minor")
  done
  go_install -ldflags "${flags[*]}" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}
build helm "$(echo "helm $HELM_VERSION flags-v1" | sha256sum | cut -d' ' -f1)" helm_build

# kwok runs no stages of its own: the default ones (nodes become Ready and keep
# a lease, pods become Running and Ready, finished pods Succeeded, deleted pods
# go) come from its source, copied next to the binary for the test fixture.
kwok_stages() {
  go_install -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  local dir
  dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -nE 's/^\s*"Dir": "(.*)",$/\1/p')
  local stage="$dir/kustomize/stage"
  mkdir -p "$share/kwok"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"
    cat "$stage/$f"
  done >"$share/kwok/stages.yaml"
}
build kwok "$(echo "kwok $KWOK_VERSION stages-v1" | sha256sum | cut -d' ' -f1)" kwok_stages
[ -s "$share/kwok/stages.yaml" ] || { rm -f "$bin/.kwok.stamp"; log "kwok stages missing"; exit 1; }

build etcd "$(hash_of "$root"/tools/etcd/{go.mod,go.sum,main.go})" \
  bash -c "cd '$root/tools/etcd' && go build -trimpath -o '$bin/etcd' ."

# The servers report this version (kubectl, helm and the API server's own
# compatibility checks read it); without the flags they say v0.0.0-master.
k8s_ldflags() {
  local minor=${K8S_VERSION#v*.}
  minor=${minor%%.*}
  local flags=() pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=("-X $pkg.gitVersion=$K8S_VERSION" "-X $pkg.gitMajor=1" "-X $pkg.gitMinor=$minor"
      "-X $pkg.gitTreeState=clean" "-X $pkg.buildDate=1970-01-01T00:00:00Z")
  done
  echo "-s -w ${flags[*]}"
}
k8s_build() {
  cd "$root/tools/kubernetes"
  go build -trimpath -ldflags "$(k8s_ldflags)" -o "$bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler
}
# The three share one module and one go build (which shares their packages).
k8s_hash=$( (cat "$root"/tools/kubernetes/{go.mod,go.sum} && k8s_ldflags) | sha256sum | cut -d' ' -f1)
build "kube-apiserver kube-controller-manager kube-scheduler" "$k8s_hash" k8s_build

log "ready: helm $HELM_VERSION, kwok $KWOK_VERSION, etcd $("$bin/etcd" --version | sed -nE 's/^etcd Version: //p'), kubernetes $("$bin/kube-apiserver" --version | cut -d' ' -f2)"
