"""A real Kubernetes control plane on loopback, for the tests.

`KubeCluster` starts etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and KWOK from .tools/bin (built by `make tools-test`) on free
loopback ports, in one directory that holds their keys, kubeconfigs, data and
logs. KWOK plays the kubelet for fake Nodes that the cluster creates: pods
scheduled there become Running and Ready, and pods that finish (Jobs)
Succeeded. Authorization is RBAC (plus Node), so a ServiceAccount token gets
exactly what its Roles grant.

Every child is stopped by its pid, and is asked by the kernel to exit if the
process that started it dies first (PR_SET_PDEATHSIG), so none is left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from kubernetes import client, config

from relayq.dev.servers import REPO_ROOT, TOOLS_BIN, free_port, stop_process, wait_for_port
from tests.kube.pki import ClusterPki, make_pki

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# KWOK's default Stages (node ready + lease, pod ready, complete, delete),
# copied from its source by tools/install-k8s.sh.
KWOK_STAGES = REPO_ROOT / ".tools" / "share" / "kwok" / "stages.yaml"
# KWOK manages only Nodes carrying this annotation with the value "fake".
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # the `kubernetes` Service: the first address of SERVICE_CIDR
POD_CIDR = "10.244.0.0/16"  # pod IPs KWOK hands out; nothing is routed there
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "relayq-test-admin"


class KubeClusterError(RuntimeError):
    """A component failed to start or become ready; the message ends with its log."""


def control_plane_binaries(
    bin_dir: Path = TOOLS_BIN, stages: Path = KWOK_STAGES
) -> dict[str, Path]:
    """The path of each binary the cluster runs; raise if any (or KWOK's stages) is missing."""
    paths = {name: bin_dir / name for name in BINARIES}
    missing = [str(p) for p in (*paths.values(), stages) if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"Kubernetes test binaries missing ({', '.join(missing)}); run `make tools-test`"
        )
    return paths


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: SIGTERM it when its parent dies,
    # so a killed test run leaves no control plane behind.
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Component:
    """One control-plane process.

    Attributes:
        name: what it is, for messages and its log file name.
        argv: its command line.
        log_path: where its stdout and stderr go.
        env: its environment.
        process: the running child, once started.
    """

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Component:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.log_path.parent,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, what: str) -> KubeClusterError:
        code = self.process.returncode if self.process is not None else None
        return KubeClusterError(
            f"{self.name} {what} (exit code {code}); last lines of {self.log_path}:\n{self.tail()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.process, timeout)


class KubeCluster:
    """etcd + kube-apiserver + controller-manager + scheduler + KWOK on loopback.

    Attributes:
        workdir: keys, kubeconfigs, etcd data and one log per component.
        node_names: the fake Nodes created at start, managed by KWOK.
        server_url: the API server, https://127.0.0.1:<port>.
        ca_path: the CA certificate that signed the API server's certificate.
        kubeconfig_path: an admin kubeconfig (system:masters, static token).
        components: the processes started, in start order.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        nodes: int = 2,
        node_cpu: str = "32",
        node_memory: str = "64Gi",
        node_pods: int = 110,
    ) -> None:
        self._owns_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="relayq-kube-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.node_names = [f"kwok-node-{i}" for i in range(nodes)]
        self._node_allocatable = {"cpu": node_cpu, "memory": node_memory, "pods": str(node_pods)}
        self.etcd_port = free_port()
        self.api_port = free_port()
        self.server_url = f"https://127.0.0.1:{self.api_port}"
        self.ca_path = self.workdir / "pki" / "ca.crt"
        self.kubeconfig_path = self.workdir / "admin.kubeconfig"
        self.components: list[Component] = []
        self._tokens = {
            who: secrets.token_urlsafe(32)
            for who in ("admin", "controller-manager", "scheduler", "kwok")
        }
        self._pki: ClusterPki | None = None
        self.startup_seconds = 0.0

    # -- lifecycle ---------------------------------------------------------

    def start(self, timeout: float = 120.0) -> KubeCluster:
        """Start every component, create the fake Nodes, and wait until usable.

        Usable: /readyz is ok, the `default` ServiceAccount exists (the
        controller-manager works) and every fake Node is Ready without a
        NoSchedule taint (KWOK and the node lifecycle controller work).
        On failure everything started is stopped again.
        """
        started = time.monotonic()
        deadline = started + timeout
        atexit.register(self.stop)
        try:
            self._start(deadline)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the components in reverse order; only the processes this object started."""
        for component in reversed(self.components):
            component.stop(timeout)
        atexit.unregister(self.stop)
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> KubeCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return bool(self.components) and all(c.running for c in self.components)

    # -- clients -----------------------------------------------------------

    def api_client(self, kubeconfig: Path | None = None) -> client.ApiClient:
        """A python `kubernetes` client for a kubeconfig (default: the admin one)."""
        path = str(kubeconfig or self.kubeconfig_path)
        api: client.ApiClient = config.new_client_from_config(config_file=path)  # type: ignore[no-untyped-call]
        return api

    def write_kubeconfig(
        self, path: Path, user: str, token: str, namespace: str = "default"
    ) -> Path:
        """Write a kubeconfig that reaches this cluster as `user`, with a bearer token."""
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "relayq-test",
                    "cluster": {
                        "server": self.server_url,
                        "certificate-authority": str(self.ca_path),
                    },
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {
                    "name": user,
                    "context": {"cluster": "relayq-test", "user": user, "namespace": namespace},
                }
            ],
            "current-context": user,
        }
        # JSON is YAML: kubectl, helm, kopf and the python client all read it.
        path.write_text(json.dumps(kubeconfig, indent=2))
        path.chmod(0o600)
        return path

    def service_account_token(
        self, namespace: str, name: str, expiration_seconds: int = 3600
    ) -> str:
        """A token for ServiceAccount namespace/name from the TokenRequest API."""
        with self.api_client() as api:
            request = client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(
                    audiences=[SA_ISSUER], expiration_seconds=expiration_seconds
                )
            )
            response = client.CoreV1Api(api).create_namespaced_service_account_token(
                name, namespace, request
            )
            if response.status is None or not response.status.token:
                raise KubeClusterError(f"TokenRequest for {namespace}/{name} returned no token")
            return response.status.token

    def service_account_kubeconfig(
        self, namespace: str, name: str, path: Path | None = None, expiration_seconds: int = 3600
    ) -> Path:
        """A kubeconfig that acts as ServiceAccount namespace/name (which must exist)."""
        token = self.service_account_token(namespace, name, expiration_seconds)
        path = path or self.workdir / f"sa-{namespace}-{name}.kubeconfig"
        return self.write_kubeconfig(
            path, f"system:serviceaccount:{namespace}:{name}", token, namespace
        )

    # -- start-up ----------------------------------------------------------

    def _start(self, deadline: float) -> None:
        binaries = control_plane_binaries()
        self._pki = pki = make_pki(self.workdir / "pki", SERVICE_IP)
        self._write_credentials()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        # KWOK would also read ~/.kwok/kwok.yaml: keep the user's out.
        env["HOME"] = str(self.workdir)

        def component(name: str, *argv: str) -> Component:
            c = Component(name, [str(binaries[name]), *argv], self.workdir / f"{name}.log", env)
            self.components.append(c)
            return c.start()

        peer_port = free_port()
        etcd = component(
            "etcd",
            "--name=relayq-test",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=relayq-test=http://127.0.0.1:{peer_port}",
            # Test data: durability across a power cut is not needed, speed is.
            "--unsafe-no-fsync",
            "--log-level=warn",
        )
        assert etcd.process is not None
        try:
            wait_for_port(self.etcd_port, etcd.process, max(1.0, deadline - time.monotonic()))
        except (RuntimeError, TimeoutError) as e:
            raise etcd.failure(f"did not listen: {e}") from e

        apiserver = component(
            "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.api_port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--token-auth-file={self.workdir / 'tokens.csv'}",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            # Its Endpoints would point at loopback, which validation refuses;
            # nothing reaches the API server through the Service here.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        )
        self._wait(
            "kube-apiserver /readyz", self._readyz_ok, deadline, apiserver, [etcd, apiserver]
        )

        controller_manager = component(
            "kube-controller-manager",
            f"--kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
            "--secure-port=0",
            "--leader-elect=false",
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            "--kube-api-qps=100",
            "--kube-api-burst=200",
        )
        component(
            "kube-scheduler",
            f"--kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
            "--secure-port=0",
            "--leader-elect=false",
            "--kube-api-qps=100",
            "--kube-api-burst=200",
        )
        kwok = component(
            "kwok",
            f"--kubeconfig={self.workdir / 'kwok.kubeconfig'}",
            f"--config={KWOK_STAGES}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            f"--cidr={POD_CIDR}",
            "--node-ip=127.0.0.1",
        )
        self._create_nodes()
        self._wait(
            "the default ServiceAccount (kube-controller-manager)",
            self._default_service_account_exists,
            deadline,
            controller_manager,
            self.components,
        )
        self._wait(
            "fake Nodes Ready and schedulable (kwok)",
            self._nodes_ready,
            deadline,
            kwok,
            self.components,
        )

    def _write_credentials(self) -> None:
        # Static tokens: the admin (system:masters), and each component under
        # the user name its bootstrap RBAC roles are bound to. KWOK plays the
        # kubelet for many nodes and writes their status: system:masters too.
        users = {
            "admin": (ADMIN_USER, "system:masters"),
            "controller-manager": ("system:kube-controller-manager", ""),
            "scheduler": ("system:kube-scheduler", ""),
            "kwok": ("relayq-test-kwok", "system:masters"),
        }
        lines = [
            f'{self._tokens[who]},{user},{who},"{groups}"'
            if groups
            else f"{self._tokens[who]},{user},{who}"
            for who, (user, groups) in users.items()
        ]
        tokens = self.workdir / "tokens.csv"
        tokens.write_text("\n".join(lines) + "\n")
        tokens.chmod(0o600)
        self.write_kubeconfig(self.kubeconfig_path, ADMIN_USER, self._tokens["admin"])
        for who in ("controller-manager", "scheduler", "kwok"):
            self.write_kubeconfig(
                self.workdir / f"{who}.kubeconfig", users[who][0], self._tokens[who]
            )

    def _wait(
        self,
        what: str,
        ready: Callable[[], bool],
        deadline: float,
        blame: Component,
        watched: list[Component],
    ) -> None:
        """Poll `ready` until true; raise with a log tail if a component dies or time runs out."""
        while True:
            for c in watched:
                if not c.running:
                    raise c.failure(f"exited while waiting for {what}")
            try:
                if ready():
                    return
            except (OSError, client.ApiException):
                pass  # not up yet
            if time.monotonic() > deadline:
                raise blame.failure(f"not ready: {what} within the start timeout")
            time.sleep(0.1)

    def _readyz_ok(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca_path))
        request = urllib.request.Request(
            f"{self.server_url}/readyz",
            headers={"Authorization": f"Bearer {self._tokens['admin']}"},
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=2) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError:
            return False

    def _default_service_account_exists(self) -> bool:
        with self.api_client() as api:
            try:
                client.CoreV1Api(api).read_namespaced_service_account("default", "default")
            except client.ApiException as e:
                if e.status == 404:
                    return False
                raise
            return True

    def _create_nodes(self) -> None:
        with self.api_client() as api:
            core = client.CoreV1Api(api)
            for name in self.node_names:
                node = client.V1Node(
                    metadata=client.V1ObjectMeta(
                        name=name,
                        annotations={FAKE_NODE_ANNOTATION: "fake"},
                        labels={
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "type": "kwok",
                        },
                    ),
                    # KWOK's node-initialize stage keeps what the Node declares.
                    status=client.V1NodeStatus(
                        allocatable=self._node_allocatable, capacity=self._node_allocatable
                    ),
                )
                core.create_node(node)

    def _nodes_ready(self) -> bool:
        with self.api_client() as api:
            nodes = client.CoreV1Api(api).list_node().items
        by_name = {n.metadata.name: n for n in nodes if n.metadata is not None}
        for name in self.node_names:
            node = by_name.get(name)
            if node is None or node.status is None:
                return False
            conditions = {c.type: c.status for c in node.status.conditions or []}
            if conditions.get("Ready") != "True":
                return False
            taints = node.spec.taints if node.spec is not None else None
            if any(t.effect == "NoSchedule" for t in taints or []):
                return False
        return True

    def logs(self, lines: int = 40) -> str:
        """The last lines of every component's log, for a failing test's report."""
        return "\n".join(f"--- {c.name}\n{c.tail(lines)}" for c in self.components)


def start_cluster(workdir: Path, timeout: float = 180.0) -> KubeCluster:
    """Start a cluster in workdir (kept after stop), e.g. for a session fixture."""
    return KubeCluster(workdir).start(timeout)


if __name__ == "__main__":  # pragma: no cover - manual use: a cluster until Ctrl-C
    with contextlib.suppress(KeyboardInterrupt), KubeCluster() as cluster:
        print(f"KUBECONFIG={cluster.kubeconfig_path} (up in {cluster.startup_seconds:.1f}s)")
        signal.pause()
