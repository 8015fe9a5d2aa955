"""OpenTelemetry traces of inference requests (`[telemetry] otlp_endpoint`).

Each request is a trace: its span, the routing span, one span per upstream attempt (a retry
is another attempt) and the stream's span, nested by the OpenTelemetry context wherever the
callers open them, and carrying the GenAI semantic-convention attributes. The SDK's
BatchSpanProcessor hands finished spans to the OTLP/HTTP exporter in its own thread: the
request path only appends to a bounded queue (spans past it are dropped, never waited for).

Off (the default) nothing of OpenTelemetry is imported, and every call below answers the one
shared `NULL_SPAN`, whose methods do nothing: what a request pays for them is mostly Python's
own `with` protocol (benchmarks/README.md has the figures), and none of them makes an object
of ours (tests/test_telemetry.py holds it to that).

Several daemons in one process share the one `TRACING` (only tests do that).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import urlsplit

import structlog

from palyra.config import TelemetryConfig, redact_url

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span as OtelSpan
    from opentelemetry.trace import SpanKind, Status, Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "NULL_SPAN",
    "TRACING",
    "RouteLike",
    "Span",
    "Tracing",
    "configure",
    "operation_for",
    "shutdown",
    "system_for",
]

log = structlog.get_logger("palyra.telemetry")

Attribute = str | int | float | bool

# GenAI semantic conventions (and the HTTP/server ones they lean on).
GEN_AI_SYSTEM: Final = "gen_ai.system"
# The newer conventions' name for gen_ai.system: set too, for backends that read only it.
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_OPERATION: Final = "gen_ai.operation.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"
HTTP_ROUTE: Final = "http.route"
HTTP_STATUS: Final = "http.response.status_code"
# Palyra's own.
PROVIDER_ID: Final = "palyra.provider_id"
MODEL_ID: Final = "palyra.model_id"
DEPLOYMENT: Final = "palyra.deployment"
ATTEMPT: Final = "palyra.attempt"
RETRIES: Final = "palyra.retries"
FAILOVERS: Final = "palyra.failovers"

_SYSTEMS: Final = {
    "openai_compatible": "openai",
    "anthropic": "anthropic",
    "deterministic": "palyra.deterministic",
}
# A client that leaves cancels its handler (and closes its stream): not the upstream's fault,
# but the operation did not complete.
_CANCELLED: Final = "cancelled"
_SHUTDOWN_S: Final = 5.0


# `gen_ai.operation.name` of each inference route (by its template); other routes are not
# traced.
_OPERATIONS: Final = {
    "/v1/chat/completions": "chat",
    "/v1/messages": "chat",
    "/v1/responses": "chat",
    "/v1/embeddings": "embeddings",
    "/v1/audio/transcriptions": "audio_transcription",
    "/v1/audio/translations": "audio_translation",
}


def operation_for(route: str) -> str | None:
    """The operation of an inference route's template (`resource.canonical`), None for a
    route that is not one (models, stored responses, count_tokens, the console...)."""
    return _OPERATIONS.get(route)


def system_for(kind: str) -> str:
    """`gen_ai.system` of a provider kind (`palyra.types.ModelProviderKind`)."""
    return _SYSTEMS.get(kind, kind)


def error_type(error: BaseException | str) -> str:
    """A low-cardinality name for a failure: an error's code (`rate_limit_exceeded`,
    `upstream_error`, ...), else its class. Never its message, which may quote the prompt."""
    if isinstance(error, str):
        return error
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return _CANCELLED
    code = getattr(error, "code", None)
    return code if isinstance(code, str) and code else type(error).__qualname__


class RouteLike(Protocol):
    """What `Span.set_route` reads (`palyra.routing.RouteInfo`)."""

    @property
    def model_id(self) -> str: ...

    @property
    def provider_id(self) -> str: ...

    @property
    def retries(self) -> int: ...

    @property
    def failovers(self) -> int: ...


class Span:
    """A span as callers hold it: a context manager that opens the span on entry and ends it
    on exit (an exception leaving it marks it failed). This class itself is the span of
    tracing off: one shared instance, `NULL_SPAN`, whose methods do nothing."""

    __slots__ = ()

    def __enter__(self) -> Span:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def set(self, key: str, value: Attribute) -> None:
        """Any attribute."""

    def request_model(self, model: str) -> None:
        """`gen_ai.request.model`, once the request's body has named it (renames the span)."""

    def response_model(self, model: str) -> None:
        """`gen_ai.response.model`: the model the upstream says answered. Also set on the
        request's span."""

    def record_usage(self, input_tokens: int, output_tokens: int) -> None:
        """`gen_ai.usage.input_tokens` / `output_tokens` (`Usage.prompt_tokens` /
        `completion_tokens`). Also set on the request's span."""

    def set_route(self, route: RouteLike) -> None:
        """Who served and what it took: provider, model, deployment, retries, failovers."""

    def http_status(self, status: int) -> None:
        """`http.response.status_code`; a 5xx fails the span unless `fail` said why."""

    def fail(self, error: BaseException | str) -> None:
        """`error.type` and an error status. The message is left out: it may quote what
        the client sent."""


