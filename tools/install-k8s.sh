#!/usr/bin/env bash
# Builds the Kubernetes test control plane from the Go module proxy: helm, kwok
# (fake nodes and pods), etcd, kube-apiserver, kube-controller-manager and
# kube-scheduler. Only the tests and benchmarks that run a cluster need them
# (tools/install-test.sh calls this; `make run` never does). Each build is
# cached outside the clone, keyed by the hash of what it is built from (see
# tools/lib.sh), and .tools/bin links to it: a second clone takes seconds.
set -euo pipefail
# shellcheck source=tools/lib.sh
source "$(dirname "$0")/lib.sh"

HELM_VERSION=v3.21.4
KWOK_VERSION=v0.8.0
# The Kubernetes version is pinned in tools/kubernetes/go.mod; etcd's in tools/etcd/go.mod.
K8S_VERSION=$(sed -nE 's/^\s*(require )?k8s\.io\/kubernetes (v[0-9.]+)( .*)?$/\2/p' "$root/tools/kubernetes/go.mod")
[ -n "$K8S_VERSION" ] || { echo "no k8s.io/kubernetes version in tools/kubernetes/go.mod" >&2; exit 1; }

# Modules may ask for a newer Go than the one installed: build with this one.
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
go_version=$(go env GOVERSION)

go_install() { GOBIN="$out/bin" go install "$@"; }

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
entry=$(cached_build "helm-$HELM_VERSION-$(hash_text "flags-v1 $go_version")" "helm $HELM_VERSION" \
  "about a minute" helm_build)
link_bins "$entry" helm

# kwok runs no stages of its own: the default ones (nodes become Ready and keep
# a lease, pods become Running and Ready, finished pods Succeeded, deleted pods
# go) come from its source, copied next to the binary for the test fixture.
kwok_build() {
  go_install -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  local dir
  dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -nE 's/^\s*"Dir": "(.*)",$/\1/p')
  local stage="$dir/kustomize/stage"
  mkdir -p "$out/share/kwok"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"
    cat "$stage/$f"
  done >"$out/share/kwok/stages.yaml"
  [ -s "$out/share/kwok/stages.yaml" ]
}
entry=$(cached_build "kwok-$KWOK_VERSION-$(hash_text "stages-v1 $go_version")" "kwok $KWOK_VERSION" \
  "about a minute" kwok_build)
link_bins "$entry" kwok
mkdir -p "$share/kwok"
ln -sfn "$entry/share/kwok/stages.yaml" "$share/kwok/stages.yaml"

etcd_build() { (cd "$root/tools/etcd" && go build -trimpath -o "$out/bin/etcd" .); }
entry=$(cached_build "etcd-$(hash_of "$root"/tools/etcd/{go.mod,go.sum,main.go} <(echo "$go_version"))" \
  "etcd" "about a minute" etcd_build)
link_bins "$entry" etcd

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
# The three share one module and one go build (which shares their packages).
k8s_build() {
  cd "$root/tools/kubernetes"
  go build -trimpath -ldflags "$(k8s_ldflags)" -o "$out/bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler
}
entry=$(cached_build "kubernetes-$K8S_VERSION-$(hash_of "$root"/tools/kubernetes/{go.mod,go.sum} <(k8s_ldflags; echo "$go_version"))" \
  "kube-apiserver, kube-controller-manager and kube-scheduler $K8S_VERSION" \
  "about 8 minutes on 2 cores" k8s_build)
link_bins "$entry" kube-apiserver kube-controller-manager kube-scheduler

log "ready: helm $HELM_VERSION, kwok $KWOK_VERSION, etcd $("$bin/etcd" --version | sed -nE 's/^etcd Version: //p'), kubernetes $("$bin/kube-apiserver" --version | cut -d' ' -f2)"
