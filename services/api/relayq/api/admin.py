"""Admin routes: queues, pause and resume, dead letters, and an operator's hand on
one task: release from review, cancel, run now."""

from __future__ import annotations

from aiohttp import web

from relayq.api import models
from relayq.api.contract import Operation, Response, body, query
from relayq.api.jobs import ACCEPTED, accepted, task_view
from relayq.api.keys import CLIENTS
from relayq.api.problems import Problem
from relayq.api.requests import priority, task_id
from relayq.core.jobs import InvalidTaskState, JobError, TaskNotFound, TaskState

RETRY_ALL_LIMIT = 1000


async def queues(request: web.Request) -> web.Response:
    overview = await request.app[CLIENTS].service.overview()
    return web.json_response({"queues": [o.to_public() for o in overview]})


async def pause(request: web.Request) -> web.Response:
    p = priority(request)
    await request.app[CLIENTS].service.pause(p)
    return web.json_response({"priority": p.value, "paused": True})


async def resume(request: web.Request) -> web.Response:
    p = priority(request)
    await request.app[CLIENTS].service.resume(p)
    return web.json_response({"priority": p.value, "paused": False})


async def _listing(request: web.Request, state: TaskState) -> web.Response:
    q = query(request, models.PageQuery)
    page = await request.app[CLIENTS].service.list_tasks(
        state=state, type_=q.type, limit=q.limit, cursor=q.cursor
    )
    return web.json_response(
        {"tasks": [t.to_public() for t in page.tasks], "nextCursor": page.next_cursor}
    )


async def all_tasks(request: web.Request) -> web.Response:
    q = query(request, models.AdminTaskQuery)
    page = await request.app[CLIENTS].service.list_tasks(
        state=q.state, type_=q.type, limit=q.limit, cursor=q.cursor, owner=q.client
    )
    return web.json_response(
        {"tasks": [t.to_public() for t in page.tasks], "nextCursor": page.next_cursor}
    )


async def any_task(request: web.Request) -> web.Response:
    task = await request.app[CLIENTS].service.get(task_id(request))
    if task is None:
        raise Problem(404, "task-not-found", "no task with this id")
    return web.json_response(await task_view(request, task))


async def dead_letters(request: web.Request) -> web.Response:
    return await _listing(request, TaskState.FAILED)


async def in_review(request: web.Request) -> web.Response:
    return await _listing(request, TaskState.NEEDS_REVIEW)


async def retry_dead_letter(request: web.Request) -> web.Response:
    tid = task_id(request)
    service = request.app[CLIENTS].service
    task = await service.retry_dead_letter(tid)
    if task is None:
        raise await _missing(request, tid)
    return accepted(task)


async def retry_dead_letters(request: web.Request) -> web.Response:
    q = query(request, models.TypeQuery)
    retried = await request.app[CLIENTS].service.retry_dead_letters(
        type_=q.type, limit=RETRY_ALL_LIMIT
    )
    return web.json_response({"retried": retried})


async def delete_dead_letter(request: web.Request) -> web.Response:
    tid = task_id(request)
    if not await request.app[CLIENTS].service.delete_dead_letter(tid):
        raise await _missing(request, tid)
    return web.Response(status=204)


async def _missing(request: web.Request, tid: str) -> Problem:
    if await request.app[CLIENTS].service.get(tid) is None:
        return Problem(404, "task-not-found", "no task with this id")
    return Problem(404, "not-a-dead-letter", "the task is not failed")


def _refused(exc: JobError) -> Problem:
    if isinstance(exc, TaskNotFound):
        return Problem(404, exc.code, str(exc))
    return Problem(409, exc.code, str(exc))


async def release_review(request: web.Request) -> web.Response:
    tid, reason = task_id(request), body(request, models.Reason).reason
    try:
        task = await request.app[CLIENTS].service.release_review(tid, reason)
    except (TaskNotFound, InvalidTaskState) as exc:
        raise _refused(exc) from None
    return accepted(task)


async def cancel(request: web.Request) -> web.Response:
    tid, reason = task_id(request), body(request, models.Reason).reason
    try:
        task = await request.app[CLIENTS].service.cancel(tid, reason)
    except (TaskNotFound, InvalidTaskState) as exc:
        raise _refused(exc) from None
    return web.json_response(await task_view(request, task))


async def promote(request: web.Request) -> web.Response:
    try:
        task, moved = await request.app[CLIENTS].service.promote(task_id(request))
    except (TaskNotFound, InvalidTaskState) as exc:
        raise _refused(exc) from None
    return web.json_response({"taskId": task.id, "state": task.state.value, "moved": moved})


