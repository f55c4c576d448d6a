"""Throughput of a devchain on loopback: `python -m relayq.devchain.bench [--count N]`.

Starts `python -m relayq.devchain` on a free port, sends N pre-signed System
transfers with `sendTransaction` (preflight on, as clients send them), one at a
time and then from 32 concurrent senders, polls `getSignatureStatuses` the same
way, and prints requests per second of wall time and per CPU-second of the
server process (the second number does not depend on what else the machine runs).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from relayq.devchain.seed import read_keypair


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _measure(
    label: str, pid: int, calls: list[Callable[[], Awaitable[bool]]], concurrency: int
) -> None:
    queue = list(reversed(calls))
    errors = 0

    async def worker() -> None:
        nonlocal errors
        while queue:
            if not await queue.pop()():
                errors += 1

    cpu, start = _cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, used = time.perf_counter() - start, _cpu_seconds(pid) - cpu
    n = len(calls)
    print(f"{label:<44} {n / wall:7.0f}/s wall  {n / max(used, 1e-9):7.0f}/s per server "
          f"CPU-second  ({n} calls, {errors} errors)")  # fmt: skip


async def _run(url: str, manifest: dict[str, Any], pid: int, count: int) -> None:
    relayer = read_keypair(manifest["relayer"]["keypairFile"])
    async with aiohttp.ClientSession() as session:

        async def rpc(method: str, params: list[Any]) -> dict[str, Any]:
            body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            async with session.post(url, json=body) as resp:
                return dict(await resp.json())

        for label, concurrency in (("sendTransaction, 1 sender", 1),
                                   ("sendTransaction, 32 senders", 32)):  # fmt: skip
            latest = await rpc("getLatestBlockhash", [])
            recent = Hash.from_string(latest["result"]["value"]["blockhash"])
            dest = Keypair().pubkey()
            txs = []
            for i in range(count):
                ix = transfer(TransferParams(
                    from_pubkey=relayer.pubkey(), to_pubkey=dest, lamports=1_000_000 + i
                ))  # fmt: skip
                msg = Message.new_with_blockhash([ix], relayer.pubkey(), recent)
                txs.append(base64.b64encode(bytes(Transaction([relayer], msg, recent))).decode())

            def send(tx: str) -> Callable[[], Awaitable[bool]]:
                async def call() -> bool:
                    return "result" in await rpc("sendTransaction", [tx, {"encoding": "base64"}])

                return call

            await _measure(label, pid, [send(t) for t in txs], concurrency)

        unknown = str(Keypair().sign_message(b"unknown"))

        async def status() -> bool:
            return "result" in await rpc("getSignatureStatuses", [[unknown]])

        await _measure("getSignatureStatuses, 32 pollers", pid, [status] * count, 32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m relayq.devchain.bench", description=__doc__)
    parser.add_argument("--count", type=int, default=1000, help="calls per measurement")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as state:
        port = _free_port()
        argv_ = [sys.executable, "-m", "relayq.devchain", "--port", str(port), "--state-dir",
                 state, "--jito-rate-limit", "0", "--blockhash-validity-slots", "1000"]  # fmt: skip
        server = subprocess.Popen(argv_, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            manifest_path = Path(state) / "chain.json"
            deadline = time.monotonic() + 60
            while True:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the devchain did not start")
                try:  # the manifest is written before the port listens
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            manifest = json.loads(manifest_path.read_text())
            asyncio.run(_run(manifest["rpcUrl"], manifest, server.pid, args.count))
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
