"""Request id, authentication, rate limits, error rendering, access log and metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from relayq.api.auth import presented_secret, unauthorized
from relayq.api.keys import CLIENT, KEYRING, QUEUE, REQUEST_ID, SETTINGS
from relayq.api.problems import Problem, unavailable
from relayq.core.telemetry import API_REQUEST_SECONDS, API_REQUESTS, log_event
from relayq.core.tracing import finish_server_span, server_span

log = logging.getLogger("relayq.api")
access_log = logging.getLogger("relayq.api.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
VALID_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
# Probes and scrapes every few seconds would drown the traces that matter.
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
HTTP_CODES = {
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    415: "unsupported-media-type",
}


def route_name(request: web.Request) -> str:
    """The route template (bounded label values), not the raw path."""
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return "unmatched"
    return info.route.resource.canonical


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: request id, problem rendering, access log and metrics."""
    given = request.headers.get("X-Request-Id", "")
    rid = given if VALID_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    request[REQUEST_ID] = rid
    traced = request.path not in UNTRACED_PATHS
    with server_span(request.method, request.headers.get("traceparent"), traced=traced) as span:
        started = time.perf_counter()
        response: web.StreamResponse
        try:
            response = await handler(request)
        except Problem as problem:
            response = problem.response(rid)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = HTTP_CODES.get(exc.status, "invalid-body" if exc.status < 500 else "internal")
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            response = Problem(exc.status, code, exc.reason, headers=headers).response(rid)
        except PyMongoError as exc:
            log_event(
                log, logging.WARNING, "task store unavailable", request_id=rid, error=str(exc)
            )
            response = unavailable(
                "store-unavailable", "the task store cannot be reached; nothing was accepted"
            ).response(rid)
        except (RedisError, OSError) as exc:
            log_event(log, logging.WARNING, "redis unavailable", request_id=rid, error=str(exc))
            response = unavailable(
                "queue-unavailable", "the queue (Redis) cannot be reached; try again"
            ).response(rid)
        except Exception:
            log.exception("unhandled error", extra={"request_id": rid})
            response = Problem(500, "internal", f"internal error; request id {rid}").response(rid)
        response.headers["X-Request-Id"] = rid
        elapsed = time.perf_counter() - started
        route = route_name(request)
        API_REQUESTS.labels(method=request.method, route=route, status=str(response.status)).inc()
        API_REQUEST_SECONDS.labels(route=route).observe(elapsed)
        finish_server_span(span, request.method, route, response.status, rid)
    access_log.info(
        "request",
        extra={
            "request_id": rid,
            "method": request.method,
            "route": route,
            "path": request.path,
            "status": response.status,
            "duration_ms": round(elapsed * 1000, 2),
            "client": request.get(CLIENT),
        },
    )
    return response


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Client routes need a client key, admin routes the admin token."""
    path = request.path
    if not path.startswith("/v1/"):
        return await handler(request)
    secret = presented_secret(request)
    if secret is None:
        raise unauthorized("send Authorization: Bearer <key> (or X-API-Key)")
    keyring = request.app[KEYRING]
    admin = keyring.is_admin(secret)
    if path.startswith("/v1/admin/"):
        if admin:
            request[CLIENT] = "admin"
            return await handler(request)
        if await keyring.client_for(secret) is not None:
            raise Problem(403, "forbidden", "admin routes need the admin token")
        raise unauthorized("unknown credentials")
    if admin:
        raise Problem(403, "forbidden", "client routes need a client API key")
    client = await keyring.client_for(secret)
    if client is None:
        raise unauthorized("unknown credentials")
    request[CLIENT] = client
    await _rate_limit(request, client)
    return await handler(request)


async def _rate_limit(request: web.Request, client: str) -> None:
    limit = request.app[SETTINGS].rate_limit_per_s
    try:
        wait = await request.app[QUEUE].rate_limit(f"api:{client}", limit, 1.0, burst=limit)
    except (RedisError, OSError):
        return  # no Redis, no shared limit: serve rather than refuse
    if wait > 0:
        retry_after = max(1, int(wait + 0.999))
        raise Problem(
            429,
            "rate-limited",
            f"more than {limit} requests per second for this key",
            headers={"Retry-After": str(retry_after)},
        )
