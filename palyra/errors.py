"""Errors that reach a client, each knowing its OpenAI-shaped rendering.

Upstream failures carry an `ErrorClass` so the router can decide between retry, failover and
handing the error back, without looking at status codes itself.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from palyra.redact import redact_secrets
from palyra.types import RouteInfo


class ErrorClass(StrEnum):
    RETRYABLE = "retryable"  # 429, 5xx, connection failures, timeouts
    CREDENTIAL = "credential"  # 401, 403: this provider's key is wrong
    CONFIG = "config"  # this provider cannot be reached as configured (a refused address)
    CONTEXT = "context"  # the prompt does not fit the model
    CLIENT = "client"  # the caller's request is wrong; no other provider will like it more


class PalyraError(Exception):
    """An error with an HTTP status and an OpenAI-shaped body."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None
    # Set by the router on errors that happened while routing: what was tried.
    route: RouteInfo | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        type: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        if type is not None:
            self.type = type
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.code,
                "param": self.param,
            }
        }


class InvalidRequest(PalyraError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class Unauthorized(PalyraError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFound(PalyraError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(PalyraError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class ContextLengthExceeded(PalyraError):
    status = 400
    type = "invalid_request_error"
    code = "context_length_exceeded"


class Unsupported(PalyraError):
    """The chosen model or provider cannot do what was asked (embeddings on Anthropic)."""

    status = 400
    type = "invalid_request_error"
    code = "unsupported_operation"


class RateLimitExceeded(PalyraError):
    """Every deployment that could serve is at its limit (rpm/tpm, or the upstream's own)."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ModelNotAllowed(PalyraError):
    """The client key may not call this model (its `models` do not name it)."""

    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class ProviderError(PalyraError):
    """A failure talking to an upstream provider.

    Its text comes partly from the upstream, which may quote a key (ours, an older one,
    another provider's): it is redacted here, once, as the error is built, so that the message,
    `str()`, `repr()` and `args` all hold the same clean text. Only the fallback model
    retells it afterwards (every candidate's failure in one message), setting message and args
    together from messages redacted here and ids from the config.
    """

    status = 502
    type = "upstream_error"
    code = "upstream_error"
    error_class: ErrorClass = ErrorClass.RETRYABLE

    def __init__(
        self,
        message: str,
        *,
        provider_id: str,
        upstream_status: int | None = None,
        error_class: ErrorClass | None = None,
        retry_after_s: float | None = None,
        status: int | None = None,
        code: str | None = None,
        type: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(
            f"provider {provider_id}: {redact_secrets(message)}",
            status=status,
            code=redact_secrets(code) if code else code,
            type=type,
            param=redact_secrets(param) if param else param,
        )
        self.provider_id = provider_id
        self.upstream_status = upstream_status
        if error_class is not None:
            self.error_class = error_class
        self.retry_after_s = retry_after_s
        if retry_after_s is not None:
            self.headers["Retry-After"] = str(max(1, round(retry_after_s)))


class UpstreamTimeout(ProviderError):
    status = 504
    code = "upstream_timeout"


class UpstreamAddressRefused(ProviderError):
    """The egress guard would not connect to where base_url leads: not a blip to retry but
    this provider's configuration, so fail over at once and mark the provider."""

    code = "upstream_address_refused"
    error_class = ErrorClass.CONFIG

    def __init__(self, refusal: str, *, provider_id: str) -> None:
        super().__init__(
            f"{refusal}; base_url must reach a public address (for a server on a private "
            "network set allow_private_base_url = true)",
            provider_id=provider_id,
        )


class UpstreamUnreachable(ProviderError):
    code = "upstream_unreachable"


class UpstreamProtocolError(ProviderError):
    """The upstream answered something that is not its API's wire format."""

    code = "upstream_protocol_error"


def classify_status(status: int, message: str = "") -> ErrorClass:
    if status in (408, 409, 429) or status >= 500:
        return ErrorClass.RETRYABLE
    if status in (401, 403):
        return ErrorClass.CREDENTIAL
    if status in (400, 413) and _mentions_context_length(message):
        return ErrorClass.CONTEXT
    return ErrorClass.CLIENT


def _mentions_context_length(message: str) -> bool:
    lowered = message.lower()
    return any(
        marker in lowered
        for marker in (
            "context length",
            "context_length",
            "context window",
            "too long",
            "maximum context",
        )
    )


def upstream_status_error(
    provider_id: str,
    status: int,
    message: str,
    *,
    retry_after_s: float | None = None,
    upstream_code: str | None = None,
    param: str | None = None,
) -> ProviderError:
    """Map an upstream HTTP error onto what the caller sees.

    The caller's own token was fine, so an upstream 401/403 must not come back as 401: that
    would tell clients their gateway token is wrong. Client errors keep their status and code.
    """
    error_class = classify_status(status, message)
    if error_class is ErrorClass.CLIENT or error_class is ErrorClass.CONTEXT:
        code = "context_length_exceeded" if error_class is ErrorClass.CONTEXT else upstream_code
        return ProviderError(
            message,
            provider_id=provider_id,
            upstream_status=status,
            error_class=error_class,
            status=status,
            code=code or "upstream_rejected",
            type="invalid_request_error",
            param=param,
        )
    if error_class is ErrorClass.CREDENTIAL:
        return ProviderError(
            f"upstream refused the credential ({status})",
            provider_id=provider_id,
            upstream_status=status,
            error_class=error_class,
            status=502,
            code="upstream_auth_failed",
        )
    if status == 429:
        return ProviderError(
            message,
            provider_id=provider_id,
            upstream_status=status,
            error_class=error_class,
            retry_after_s=retry_after_s,
            status=429,
            code="rate_limit_exceeded",
            type="rate_limit_error",
        )
    return ProviderError(
        f"upstream answered {status}: {message}",
        provider_id=provider_id,
        upstream_status=status,
        error_class=error_class,
        retry_after_s=retry_after_s,
        # 529 is Anthropic's "overloaded": to a client that is a 503.
        status=503 if status in (503, 529) else 504 if status == 504 else 502,
    )
