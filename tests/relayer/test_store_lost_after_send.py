"""The task store lost after the bundle was sent: the answer is 202 swap_pending, not
"nothing was accepted".

The purchase and its held task were written before the send, so the purchase
exists and recovery takes it from there; telling the client that nothing was
accepted would have it buy again. This module runs on a MongoDB of its own,
which the test stops (SIGSTOP) while the swap is being polled.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from relayq.core.clients import Clients
from relayq.dev.servers import LocalServer, mongo_server
from tests.conftest import wait_until
from tests.gateway import CLIENT
from tests.integration.conftest import Api
from tests.relayer.conftest import Devchain

WALLET = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"


@pytest.fixture
def own_mongo(tmp_path: Path) -> Iterator[LocalServer]:
    server = mongo_server(tmp_path / "mongo").start()
    yield server
    assert server.process is not None
    if server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


@pytest.fixture
def mongo_url(own_mongo: LocalServer) -> str:
    """This module's records live on a server the test can stop."""
    return f"mongodb://127.0.0.1:{own_mongo.port}/"


async def test_a_store_outage_after_the_send_answers_swap_pending(
    gateway: Api, clients: Clients, chain: Devchain, own_mongo: LocalServer
) -> None:
    # Polling the chain is slow, so the store can be stopped between the send and
    # the verdict's record.
    await chain.faults(rpcDelayMs=1500)
    purchases = clients.store.tasks.database["purchases"]
    request = asyncio.create_task(
        gateway.post(
            "/v1/buy-tokens",
            json={"wallet": WALLET, "solAmount": 0.5, "bundleId": "starter"},
            headers={**CLIENT, "Idempotency-Key": uuid.uuid4().hex},
        )
    )

    async def sent() -> bool:
        return await purchases.count_documents({"swap.bundleId": {"$exists": True}}) == 1

    await wait_until(sent, timeout=30, interval=0.02)
    assert own_mongo.process is not None
    os.kill(own_mongo.process.pid, signal.SIGSTOP)
    try:
        resp = await asyncio.wait_for(request, 60)
    finally:
        os.kill(own_mongo.process.pid, signal.SIGCONT)
    await chain.faults(reset=True)

    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["status"] == "swap_pending"
    assert resp.headers["Location"] == f"/v1/tasks/{body['taskId']}"
    assert await purchases.count_documents({"_id": body["taskId"]}) == 1
    task = await clients.store.get(body["taskId"])
    assert task is not None  # recorded before the send: recovery dispatches it
