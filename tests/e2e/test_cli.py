"""The `relayq` command run as a child process against real Redis and MongoDB."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from relayq.api.auth import KeyRing
from relayq.core.api_keys import is_key_id
from relayq.core.clients import Clients
from relayq.core.ids import is_task_id
from relayq.core.jobs import Task, TaskState
from relayq.core.priorities import Priority
from relayq.core.service import JobRequest
from relayq.dev.servers import free_port
from tests.conftest import settings_env
from tests.gateway import api_settings, sha256

pytestmark = pytest.mark.slow

CLI_TIMEOUT = 60.0


@dataclass(frozen=True)
class Result:
    """What one `relayq` run printed and returned."""

    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def error(self) -> dict[str, Any]:
        last = self.stderr.strip().splitlines()[-1]
        parsed: dict[str, Any] = json.loads(last)
        return parsed


async def relayq(clients: Clients, *args: str, **overrides: str) -> Result:
    """Run `relayq args...` with the test's settings, `overrides` replacing variables."""
    env = settings_env(clients.settings)
    env.update(overrides)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relayq.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


async def ok(clients: Clients, *args: str) -> Any:
    result = await relayq(clients, *args)
    assert result.returncode == 0, result.stderr
    return result.json()


async def make_dead(clients: Clients, type_: str = "noop") -> Task:
    sub = await clients.service.submit(JobRequest(type_, {}))
    dead = await clients.store.transition(
        sub.task.id,
        [TaskState.QUEUED],
        TaskState.FAILED,
        set_fields={"finished_at": datetime.now(UTC), "last_error": "boom"},
        inc_fields={"attempts": sub.task.max_attempts},
    )
    assert dead is not None
    stream = clients.queue.keys.of(dead.priority).stream
    for entry_id, fields in await clients.redis.xrange(stream):
        if fields["t"] == dead.id:
            await clients.redis.xdel(stream, entry_id)
    return dead


# -- submitting and inspecting ----------------------------------------------


async def test_enqueue_prints_the_new_task_as_json(clients: Clients) -> None:
    out = await ok(
        clients, "enqueue", "--type", "noop", "--priority", "HIGH", "--payload", '{"a": 1}'
    )
    assert is_task_id(out["taskId"])
    assert out["state"] == "queued"
    assert out["priority"] == "high"
    assert out["created"] is True

    stored = await clients.store.get(out["taskId"])
    assert stored is not None
    assert stored.payload == {"a": 1} and stored.state is TaskState.QUEUED
    assert await clients.redis.xlen(clients.queue.keys.of(Priority.HIGH).stream) == 1


async def test_enqueue_with_idempotency_key_twice_returns_the_same_task(clients: Clients) -> None:
    args = ("enqueue", "--type", "noop", "--idempotency-key", "cli-1")
    first = await ok(clients, *args)
    second = await ok(clients, *args)
    assert second["taskId"] == first["taskId"]
    assert (first["created"], second["created"]) == (True, False)


async def test_enqueue_with_delay_schedules_the_task(clients: Clients) -> None:
    out = await ok(clients, "enqueue", "--type", "noop", "--delay", "60")
    keys = clients.queue.keys.of(Priority.MEDIUM)
    assert await clients.redis.zrange(keys.delayed, 0, -1) == [f"{out['taskId']}|noop"]
    assert await clients.redis.xlen(keys.stream) == 0


async def test_status_shows_the_task(clients: Clients) -> None:
    sub = await clients.service.submit(JobRequest("sleep", {"seconds": 2}))
    out = await ok(clients, "status", sub.task.id)
    assert out["taskId"] == sub.task.id
    assert out["type"] == "sleep"
    assert out["state"] == "queued"
    assert out["priority"] == "medium"
    assert out["payload"] == {"seconds": 2.0}
    assert out["attempts"] == 0
    assert out["createdAt"].endswith("Z")