PAGE = Response("One page, newest first", models.TaskPage)
BAD_ID = (400, ["invalid-task-id"])
NOT_FOUND = (404, ["task-not-found"])
DEAD_404 = (404, ["task-not-found", "not-a-dead-letter"])
STATE_409 = (409, ["invalid-task-state"])
BAD_PRIORITY = (422, ["invalid-priority"])
QUEUE_STATE = Response("The queue's state now", models.QueueState)
OPERATIONS = [
    Operation(
        "GET", "/v1/admin/queues", queues, "listQueues", "Every priority's queue", "admin",
        responses={200: Response("All five queues, in priority order", models.Queues)},
    ),
    Operation(
        "POST", "/v1/admin/queues/{priority}/pause", pause, "pauseQueue",
        "Stop workers claiming from a priority", "admin",
        responses={200: QUEUE_STATE}, problems=[BAD_PRIORITY], parameters=["Priority"],
    ),
    Operation(
        "POST", "/v1/admin/queues/{priority}/resume", resume, "resumeQueue",
        "Let workers claim from a priority again", "admin",
        responses={200: QUEUE_STATE}, problems=[BAD_PRIORITY], parameters=["Priority"],
    ),
    Operation(
        "GET", "/v1/admin/dead-letters", dead_letters, "listDeadLetters",
        "List dead letters (failed tasks), newest first", "admin",
        responses={200: PAGE}, problems=[(400, ["invalid-query"])], query=models.PageQuery,
    ),
    Operation(
        "POST", "/v1/admin/dead-letters/retry", retry_dead_letters, "retryDeadLetters",
        f"Retry dead letters, at most {RETRY_ALL_LIMIT} per call", "admin",
        responses={200: Response("How many were retried", models.Retried)},
        problems=[(400, ["invalid-query"])], query=models.TypeQuery,
    ),
    Operation(
        "POST", "/v1/admin/dead-letters/{taskId}/retry", retry_dead_letter, "retryDeadLetter",
        "Retry one dead letter with a fresh attempt budget", "admin",
        responses={202: ACCEPTED}, problems=[BAD_ID, DEAD_404], parameters=["TaskId"],
    ),
    Operation(
        "DELETE", "/v1/admin/dead-letters/{taskId}", delete_dead_letter, "deleteDeadLetter",
        "Delete one dead letter", "admin",
        responses={204: Response("Deleted")}, problems=[BAD_ID, DEAD_404],
        parameters=["TaskId"],
    ),
    Operation(
        "GET", "/v1/admin/tasks", all_tasks, "listAllTasks",
        "List every client's tasks (or one client's), newest first", "admin",
        responses={200: PAGE}, problems=[(400, ["invalid-query"])], query=models.AdminTaskQuery,
    ),
    Operation(
        "GET", "/v1/admin/tasks/{taskId}", any_task, "getAnyTask", "Any task's status", "admin",
        responses={200: Response("The task", models.Task)}, problems=[BAD_ID, NOT_FOUND],
        parameters=["TaskId"],
    ),
    Operation(
        "GET", "/v1/admin/review", in_review, "listInReview",
        "List tasks parked for review (needs_review), newest first", "admin",
        responses={200: PAGE}, problems=[(400, ["invalid-query"])], query=models.PageQuery,
    ),
    Operation(
        "POST", "/v1/admin/tasks/{taskId}/release", release_review, "releaseReview",
        "Let a parked task run again, with a fresh attempt budget", "admin",
        responses={202: ACCEPTED},
        problems=[(400, ["invalid-json", "invalid-task-id"]), NOT_FOUND, STATE_409, 413, 415,
                  (422, ["invalid-body", "invalid-payload"])],
        body=models.Reason, parameters=["TaskId"],
        description="The reason is logged with the release. Only a `needs_review` task.",
    ),
    Operation(
        "POST", "/v1/admin/tasks/{taskId}/cancel", cancel, "cancelTask",
        "Cancel a task no worker holds", "admin",
        responses={200: Response("The cancelled task", models.Task)},
        problems=[(400, ["invalid-json", "invalid-task-id"]), NOT_FOUND, STATE_409, 413, 415,
                  (422, ["invalid-body", "invalid-payload"])],
        body=models.Reason, parameters=["TaskId"],
        description=(
            "`pending`, `queued`, `retrying` or `needs_review` -> `cancelled`, the reason "
            "recorded as its last error. An `active` task is not cancelled (409): its "
            "handler may be mid-way through something that must finish."
        ),
    ),
    Operation(
        "POST", "/v1/admin/tasks/{taskId}/promote", promote, "promoteTask",
        "Run a delayed (scheduled or retrying) task now", "admin",
        responses={200: Response("The task, due now", models.Promoted)},
        problems=[BAD_ID, NOT_FOUND, STATE_409], parameters=["TaskId"],
    ),
]  # fmt: skip
