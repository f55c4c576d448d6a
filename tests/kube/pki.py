"""Keys and certificates for a test control plane, made with the openssl CLI.

A throwaway CA signs the API server's serving certificate; a separate EC key
signs (and verifies) ServiceAccount tokens. Everything lives in one directory
that goes away with the cluster.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Names and addresses the API server answers to: loopback for the tests, the
# in-cluster names and the first service IP for clients that resolve those.
SERVING_SANS = (
    "IP:127.0.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class ClusterPki:
    """Paths of the files `make_pki` wrote.

    Attributes:
        ca_cert: the CA certificate clients trust (PEM).
        serving_cert: the API server's serving certificate, signed by the CA.
        serving_key: its private key.
        sa_key: the ServiceAccount token signing key (EC P-256, PEM).
        sa_pub: its public half, which the API server verifies tokens with.
    """

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("openssl not found; run `make tools-test`")
    result = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


def make_pki(directory: Path, service_ip: str) -> ClusterPki:
    """Write a CA, a serving certificate for 127.0.0.1 and service_ip, and an SA key."""
    directory.mkdir(parents=True, exist_ok=True)
    # EC P-256 keys (TLS and ES256 token signing): generated in milliseconds, unlike RSA.
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "7", "-subj", "/CN=relayq-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    sans = ",".join((*SERVING_SANS, f"IP:{service_ip}"))
    _openssl(
        "req", "-new", *ec, "-keyout", "serving.key", "-out", "serving.csr",
        "-subj", "/CN=kube-apiserver",
        "-addext", f"subjectAltName={sans}",
        "-addext", "extendedKeyUsage=serverAuth",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "serving.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "7", "-copy_extensions", "copy", "-out", "serving.crt",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", "sa.key",
        cwd=directory,
    )  # fmt: skip
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    return ClusterPki(
        ca_cert=directory / "ca.crt",
        serving_cert=directory / "serving.crt",
        serving_key=directory / "serving.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
    )


def issue_certificate(
    directory: Path, name: str, *, usage: str, sans: tuple[str, ...] = ()
) -> tuple[Path, Path]:
    """A certificate for `name` (`usage`: serverAuth or clientAuth, SANs as
    openssl writes them, e.g. `DNS:db.example`), signed by the CA `make_pki`
    wrote in `directory`; returns its certificate and key files."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    extensions = ["-addext", f"extendedKeyUsage={usage}"]
    if sans:
        extensions += ["-addext", f"subjectAltName={','.join(sans)}"]
    _openssl(
        "req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
        "-subj", f"/CN={name}", *extensions,
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "7", "-copy_extensions", "copy", "-out", f"{name}.crt",
        cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.crt", directory / f"{name}.key"


def make_client_certificate(directory: Path, name: str) -> Path:
    """A client certificate for `name` signed by the CA in `directory`, as one
    PEM file holding the certificate and its key (PyMongo's tlsCertificateKeyFile)."""
    cert, key = issue_certificate(directory, name, usage="clientAuth")
    combined = directory / f"{name}.pem"
    combined.write_text(cert.read_text() + key.read_text())
    return combined
