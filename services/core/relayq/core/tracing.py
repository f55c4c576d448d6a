"""OpenTelemetry tracing: an HTTP request, the job it enqueued, and the job's run, in one trace.

Tracing is off unless an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `RELAYQ_OTLP_ENDPOINT`); then spans go
to it over OTLP/HTTP. Off, every span is a non-recording no-op, so the code
paths are the same either way.

The trace context crosses the queue inside the task record: the API stores the
W3C `traceparent` of its request span in the task's `trace`, and the worker's
run span is a child of it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

ENDPOINT_VARIABLES = (
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "RELAYQ_OTLP_ENDPOINT",
)
TRACES_PATH = "/v1/traces"

_propagator = TraceContextTextMapPropagator()
# Our own provider rather than only the global one: the global can be set once
# per process, and tests install an in-memory exporter and remove it again.
_provider: TracerProvider | None = None


def otlp_endpoint(environ: Mapping[str, str] | None = None) -> str | None:
    """The OTLP/HTTP traces URL the environment names, or None when tracing is off."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    for name in ENDPOINT_VARIABLES[1:]:
        if env.get(name):
            return env[name].rstrip("/") + TRACES_PATH
    return None


def configure_tracing(
    service_name: str,
    environ: Mapping[str, str] | None = None,
    *,
    processor: SpanProcessor | None = None,
) -> TracerProvider | None:
    """Export spans over OTLP/HTTP if the environment names an endpoint; else stay a no-op.

    `processor` replaces the OTLP exporter (tests pass an in-memory one).
    Returns the provider, or None when tracing stays off.
    """
    global _provider
    from_env = processor is None
    if processor is None:
        endpoint = otlp_endpoint(environ)
        if endpoint is None:
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter: SpanExporter = OTLPSpanExporter(endpoint=endpoint)
        processor = BatchSpanProcessor(exporter)
    env = os.environ if environ is None else environ
    name = env.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(processor)
    if from_env and environ is None:
        # Let libraries that use the global API export through the same provider.
        trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def shutdown_tracing() -> None:
    """Flush and stop the configured provider (on process exit, and in tests)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
    _provider = None


def tracing_on() -> bool:
    """Whether spans record: a provider was configured here, or someone set the global one."""
    return _provider is not None or not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider
    )


def tracer(name: str = "relayq") -> Tracer:
    if _provider is not None:
        return _provider.get_tracer(name)
    return trace.get_tracer(name)


def context_from_traceparent(traceparent: str | None) -> Context | None:
    """The remote parent a W3C traceparent names, or None if absent or malformed."""
    if not traceparent:
        return None
    ctx = _propagator.extract({"traceparent": traceparent})
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, or None when no span is recording."""
    span = trace.get_current_span()
    if not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def server_span(method: str, traceparent: str | None, *, traced: bool = True) -> Iterator[Span]:
    """The span of one HTTP request, a child of the caller's traceparent if it sent one.

    The caller names it by route and sets the response status with
    `finish_server_span`. `traced=False` (probes, scrapes) gives a no-op span.
    """
    if not traced or not tracing_on():
        yield trace.INVALID_SPAN
        return
    with tracer("relayq.api").start_as_current_span(
        method,
        context=context_from_traceparent(traceparent),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method},
    ) as span:
        yield span


def finish_server_span(span: Span, method: str, route: str, status: int, request_id: str) -> None:
    span.update_name(f"{method} {route}")
    span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    span.set_attribute("relayq.request_id", request_id)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


@contextmanager
def job_span(
    task_id: str,
    job_type: str,
    priority: str,
    attempt: int,
    traceparent: str | None,
    *,
    not_failures: tuple[type[BaseException], ...] = (),
) -> Iterator[Span]:
    """The span of one run of a job's handler, a child of the enqueuing request's span.

    An exception marks it failed (unless it is one of `not_failures`) and propagates.
    With tracing off it is the invalid span, at no cost on the job path.
    """
    if not tracing_on():
        yield trace.INVALID_SPAN
        return
    with tracer("relayq.worker").start_as_current_span(
        f"run {job_type}",
        context=context_from_traceparent(traceparent),
        kind=SpanKind.CONSUMER,
        attributes={
            "relayq.task.id": task_id,
            "relayq.task.type": job_type,
            "relayq.task.priority": priority,
            "relayq.task.attempt": attempt,
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except asyncio.CancelledError:
            span.set_attribute("relayq.task.abandoned", True)  # shutdown, not a failure
            raise
        except not_failures:
            raise
        except BaseException as exc:
            record_failure(span, exc)
            raise


def record_failure(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


@contextmanager
def chain_span(service: str, method: str) -> Iterator[Span]:
    """A client span around one call to a chain service (rpc, jito, swap).

    Use it around each request, inside the job's run span:
    `with chain_span("rpc", "getSignatureStatuses"): ...`; an exception marks
    the span failed and propagates.
    """
    with tracer("relayq.chain").start_as_current_span(
        f"{service} {method}",
        kind=SpanKind.CLIENT,
        attributes={"relayq.chain.service": service, "relayq.chain.method": method},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            record_failure(span, exc)
            raise
