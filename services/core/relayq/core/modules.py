"""Job modules: the job types a process runs, and what they open once per process.

A job module is any importable module named in RELAYQ_JOB_MODULES
(comma-separated). It exports `JOB_TYPES`, a list of JobType, and may export:

- `async def startup(ctx: ProcessContext) -> None`: open the clients its
  handlers need and keep them in `ctx.state` (saq's and arq's worker context);
  run once per process, in the order the modules are named;
- `async def shutdown(ctx: ProcessContext) -> None`: close them; run once, in
  reverse order, for each module whose startup finished;
- `async def task_view(task: Task, ctx: ProcessContext) -> dict | None`: extra
  fields for the task's view in `GET /v1/tasks/{id}`;
- `ROUTES = "package.module"`: a module whose `OPERATIONS` (relayq.api.contract)
  the gateway serves and documents. Only the gateway imports it, so a worker
  never loads web handlers.

Handlers reach the process context as `JobContext.process`, never through
module globals: a module holds no connection of its own.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from relayq.core.diagnostics import DIAGNOSTIC_TYPES
from relayq.core.jobs import JobType, Registry, Task

if TYPE_CHECKING:
    from relayq.core.clients import Clients

Hook = Callable[["ProcessContext"], Awaitable[None]]
TaskView = Callable[[Task, "ProcessContext"], Awaitable[dict[str, Any] | None]]


@dataclass
class ProcessContext:
    """What the job modules of one process share.

    Attributes:
        clients: the process's Redis, MongoDB and job service.
        state: what the modules' startup hooks opened, by a key of each
            module's choosing. A caller may seed it before startup (a test
            hands in a client it opened itself; a module then uses it and
            leaves closing it to that caller).
    """

    clients: Clients
    state: dict[str, Any] = field(default_factory=dict)


def import_modules(names: Iterable[str]) -> list[ModuleType]:
    """The job modules, imported; ImportError names the one that failed."""
    modules = []
    for name in names:
        module = importlib.import_module(name)
        if not isinstance(getattr(module, "JOB_TYPES", None), list):
            raise ImportError(f"job module {name} has no JOB_TYPES list", name=name)
        modules.append(module)
    return modules


def load_registry(names: Iterable[str] = ()) -> Registry:
    """The built-in diagnostic types plus those of the named job modules."""
    registry = Registry(list(DIAGNOSTIC_TYPES))
    for module in import_modules(names):
        job_types: list[JobType] = module.JOB_TYPES
        for job_type in job_types:
            registry.add(job_type)
    return registry


@asynccontextmanager
async def started(names: Iterable[str], ctx: ProcessContext) -> AsyncIterator[ProcessContext]:
    """Run each module's startup; on exit, the shutdown of each that started."""
    async with AsyncExitStack() as stack:
        for module in import_modules(names):
            startup: Hook | None = getattr(module, "startup", None)
            shutdown: Hook | None = getattr(module, "shutdown", None)
            if startup is not None:
                await startup(ctx)
            if shutdown is not None:
                stack.push_async_callback(shutdown, ctx)
        yield ctx


async def task_views(names: Iterable[str], task: Task, ctx: ProcessContext) -> dict[str, Any]:
    """The extra fields the modules add to a task's view."""
    extra: dict[str, Any] = {}
    for module in import_modules(names):
        view: TaskView | None = getattr(module, "task_view", None)
        if view is not None:
            extra.update(await view(task, ctx) or {})
    return extra


def route_modules(names: Iterable[str]) -> list[ModuleType]:
    """The gateway route modules the job modules name (`ROUTES`), imported."""
    routes = []
    for module in import_modules(names):
        name = getattr(module, "ROUTES", None)
        if name is not None:
            routes.append(importlib.import_module(name))
    return routes
