"""Client routes: submit jobs and read tasks."""

from __future__ import annotations

from aiohttp import web

from relayq.api import models
from relayq.api.contract import Operation, Response, body, query
from relayq.api.keys import CLIENT, CLIENTS, PROCESS
from relayq.api.problems import Problem
from relayq.api.requests import idempotency_key, task_id, trace_of
from relayq.core.jobs import InvalidPayload, Task, UnknownJobType
from relayq.core.modules import task_views
from relayq.core.service import JobRequest
from relayq.core.store import IdempotencyConflict


def accepted(task: Task, status: int = 202) -> web.Response:
    return web.json_response(
        {"taskId": task.id, "status": task.state.value, "priority": task.priority.value},
        status=status,
        headers={"Location": f"/v1/tasks/{task.id}"},
    )


async def submit_job(request: web.Request) -> web.Response:
    req = body(request, models.JobRequest)
    job = JobRequest(
        type=req.type,
        payload=req.payload,
        priority=req.priority,
        delay_seconds=req.delaySeconds,
        run_at=req.runAt,
        max_attempts=req.maxAttempts,
        idempotency_key=idempotency_key(request),
        client=request[CLIENT],
        trace=trace_of(request),
    )
    service = request.app[CLIENTS].service
    try:
        if service.registry.get(job.type).internal:
            raise Problem(
                422, "internal-job-type", f"{job.type} jobs are created by relayq itself",
                field="type",
            )  # fmt: skip
        submitted = await service.submit(job)
    except UnknownJobType as exc:
        raise Problem(422, exc.code, str(exc), field="type") from None
    except InvalidPayload as exc:
        raise Problem(422, exc.code, str(exc), field=exc.field) from None
    except IdempotencyConflict as exc:
        raise Problem(409, exc.code, str(exc), field="Idempotency-Key") from None
    response = accepted(submitted.task)
    if not submitted.created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


async def get_task(request: web.Request) -> web.Response:
    task = await request.app[CLIENTS].service.get(task_id(request))
    # Another client's task is not found, rather than forbidden: no existence oracle.
    if task is None or task.owner != request[CLIENT]:
        raise Problem(404, "task-not-found", "no task with this id")
    return web.json_response(await task_view(request, task))


async def task_view(request: web.Request, task: Task) -> dict[str, object]:
    """A task's public view with what its job module adds (a purchase's chain view)."""
    view = task.to_public()
    modules = request.app[CLIENTS].settings.job_modules
    view.update(await task_views(modules, task, request.app[PROCESS]))
    return view


async def list_tasks(request: web.Request) -> web.Response:
    q = query(request, models.TaskListQuery)
    page = await request.app[CLIENTS].service.list_tasks(
        state=q.state, type_=q.type, limit=q.limit, cursor=q.cursor, owner=request[CLIENT]
    )
    return web.json_response(
        {"tasks": [t.to_public() for t in page.tasks], "nextCursor": page.next_cursor}
    )


ACCEPTED = Response("Accepted", models.TaskAccepted, headers=["Location"])
OPERATIONS = [
    Operation(
        "POST", "/v1/jobs", submit_job, "submitJob", "Submit a job", "client",
        responses={202: Response("Accepted", models.TaskAccepted,
                                 headers=["Location", "IdempotentReplayed"])},
        problems=[(400, ["invalid-json"]), 409, 413, 415,
                  (422, ["invalid-body", "invalid-payload", "invalid-priority",
                         "unknown-job-type", "internal-job-type"])],
        body=models.JobRequest,
        body_problems={"priority": "invalid-priority"},
        parameters=["IdempotencyKey", "Traceparent"],
        description=(
            "Records the task in MongoDB, then dispatches it through Redis. `pending` means "
            "Redis was unreachable: the task is recorded and dispatched when Redis returns. "
            "The request's X-Request-Id and traceparent travel into the task's `trace`."
        ),
    ),
    Operation(
        "GET", "/v1/tasks", list_tasks, "listTasks", "List the caller's tasks, newest first",
        "client",
        responses={200: Response("One page, newest first", models.TaskPage)},
        problems=[(400, ["invalid-query"])],
        query=models.TaskListQuery,
    ),
    Operation(
        "GET", "/v1/tasks/{taskId}", get_task, "getTask", "A task's status", "client",
        responses={200: Response("The task", models.Task)},
        description="Another client's task is 404, as a task that does not exist.",
        problems=[(400, ["invalid-task-id"]), (404, ["task-not-found"])],
        parameters=["TaskId"],
    ),
]  # fmt: skip
