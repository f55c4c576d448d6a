"""The `relayq` command: run a worker, submit and inspect jobs, administer queues."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from relayq.core.api_keys import (
    DEFAULT_GRACE_SECONDS,
    Actor,
    ApiKeys,
    InvalidClientId,
    KeyRefused,
    is_key_id,
    now,
)
from relayq.core.clients import Clients, open_clients
from relayq.core.ids import is_task_id
from relayq.core.jobs import JobError, TaskState
from relayq.core.owners import is_client_id
from relayq.core.priorities import Priority
from relayq.core.service import JobRequest
from relayq.core.settings import Settings, SettingsError
from relayq.core.store import IdempotencyConflict


class CommandError(Exception):
    """A user error: printed as JSON on stderr, exit status 2."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse bad input before connecting to anything."""
    for name in ("task_id", "retry", "release"):
        value = getattr(args, name, None)
        if value is not None and not is_task_id(value):
            raise CommandError("invalid-task-id", "a task id is 32 lowercase hex characters")
    if args.command == "keys":
        _check_key_arguments(args)
    if getattr(args, "release", None) and not args.reason:
        raise CommandError("invalid-argument", "--release needs --reason")
    if args.command == "enqueue":
        try:
            args.payload = json.loads(args.payload)
        except json.JSONDecodeError as exc:
            raise CommandError("invalid-json", f"--payload is not JSON: {exc}") from None


async def _enqueue(c: Clients, args: argparse.Namespace) -> Any:
    submitted = await c.service.submit(
        JobRequest(
            type=args.type,
            payload=args.payload,
            priority=args.priority,
            delay_seconds=args.delay,
            idempotency_key=args.idempotency_key,
        )
    )
    t = submitted.task
    return {"taskId": t.id, "state": t.state.value, "priority": t.priority.value,
            "created": submitted.created}  # fmt: skip


async def _status(c: Clients, args: argparse.Namespace) -> Any:
    task = await c.service.get(args.task_id)
    if task is None:
        raise CommandError("task-not-found", f"no task {args.task_id}")
    return task.to_public()


async def _queues(c: Clients, args: argparse.Namespace) -> Any:
    return [o.to_public() for o in await c.service.overview()]


async def _pause(c: Clients, args: argparse.Namespace) -> Any:
    await c.service.pause(args.priority)
    return {"priority": args.priority.value, "paused": True}


async def _resume(c: Clients, args: argparse.Namespace) -> Any:
    await c.service.resume(args.priority)
    return {"priority": args.priority.value, "paused": False}


async def _dead_letters(c: Clients, args: argparse.Namespace) -> Any:
    if args.retry:
        task = await c.service.retry_dead_letter(args.retry)
        if task is None:
            raise CommandError("not-a-dead-letter", f"task {args.retry} is not dead-lettered")
        return {"taskId": task.id, "state": task.state.value}
    if args.retry_all:
        return {"retried": await c.service.retry_dead_letters(type_=args.type)}
    page = await c.service.store.dead_letters(type_=args.type, limit=args.limit)
    return {"deadLetters": [t.to_public() for t in page.tasks], "nextCursor": page.next_cursor}


async def _review(c: Clients, args: argparse.Namespace) -> Any:
    if args.release:
        task = await c.service.release_review(args.release, args.reason)
        return {"taskId": task.id, "state": task.state.value}
    page = await c.service.list_tasks(state=TaskState.NEEDS_REVIEW, type_=args.type,
                                      limit=args.limit)  # fmt: skip
    return {"inReview": [t.to_public() for t in page.tasks], "nextCursor": page.next_cursor}


async def _cancel(c: Clients, args: argparse.Namespace) -> Any:
    return (await c.service.cancel(args.task_id, args.reason)).to_public()


async def _promote(c: Clients, args: argparse.Namespace) -> Any:
    task, moved = await c.service.promote(args.task_id)
    return {"taskId": task.id, "state": task.state.value, "moved": moved}


async def _migrate_owners(c: Clients, args: argparse.Namespace) -> Any:
    owned, ownerless = await c.store.backfill_owners()
    return {"owned": owned, "ownerless": ownerless}