NULL_SPAN: Final = Span()


class _Sdk:
    """The installed SDK's parts, looked up once (the SDK is imported only when on)."""

    def __init__(self, config: TelemetryConfig) -> None:
        from opentelemetry import context, trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        endpoint = config.otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        self.endpoint = endpoint
        # Not the global provider: the SDK lets that be set once per process, and other
        # libraries in the process are not ours to trace. No atexit hook: the daemon's
        # shutdown flushes.
        self.provider: TracerProvider = TracerProvider(
            resource=Resource.create({"service.name": config.service_name}),
            shutdown_on_exit=False,
        )
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self.tracer: Tracer = self.provider.get_tracer("palyra")
        self.propagator: TraceContextTextMapPropagator = TraceContextTextMapPropagator()
        self.attach = context.attach
        self.detach = context.detach
        self.in_context: Callable[[OtelSpan], Context] = trace.set_span_in_context
        self.empty = context.Context()
        self.server, self.client, self.internal = (
            SpanKind.SERVER,
            SpanKind.CLIENT,
            SpanKind.INTERNAL,
        )
        self._status, self._error_code = Status, StatusCode.ERROR
        # base_url -> its server.address/server.port: one entry per provider.
        self.servers: dict[str, dict[str, Attribute]] = {}

    def error(self, description: str) -> Status:
        return self._status(self._error_code, description)

    def server_of(self, base_url: str) -> dict[str, Attribute]:
        found = self.servers.get(base_url)
        if found is None:
            found = {}
            parts = urlsplit(base_url)
            if parts.hostname:
                found[SERVER_ADDRESS] = parts.hostname
                try:
                    port = parts.port
                except ValueError:
                    port = None
                port = port or (443 if parts.scheme == "https" else 80)
                found[SERVER_PORT] = port
            self.servers[base_url] = found
        return found


# The request's span, for the spans under it to report to (usage, the model that answered,
# who served) and for code without it in hand (`Tracing.current`).
_REQUEST: ContextVar[_LiveSpan | None] = ContextVar("palyra_trace_request", default=None)


