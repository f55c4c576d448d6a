"""Admin routes: queues, pause and resume, dead letters."""

from __future__ import annotations

from aiohttp import web

from relayq.api.jobs import accepted
from relayq.api.keys import CLIENTS
from relayq.api.problems import Problem
from relayq.api.requests import page_query, parse_priority, task_id

RETRY_ALL_LIMIT = 1000


async def queues(request: web.Request) -> web.Response:
    overview = await request.app[CLIENTS].service.overview()
    return web.json_response({"queues": [o.to_public() for o in overview]})


async def pause(request: web.Request) -> web.Response:
    priority = parse_priority(request.match_info["priority"], field="priority")
    await request.app[CLIENTS].service.pause(priority)
    return web.json_response({"priority": priority.value, "paused": True})


async def resume(request: web.Request) -> web.Response:
    priority = parse_priority(request.match_info["priority"], field="priority")
    await request.app[CLIENTS].service.resume(priority)
    return web.json_response({"priority": priority.value, "paused": False})


async def dead_letters(request: web.Request) -> web.Response:
    page = await request.app[CLIENTS].store.dead_letters(**page_query(request))
    return web.json_response(
        {"tasks": [t.to_public() for t in page.tasks], "nextCursor": page.next_cursor}
    )


async def retry_dead_letter(request: web.Request) -> web.Response:
    tid = task_id(request)
    service = request.app[CLIENTS].service
    task = await service.retry_dead_letter(tid)
    if task is None:
        raise await _missing(request, tid)
    return accepted(task)


async def retry_dead_letters(request: web.Request) -> web.Response:
    job_type = request.query.get("type")
    retried = await request.app[CLIENTS].service.retry_dead_letters(
        type_=job_type, limit=RETRY_ALL_LIMIT
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