def _check_key_arguments(args: argparse.Namespace) -> None:
    key_id = getattr(args, "key_id", None)
    if key_id is not None and not is_key_id(key_id):
        raise CommandError("invalid-key-id", "a key id is `key_` and 28 lowercase hex characters")
    cursor = getattr(args, "cursor", None)
    if cursor is not None and not is_key_id(cursor):
        raise CommandError("invalid-key-id", "--cursor is a key id (a page's nextCursor)")
    client = getattr(args, "client", None)
    if client is not None and not is_client_id(client):
        raise InvalidClientId(f"client id {client!r}: letters, digits, '.', '_', '@', '-', "
                              "starting with a letter or digit, at most 64")  # fmt: skip


def _cli_actor() -> Actor:
    """Actor `cli`, from the user and host that ran it (as far as they can be told)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Actor("cli", source=f"{user}@{socket.gethostname()}"[:128])


async def _keys_create(c: Clients, args: argparse.Namespace) -> Any:
    issued = await ApiKeys(c.store.tasks.database).create(args.client, args.label, _cli_actor())
    return {"secret": issued.secret, "key": issued.key.to_public(now())}


async def _keys_list(c: Clients, args: argparse.Namespace) -> Any:
    page = await ApiKeys(c.store.tasks.database).list(client=args.client, limit=args.limit,
                                                      cursor=args.cursor)  # fmt: skip
    at = now()
    return {"keys": [k.to_public(at) for k in page.items], "nextCursor": page.next_cursor}


async def _keys_rotate(c: Clients, args: argparse.Namespace) -> Any:
    rotation = await ApiKeys(c.store.tasks.database).rotate(args.key_id, args.grace_seconds,
                                                            _cli_actor())  # fmt: skip
    at = now()
    return {"secret": rotation.issued.secret, "key": rotation.issued.key.to_public(at),
            "previous": rotation.previous.to_public(at)}  # fmt: skip


async def _keys_revoke(c: Clients, args: argparse.Namespace) -> Any:
    revocation = await ApiKeys(c.store.tasks.database).revoke(args.key_id, args.reason,
                                                              _cli_actor())  # fmt: skip
    return {"key": revocation.key.to_public(now())}


async def _keys_audit(c: Clients, args: argparse.Namespace) -> Any:
    page = await ApiKeys(c.store.tasks.database).audit_entries(
        key_id=args.key_id, client=args.client, limit=args.limit
    )
    return {"entries": [e.to_public() for e in page.items], "nextCursor": page.next_cursor}


def _add_keys_parser(sub: Any) -> None:
    keys = sub.add_parser("keys", help="create, list, rotate and revoke client API keys (audited)")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="a new key; its secret is printed this once")
    create.add_argument("--client", required=True, help="the client id")
    create.add_argument("--label", required=True, help="what the key is for")
    create.set_defaults(run=_keys_create)
    listing = actions.add_parser("list", help="keys, newest first (never their secrets)")
    listing.add_argument("--client", help="only this client's keys")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--cursor", help="the previous page's nextCursor")
    listing.set_defaults(run=_keys_list)
    rotate = actions.add_parser("rotate", help="a new secret; the old one works for a grace")
    rotate.add_argument("key_id")
    rotate.add_argument("--grace-seconds", type=int, default=DEFAULT_GRACE_SECONDS,
                        help=f"how long the old key keeps working (default "
                             f"{DEFAULT_GRACE_SECONDS})")  # fmt: skip
    rotate.set_defaults(run=_keys_rotate)
    revoke = actions.add_parser("revoke", help="the key stops working (within 30 s everywhere)")
    revoke.add_argument("key_id")
    revoke.add_argument("--reason", required=True, help="recorded on the key and in the audit")
    revoke.set_defaults(run=_keys_revoke)
    audit = actions.add_parser("audit", help="the audit trail of key changes, newest first")
    audit.add_argument("--key-id", help="only entries about this key")
    audit.add_argument("--client", help="only this client's entries")
    audit.add_argument("--limit", type=int, default=100)
    audit.set_defaults(run=_keys_audit)


Command = Callable[[Clients, argparse.Namespace], Awaitable[Any]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relayq", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    from relayq.worker.main import add_arguments as worker_arguments

    worker = sub.add_parser("worker", help="run a worker for one priority")
    worker_arguments(worker)

    sub.add_parser("api", help="serve the HTTP gateway")
    from relayq.recovery.main import add_arguments as recovery_arguments

    recovery_arguments(sub.add_parser("recovery", help="re-dispatch lost jobs, apply retention"))
    # Its options are its own (`relayq reconcile --help`); main() hands it the line
    # before parsing, so the relayer and the Solana libraries load only for it.
    sub.add_parser("reconcile", help="compare the chain with the purchase records", add_help=False)
    sub.add_parser(
        "purchases", help="list, show and resolve parked purchases (deliver, mark-completed)",
        add_help=False,
    )  # fmt: skip

    enqueue = sub.add_parser("enqueue", help="submit a job")
    enqueue.add_argument("--type", required=True)
    enqueue.add_argument("--priority", type=Priority.parse)
    enqueue.add_argument("--payload", default="{}", help="a JSON object")
    enqueue.add_argument("--delay", type=float, help="seconds before it may run")
    enqueue.add_argument("--idempotency-key")
    enqueue.set_defaults(run=_enqueue)

    status = sub.add_parser("status", help="show a task")
    status.add_argument("task_id")
    status.set_defaults(run=_status)

    sub.add_parser("queues", help="numbers per priority").set_defaults(run=_queues)
    for name, fn in (("pause", _pause), ("resume", _resume)):
        p = sub.add_parser(name, help=f"{name} claiming on a priority")
        p.add_argument("priority", type=Priority.parse)
        p.set_defaults(run=fn)

    dead = sub.add_parser("dead-letters", help="list or retry dead-lettered tasks")
    group = dead.add_mutually_exclusive_group()
    group.add_argument("--retry", metavar="TASK_ID", help="retry one dead letter")
    group.add_argument("--retry-all", action="store_true", help="retry all (of --type)")
    dead.add_argument("--type", help="only this job type")
    dead.add_argument("--limit", type=int, default=50)
    dead.set_defaults(run=_dead_letters)

    review = sub.add_parser("review", help="list tasks parked for review, or release one")
    review.add_argument("--release", metavar="TASK_ID", help="let a parked task run again")
    review.add_argument("--reason", help="why (required with --release; logged)")
    review.add_argument("--type", help="only this job type")
    review.add_argument("--limit", type=int, default=50)
    review.set_defaults(run=_review)

    cancel = sub.add_parser("cancel", help="cancel a task no worker holds")
    cancel.add_argument("task_id")
    cancel.add_argument("--reason", required=True, help="recorded as the task's last error")
    cancel.set_defaults(run=_cancel)

    promote = sub.add_parser("promote", help="run a delayed task now")
    promote.add_argument("task_id")
    promote.set_defaults(run=_promote)

    _add_keys_parser(sub)

    sub.add_parser(
        "migrate-owners",
        help="record the owning client of tasks written before owners were (run once on upgrade)",
    ).set_defaults(run=_migrate_owners)
    return parser


async def _run(command: Command, args: argparse.Namespace, settings: Settings) -> Any:
    async with open_clients(settings) as clients:
        return await command(clients, args)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Long-running commands own their options; hand them the rest of the line.
    if argv and argv[0] == "worker":
        from relayq.worker.main import main as worker_main

        worker_main(argv[1:])
        return
    if argv and argv[0] == "api":
        from relayq.api.main import main as api_main

        api_main(argv[1:])
        return
    if argv and argv[0] == "recovery":
        from relayq.recovery.main import main as recovery_main

        recovery_main(argv[1:])
        return
    if argv and argv[0] == "reconcile":
        from relayq.relayer.reconcile_main import main as reconcile_main

        reconcile_main(argv[1:])
        return
    if argv and argv[0] == "purchases":
        from relayq.relayer.review_main import main as purchases_main

        purchases_main(argv[1:])
        return
    args = build_parser().parse_args(argv)
    try:
        _check_arguments(args)
        settings = Settings.from_env()
        _print(asyncio.run(_run(args.run, args, settings)))
    except (
        CommandError,
        JobError,
        IdempotencyConflict,
        KeyRefused,
        SettingsError,
        ValueError,
    ) as exc:
        code = getattr(exc, "code", "invalid-argument")
        print(json.dumps({"error": code, "message": str(exc)}), file=sys.stderr)
        sys.exit(2)
    except (RedisError, PyMongoError, OSError) as exc:
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        print(json.dumps({"error": "unavailable", "message": message}), file=sys.stderr)
        sys.exit(1)
