"""A small blocking client for the daemon's HTTP API: the CLI waits on one call at a time."""

from __future__ import annotations

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
    token: str
    timeout_s: float = 600.0

    @classmethod
    def from_config(
        cls, config: PalyraConfig, url: str | None = None, env: Mapping[str, str] | None = None
    ) -> DaemonClient:
        env = os.environ if env is None else env
        base = url or env.get("PALYRA_URL") or _loopback_url(config.daemon.bind, config.daemon.port)
        token = env.get("PALYRA_ADMIN_TOKEN") or _read_token(resolve_state_dir(config, env))
        return cls(base.rstrip("/"), token)

    def _open(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            return urllib.request.urlopen(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            raise DaemonError(_error_message(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DaemonError(f"cannot reach the daemon at {self.base_url}: {reason}") from None

    def get(self, path: str) -> Any:
        with self._open("GET", path) as response:
            return json.loads(response.read())

    def post(self, path: str, body: Any) -> Any:
        with self._open("POST", path, body) as response:
            return json.loads(response.read())

    def stream(self, path: str, body: Any) -> Iterator[dict[str, Any]]:
        """POST and yield each SSE `data:` payload as it arrives, until `[DONE]`."""
        with self._open("POST", path, body) as response:
            for raw in response:
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                payload = json.loads(data)
                if isinstance(payload, dict) and "error" in payload:
                    raise DaemonError(str(payload["error"].get("message", payload["error"])))
                yield payload


def _loopback_url(bind: str, port: int) -> str:
    host = "127.0.0.1" if bind in ("0.0.0.0", "", "::") else bind
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _read_token(state_dir: Path) -> str:
    try:
        return (state_dir / TOKEN_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        raise DaemonError(
            f"no admin token: set PALYRA_ADMIN_TOKEN or start the daemon once "
            f"(it writes {state_dir / TOKEN_FILE})"
        ) from None


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read())
        return f"{exc.code}: {body['error']['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{exc.code}: {exc.reason}"
