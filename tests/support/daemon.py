"""palyrad as a real process, and the fake upstream on a thread of its own, for tests that
drive the daemon with real clients the way a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fakes.upstream import FakeUpstream

BIN = Path(sys.executable).parent
PALYRAD = str(BIN / "palyrad")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def toml_value(value: Any) -> str:
    """A TOML value for what configs hold (JSON's strings, numbers and booleans are TOML's)."""
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def toml_config(config: dict[str, Any]) -> str:
    """A config.toml for `{"section": {...}, "model_provider": {"providers": [...], ...}}`."""
    lines: list[str] = []
    for section, body in config.items():
        if not isinstance(body, dict):
            lines.append(f"{section} = {toml_value(body)}")
            continue
        tables = {
            k: v for k, v in body.items() if isinstance(v, list) and v and isinstance(v[0], dict)
        }
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in body.items() if k not in tables]
        for name, rows in tables.items():
            for row in rows:
                lines.append(f"[[{section}.{name}]]")
                lines += [f"{k} = {toml_value(v)}" for k, v in row.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_daemon(root: Path, config: dict[str, Any], env: dict[str, str]) -> Iterator[Daemon]:
    """palyrad on a free port with `config`, until the block ends (then SIGTERM)."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    path = root / "config.toml"
    path.write_text(toml_config(config))
    log = root / "palyrad.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PALYRA_", "XDG_"))} | {
        "HOME": str(root),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                PALYRAD,
                "--config",
                str(path),
                "--port",
                str(port),
                "--state-dir",
                str(root / "state"),
            ],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_healthy(process, port, log)
        yield Daemon(process, port, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_healthy(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"palyrad exited with {process.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"palyrad did not become healthy: {log.read_text()}")


@contextmanager
def threaded_upstream(api_key: str) -> Iterator[FakeUpstream]:
    """The fake upstream served from a thread with its own event loop, so that it outlives
    any one test's loop (a module's daemon points at it). Scripting it from a test is safe
    between requests: its scripts are read by its own loop only when a request arrives."""
    fake = FakeUpstream(api_key=api_key)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(fake.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="fake-upstream", daemon=True)
    thread.start()
    if not started.wait(10):
        raise AssertionError("the fake upstream did not start")
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
