"""OpenTelemetry: one trace from the HTTP request through the queue to the handler's span."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pytest_aiohttp import AiohttpClient

from relayq.core import tracing
from relayq.core.clients import Clients
from relayq.core.jobs import Task, TaskState
from relayq.core.settings import Settings
from relayq.dev.servers import free_port
from tests.conftest import InProcessWorker, wait_until
from tests.gateway import CLIENT, scrape
from tests.integration.conftest import Api, MakeApi

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER = {**CLIENT, "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing("relayq-test", processor=SimpleSpanProcessor(exporter))
    yield exporter
    tracing.shutdown_tracing()


async def run_job(
    api: Api, clients: Clients, body: dict[str, object], headers: dict[str, str]
) -> Task:
    resp = await api.post("/v1/jobs", json=body, headers=headers)
    assert resp.status == 202, await resp.text()
    task_id = (await resp.json())["taskId"]
    task = await clients.store.get(task_id)
    assert task is not None
    async with InProcessWorker(clients, task.priority.value):

        async def finished() -> Task | None:
            t = await clients.store.get(task_id)
            return (
                t if t is not None and t.state in (TaskState.COMPLETED, TaskState.FAILED) else None
            )

        done: Task = await wait_until(finished, 20)
    return done


def one(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [s for s in spans.get_finished_spans() if s.name == name]
    assert len(found) == 1, [s.name for s in spans.get_finished_spans()]
    return found[0]


async def test_one_trace_runs_from_the_http_request_to_the_worker_handler(
    api: Api, clients: Clients, spans: InMemorySpanExporter
) -> None:
    task = await run_job(api, clients, {"type": "noop"}, CALLER)

    server = one(spans, "POST /v1/jobs")
    worker = one(spans, "run noop")
    assert server.kind is SpanKind.SERVER
    assert format(server.context.trace_id, "032x") == CALLER_TRACE
    assert server.parent is not None and format(server.parent.span_id, "016x") == CALLER_SPAN
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/v1/jobs"
    assert server.attributes["http.response.status_code"] == 202
    # The task record carries the request span's context across the queue.
    server_span_id = format(server.context.span_id, "016x")
    assert task.trace["traceparent"] == f"00-{CALLER_TRACE}-{server_span_id}-01"
    assert worker.kind is SpanKind.CONSUMER
    assert worker.context.trace_id == server.context.trace_id
    assert worker.parent is not None and worker.parent.span_id == server.context.span_id
    assert dict(worker.attributes or {}) == {
        "relayq.task.id": task.id,
        "relayq.task.type": "noop",
        "relayq.task.priority": "medium",
        "relayq.task.attempt": 1,
    }
    assert worker.status.status_code is StatusCode.UNSET


async def test_a_request_without_traceparent_starts_a_trace_the_job_joins(
    api: Api, clients: Clients, spans: InMemorySpanExporter
) -> None:
    await run_job(api, clients, {"type": "noop"}, CLIENT)

    server = one(spans, "POST /v1/jobs")
    worker = one(spans, "run noop")
    assert server.parent is None
    assert worker.context.trace_id == server.context.trace_id
    assert worker.parent is not None and worker.parent.span_id == server.context.span_id


async def test_a_failing_handler_marks_its_span_failed_with_the_exception(
    api: Api, clients: Clients, spans: InMemorySpanExporter
) -> None:
    task = await run_job(
        api, clients, {"type": "fail", "payload": {"permanent": True, "message": "no"}}, CALLER
    )

    assert task.state is TaskState.FAILED
    worker = one(spans, "run fail")
    assert worker.status.status_code is StatusCode.ERROR
    assert [e.name for e in worker.events] == ["exception"]
    assert format(worker.context.trace_id, "032x") == CALLER_TRACE


async def test_a_5xx_answer_marks_the_request_span_failed(
    make_api: MakeApi, settings: Settings, spans: InMemorySpanExporter
) -> None:
    down = replace(settings, mongo_url=f"mongodb://127.0.0.1:{free_port()}/")
    api = await make_api(settings=down, mongo_timeout_seconds=0.3)

    resp = await api.post("/v1/jobs", json={"type": "noop"}, headers=CALLER)

    assert resp.status == 503
    server = one(spans, "POST /v1/jobs")
    assert server.status.status_code is StatusCode.ERROR
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 503


def test_chain_span_is_a_child_of_the_current_span_and_records_failures(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.job_span("t1", "buy", "critical", 1, f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"):
        with tracing.chain_span("rpc", "getSignatureStatuses"):
            pass
        with pytest.raises(TimeoutError), tracing.chain_span("jito", "sendBundle"):
            raise TimeoutError("no answer")

    run = one(spans, "run buy")
    ok = one(spans, "rpc getSignatureStatuses")
    failed = one(spans, "jito sendBundle")
    for child in (ok, failed):
        assert child.kind is SpanKind.CLIENT
        assert child.parent is not None and child.parent.span_id == run.context.span_id
    assert dict(ok.attributes or {}) == {
        "relayq.chain.service": "rpc",
        "relayq.chain.method": "getSignatureStatuses",
    }
    assert ok.status.status_code is StatusCode.UNSET
    assert failed.status.status_code is StatusCode.ERROR
    assert run.status.status_code is StatusCode.UNSET


def test_a_malformed_traceparent_is_ignored_and_a_new_trace_starts(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.job_span("t1", "noop", "low", 1, "00-not-a-trace-01"):
        pass

    assert one(spans, "run noop").parent is None


def test_tracing_is_a_no_op_without_an_endpoint() -> None:
    assert tracing.configure_tracing("relayq-test", {}) is None
    assert tracing.otlp_endpoint({}) is None
    with tracing.chain_span("rpc", "getSlot") as span:
        assert not span.is_recording()
    assert tracing.current_traceparent() is None


def test_the_endpoint_comes_from_the_otel_or_relayq_variables() -> None:
    base = "http://collector:4318"
    assert tracing.otlp_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": base}) == base + "/v1/traces"
    assert tracing.otlp_endpoint({"RELAYQ_OTLP_ENDPOINT": base + "/"}) == base + "/v1/traces"
    assert tracing.otlp_endpoint({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": base + "/x"}) == base + "/x"
    assert (
        tracing.otlp_endpoint({"RELAYQ_OTLP_ENDPOINT": base, "OTEL_SDK_DISABLED": "true"}) is None
    )


async def test_spans_are_exported_over_otlp_http_to_the_configured_endpoint() -> None:
    # A receiver at the network boundary that decodes the OTLP/HTTP protobuf body.
    received: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        body = ExportTraceServiceRequest()
        body.ParseFromString(await request.read())
        received.append(body)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        env = {"RELAYQ_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_SERVICE_NAME": "svc-x"}
        assert tracing.configure_tracing("relayq-test", env) is not None
        with tracing.chain_span("swap", "quote"):
            pass
        # The exporter posts from its own thread; shutting down flushes it.
        await asyncio.to_thread(tracing.shutdown_tracing)
    finally:
        await runner.cleanup()

    assert len(received) == 1
    resource_spans = received[0].resource_spans[0]
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert service["service.name"] == "svc-x"
    assert [s.name for s in resource_spans.scope_spans[0].spans] == ["swap quote"]


async def test_probes_and_scrapes_make_no_spans(
    api: Api, spans: InMemorySpanExporter, aiohttp_client: AiohttpClient
) -> None:
    for path in ("/healthz", "/readyz"):
        assert (await api.get(path, headers=CALLER)).status == 200
    await scrape(aiohttp_client, api)
    assert (await api.get("/v1/tasks", headers=CALLER)).status == 200

    assert [s.name for s in spans.get_finished_spans()] == ["GET /v1/tasks"]
