"""The gateway's HTTP contract, declared once: each route is an `Operation`.

A route module lists its operations (method, path, handler, request and
response models, the problems it may answer). From that one list the gateway
builds its aiohttp routes, validates bodies and query strings before a handler
runs, and generates its OpenAPI 3.1 document (relayq.api.openapi). Models are
pydantic v2: bench/validation_bench.py measured 1.8 µs to check a job body
(msgspec 0.5 µs, the hand-written checks it replaced 5.5 µs), a cost no goal
of the API notices, for field-level error locations and JSON Schema output.

A handler reads what was checked with `body(request, Model)` and
`query(request, Model)`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from relayq.api.problems import Problem

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Tag = Literal["client", "admin", "operations"]
M = TypeVar("M", bound=BaseModel)

BODY = web.RequestKey("relayq_body", BaseModel)
QUERY = web.RequestKey("relayq_query", BaseModel)

# pydantic error types that say a value is out of range rather than of the wrong
# shape: the contract answers those `invalid-payload`, shape errors `invalid-body`.
VALUE_ERRORS = frozenset(
    {
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "finite_number",
        "too_long",
        "too_short",
        "string_too_long",
        "string_too_short",
        "string_pattern_mismatch",
        "value_error",
    }
)


@dataclass(frozen=True)
class Response:
    """One successful answer of an operation.

    Attributes:
        description: what it means.
        model: its JSON body's model; None with `schema` or for no body.
        schema: a raw JSON Schema where no model fits (a constant, a union).
        media_type: the body's media type.
        headers: response header components it carries (OpenAPI `components.headers`).
    """

    description: str
    model: type[BaseModel] | None = None
    schema: Mapping[str, Any] | None = None
    media_type: str = "application/json"
    headers: Sequence[str] = ()


@dataclass(frozen=True)
class Operation:
    """One route of the gateway and everything its contract says.

    Attributes:
        method, path: the route; path parameters in OpenAPI form (`{taskId}`).
        handler: the aiohttp handler; it runs after body and query are checked.
        operation_id, summary, tag: how the document names and groups it.
        responses: status -> successful Response.
        problems: the problem answers it may give: a status (all codes of that
            status in relayq.api.openapi.ERRORS) or (status, [codes]).
        body: the JSON body's model; checked before the handler runs.
        body_problems: how body errors are answered: field -> problem code for a
            value the field refuses (e.g. priority -> invalid-priority).
        query: the query string's model.
        parameters: parameter components: path parameters, headers.
        description: the long form.
    """

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: Tag
    responses: Mapping[int, Response]
    problems: Sequence[int | tuple[int, list[str]]] = ()
    body: type[BaseModel] | None = None
    body_problems: Mapping[str, str] = field(default_factory=dict)
    query: type[BaseModel] | None = None
    parameters: Sequence[str] = ()
    description: str | None = None

    def route(self) -> web.RouteDef:
        return web.route(self.method.upper(), self.path, _checked(self))


def body(request: web.Request, model: type[M]) -> M:
    """The request body as the operation's model, already checked."""
    value = request[BODY]
    assert isinstance(value, model), f"the operation declares no body of {model.__name__}"
    return value


def query(request: web.Request, model: type[M]) -> M:
    """The query string as the operation's model, already checked."""
    value = request[QUERY]
    assert isinstance(value, model), f"the operation declares no query of {model.__name__}"
    return value


def _path_checks() -> dict[str, Callable[[web.Request], object]]:
    """Path parameters checked before the query and the body: a bad id is 400 whatever
    the body says. (Imported here: relayq.api.requests reads the app's keys, which
    name this module's Operation.)"""
    from relayq.api.requests import key_id, priority, task_id

    return {"TaskId": task_id, "Priority": priority, "KeyId": key_id}


def _checked(op: Operation) -> Handler:
    path_checks = _path_checks()
    checks = [path_checks[p] for p in op.parameters if p in path_checks]
    if op.body is None and op.query is None and not checks:
        return op.handler

    async def handler(request: web.Request) -> web.StreamResponse:
        for check in checks:
            check(request)
        if op.query is not None:
            request[QUERY] = _parse_query(request, op.query)
        if op.body is not None:
            request[BODY] = await _parse_body(request, op.body, op.body_problems)
        return await op.handler(request)

    return handler


async def _parse_body(
    request: web.Request, model: type[BaseModel], codes: Mapping[str, str]
) -> BaseModel:
    """The body as `model`, or 415/413/400/422 naming the field."""
    if request.content_type != "application/json":
        raise Problem(415, "unsupported-media-type", "send the body as application/json")
    raw = await request.read()  # bounded by the app's client_max_size: 413 above it
    try:
        # Refuses NaN and Infinity, lone surrogates and nesting past 200 levels.
        value = from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        raise Problem(400, "invalid-json", f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise Problem(422, "invalid-body", "the body must be a JSON object")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise body_problem(exc, codes) from None


def body_problem(exc: ValidationError, codes: Mapping[str, str] | None = None) -> Problem:
    """The first error of a body, as the problem the contract names for it."""
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return Problem(422, "invalid-body", f"{where}: unknown field", field=where)
    if kind == "missing":
        return Problem(422, "invalid-body", f"{where}: required", field=where)
    top = str(error["loc"][0]) if error["loc"] else ""
    message = _message(error)
    if kind in VALUE_ERRORS:
        code = (codes or {}).get(top, "invalid-payload")
        return Problem(422, code, f"{where}: {message}", field=where or None)
    return Problem(422, "invalid-body", f"{where}: {message}", field=where or None)


def _message(error: Mapping[str, Any]) -> str:
    message = str(error["msg"])
    # A ValueError raised by a validator reads "Value error, <its message>".
    return message.removeprefix("Value error, ")


def _parse_query(request: web.Request, model: type[BaseModel]) -> BaseModel:
    """The query string as `model`, or 400 invalid-query naming the parameter."""
    params: dict[str, str] = {}
    for name, value in request.query.items():
        if name in params:
            raise Problem(400, "invalid-query", f"{name} given more than once", field=name)
        params[name] = value
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        raise Problem(400, "invalid-query", f"{where}: {_message(error)}", field=where) from None
