"""Client routes: submit jobs and read tasks."""

from __future__ import annotations

from aiohttp import web

from relayq.api.keys import CLIENT, CLIENTS, PROCESS
from relayq.api.problems import Problem
from relayq.api.requests import job_request, json_object, page_query, task_id, task_state, trace_of
from relayq.core.jobs import InvalidPayload, Task, UnknownJobType
from relayq.core.modules import task_views
from relayq.core.service import IDEMPOTENCY_KEY_MAX_LENGTH
from relayq.core.store import IdempotencyConflict


def accepted(task: Task, status: int = 202) -> web.Response:
    return web.json_response(
        {"taskId": task.id, "status": task.state.value, "priority": task.priority.value},
        status=status,
        headers={"Location": f"/v1/tasks/{task.id}"},
    )


async def submit_job(request: web.Request) -> web.Response:
    body = await json_object(request)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH:
        raise Problem(
            422,
            "invalid-payload",
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} characters",
            field="Idempotency-Key",
        )
    job = job_request(body, key, request[CLIENT], trace_of(request))
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
    if task is None:
        raise Problem(404, "task-not-found", "no task with this id")
    clients = request.app[CLIENTS]
    view = task.to_public()
    view.update(await task_views(clients.settings.job_modules, task, request.app[PROCESS]))
    return web.json_response(view)


async def list_tasks(request: web.Request) -> web.Response:
    query = page_query(request)
    page = await request.app[CLIENTS].service.list_tasks(state=task_state(request), **query)
    return web.json_response(
        {"tasks": [t.to_public() for t in page.tasks], "nextCursor": page.next_cursor}
    )
