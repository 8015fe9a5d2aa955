"""What the HTTP provider kinds share: one pooled aiohttp session, timeouts, error mapping.

Every upstream failure leaves here as a `ProviderError` with its `ErrorClass`, so the router
never sees an aiohttp exception and no message ever carries a request header.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from abc import abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
from aiohttp import hdrs

from palyra.config import ModelConfig, ProviderConfig, ProviderSettings
from palyra.credentials import MissingCredential
from palyra.egress import refusal_in
from palyra.errors import (
    ErrorClass,
    ProviderError,
    UpstreamAddressRefused,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnreachable,
    upstream_status_error,
)
from palyra.models.base import CredentialSource, ModelProvider
from palyra.models.kinds import RateLimitParser, spec_for
from palyra.redact import redact_secrets, remember_secret
from palyra.sse import SSEDecoder, SSEError, SSEEvent

USER_AGENT = "palyra/0.1"


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait, from `retry-after-ms`, or `Retry-After` as seconds or an HTTP-date.
    What is no finite number of seconds (1e999, nan) is as good as no header."""
    millis = headers.get("retry-after-ms")
    if millis:
        seconds = _finite(millis)
        if seconds is not None:
            return max(0.0, seconds / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _finite(value)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# Far above any real answer (a full batch of large embeddings as JSON floats is ~130 MB).
MAX_BODY_BYTES = 256 * 1024 * 1024
# An error body is read for its message only.
MAX_ERROR_BODY_BYTES = 1024 * 1024


class HttpProvider(ModelProvider):
    max_body_bytes = MAX_BODY_BYTES

    def __init__(
        self,
        config: ProviderConfig,
        *,
        session: aiohttp.ClientSession,
        settings: ProviderSettings,
        credentials: CredentialSource,
    ) -> None:
        super().__init__(config)
        self._session = session
        self._settings = settings
        self._credentials = credentials
        seconds = settings.request_timeout_ms / 1000
        self._whole_timeout = aiohttp.ClientTimeout(total=seconds)
        # A stream may last long; what must not last is the wait for its next bytes.
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=seconds, sock_read=seconds
        )
        self._rate_limits: RateLimitParser | None = spec_for(self.kind).rate_limits

    @abstractmethod
    def _auth_headers(self, api_key: str | None) -> dict[str, str]: ...

    @abstractmethod
    def _error_details(self, body: Any) -> tuple[str, str | None, str | None]:
        """(message, code, param) from an upstream error body in the kind's wire format."""

    async def _api_key(self) -> str | None:
        try:
            key = await self._credentials.api_key(self.config)
        except MissingCredential as exc:
            raise ProviderError(
                str(exc),
                provider_id=self.provider_id,
                error_class=ErrorClass.CREDENTIAL,
                status=502,
                code="missing_credential",
            ) from None
        # Any upstream may echo any key it has seen, this one included, long after it was
        # rotated: every key ever sent is scrubbed from every error built from now on.
        remember_secret(key)
        if key is not None and not (key.isascii() and key.isprintable()):
            # A header cannot carry it (aiohttp refuses CR/LF as header injection): say so
            # as this provider's credential problem, without the value.
            raise ProviderError(
                "the credential holds characters an HTTP header cannot carry "
                "(a line break or a control character?)",
                provider_id=self.provider_id,
                error_class=ErrorClass.CREDENTIAL,
                status=502,
                code="invalid_credential",
            )
        return key

    async def _refreshed_key(self, rejected: str | None) -> str | None:
        """The new key when the credential source could replace a rejected one, else None."""
        try:
            if await self._credentials.credential_rejected(self.config, rejected):
                return await self._api_key()
        except ProviderError:
            pass
        return None

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        path: str,
        *,
        payload: Any = None,
        form: Callable[[], aiohttp.FormData] | None = None,
        stream: bool = False,
        extra_headers: Mapping[str, str] | None = None,
        upstream_model: str | None = None,
        observe_limits: bool = True,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """`form` makes a multipart body: one per send, as sending consumes it.

        Each answer's rate-limit headers go to `limits_listener`, as the limits of
        `upstream_model` (by default the JSON payload's `model`; no model, no report).
        `observe_limits=False` for an endpoint whose limits are not the model's (Anthropic
        counts count_tokens apart from messages)."""
        json_body: bytes | None = None
        if payload is not None:
            # A copy of its own size: orjson's bytes sit in a 4 KB allocation however short,
            # and a stream keeps its request's body for as long as it lasts (3.9 KB a stream).
            json_body = bytes(memoryview(orjson.dumps(payload)))
            extra_headers = {**(extra_headers or {}), hdrs.CONTENT_TYPE: "application/json"}
        url = self.config.base_url + path
        timeout = self._stream_timeout if stream else self._whole_timeout
        model = (upstream_model or _model_of(payload)) if observe_limits else None
        del payload  # (sent as `json_body` from here: a stream keeps this frame as it lasts)
        sent: list[str | None] = []  # the keys this request sent, scrubbed from any error
        answered = False  # whether the headers came: what a broken connection means depends
        try:
            key = await self._api_key()
            while True:
                sent.append(key)
                # (Names as aiohttp's istr: see palyra.dialects.common's route headers.)
                headers = {
                    hdrs.USER_AGENT: USER_AGENT,
                    **self._auth_headers(key),
                    **(extra_headers or {}),
                }
                answered = False
                # No redirects: an API does not move, and a redirect would take the key (and
                # the prompt) wherever the upstream, or whoever answers for it, points. A form
                # is made again for each send, as sending consumes it.
                response = await self._session.request(
                    method,
                    url,
                    data=json_body if form is None else form(),
                    headers=headers,
                    timeout=timeout,
                    allow_redirects=False,
                )
                async with response:
                    answered = True
                    if model and self.limits_listener is not None:
                        self._observe_limits(response, model)
                    if response.status in (401, 403) and len(sent) == 1:
                        # An OAuth token refreshed meanwhile: one more send with it.
                        retry_key = await self._refreshed_key(key)
                        if retry_key is not None:
                            key = retry_key
                            continue
                    if response.status >= 300:
                        raise await self._status_error(response, tuple(sent))
                    yield response
                    return
        except TimeoutError:
            raise UpstreamTimeout(
                f"no answer within {self._settings.request_timeout_ms} ms",
                provider_id=self.provider_id,
            ) from None
        except aiohttp.ClientError as exc:
            raise self._connection_error(exc, answered) from None

    def _observe_limits(self, response: aiohttp.ClientResponse, model: str | None) -> None:
        listener, parse = self.limits_listener, self._rate_limits
        if listener is None or parse is None or not model:
            return
        limits = parse(response.headers)
        if limits is not None:
            listener(model, limits)

    def _connection_error(self, exc: aiohttp.ClientError, answered: bool) -> ProviderError:
        """What went wrong on the wire, in words: the type and the host, never the text of
        the exception (it can quote the request or the answer)."""
        where = self.config.base_url
        refusal = refusal_in(exc)
        if refusal is not None:
            # An IP literal the guard's socket check refused (names are refused earlier, by
            # its resolver): the configuration's fault, not a connection blip.
            return UpstreamAddressRefused(str(refusal), provider_id=self.provider_id)
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            host = getattr(exc, "host", "") or where
            return UpstreamUnreachable(
                f"cannot resolve the host {host} of {where}", provider_id=self.provider_id
            )
        if isinstance(exc, aiohttp.ClientConnectorError):
            reason = exc.strerror or str(exc.os_error) or type(exc.os_error).__name__
            return UpstreamUnreachable(
                f"cannot connect to {where}: {reason}", provider_id=self.provider_id
            )
        if isinstance(exc, aiohttp.ClientResponseError):
            # The answer could not be parsed as HTTP at all (aiohttp reports it as a 400).
            return UpstreamProtocolError(
                f"answered something that is not HTTP ({where})", provider_id=self.provider_id
            )
        if isinstance(exc, aiohttp.ClientPayloadError):
            return UpstreamUnreachable(
                "the connection broke in the middle of the answer (ClientPayloadError)",
                provider_id=self.provider_id,
            )
        when = "in the middle of the answer" if answered else "before answering"
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return UpstreamUnreachable(
                f"closed the connection {when}", provider_id=self.provider_id
            )
        if isinstance(exc, aiohttp.ClientOSError):
            reason = exc.strerror or type(exc).__name__
            return UpstreamUnreachable(
                f"the connection broke {when}: {reason}", provider_id=self.provider_id
            )
        return UpstreamUnreachable(
            f"cannot reach {where}: {type(exc).__name__}", provider_id=self.provider_id
        )

    async def _status_error(
        self, response: aiohttp.ClientResponse, sent: tuple[str | None, ...] = ()
    ) -> ProviderError:
        """The error for an answer with an error status; `sent`: the keys this request sent,
        scrubbed from the upstream's text whatever their shape or length."""
        if response.status < 400:
            location = "a redirect" if 300 <= response.status < 400 else "an unexpected status"
            return UpstreamProtocolError(
                f"answered {response.status}, {location}; is base_url right?",
                provider_id=self.provider_id,
            )
        try:
            raw = await self._read_body(response, MAX_ERROR_BODY_BYTES)
        except UpstreamProtocolError:
            raw = b""  # an error page past any sense: its status says enough
        try:
            message, code, param = self._error_details(orjson.loads(raw))
        except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
            message, code, param = (
                raw[:200].decode("utf-8", "replace") or response.reason or "",
                None,
                None,
            )
        if response.status in (401, 403) and sent and all(key is None for key in sent):
            # Nothing was sent to refuse: the provider is configured with no credential,
            # and its upstream wants one (a local server started with a key, say).
            return ProviderError(
                "no credential configured (api_key_vault_ref, auth_profile_id or api_key_env);"
                f" the upstream answered {response.status} to a request sent without one",
                provider_id=self.provider_id,
                upstream_status=response.status,
                error_class=ErrorClass.CREDENTIAL,
                status=502,
                code="missing_credential",
            )
        return upstream_status_error(
            self.provider_id,
            response.status,
            redact_secrets(message, sent),
            retry_after_s=parse_retry_after(response.headers),
            upstream_code=code,
            param=redact_secrets(param, sent) if param else None,
        )

    async def _post_json(self, path: str, payload: Any, **kwargs: Any) -> Any:
        return self._parse(await self._post_raw(path, payload, **kwargs))

    async def _post_raw(self, path: str, payload: Any, **kwargs: Any) -> bytes:
        async with self._request("POST", path, payload=payload, **kwargs) as response:
            return await self._read_body(response)

    async def _get_json(self, path: str, **kwargs: Any) -> Any:
        async with self._request("GET", path, **kwargs) as response:
            raw = await self._read_body(response)
        return self._parse(raw)

    async def _read_body(self, response: aiohttp.ClientResponse, limit: int | None = None) -> bytes:
        """The whole body, decompressed, up to `limit` bytes (`max_body_bytes` by default):
        an upstream that answers without end, or with a small compressed bomb, is refused once
        past it instead of filling the daemon's memory."""
        limit = self.max_body_bytes if limit is None else limit
        length = response.content_length
        if length is not None and length > limit:
            raise self._too_large(limit)
        parts: list[bytes] = []
        size = 0
        while chunk := await response.content.readany():
            size += len(chunk)
            if size > limit:
                raise self._too_large(limit)
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _too_large(self, limit: int) -> UpstreamProtocolError:
        return UpstreamProtocolError(
            f"answered with a body larger than {limit // (1024 * 1024) or limit} "
            f"{'MiB' if limit >= 1024 * 1024 else 'bytes'}",
            provider_id=self.provider_id,
        )

    def _parse(self, raw: bytes) -> Any:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamProtocolError(
                f"answered with {describe_body(raw, exc)}", provider_id=self.provider_id
            ) from None

    async def _events(
        self, path: str, payload: Any, **kwargs: Any
    ) -> AsyncGenerator[SSEEvent, None]:
        """POST and yield the SSE events of the answer as they arrive."""
        async with self._request("POST", path, payload=payload, stream=True, **kwargs) as response:
            del payload  # (sent: not kept for as long as the stream lasts)
            if response.content_type in _NOT_A_STREAM:
                raise await self._not_a_stream(response)
            # The decoder and the reads in this generator's own frame, not in `decode_sse`'s
            # over `iter_any()`: an open stream waits here for its next bytes, and each layer
            # of async generator and iterator is kept per stream for as long as it lasts.
            decoder = SSEDecoder()
            read = response.content.readany
            stalls = _Stalls(response, self._settings.request_timeout_ms / 1000)
            now = stalls.now
            try:
                while True:
                    stalls.since = now()
                    chunk = await read()
                    stalls.since = None
                    if not chunk:
                        break
                    for event in decoder.iter_feed(chunk):
                        yield event
                tail = decoder.close()
                if tail is not None:
                    yield tail
            except SSEError as exc:
                raise UpstreamProtocolError(
                    f"sent a broken event stream: {exc}", provider_id=self.provider_id
                ) from None
            finally:
                stalls.close()

    async def _not_a_stream(self, response: aiohttp.ClientResponse) -> ProviderError:
        """The error for a stream request answered with a page or a JSON body (some servers
        send their errors with a 200, whatever was asked)."""
        raw = await self._read_body(response, MAX_ERROR_BODY_BYTES)
        if response.content_type == "application/json":
            try:
                message, code, _ = self._error_details(orjson.loads(raw))
            except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
                pass
            else:
                # The 200 says nothing of what kind of error it is: one worth another try.
                return ProviderError(
                    f"answered a stream request with an error: {message or 'no message'}",
                    provider_id=self.provider_id,
                    upstream_status=response.status,
                    code=code or None,
                )
        return UpstreamProtocolError(
            f"answered a stream request with {describe_body(raw)} ({response.content_type}), "
            "not an event stream",
            provider_id=self.provider_id,
        )