# -- user errors: exit 2 with a JSON error on stderr -------------------------


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("status", "not-a-task-id"), "invalid-task-id"),
        (("status", "A" * 32), "invalid-task-id"),
        (("status", "0" * 32), "task-not-found"),
        (("enqueue", "--type", "no-such-type"), "unknown-job-type"),
        (("enqueue", "--type", "noop", "--payload", "{not json"), "invalid-json"),
        (("enqueue", "--type", "noop", "--payload", "[1, 2]"), "invalid-payload"),
        (("enqueue", "--type", "sleep", "--payload", '{"seconds": -1}'), "invalid-payload"),
        (("dead-letters", "--retry", "0" * 32), "not-a-dead-letter"),
        (("cancel", "0" * 32, "--reason", "x"), "task-not-found"),
        (("promote", "0" * 32), "task-not-found"),
        (("review", "--release", "0" * 32, "--reason", "x"), "task-not-found"),
        (("review", "--release", "0" * 32), "invalid-argument"),
    ],
    ids=[
        "bad-task-id",
        "uppercase-task-id",
        "missing-task",
        "unknown-type",
        "bad-json",
        "payload-not-object",
        "payload-invalid",
        "retry-unknown",
        "cancel-unknown",
        "promote-unknown",
        "release-unknown",
        "release-without-reason",
    ],
)
async def test_user_error_exits_2_with_json_error_code(
    clients: Clients, args: tuple[str, ...], code: str
) -> None:
    result = await relayq(clients, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    error = result.error()
    assert error["error"] == code
    assert error["message"]
    assert await clients.store.tasks.count_documents({}) == 0


async def test_bad_setting_exits_2_naming_the_variable(clients: Clients) -> None:
    result = await relayq(clients, "queues", RELAYQ_LEASE_SECONDS="soon")
    assert result.returncode == 2
    error = result.error()
    assert error["error"] == "invalid-argument"
    assert "RELAYQ_LEASE_SECONDS" in error["message"]


# -- queues, pause, resume ---------------------------------------------------


async def test_queues_lists_all_five_priorities(clients: Clients) -> None:
    await clients.service.submit(JobRequest("noop", {}, priority=Priority.LOW))
    await make_dead(clients, "noop")
    out = await ok(clients, "queues")
    assert [q["priority"] for q in out] == [p.value for p in Priority]
    by_name = {q["priority"]: q for q in out}
    assert by_name["low"]["waiting"] == 1 and by_name["low"]["backlog"] == 1
    assert by_name["medium"]["dead"] == 1
    for q in out:
        assert set(q) >= {"waiting", "active", "delayed", "dead", "paused", "backlog"}
        assert q["paused"] is False


async def test_pause_and_resume_are_reflected_in_queues(clients: Clients) -> None:
    assert await ok(clients, "pause", "High") == {"priority": "high", "paused": True}
    paused = {q["priority"]: q["paused"] for q in await ok(clients, "queues")}
    assert paused == {p.value: p is Priority.HIGH for p in Priority}

    assert await ok(clients, "resume", "high") == {"priority": "high", "paused": False}
    resumed = {q["priority"]: q["paused"] for q in await ok(clients, "queues")}
    assert not any(resumed.values())


# -- dead letters ------------------------------------------------------------


async def test_dead_letters_lists_failed_tasks_filtered_by_type(clients: Clients) -> None:
    noop = await make_dead(clients, "noop")
    fail = await make_dead(clients, "fail")
    await clients.service.submit(JobRequest("noop", {}))  # alive: not listed

    out = await ok(clients, "dead-letters")
    assert {t["taskId"] for t in out["deadLetters"]} == {noop.id, fail.id}
    assert all(t["state"] == "failed" for t in out["deadLetters"])
    assert out["nextCursor"] is None

    only_fail = await ok(clients, "dead-letters", "--type", "fail")
    assert [t["taskId"] for t in only_fail["deadLetters"]] == [fail.id]
    assert only_fail["deadLetters"][0]["lastError"] == "boom"


async def test_dead_letters_retry_requeues_one_task(clients: Clients) -> None:
    dead = await make_dead(clients)
    other = await make_dead(clients)
    out = await ok(clients, "dead-letters", "--retry", dead.id)
    assert out == {"taskId": dead.id, "state": "queued"}
    stored = await clients.store.get(dead.id)
    assert stored is not None and stored.state is TaskState.QUEUED
    untouched = await clients.store.get(other.id)
    assert untouched is not None and untouched.state is TaskState.FAILED


async def test_dead_letters_retry_all_requeues_every_one_of_the_type(clients: Clients) -> None:
    noops = [await make_dead(clients, "noop") for _ in range(2)]
    fail = await make_dead(clients, "fail")

    assert await ok(clients, "dead-letters", "--retry-all", "--type", "noop") == {"retried": 2}
    for task in noops:
        stored = await clients.store.get(task.id)
        assert stored is not None and stored.state is TaskState.QUEUED
    assert await clients.store.count(state=TaskState.FAILED) == 1

    assert await ok(clients, "dead-letters", "--retry-all") == {"retried": 1}
    stored = await clients.store.get(fail.id)
    assert stored is not None and stored.state is TaskState.QUEUED


# -- unreachable dependencies: exit 1 ----------------------------------------


async def test_unreachable_redis_exits_1_unavailable(clients: Clients) -> None:
    result = await relayq(clients, "queues", RELAYQ_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.error()["error"] == "unavailable"


async def test_unreachable_mongo_exits_1_unavailable(clients: Clients) -> None:
    result = await relayq(clients, "queues", RELAYQ_MONGO_URL=f"mongodb://127.0.0.1:{free_port()}/")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    error = result.error()
    assert error["error"] == "unavailable"
    assert "ServerSelectionTimeoutError" in error["message"]


# -- an operator's hand on one task -------------------------------------------


async def test_review_lists_parked_tasks_and_releases_one(clients: Clients) -> None:
    sub = await clients.service.submit(JobRequest("noop", {}))
    active = await clients.service.lifecycle.start(sub.task.id, "w-1", redelivered=False)
    assert active is not None
    assert await clients.service.lifecycle.park(active, "odd", {"seen": 2}) is not None

    listed = await ok(clients, "review")
    assert [t["taskId"] for t in listed["inReview"]] == [sub.task.id]
    assert listed["inReview"][0]["review"]["details"] == {"seen": 2}

    out = await ok(clients, "review", "--release", sub.task.id, "--reason", "looked fine")
    assert out == {"taskId": sub.task.id, "state": "queued"}
    assert (await ok(clients, "review"))["inReview"] == []


async def test_cancel_and_promote_act_on_delayed_tasks(clients: Clients) -> None:
    first = await clients.service.submit(JobRequest("noop", {}, delay_seconds=600))
    second = await clients.service.submit(JobRequest("noop", {}, delay_seconds=600))

    cancelled = await ok(clients, "cancel", first.task.id, "--reason", "not wanted")
    promoted = await ok(clients, "promote", second.task.id)

    assert cancelled["state"] == "cancelled"
    assert cancelled["lastError"] == "cancelled: not wanted"
    assert promoted == {"taskId": second.task.id, "state": "queued", "moved": True}
    again = await relayq(clients, "cancel", first.task.id, "--reason", "twice")
    assert again.returncode == 2 and again.error()["error"] == "invalid-task-state"


# -- client API keys --------------------------------------------------------


def keyring(clients: Clients) -> KeyRing:
    """The gateway's key ring on the test's database, to see what a key opens."""
    return KeyRing(api_settings(), clients.store.tasks.database["api_keys"])


async def test_keys_create_list_rotate_revoke_each_audited_as_cli(clients: Clients) -> None:
    created = await ok(clients, "keys", "create", "--client", "client-c", "--label", "nightly")
    secret, kid = created["secret"], created["key"]["keyId"]
    assert secret.startswith("rq_") and is_key_id(kid)
    assert await keyring(clients).client_for(secret) == "client-c"

    listed = await relayq(clients, "keys", "list", "--client", "client-c")
    assert listed.returncode == 0 and secret not in listed.stdout
    assert sha256(secret) not in listed.stdout
    assert [k["keyId"] for k in listed.json()["keys"]] == [kid]

    rotated = await ok(clients, "keys", "rotate", kid, "--grace-seconds", "1")
    assert rotated["previous"]["rotatedTo"] == rotated["key"]["keyId"]
    assert await keyring(clients).client_for(secret) == "client-c"  # within the grace
    assert await keyring(clients).client_for(rotated["secret"]) == "client-c"
    await asyncio.sleep(1.1)
    assert await keyring(clients).client_for(secret) is None

    revoked = await ok(clients, "keys", "revoke", rotated["key"]["keyId"], "--reason", "offboarded")
    assert revoked["key"]["state"] == "revoked"
    assert await keyring(clients).client_for(rotated["secret"]) is None

    audit = await ok(clients, "keys", "audit", "--client", "client-c")
    assert [(e["action"], e["outcome"], e["actor"]) for e in reversed(audit["entries"])] == [
        ("create", "ok", "cli"),
        ("rotate", "ok", "cli"),
        ("revoke", "ok", "cli"),
    ]
    assert all(e["source"] and "@" in e["source"] for e in audit["entries"])
    assert audit["entries"][0]["reason"] == "offboarded"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("keys", "rotate", "key_1"), "invalid-key-id"),
        (("keys", "revoke", "nope", "--reason", "x"), "invalid-key-id"),
        (("keys", "create", "--client", "a:b", "--label", "x"), "invalid-client-id"),
        (("keys", "list", "--cursor", "zz"), "invalid-key-id"),
        (("keys", "rotate", "key_" + "0" * 28), "key-not-found"),
        (("keys", "revoke", "key_" + "0" * 28, "--reason", "x"), "key-not-found"),
        (("keys", "rotate", "key_" + "0" * 28, "--grace-seconds", "-1"), "invalid-payload"),
        (("keys", "create", "--client", "c", "--label", "a\tb"), "invalid-payload"),
    ],
)
async def test_keys_refusals_exit_2_with_their_code(
    clients: Clients, args: tuple[str, ...], code: str
) -> None:
    result = await relayq(clients, *args)

    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.error()["error"] == code


