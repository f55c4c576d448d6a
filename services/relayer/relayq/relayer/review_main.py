"""`relayq purchases`: list, show and resolve parked purchases (relayq.relayer.review).

    relayq purchases review [TASK_ID] [--limit N] [--cursor C]
    relayq purchases resolve TASK_ID deliver --reason R --operator O
    relayq purchases resolve TASK_ID mark-completed --signature S --reason R --operator O
    relayq purchases resolve TASK_ID refund --reason R --operator O

Prints JSON on stdout. A refused resolution prints {"error", "message"} on
stderr and exits 2; an unreachable store or chain exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from relayq.core.clients import open_clients
from relayq.core.ids import is_task_id
from relayq.core.settings import Settings, SettingsError
from relayq.relayer.chain.errors import ChainError
from relayq.relayer.chain.settings import ChainSettings
from relayq.relayer.relayer import open_relayer
from relayq.relayer.review import (
    DELIVER,
    MARK_COMPLETED,
    REFUND,
    ResolutionRefused,
    deliver,
    mark_completed,
    parked_purchase,
    parked_purchases,
    refund,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relayq purchases",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    review = sub.add_parser("review", help="list parked purchases, or show one")
    review.add_argument("task_id", nargs="?", help="show this purchase, with the chain's word")
    review.add_argument("--limit", type=int, default=50)
    review.add_argument("--cursor", help="the previous page's nextCursor")
    resolve = sub.add_parser("resolve", help="resolve a parked purchase, once per parking")
    resolve.add_argument("task_id")
    resolve.add_argument("action", choices=[DELIVER, MARK_COMPLETED, REFUND])
    resolve.add_argument("--reason", required=True, help="why; recorded on the purchase")
    resolve.add_argument("--operator", required=True, help="who decides; recorded")
    resolve.add_argument("--signature", help="mark-completed: the landed transfer's signature")
    return parser


def _check(args: argparse.Namespace) -> None:
    for value in (args.task_id, getattr(args, "cursor", None)):
        if value is not None and not is_task_id(value):
            raise SettingsError("a task id is 32 lowercase hex characters")
    if args.command == "review" and not 1 <= args.limit <= 500:
        raise SettingsError("--limit must be in 1..500")
    if args.command == "resolve" and (args.action == MARK_COMPLETED) != bool(args.signature):
        raise SettingsError("--signature goes with mark-completed, and only with it")


async def run(settings: Settings, chain: ChainSettings, args: argparse.Namespace) -> Any:
    async with open_clients(settings, ensure_indexes=False) as clients:
        relayer = await open_relayer(chain, clients)
        try:
            if args.command == "review" and args.task_id is None:
                items, cursor = await parked_purchases(
                    relayer, limit=args.limit, cursor=args.cursor
                )
                return {"purchases": items, "nextCursor": cursor}
            if args.command == "review":
                return await parked_purchase(relayer, args.task_id)
            if args.action == DELIVER:
                task = await deliver(relayer, args.task_id, args.reason, args.operator)
            elif args.action == REFUND:
                task = await refund(relayer, args.task_id, args.reason, args.operator)
            else:
                task = await mark_completed(
                    relayer, args.task_id, args.signature, args.reason, args.operator
                )
            return task.to_public()
        finally:
            await relayer.close()


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        _check(args)
        settings = Settings.from_env()
        chain = ChainSettings.from_env()
        if not chain.configured:
            raise SettingsError(
                "purchases needs the relayer's settings: RELAYQ_RELAYER_KEYPAIR_FILE,"
                " RELAYQ_CONTRACT_OWNER and RELAYQ_BASKETS_FILE"
            )
        out = asyncio.run(run(settings, chain, args))
    except ResolutionRefused as exc:
        print(json.dumps({"error": exc.code, "message": exc.detail}), file=sys.stderr)
        sys.exit(2)
    except (SettingsError, ValueError) as exc:
        print(json.dumps({"error": "invalid-argument", "message": str(exc)}), file=sys.stderr)
        sys.exit(2)
    except (ChainError, RedisError, PyMongoError, OSError) as exc:
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        print(json.dumps({"error": "unavailable", "message": message}), file=sys.stderr)
        sys.exit(1)
    print(json.dumps(out, indent=2, default=str))