class _Stalls:
    """How long an event stream may wait for its next bytes (`limit_s`), watched by one timer
    a quarter of that apart, in place of aiohttp's `sock_read`, which cancels a timer and
    makes another at every chunk, and again whenever reading resumes: about a microsecond a
    chunk, the most of any one thing a relayed chunk costs beyond the floor's
    (benchmarks/README.md). Only a wait counts, as only a wait counted for `sock_read`
    (paused while the reader is behind): a stream whose reader is slow is not stalled. A wait
    past the limit ends, within a quarter of it more, in the error `sock_read` raises."""

    __slots__ = ("_content", "_handle", "_limit", "_loop", "now", "since")

    def __init__(self, response: aiohttp.ClientResponse, limit_s: float) -> None:
        connection = response.connection
        if connection is not None and connection.protocol is not None:
            # (aiohttp's timer, set for the wait for the headers, goes at its next reschedule.)
            connection.protocol.read_timeout = None
        self._loop = asyncio.get_running_loop()
        self.now = self._loop.time
        self._content = response.content
        self._limit = limit_s
        self.since: float | None = None  # when the wait under way began; None: not waiting
        self._handle = self._loop.call_later(limit_s / 4, self._check)

    def _check(self) -> None:
        since = self.since
        if since is not None and self.now() - since >= self._limit:
            self._content.set_exception(
                aiohttp.SocketTimeoutError("Timeout on reading data from socket")
            )
            return
        self._handle = self._loop.call_later(self._limit / 4, self._check)

    def close(self) -> None:
        self._handle.cancel()


