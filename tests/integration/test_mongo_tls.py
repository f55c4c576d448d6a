"""MongoDB over TLS: the local server (secantusd-rs) with TLS on, reached by the
store every process opens (`mongo_for`) with RELAYQ_MONGO_TLS_CA_FILE, and with
RELAYQ_MONGO_TLS_CERTIFICATE_KEY_FILE where the server requires a client
certificate. A client that does not trust the server's certificate, or that
has no certificate where one is required, is refused within its bound."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pymongo.errors import PyMongoError

from relayq.core.clients import mongo_for
from relayq.core.jobs import TaskState
from relayq.core.priorities import Priority
from relayq.core.settings import Settings
from relayq.core.store import NewTask, TaskStore
from relayq.dev.servers import LocalServer, mongo_server
from tests.kube.pki import ClusterPki, issue_certificate, make_client_certificate, make_pki

# A refused client gives up after its operation bound (RELAYQ_MONGO_TIMEOUT_SECONDS).
REFUSAL_BOUND_SECONDS = 1.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ClusterPki:
    return make_pki(tmp_path_factory.mktemp("pki"), "10.0.0.1")


def _tls_mongo(workdir: Path, pki: ClusterPki, *extra: str) -> LocalServer:
    return mongo_server(
        workdir, None,
        "--tls-cert-file", str(pki.serving_cert), "--tls-key-file", str(pki.serving_key),
        *extra, sync_on_commit=False,
    ).start()  # fmt: skip


@pytest.fixture(scope="module")
def tls_mongo(tmp_path_factory: pytest.TempPathFactory, pki: ClusterPki) -> Iterator[LocalServer]:
    """TLS only; clients need not present a certificate."""
    server = _tls_mongo(tmp_path_factory.mktemp("mongo-tls"), pki)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_mongo(tmp_path_factory: pytest.TempPathFactory, pki: ClusterPki) -> Iterator[LocalServer]:
    """TLS with a client certificate signed by the CA required."""
    server = _tls_mongo(
        tmp_path_factory.mktemp("mongo-mtls"), pki,
        "--tls-ca-file", str(pki.ca_cert), "--tls-require-client-cert",
    )  # fmt: skip
    yield server
    server.stop()


def settings_for(server: LocalServer, host: str = "127.0.0.1", **env: str) -> Settings:
    return Settings.from_env(
        {
            "RELAYQ_MONGO_URL": f"mongodb://{host}:{server.port}/",
            "RELAYQ_MONGO_TIMEOUT_SECONDS": str(REFUSAL_BOUND_SECONDS),
            **env,
        }
    )


async def _store_round_trip(settings: Settings) -> None:
    """Insert, a guarded transition, a read: the store's whole life over this client."""
    mongo = mongo_for(replace(settings, mongo_timeout_seconds=10))
    try:
        store = TaskStore(mongo, "tls_test", batch_max=1)
        task, created = await store.insert(
            NewTask(type="noop", priority=Priority.HIGH, payload={"n": 1}, max_attempts=3)
        )
        assert created
        done = await store.transition(task.id, [TaskState.QUEUED], TaskState.FAILED)
        assert done is not None and done.state is TaskState.FAILED
        # The guard holds over TLS too: a second transition from QUEUED finds nothing.
        assert await store.transition(task.id, [TaskState.QUEUED], TaskState.FAILED) is None
        read = await store.get(task.id)
        assert read is not None and read.state is TaskState.FAILED
    finally:
        await mongo.close()


async def _refused(settings: Settings) -> PyMongoError:
    mongo = mongo_for(settings)
    t0 = time.monotonic()
    try:
        with pytest.raises(PyMongoError) as caught:
            await mongo.admin.command("ping")
    finally:
        await mongo.close()
    assert time.monotonic() - t0 < REFUSAL_BOUND_SECONDS + 2
    return caught.value


async def test_the_store_works_over_tls(tls_mongo: LocalServer, pki: ClusterPki) -> None:
    await _store_round_trip(settings_for(tls_mongo, RELAYQ_MONGO_TLS_CA_FILE=str(pki.ca_cert)))


async def test_tls_options_in_the_url_work_as_well(tls_mongo: LocalServer, pki: ClusterPki) -> None:
    url = f"mongodb://127.0.0.1:{tls_mongo.port}/?tls=true&tlsCAFile={pki.ca_cert}"
    await _store_round_trip(replace(settings_for(tls_mongo), mongo_url=url))


async def test_a_plain_client_gets_no_answer_from_a_tls_server(tls_mongo: LocalServer) -> None:
    await _refused(settings_for(tls_mongo))


async def test_a_server_signed_by_another_ca_is_refused(
    tls_mongo: LocalServer, tmp_path: Path
) -> None:
    other = make_pki(tmp_path / "other", "10.0.0.1")
    error = await _refused(settings_for(tls_mongo, RELAYQ_MONGO_TLS_CA_FILE=str(other.ca_cert)))
    assert "certificate verify failed" in str(error)


async def test_a_certificate_for_another_host_is_refused(pki: ClusterPki, tmp_path: Path) -> None:
    # Signed by the trusted CA, but naming another host than the one dialled.
    cert, key = issue_certificate(
        pki.ca_cert.parent, "elsewhere", usage="serverAuth", sans=("DNS:db.elsewhere.example",)
    )
    server = mongo_server(
        tmp_path / "mongo", None, "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        sync_on_commit=False,
    ).start()  # fmt: skip
    try:
        error = await _refused(settings_for(server, RELAYQ_MONGO_TLS_CA_FILE=str(pki.ca_cert)))
    finally:
        server.stop()
    assert "certificate verify failed" in str(error) and "127.0.0.1" in str(error)


async def test_mutual_tls_with_a_client_certificate(
    mtls_mongo: LocalServer, pki: ClusterPki
) -> None:
    client = make_client_certificate(pki.ca_cert.parent, "relayq-client")
    await _store_round_trip(
        settings_for(
            mtls_mongo,
            RELAYQ_MONGO_TLS_CA_FILE=str(pki.ca_cert),
            RELAYQ_MONGO_TLS_CERTIFICATE_KEY_FILE=str(client),
        )
    )


async def test_mutual_tls_refuses_a_client_without_a_certificate(
    mtls_mongo: LocalServer, pki: ClusterPki
) -> None:
    await _refused(settings_for(mtls_mongo, RELAYQ_MONGO_TLS_CA_FILE=str(pki.ca_cert)))
