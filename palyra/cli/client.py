"""A small blocking client for the daemon's HTTP API: the CLI waits on one call at a time."""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from palyra.config import PalyraConfig, resolve_state_dir
from palyra.server.auth import TOKEN_FILE


class DaemonError(Exception):
    """The daemon answered with an error, or could not be reached."""


@dataclass(slots=True)
class DaemonClient:
    base_url: str
    token: str | None  # None: no token found; a 401 then says where to get one
    timeout_s: float = 600.0
    token_hint: str = ""
    # Where base_url came from, for the hint when nothing answers there.
    url_source: str = ""

    @classmethod
    def from_config(
        cls,
        config: PalyraConfig,
        url: str | None = None,
        env: Mapping[str, str] | None = None,
        *,
        has_file: bool = True,
    ) -> DaemonClient:
        """`has_file`: the config came from a file (else the port is the built-in default,
        and the hint when nothing answers says so)."""
        env = os.environ if env is None else env
        if url:
            base, source = url, "from --url"
        elif env.get("PALYRA_URL"):
            base, source = env["PALYRA_URL"], "from PALYRA_URL"
        else:
            base = _loopback_url(config.daemon.bind, config.daemon.port)
            if env.get("PALYRA_DAEMON_PORT"):
                source = "from PALYRA_DAEMON_PORT"
            elif has_file:
                source = "from the config's daemon.port"
            else:
                source = "the default port: no config file"
        state_dir = resolve_state_dir(config, env)
        token = env.get("PALYRA_ADMIN_TOKEN") or _read_token(state_dir)
        # A missing token is reported only if the daemon asks for one: when the daemon is not
        # running at all, "cannot reach the daemon" is the error that helps.
        hint = (
            f"no admin token: set PALYRA_ADMIN_TOKEN or start the daemon once "
            f"(it writes {state_dir / TOKEN_FILE})"
        )
        return cls(base.rstrip("/"), token, token_hint=hint, url_source=source)

    def _open(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=headers
        )
        try:
            return urllib.request.urlopen(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            if exc.code == 401 and not self.token and self.token_hint:
                raise DaemonError(self.token_hint) from None
            raise DaemonError(_error_message(exc)) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            raise DaemonError(self.unreachable(exc)) from None

    def unreachable(self, exc: BaseException) -> str:
        """Nothing answered: which URL was tried, why, and how to point palyra elsewhere."""
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, OSError) and reason.strerror:
            reason = reason.strerror  # "Connection refused", not "[Errno 111] Connection refused"
        source = f" ({self.url_source})" if self.url_source else ""
        return (
            f"cannot reach the daemon at {self.base_url}{source}: {reason}; is palyrad "
            "running? If it listens elsewhere, pass --url http://HOST:PORT or set PALYRA_URL"
        )

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One JSON call (GET, POST, PATCH, DELETE); the answer's JSON."""
        with self._open(method, path, body) as response:
            return self._json(response)

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def _json(self, response: Any) -> Any:
        try:
            return json.loads(response.read())
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonError(
                f"the daemon at {self.base_url} broke off the answer: {exc}"
            ) from None
        except ValueError:
            raise DaemonError(f"the daemon at {self.base_url} answered with non-JSON") from None

    def stream(self, path: str, body: Any) -> Iterator[dict[str, Any]]:
        """POST and yield each SSE `data:` payload as it arrives, until `[DONE]`."""
        with self._open("POST", path, body) as response:
            try:
                for raw in response:
                    line = raw.decode("utf-8").rstrip("\r\n")
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    payload = json.loads(data)
                    if isinstance(payload, dict) and "error" in payload:
                        error = payload["error"]
                        message = error.get("message", error) if isinstance(error, dict) else error
                        raise DaemonError(str(message))
                    yield payload
            except (OSError, http.client.HTTPException) as exc:
                raise DaemonError(
                    f"the daemon at {self.base_url} broke off the stream: {exc}"
                ) from None
            except ValueError:
                raise DaemonError(
                    f"the daemon at {self.base_url} sent an event that is not JSON"
                ) from None
        raise DaemonError(f"the daemon at {self.base_url} ended the stream without [DONE]")


def _loopback_url(bind: str, port: int) -> str:
    host = "127.0.0.1" if bind in ("0.0.0.0", "", "::") else bind
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _read_token(state_dir: Path) -> str | None:
    try:
        return (state_dir / TOKEN_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read())
        return f"{exc.code}: {body['error']['message']}"
    except (ValueError, KeyError, TypeError, OSError, http.client.HTTPException):
        return f"{exc.code}: {exc.reason}"