def _model_of(payload: Any) -> str | None:
    model = payload.get("model") if isinstance(payload, dict) else None
    return model if isinstance(model, str) else None


# Content types that no event stream is sent as (and that error pages and bodies are).
_NOT_A_STREAM = frozenset({"text/html", "application/json", "application/xhtml+xml"})


def describe_body(raw: bytes, error: Exception | None = None) -> str:
    """What a body that should have been JSON looks like, in words: never its text, which
    may quote anything."""
    head = raw[:512].lstrip()
    if not head:
        return "an empty body"
    if head[:1] == b"<":
        return "an HTML page"
    if isinstance(error, orjson.JSONDecodeError):
        return f"a body that is not JSON ({error.msg} at byte {error.pos})"
    return "a JSON body" if head[:1] in (b"{", b"[") else "a body that is not JSON"


class Malformed(ValueError):
    """A field of an upstream answer is missing or of the wrong type; the message names it
    (the provider turns it into an `UpstreamProtocolError`)."""


def kind_of(value: Any) -> str:
    """The JSON type of a value, in words: what an error may say of a field instead of
    quoting it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


# No answer holds more tokens than this; a larger count is nonsense, and one past 64 bits
# would fail the rendering of our own answer (orjson refuses it) after the upstream's was taken.
MAX_TOKEN_COUNT = 2**53 - 1


def token_count(value: Any, where: str) -> int:
    """A token count an upstream reported: a whole number, or absent (null counts as 0)."""
    if value is None:
        return 0
    if type(value) is int and 0 <= value <= MAX_TOKEN_COUNT:
        return value
    if type(value) is float and value.is_integer() and 0 <= value <= MAX_TOKEN_COUNT:
        return int(value)
    raise Malformed(f"{where} is {kind_of(value)}, not a count of tokens")


def native_body(body: dict[str, Any], model: ModelConfig, *, stream: bool | None) -> dict[str, Any]:
    """A client's own body in an API the upstream speaks natively (pass-through): its model
    is the upstream's name for the routed model, and `stream` is what this call does (None:
    a route that takes none)."""
    payload = {**body, "model": model.upstream_name}
    payload.pop("stream", None)
    if stream:
        payload["stream"] = True
    return payload
