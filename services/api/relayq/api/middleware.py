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

from relayq.api.auth import KeyRing, presented_secret, unauthorized
from relayq.api.keys import CLIENT, KEYRING, LIMITS, QUEUE, REQUEST_ID, SETTINGS
from relayq.api.limits import retry_after, source_of
from relayq.api.problems import Problem, unavailable
from relayq.core.telemetry import API_REQUEST_SECONDS, API_REQUESTS, log_event
from relayq.core.tracing import finish_server_span, server_span

log = logging.getLogger("relayq.api")
access_log = logging.getLogger("relayq.api.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
VALID_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
# Probes every few seconds would drown the traces that matter (scrapes go to
# the metrics port, relayq.api.metrics, which traces nothing).
UNTRACED_PATHS = frozenset({"/healthz", "/readyz"})
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
    """Client routes need a client key, admin routes the admin token.

    Before any credential is checked, the source address meets its ceiling;
    a source out of failed-authentication budget gets 429 for any credential
    not already known, so random keys cost no MongoDB lookups.
    """
    path = request.path
    if not path.startswith("/v1/"):
        return await handler(request)
    limits = request.app[LIMITS]
    source = source_of(request, request.app[SETTINGS].source_header)
    wait = limits.sources.take(source)
    if wait > 0:
        raise Problem(429, "rate-limited", "too many requests from this source",
                      headers=retry_after(wait))  # fmt: skip
    keyring = request.app[KEYRING]
    secret = presented_secret(request)
    known = secret is not None and (keyring.is_admin(secret) or keyring.known_now(secret))
    if not known and not limits.failures.available(source):
        raise Problem(429, "rate-limited", "too many failed authentications from this source",
                      headers=retry_after(1 / limits.failures.rate))  # fmt: skip
    try:
        return await _authenticated(request, handler, keyring, secret)
    except Problem as problem:
        if problem.status == 401:
            limits.failures.take(source)
        raise


async def _authenticated(
    request: web.Request, handler: Handler, keyring: KeyRing, secret: str | None
) -> web.StreamResponse:
    if secret is None:
        raise unauthorized("send Authorization: Bearer <key> (or X-API-Key)")
    admin = keyring.is_admin(secret)
    if request.path.startswith("/v1/admin/"):
        if admin:
            request[CLIENT] = "admin"
            wait = request.app[LIMITS].admin.take("admin")
            if wait > 0:
                raise Problem(429, "rate-limited", "too many admin requests",
                              headers=retry_after(wait))  # fmt: skip
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
    """The per-client limit, shared by every replica through Redis.

    Fails open: with Redis down the client is served (submissions are then
    recorded `pending`); the in-process limits above still hold.
    """
    limit = request.app[SETTINGS].rate_limit_per_s
    try:
        wait = await request.app[QUEUE].rate_limit(f"api:{client}", limit, 1.0, burst=limit)
    except (RedisError, OSError):
        return
    if wait > 0:
        raise Problem(
            429,
            "rate-limited",
            f"more than {limit} requests per second for this key",
            headers=retry_after(wait),
        )
