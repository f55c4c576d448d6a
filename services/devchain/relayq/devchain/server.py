"""The devchain HTTP server: Solana RPC, the Jito block engine API and test controls on one port.

Routes:

- `POST /` Solana JSON-RPC (single or batch), see `relayq.devchain.rpc`.
- `POST /api/v1/bundles` Jito bundle JSON-RPC, see `relayq.devchain.jito`;
  `POST /api/v1/transactions` Jito's `sendTransaction` (same as the RPC's).
  Both rate limited per client IP (`--jito-rate-limit` requests per second,
  0 = off): over it, HTTP 429 with a JSON-RPC error -32097 "Rate limit exceeded".
- `GET /health` -> `ok`.
- `GET /devchain/state` -> counters for tests (always on).
- `GET /devchain/bundles/{id}` -> a bundle's status, signatures and, when it
  failed, `error: {"index": i, "err": <transaction error>}` (always on).
- `GET|POST /devchain/faults` -> fault injection (`--faults` only, else 404),
  see `relayq.devchain.faults`.

A background task produces a slot every `--slot-ms` milliseconds; bundles
land at slot boundaries; the finalized view lags the newest slot by
`--finality-lag` slots (see `relayq.devchain.ledger`). Everything touching
LiteSVM runs on the event loop thread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from solders.hash import Hash

from relayq.devchain.faults import FaultError, Faults
from relayq.devchain.jito import BundleEngine, BundleError
from relayq.devchain.ledger import FINALIZED_DEPTH, Ledger
from relayq.devchain.responses import RpcError
from relayq.devchain.rpc import SolanaRpc
from relayq.devchain.seed import Genesis, create_genesis, write_manifest

log = logging.getLogger("relayq.devchain")


@dataclass(frozen=True)
class DevchainConfig:
    """Command-line options of `relayq-dev devchain`."""

    host: str = "127.0.0.1"
    port: int = 8899
    state_dir: Path = Path(".run/devchain")  # .run/ holds local state and is git-ignored
    slot_ms: int = 400
    validity_slots: int = 150
    # How many slots the finalized view lags the newest (the cluster's 31+1 votes).
    finality_lag: int = FINALIZED_DEPTH
    seed: str = "relayq-devchain"
    faults: bool = False
    jito_rate_limit: int = 50
    min_tip_lamports: int = 1000


class RateLimiter:
    """A token bucket per client address: `rate` requests per second, bursts up to `rate`."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, client: str) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        tokens, last = self._buckets.get(client, (float(self.rate), now))
        tokens = min(float(self.rate), tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return False
        self._buckets[client] = (tokens - 1.0, now)
        return True


class Devchain:
    """The chain, its APIs and its counters."""

    def __init__(self, config: DevchainConfig) -> None:
        self.config = config
        self.genesis = Genesis.derive(config.seed)
        genesis_hash = Hash.hash(f"relayq-devchain/{config.seed}/genesis".encode())
        self.ledger = Ledger(config.validity_slots, genesis_hash, config.finality_lag)
        create_genesis(self.ledger, self.genesis)
        self.faults = Faults()
        self.rpc = SolanaRpc(self.ledger, self.faults, self.genesis.faucet)
        self.bundles = BundleEngine(
            self.ledger, self.faults, list(self.genesis.tip_accounts), config.min_tip_lamports
        )
        self.limiter = RateLimiter(config.jito_rate_limit)
        self.rpc_requests = 0
        self.jito_requests = 0
        self.rate_limited = 0

    def advance(self, slots: int = 1) -> None:
        for _ in range(slots):
            self.ledger.advance()
            self.bundles.land_pending()

    async def produce_slots(self) -> None:
        """Advance one slot per slot_ms, without drifting and without bursts after a stall."""
        loop = asyncio.get_running_loop()
        interval = self.config.slot_ms / 1000
        deadline = loop.time()
        while True:
            deadline += interval
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            if loop.time() - deadline > interval:
                deadline = loop.time()
            if not self.faults.halt_slots:
                self.advance()

    def state(self) -> dict[str, Any]:
        ls, bs = self.ledger.stats, self.bundles.stats
        return {
            "slot": self.ledger.slot,
            "blockHeight": self.ledger.block_height,
            "transactionsProcessed": ls.succeeded + ls.failed,
            "transactionsSucceeded": ls.succeeded,
            "transactionsFailed": ls.failed,
            "transactionsRejected": ls.rejected,
            "transactionsDropped": self.rpc.dropped_transactions,
            "bundlesReceived": bs.received,
            "bundlesPending": self.bundles.pending,
            "bundlesLanded": bs.landed,
            "bundlesFailed": bs.failed,
            "bundlesDropped": bs.dropped,
            "rpcRequests": self.rpc_requests,
            "jitoRequests": self.jito_requests,
            "rateLimited": self.rate_limited,
        }


CHAIN = web.AppKey("chain", Devchain)
Dispatch = Callable[[str, list[Any]], Any]


def _error(code: int, message: str, id_: Any = None, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "error": err, "id": id_}


def _one(dispatch: Dispatch, request: Any) -> dict[str, Any]:
    if (
        not isinstance(request, dict)
        or request.get("jsonrpc") != "2.0"
        or not isinstance(request.get("method"), str)
    ):
        return _error(
            -32600, "Invalid request", request.get("id") if isinstance(request, dict) else None
        )
    id_ = request.get("id")
    params = request.get("params", [])
    if params is None:
        params = []
    if not isinstance(params, list):
        return _error(-32602, "Invalid params: params must be an array", id_)
    try:
        return {"jsonrpc": "2.0", "result": dispatch(request["method"], params), "id": id_}
    except RpcError as exc:
        return {"jsonrpc": "2.0", "error": exc.to_json(), "id": id_}
    except BundleError as exc:
        return _error(exc.code, exc.message, id_)
    except Exception as exc:  # a bug here must still answer JSON-RPC, never an HTML 500
        log.exception("internal error in %s", request["method"])
        return _error(-32603, f"Internal error: {type(exc).__name__}: {exc}", id_)


def _methods(body: Any) -> list[str]:
    items = body if isinstance(body, list) else [body]
    return [str(i.get("method")) for i in items if isinstance(i, dict)]


async def _jsonrpc(request: web.Request, dispatch: Dispatch, solana: bool) -> web.Response:
    chain = request.app[CHAIN]
    try:
        body = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return web.json_response(_error(-32700, "Parse error"))
    if solana:
        chain.rpc_requests += 1
        if chain.faults.rpc_delay_ms:
            await asyncio.sleep(chain.faults.rpc_delay_ms / 1000)
    if any(chain.faults.consume_rpc_error(m, solana) for m in _methods(body)):
        id_ = body.get("id") if isinstance(body, dict) else None
        if chain.faults.rpc_error_status == 503:
            return web.json_response(_error(-32005, "Node is unhealthy", id_), status=503)
        # What a lagging node answers: HTTP 200, NodeUnhealthy with how far behind it is.
        behind = _error(-32005, "Node is behind by 42 slots", id_, {"numSlotsBehind": 42})
        return web.json_response(behind)
    if isinstance(body, list):
        if not body:
            return web.json_response(_error(-32600, "Invalid request"))
        return web.json_response([_one(dispatch, r) for r in body])
    return web.json_response(_one(dispatch, body))


async def solana_rpc(request: web.Request) -> web.Response:
    return await _jsonrpc(request, request.app[CHAIN].rpc.call, solana=True)


async def _jito(request: web.Request, dispatch: Dispatch) -> web.Response:
    chain = request.app[CHAIN]
    chain.jito_requests += 1
    if not chain.limiter.allow(request.remote or "unknown"):
        chain.rate_limited += 1
        return web.json_response(_error(-32097, "Rate limit exceeded"), status=429)
    return await _jsonrpc(request, dispatch, solana=False)


async def jito_bundles(request: web.Request) -> web.Response:
    return await _jito(request, request.app[CHAIN].bundles.call)


async def jito_transactions(request: web.Request) -> web.Response:
    chain = request.app[CHAIN]

    def dispatch(method: str, params: list[Any]) -> Any:
        if method != "sendTransaction":
            raise RpcError(-32601, "Method not found")
        return chain.rpc.call(method, params)

    return await _jito(request, dispatch)


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def state(request: web.Request) -> web.Response:
    return web.json_response(request.app[CHAIN].state())


async def bundle_detail(request: web.Request) -> web.Response:
    """What became of a bundle, with the failing transaction's error (not in Jito's API)."""
    bundle = request.app[CHAIN].bundles.bundle(request.match_info["bundle_id"])
    if bundle is None:
        raise web.HTTPNotFound(text="unknown bundle id")
    chain = request.app[CHAIN]
    return web.json_response({
        **chain.bundles.inflight_status(bundle.id),
        "transactions": bundle.signatures,
        "error": bundle.err,
    })  # fmt: skip


async def faults(request: web.Request) -> web.Response:
    chain = request.app[CHAIN]
    if not chain.config.faults:
        raise web.HTTPNotFound(text="fault injection is off (start with --faults)")
    if request.method == "POST":
        try:
            advance = chain.faults.apply(json.loads(await request.read() or b"{}"))
        except (FaultError, json.JSONDecodeError) as exc:
            return web.json_response({"error": "invalid-fault", "message": str(exc)}, status=400)
        chain.advance(advance)
    return web.json_response({**chain.faults.to_json(), "slot": chain.ledger.slot})


def create_app(chain: Devchain) -> web.Application:
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[CHAIN] = chain

    async def slots(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(chain.produce_slots())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(slots)
    app.router.add_post("/", solana_rpc)
    app.router.add_post("/api/v1/bundles", jito_bundles)
    app.router.add_post("/api/v1/transactions", jito_transactions)
    app.router.add_get("/health", health)
    app.router.add_get("/devchain/state", state)
    app.router.add_get("/devchain/bundles/{bundle_id}", bundle_detail)
    app.router.add_route("*", "/devchain/faults", faults)
    return app


async def serve(config: DevchainConfig, stop: asyncio.Event | None = None) -> None:
    """Seed the chain, write the manifest, serve until `stop` is set (or SIGTERM/SIGINT)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    chain = Devchain(config)
    # Bind first so the manifest names the real port, and exists before anyone can connect.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    port = sock.getsockname()[1]
    shown = "127.0.0.1" if config.host in ("0.0.0.0", "") else config.host
    url = f"http://{shown}:{port}"
    write_manifest(
        config.state_dir,
        chain.genesis,
        url=url,
        slot_ms=config.slot_ms,
        validity_slots=config.validity_slots,
        min_tip_lamports=config.min_tip_lamports,
    )
    runner = web.AppRunner(create_app(chain), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock, backlog=1024).start()
    log.info("devchain listening on %s (manifest %s)", url, config.state_dir / "chain.json")
    print(f"devchain listening on {url}; manifest {config.state_dir.resolve() / 'chain.json'}",
          flush=True)  # fmt: skip
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DevchainConfig()
    parser.add_argument("--host", default=d.host)
    parser.add_argument("--port", type=int, default=d.port)
    parser.add_argument("--state-dir", type=Path, default=d.state_dir,
                        help="where chain.json and the keypair files are written")  # fmt: skip
    parser.add_argument("--slot-ms", type=int, default=d.slot_ms)
    parser.add_argument("--blockhash-validity-slots", type=int, default=d.validity_slots)
    parser.add_argument("--finality-lag", type=int, default=d.finality_lag,
                        help="slots the finalized view lags the newest")  # fmt: skip
    parser.add_argument("--seed", default=d.seed, help="derives every key of the genesis state")
    parser.add_argument("--faults", action="store_true", help="enable /devchain/faults")
    parser.add_argument("--jito-rate-limit", type=int, default=d.jito_rate_limit,
                        help="Jito requests per second per client IP (0: no limit)")  # fmt: skip
    parser.add_argument("--min-tip-lamports", type=int, default=d.min_tip_lamports)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="relayq-dev devchain",
        description="A local Solana chain (LiteSVM) behind the Solana RPC and Jito bundle APIs.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.slot_ms <= 0 or args.blockhash_validity_slots <= 0:
        parser.error("--slot-ms and --blockhash-validity-slots must be positive")
    if args.finality_lag < 1:
        parser.error("--finality-lag must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = DevchainConfig(
        host=args.host,
        port=args.port,
        state_dir=args.state_dir,
        slot_ms=args.slot_ms,
        validity_slots=args.blockhash_validity_slots,
        finality_lag=args.finality_lag,
        seed=args.seed,
        faults=args.faults,
        jito_rate_limit=args.jito_rate_limit,
        min_tip_lamports=args.min_tip_lamports,
    )
    asyncio.run(serve(config))
