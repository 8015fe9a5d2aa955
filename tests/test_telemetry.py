"""Traces of inference requests, sent by the OpenTelemetry SDK's OTLP/HTTP exporter to an
OTLP receiver on loopback (aiohttp, decoding the protobuf bodies with opentelemetry-proto),
and the off state that must cost nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as ProtoStatus

from palyra.config import TelemetryConfig
from palyra.errors import InvalidRequest, ProviderError
from palyra.telemetry import NULL_SPAN, TRACING, Tracing, operation_for
from palyra.types import RouteInfo
from tests.conftest import ADMIN_TOKEN, UPSTREAM_KEY, GatewayFactory, gateway_config
from tests.fakes.upstream import ErrorReply, FakeUpstream
from tests.support.daemon import free_port

SERVER = ProtoSpan.SpanKind.SPAN_KIND_SERVER
CLIENT = ProtoSpan.SpanKind.SPAN_KIND_CLIENT
INTERNAL = ProtoSpan.SpanKind.SPAN_KIND_INTERNAL
ERROR = ProtoStatus.StatusCode.STATUS_CODE_ERROR
UNSET = ProtoStatus.StatusCode.STATUS_CODE_UNSET


@dataclass
class Received:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    attributes: dict[str, Any]
    status: int
    resource: dict[str, Any]


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    return getattr(value, which) if which else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


class OtlpReceiver:
    """An OTLP/HTTP trace receiver: POST /v1/traces with ExportTraceServiceRequest bodies."""

    def __init__(self) -> None:
        self.bodies: list[ExportTraceServiceRequest] = []
        self.content_types: list[str] = []
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self.server = TestServer(app, host="127.0.0.1")

    async def _traces(self, request: web.Request) -> web.Response:
        self.content_types.append(request.content_type)
        self.bodies.append(ExportTraceServiceRequest.FromString(await request.read()))
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    @property
    def endpoint(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def spans(self) -> list[Received]:
        found: list[Received] = []
        for body in self.bodies:
            for resource_spans in body.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        found.append(
                            Received(
                                name=span.name,
                                kind=span.kind,
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_span_id=span.parent_span_id.hex(),
                                start_ns=span.start_time_unix_nano,
                                attributes=_attributes(span.attributes),
                                status=span.status.code,
                                resource=resource,
                            )
                        )
        return sorted(found, key=lambda s: s.start_ns)


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    otlp = OtlpReceiver()
    await otlp.server.start_server()
    yield otlp
    await otlp.server.close()


@pytest.fixture
async def tracing(receiver: OtlpReceiver) -> AsyncIterator[Tracing]:
    TRACING.configure(TelemetryConfig(otlp_endpoint=receiver.endpoint, service_name="palyra-test"))
    try:
        yield TRACING
    finally:
        await TRACING.shutdown()


async def received(tracing: Tracing, receiver: OtlpReceiver) -> list[Received]:
    # The exporter posts from its own thread to the receiver on this loop: awaited, not
    # blocked on.
    assert await tracing.flush()
    return receiver.spans()


def one(spans: list[Received], name: str) -> Received:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


async def test_a_request_is_a_trace_of_nested_spans(
    tracing: Tracing, receiver: OtlpReceiver
) -> None:
    async def relay() -> AsyncIterator[str]:
        # Where a stream's span lives: in the relay, open across its yields.
        with tracing.stream() as stream:
            yield "Hel"
            yield "lo"
            stream.response_model("claude-sonnet-4-5-20250929")
            stream.record_usage(12, 34)

    with tracing.request("/v1/chat/completions", "chat") as request:
        request.request_model("gpt-x")
        with tracing.routing():
            for attempt in (0, 1):  # a try and its retry, both failing
                with (
                    pytest.raises(ProviderError),
                    tracing.attempt(
                        "oai",
                        "openai_compatible",
                        "gpt-x",
                        "gpt-4o-mini",
                        attempt,
                        base_url="http://127.0.0.1:9/v1",
                    ),
                ):
                    raise ProviderError("overloaded", provider_id="oai", upstream_status=503)
            with tracing.attempt(
                "claude",
                "anthropic",
                "gpt-x",
                "claude-sonnet-4-5",
                0,
                base_url="https://api.anthropic.com",
            ):
                pass  # the first token came
        assert [part async for part in relay()] == ["Hel", "lo"]
        request.set_route(RouteInfo("gpt-x", "claude", retries=1, failovers=1))
        request.http_status(200)

    spans = await received(tracing, receiver)
    assert receiver.content_types and set(receiver.content_types) == {"application/x-protobuf"}
    assert [s.name for s in spans] == [
        "chat gpt-x",
        "palyra.routing",
        "chat gpt-4o-mini",
        "chat gpt-4o-mini",
        "chat claude-sonnet-4-5",
        "palyra.stream",
    ]
    root, routing, failed, retried, served, stream = spans
    assert {s.trace_id for s in spans} == {root.trace_id}
    assert root.parent_span_id == ""
    assert routing.parent_span_id == root.span_id
    assert {s.parent_span_id for s in (failed, retried, served)} == {routing.span_id}
    assert stream.parent_span_id == root.span_id
    assert root.resource["service.name"] == "palyra-test"

    assert (root.kind, routing.kind, served.kind, stream.kind) == (
        SERVER,
        INTERNAL,
        CLIENT,
        INTERNAL,
    )
    assert root.status == UNSET
    assert root.attributes == {
        "http.route": "/v1/chat/completions",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-x",
        # From the attempt that served, the stream and the route:
        "gen_ai.system": "anthropic",
        "gen_ai.provider.name": "anthropic",
        "server.address": "api.anthropic.com",
        "server.port": 443,
        "gen_ai.response.model": "claude-sonnet-4-5-20250929",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 34,
        "palyra.provider_id": "claude",
        "palyra.model_id": "gpt-x",
        "palyra.deployment": "gpt-x@claude",
        "palyra.retries": 1,
        "palyra.failovers": 1,
        "http.response.status_code": 200,
    }
    for span, attempt in ((failed, 0), (retried, 1)):
        assert span.status == ERROR
        assert span.attributes == {
            "gen_ai.system": "openai",
            "gen_ai.provider.name": "openai",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "palyra.provider_id": "oai",
            "palyra.model_id": "gpt-x",
            "palyra.deployment": "gpt-x@oai",
            "palyra.attempt": attempt,
            "server.address": "127.0.0.1",
            "server.port": 9,
            "error.type": "upstream_error",
            "http.response.status_code": 503,
        }
    assert served.status == UNSET
    assert "error.type" not in served.attributes
    assert served.attributes["gen_ai.system"] == "anthropic"
    assert served.attributes["palyra.deployment"] == "gpt-x@claude"
    assert stream.status == UNSET
    assert stream.attributes == {
        "gen_ai.response.model": "claude-sonnet-4-5-20250929",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 34,
    }


async def test_the_clients_traceparent_is_the_requests_parent(
    tracing: Tracing, receiver: OtlpReceiver
) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = {"traceparent": f"00-{trace_id}-{parent_id}-01", "x-other": "1"}
    with tracing.request("/v1/embeddings", "embeddings", "embed-x", headers):
        with tracing.attempt("det", "deterministic", "embed-x", "embed-x", 0):
            pass
    with tracing.request("/v1/embeddings", "embeddings", "embed-x", {"x-other": "1"}):
        pass

    spans = await received(tracing, receiver)
    joined, attempt, fresh = spans
    assert (joined.trace_id, joined.parent_span_id) == (trace_id, parent_id)
    assert joined.name == "embeddings embed-x"
    assert attempt.trace_id == trace_id and attempt.parent_span_id == joined.span_id
    assert attempt.attributes["gen_ai.operation.name"] == "embeddings"
    assert attempt.attributes["gen_ai.system"] == "palyra.deterministic"
    assert "server.address" not in attempt.attributes  # (a deterministic provider has no URL)
    assert joined.attributes["gen_ai.system"] == "palyra.deterministic"
    # Without a traceparent: a trace of its own, whatever span was current before.
    assert fresh.trace_id not in (trace_id, joined.trace_id) and fresh.parent_span_id == ""


async def test_failures_are_marked_with_their_type_and_no_message(
    tracing: Tracing, receiver: OtlpReceiver
) -> None:
    async def relay() -> AsyncIterator[int]:
        with tracing.stream():
            for i in range(10):
                yield i

    with pytest.raises(asyncio.CancelledError), tracing.request("/v1/chat/completions", "chat"):
        stream = relay()
        assert await anext(stream) == 0
        await stream.aclose()  # the client went away mid-stream
        raise asyncio.CancelledError
    with tracing.request("/v1/messages", "chat", "m") as request:
        request.fail(InvalidRequest("secret prompt text is not a number", code="bad_number"))
        request.http_status(400)
    with tracing.request("/v1/messages", "chat", "m") as request:
        request.http_status(502)
    with tracing.request("/v1/messages", "chat", "m") as request:
        with tracing.attempt("oai", "openai_compatible", "m", "m", 0) as attempt:
            attempt.fail(ProviderError("nope", provider_id="oai", upstream_status=500))
        request.http_status(200)
    # Outside a request (an agent's run): an attempt is a trace of its own.
    with tracing.attempt("oai", "openai_compatible", "m", "m", 0):
        pass

    spans = await received(tracing, receiver)
    cancelled, stream, refused, bad_gateway, recovered, failed_attempt, alone = spans
    assert (cancelled.status, cancelled.attributes["error.type"]) == (ERROR, "cancelled")
    assert stream.parent_span_id == cancelled.span_id
    assert (stream.status, stream.attributes["error.type"]) == (ERROR, "cancelled")
    assert (refused.status, refused.attributes["error.type"]) == (ERROR, "bad_number")
    assert refused.attributes["http.response.status_code"] == 400
    assert not any("secret" in str(v) for s in spans for v in s.attributes.values())
    assert (bad_gateway.status, bad_gateway.attributes["error.type"]) == (ERROR, "502")
    # A failed attempt is no failed request; nor does it say who served.
    assert recovered.status == UNSET and "error.type" not in recovered.attributes
    assert "palyra.provider_id" not in recovered.attributes
    assert failed_attempt.attributes["error.type"] == "upstream_error"
    assert failed_attempt.parent_span_id == recovered.span_id
    assert alone.parent_span_id == "" and alone.kind == CLIENT
    assert alone.attributes["gen_ai.operation.name"] == "chat"


async def test_shutdown_turns_tracing_off_and_does_not_wait_on_a_dead_collector() -> None:
    TRACING.configure(TelemetryConfig(otlp_endpoint=f"http://127.0.0.1:{free_port()}"))
    try:
        assert TRACING.enabled
        with TRACING.request("/v1/chat/completions", "chat", "m"):
            pass
    finally:
        started = time.monotonic()
        await TRACING.shutdown(timeout_s=0.5)
    # (The exporter would retry for 10 s; the daemon's stop waits at most the bound.)
    assert time.monotonic() - started < 3
    assert not TRACING.enabled
    assert TRACING.request("/v1/chat/completions", "chat", "m") is NULL_SPAN


def _a_request(tracing: Tracing) -> None:
    route = RouteInfo("m", "p")
    with tracing.request("/v1/chat/completions", "chat", "m") as request:
        with tracing.routing():
            with tracing.attempt("p", "openai_compatible", "m", "um", 0, "http://h") as a:
                a.set("k", 1)
        with tracing.stream() as stream:
            stream.record_usage(1, 2)
            stream.response_model("um")
        request.set_route(route)
        request.http_status(200)


def test_off_every_call_answers_the_one_null_span() -> None:
    off = Tracing()
    assert not off.enabled
    spans = [
        off.request("/v1/chat/completions", "chat", "m", {"traceparent": "x"}),
        off.routing(),
        off.attempt("p", "anthropic", "m", "um", 0, "https://h"),
        off.stream(),
        off.current(),
    ]
    assert all(span is NULL_SPAN for span in spans)
    with off.request("/r", "chat") as span:
        assert span is NULL_SPAN
        span.fail(RuntimeError("x"))  # nothing to do, nothing raised
        span.record_usage(1, 2)
    with pytest.raises(KeyError), off.attempt("p", "anthropic", "m", "um", 0):
        raise KeyError("the null span does not swallow errors")
    assert asyncio.run(off.flush())


def test_off_allocates_nothing_that_outlives_a_call() -> None:
    off = Tracing()
    _a_request(off)  # warm
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(10_000):
            _a_request(off)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # One object kept per call would be 10,000 of them (hundreds of KB).
    assert after - before < 2_000


def test_off_the_sdk_is_never_imported() -> None:
    code = (
        "import sys\n"
        "from palyra.config import TelemetryConfig\n"
        "from palyra import telemetry\n"
        "telemetry.configure(TelemetryConfig())\n"
        "with telemetry.TRACING.request('/v1/chat/completions', 'chat', 'm'):\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_on_the_global_tracer_provider_is_left_alone() -> None:
    # Other libraries in the process keep whatever provider they were given (none here).
    code = (
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from palyra.config import TelemetryConfig\n"
        "from palyra import telemetry\n"
        "t = telemetry.configure(TelemetryConfig(otlp_endpoint='http://127.0.0.1:9'))\n"
        "assert t.enabled\n"
        "print(isinstance(trace.get_tracer_provider(), TracerProvider))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip().splitlines()[-1] == "False"


@pytest.fixture
def restore_tracing() -> Iterator[None]:
    yield
    asyncio.run(TRACING.shutdown())


def test_configure_without_an_endpoint_is_off(restore_tracing: None) -> None:
    from palyra import telemetry

    assert telemetry.configure(TelemetryConfig()) is TRACING
    assert not TRACING.enabled
    assert TRACING.stream() is NULL_SPAN


def test_only_inference_routes_have_an_operation() -> None:
    assert operation_for("/v1/chat/completions") == "chat"
    assert operation_for("/v1/messages") == "chat"
    assert operation_for("/v1/embeddings") == "embeddings"
    assert operation_for("/v1/audio/transcriptions") == "audio_transcription"
    for route in ("/v1/models", "/v1/messages/count_tokens", "/v1/responses/{response_id}"):
        assert operation_for(route) is None


# --- through the daemon ---------------------------------------------------------------


async def test_a_chat_request_through_the_daemon_is_one_trace(
    receiver: OtlpReceiver, tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    async with FakeUpstream(api_key=UPSTREAM_KEY) as upstream:
        config = gateway_config(
            upstream,
            tmp_path / "state",
            failover_enabled=False,
            max_retries=1,
            retry_backoff_ms=1,
            discovery_ttl_ms=3_600_000,
        )
        config.telemetry = TelemetryConfig(otlp_endpoint=receiver.endpoint)
        server = await start_gateway(config)
        try:
            upstream.script("/v1/chat/completions", ErrorReply(503))
            client = AsyncOpenAI(
                api_key=ADMIN_TOKEN, base_url=str(server.make_url("/v1")), max_retries=0
            )
            reply = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
            assert reply.choices[0].message.content
            spans = await received(TRACING, receiver)
        finally:
            await TRACING.shutdown()
    (request,) = [s for s in spans if s.kind == SERVER]  # named by its operation and model
    assert request.name == "chat gpt-4o-mini"
    routing = one(spans, "palyra.routing")
    attempts = [s for s in spans if s.kind == CLIENT]  # one per try, the failed one too
    assert len(attempts) == 2
    assert routing.parent_span_id == request.span_id
    assert {a.parent_span_id for a in attempts} == {routing.span_id}
    assert {s.trace_id for s in spans} == {request.trace_id}
    assert attempts[0].attributes["error.type"]
    assert attempts[1].attributes["gen_ai.usage.input_tokens"] > 0
    assert request.attributes["palyra.retries"] == 1
    assert request.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert request.attributes["palyra.provider_id"] == "oai"
