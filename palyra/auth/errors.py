"""Errors of connecting and refreshing credentials, as clients see them."""

from __future__ import annotations

from palyra.errors import PalyraError


class InvalidCredential(PalyraError):
    """The provider refused the key or token (401/403): nothing was stored."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_credential"


class ProviderRateLimited(PalyraError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ProviderUnavailable(PalyraError):
    """5xx or no connection while checking a credential: try again later."""

    status = 503
    type = "upstream_error"
    code = "provider_unavailable"


class Conflict(PalyraError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"