async def test_keys_refused_changes_are_audited(clients: Clients) -> None:
    created = await ok(clients, "keys", "create", "--client", "client-c", "--label", "x")
    kid = created["key"]["keyId"]
    await ok(clients, "keys", "revoke", kid, "--reason", "done")

    again = await relayq(clients, "keys", "revoke", kid, "--reason", "twice")
    rotate = await relayq(clients, "keys", "rotate", kid)

    assert again.error()["error"] == "key-revoked" and rotate.error()["error"] == "key-revoked"
    audit = await ok(clients, "keys", "audit", "--key-id", kid)
    assert [(e["action"], e["outcome"], e["details"].get("code")) for e in audit["entries"]] == [
        ("rotate", "refused", "key-revoked"),
        ("revoke", "refused", "key-revoked"),
        ("revoke", "ok", None),
        ("create", "ok", None),
    ]


# -- personal data ---------------------------------------------------------------


async def test_every_task_the_cli_prints_has_its_declared_fields_redacted(
    clients: Clients,
) -> None:
    address, link = "alice@example.com", "https://shop.example/reset?token=cli-7f3a"
    payload = {"to": address, "user": {"name": "Alice", "email": address}, "link": link}
    queued = (await clients.service.submit(JobRequest("mail", payload, delay_seconds=600))).task
    dead = (await clients.service.submit(JobRequest("mail", payload))).task
    failed = await clients.store.transition(
        dead.id, [TaskState.QUEUED], TaskState.FAILED,
        set_fields={"last_error": f"mailbox {address} full"},
    )  # fmt: skip
    assert failed is not None
    parked_sub = await clients.service.submit(JobRequest("mail", payload))
    active = await clients.service.lifecycle.start(parked_sub.task.id, "w-1", redelivered=False)
    assert active is not None
    assert await clients.service.lifecycle.park(active, "bounced") is not None

    outputs = [
        await relayq(clients, "status", queued.id),
        await relayq(clients, "dead-letters"),
        await relayq(clients, "review"),
        await relayq(clients, "cancel", queued.id, "--reason", "not wanted"),
    ]

    for result in outputs:
        assert result.returncode == 0, result.stderr
        assert address not in result.stdout and link not in result.stdout, result.stdout
        assert address not in result.stderr
    status = outputs[0].json()
    assert status["payload"]["user"] == {"name": "Alice", "email": "[redacted]"}
    assert outputs[1].json()["deadLetters"][0]["lastError"] == "mailbox [redacted] full"
    assert outputs[2].json()["inReview"][0]["payload"]["to"] == "[redacted]"
