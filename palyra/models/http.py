"""What the HTTP provider kinds share: one pooled aiohttp session, timeouts, error mapping.

Every upstream failure leaves here as a `ProviderError` with its `ErrorClass`, so the router
never sees an aiohttp exception and no message ever carries a request header.
"""

from __future__ import annotations

import email.utils
import time
from abc import abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson

from palyra.config import ProviderConfig, ProviderSettings
from palyra.credentials import CredentialSource, MissingCredential
from palyra.errors import (
    ErrorClass,
    ProviderError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnreachable,
    upstream_status_error,
)
from palyra.models.base import ModelProvider
from palyra.redact import redact_secrets
from palyra.sse import SSEEvent, decode_sse

USER_AGENT = "palyra/0.1"


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait, from `retry-after-ms`, or `Retry-After` as seconds or an HTTP-date."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class HttpProvider(ModelProvider):
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

    @abstractmethod
    def _auth_headers(self, api_key: str | None) -> dict[str, str]: ...

    @abstractmethod
    def _error_details(self, body: Any) -> tuple[str, str | None, str | None]:
        """(message, code, param) from an upstream error body in the kind's wire format."""

    async def _api_key(self) -> str | None:
        try:
            return await self._credentials.api_key(self.config)
        except MissingCredential as exc:
            raise ProviderError(
                str(exc),
                provider_id=self.provider_id,
                error_class=ErrorClass.CREDENTIAL,
                status=502,
                code="missing_credential",
            ) from None

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
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """`form` makes a multipart body: one per send, as sending consumes it."""
        api_key = await self._api_key()
        headers = {"User-Agent": USER_AGENT, **self._auth_headers(api_key), **(extra_headers or {})}
        body: bytes | aiohttp.FormData | None = None
        if payload is not None:
            body = orjson.dumps(payload)
            headers["Content-Type"] = "application/json"
        elif form is not None:
            body = form()
        url = self.config.base_url + path
        timeout = self._stream_timeout if stream else self._whole_timeout
        try:
            async with self._session.request(
                method, url, data=body, headers=headers, timeout=timeout
            ) as response:
                if response.status in (401, 403):
                    retry_key = await self._refreshed_key(api_key)
                    if retry_key is not None:
                        # An OAuth token was refreshed: one retry with it, then give up.
                        response.release()
                        api_key = retry_key
                        headers.update(self._auth_headers(api_key))
                        if form is not None:
                            body = form()
                        async with self._session.request(
                            method, url, data=body, headers=headers, timeout=timeout
                        ) as retried:
                            if retried.status >= 400:
                                raise await self._status_error(retried)
                            yield retried
                            return
                if response.status >= 400:
                    raise await self._status_error(response)
                yield response
        except ProviderError as exc:
            # Upstreams sometimes quote the key they were sent; ours must not travel further.
            exc.message = redact_secrets(exc.message, (api_key,))
            raise
        except TimeoutError:
            raise UpstreamTimeout(
                f"no answer within {self._settings.request_timeout_ms} ms",
                provider_id=self.provider_id,
            ) from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            raise UpstreamUnreachable(
                f"connection broke: {type(exc).__name__}", provider_id=self.provider_id
            ) from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(
                f"cannot reach {self.config.base_url}: {type(exc).__name__}",
                provider_id=self.provider_id,
            ) from None

    async def _status_error(self, response: aiohttp.ClientResponse) -> ProviderError:
        raw = await response.read()
        try:
            message, code, param = self._error_details(orjson.loads(raw))
        except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
            message, code, param = (
                raw[:200].decode("utf-8", "replace") or response.reason or "",
                None,
                None,
            )
        return upstream_status_error(
            self.provider_id,
            response.status,
            message,
            retry_after_s=parse_retry_after(response.headers),
            upstream_code=code,
            param=param,
        )

    async def _post_json(self, path: str, payload: Any, **kwargs: Any) -> Any:
        return self._parse(await self._post_raw(path, payload, **kwargs))

    async def _post_raw(self, path: str, payload: Any, **kwargs: Any) -> bytes:
        async with self._request("POST", path, payload=payload, **kwargs) as response:
            return await response.read()

    async def _get_json(self, path: str, **kwargs: Any) -> Any:
        async with self._request("GET", path, **kwargs) as response:
            raw = await response.read()
        return self._parse(raw)

    def _parse(self, raw: bytes) -> Any:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(
                "answered with something that is not JSON", provider_id=self.provider_id
            ) from None

    async def _events(
        self, path: str, payload: Any, **kwargs: Any
    ) -> AsyncGenerator[SSEEvent, None]:
        """POST and yield the SSE events of the answer as they arrive."""
        async with self._request("POST", path, payload=payload, stream=True, **kwargs) as response:
            async for event in decode_sse(response.content.iter_any()):
                yield event