class _LiveSpan(Span):
    __slots__ = (
        "_attributes",
        "_context",
        "_current",
        "_failed",
        "_kind",
        "_name",
        "_operation",
        "_request",
        "_request_token",
        "_sdk",
        "_served",
        "_span",
        "_token",
    )

    def __init__(
        self,
        sdk: _Sdk,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Attribute],
        *,
        operation: str = "",
        context: Context | None = None,
        current: bool = True,
        served: tuple[str, ...] = (),
    ) -> None:
        self._sdk = sdk
        self._name = name
        self._kind = kind
        self._attributes = attributes
        self._operation = operation
        # The parent's context; None: whatever span is current when entered.
        self._context = context
        # Made the current span while open, so that spans opened inside nest under it. A
        # stream's span is not: it stays open across the relay's yields, and a context
        # entered in an async generator is left wherever the generator is closed.
        self._current = current
        # Attributes copied to the request's span when this one ends well (an attempt's).
        self._served = served
        self._failed = False
        self._span: OtelSpan | None = None
        self._token: Token[Any] | None = None
        self._request: _LiveSpan | None = None
        self._request_token: Token[_LiveSpan | None] | None = None

    def __enter__(self) -> Span:
        sdk = self._sdk
        span = self._span = sdk.tracer.start_span(
            self._name,
            context=self._context,
            kind=self._kind,
            attributes=self._attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        if self._kind is sdk.server:
            self._request_token = _REQUEST.set(self)
        else:
            self._request = _REQUEST.get()
        if self._current:
            self._token = sdk.attach(sdk.in_context(span))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        if span is None:
            return None
        if exc is not None and not self._failed:
            self.fail(exc)
        request = self._request
        if request is not None and not self._failed and self._served:
            request._set_many({k: self._attributes[k] for k in self._served})
        if self._token is not None:
            self._sdk.detach(self._token)
            self._token = None
        if self._request_token is not None:
            _REQUEST.reset(self._request_token)
            self._request_token = None
        span.end()
        return None

    def _set_many(self, attributes: Mapping[str, Attribute]) -> None:
        span = self._span
        if span is not None and span.is_recording():
            span.set_attributes(attributes)

    def set(self, key: str, value: Attribute) -> None:
        self._attributes[key] = value
        span = self._span
        if span is not None and span.is_recording():
            span.set_attribute(key, value)

    def request_model(self, model: str) -> None:
        self.set(GEN_AI_REQUEST_MODEL, model)
        span = self._span
        if self._operation and span is not None and span.is_recording():
            span.update_name(f"{self._operation} {model}")

    def response_model(self, model: str) -> None:
        self.set(GEN_AI_RESPONSE_MODEL, model)
        if self._request is not None:
            self._request.set(GEN_AI_RESPONSE_MODEL, model)

    def record_usage(self, input_tokens: int, output_tokens: int) -> None:
        usage = {GEN_AI_INPUT_TOKENS: input_tokens, GEN_AI_OUTPUT_TOKENS: output_tokens}
        self._set_many(usage)
        if self._request is not None:
            self._request._set_many(usage)

    def set_route(self, route: RouteLike) -> None:
        attributes: dict[str, Attribute] = {
            RETRIES: route.retries,
            FAILOVERS: route.failovers,
        }
        if route.provider_id:
            attributes[PROVIDER_ID] = route.provider_id
        if route.model_id:
            attributes[MODEL_ID] = route.model_id
            if route.provider_id:
                attributes[DEPLOYMENT] = f"{route.model_id}@{route.provider_id}"
        self._set_many(attributes)

    def http_status(self, status: int) -> None:
        self.set(HTTP_STATUS, status)
        if status >= 500 and not self._failed:
            self.fail(str(status))

    def fail(self, error: BaseException | str) -> None:
        self._failed = True
        kind = error_type(error)
        upstream_status = getattr(error, "upstream_status", None)
        span = self._span
        if span is not None and span.is_recording():
            span.set_attribute(ERROR_TYPE, kind)
            if isinstance(upstream_status, int) and self._kind is self._sdk.client:
                span.set_attribute(HTTP_STATUS, upstream_status)
            span.set_status(self._sdk.error(kind))


# Copied from a successful attempt to its request: who served it.
_SERVED: Final[tuple[str, ...]] = (GEN_AI_SYSTEM, GEN_AI_PROVIDER_NAME, PROVIDER_ID, DEPLOYMENT)
_SERVED_AT: Final[tuple[str, ...]] = (*_SERVED, SERVER_ADDRESS, SERVER_PORT)


class Tracing:
    """Where the request path opens its spans. One instance, `TRACING`, is shared by the
    process; `configure` turns it on or off in place, so a reference taken at import stays
    good.

    Usage (a span ends with its `with`):

        with TRACING.request("/v1/chat/completions", "chat", "gpt-4o", request.headers) as s:
            with TRACING.routing():
                with TRACING.attempt("oai", "openai_compatible", "gpt-4o", "gpt-4o", 0) as a:
                    ...
            with TRACING.stream() as st:
                st.record_usage(12, 34)
            s.set_route(route_info)
    """

    __slots__ = ("_sdk", "enabled")

    def __init__(self) -> None:
        self._sdk: _Sdk | None = None
        # For a caller whose arguments would cost something to work out (an attribute, not
        # a property: asked at every request).
        self.enabled = False

    def request(
        self,
        route: str,
        operation: str,
        model: str | None = None,
        carrier: Mapping[str, str] | None = None,
    ) -> Span:
        """An inference request (a SERVER span, the root of its trace unless `carrier`'s
        `traceparent` names the client's). `route`: the route's template (`http.route`);
        `operation`: `gen_ai.operation.name` ("chat", "embeddings", ...)."""
        sdk = self._sdk
        if sdk is None:
            return NULL_SPAN
        attributes: dict[str, Attribute] = {HTTP_ROUTE: route, GEN_AI_OPERATION: operation}
        if model:
            attributes[GEN_AI_REQUEST_MODEL] = model
        context = sdk.empty
        if carrier is not None and carrier.get("traceparent"):
            context = sdk.propagator.extract(carrier)
        return _LiveSpan(
            sdk,
            f"{operation} {model}" if model else operation,
            sdk.server,
            attributes,
            operation=operation,
            context=context,
        )

    def routing(self) -> Span:
        """Choosing the candidates and walking them."""
        sdk = self._sdk
        if sdk is None:
            return NULL_SPAN
        return _LiveSpan(sdk, "palyra.routing", sdk.internal, {})

    def attempt(
        self,
        provider_id: str,
        kind: str,
        model: str,
        upstream_model: str,
        attempt: int,
        base_url: str = "",
    ) -> Span:
        """One call to an upstream (a CLIENT span): `kind` is the provider's
        `ModelProviderKind`, `model` Palyra's model id, `upstream_model` the name sent
        upstream, `attempt` 0 for the first try on this deployment and 1, 2, ... for its
        retries, `base_url` the provider's (`server.address`). For a stream it lasts until
        the first token."""
        sdk = self._sdk
        if sdk is None:
            return NULL_SPAN
        request = _REQUEST.get()
        operation = request._operation if request is not None else "chat"
        system = system_for(kind)
        attributes: dict[str, Attribute] = {
            GEN_AI_SYSTEM: system,
            GEN_AI_PROVIDER_NAME: system,
            GEN_AI_OPERATION: operation,
            GEN_AI_REQUEST_MODEL: upstream_model,
            PROVIDER_ID: provider_id,
            MODEL_ID: model,
            DEPLOYMENT: f"{model}@{provider_id}",
            ATTEMPT: attempt,
        }
        served = _SERVED
        if base_url:
            server = sdk.server_of(base_url)
            if server:
                attributes.update(server)
                served = _SERVED_AT
        return _LiveSpan(
            sdk, f"{operation} {upstream_model}", sdk.client, attributes, served=served
        )

    def stream(self) -> Span:
        """A stream's relay to the client, from its first token to its end."""
        sdk = self._sdk
        if sdk is None:
            return NULL_SPAN
        return _LiveSpan(sdk, "palyra.stream", sdk.internal, {}, current=False)

    def current(self) -> Span:
        """The request's span, for code that does not hold it (`NULL_SPAN` outside one)."""
        if self._sdk is None:
            return NULL_SPAN
        return _REQUEST.get() or NULL_SPAN

    def configure(self, config: TelemetryConfig) -> None:
        """On when `config.otlp_endpoint` is set, else off. A provider already installed is
        replaced; its spans still queued are sent from a thread of their own."""
        old = self._sdk
        self._sdk = _Sdk(config) if config.otlp_endpoint else None
        self.enabled = self._sdk is not None
        if old is not None:
            threading.Thread(
                target=old.provider.shutdown, name="palyra-telemetry-shutdown", daemon=True
            ).start()
        if self._sdk is not None:
            log.info(
                "telemetry_on",
                endpoint=redact_url(self._sdk.endpoint),
                service_name=config.service_name,
            )

    async def flush(self, timeout_s: float = _SHUTDOWN_S) -> bool:
        """Send the spans queued so far; False if they were not all sent in time."""
        sdk = self._sdk
        if sdk is None:
            return True
        timeout_ms = int(timeout_s * 1000)
        return await _off_loop(lambda: sdk.provider.force_flush(timeout_ms), timeout_s)

    async def shutdown(self, timeout_s: float = _SHUTDOWN_S) -> None:
        """Flush and stop (tracing is off after). Waits at most `timeout_s` for a collector
        that does not answer: the rest is then lost, and the daemon stops all the same."""
        sdk, self._sdk = self._sdk, None
        self.enabled = False
        if sdk is not None:
            await _off_loop(sdk.provider.shutdown, timeout_s)


async def _off_loop(call: Callable[[], object], timeout_s: float) -> bool:
    """`call()` in a daemon thread of its own, awaited at most `timeout_s`: its export is a
    blocking HTTP request, and a default-executor thread left waiting on a dead collector
    would hold up the interpreter's exit. True when it returned a truthy value in time."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bool] = loop.create_future()

    def settle(result: bool) -> None:
        if not done.done():
            done.set_result(result)

    def run() -> None:
        result = False
        try:
            result = call() is not False
        finally:
            # (A loop closed meanwhile no longer waits for us.)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result)

    threading.Thread(target=run, name="palyra-telemetry-flush", daemon=True).start()
    try:
        return await asyncio.wait_for(done, timeout_s)
    except TimeoutError:
        return False


TRACING: Final = Tracing()


def configure(config: TelemetryConfig) -> Tracing:
    """Turns `TRACING` on or off as `config` says, and returns it."""
    TRACING.configure(config)
    return TRACING


async def shutdown() -> None:
    """Flushes and turns `TRACING` off (the daemon's stop)."""
    await TRACING.shutdown()
