"""palyrad as an asyncio subprocess, for async tests that drive it over HTTP: its environment
cut off from the user's, its JSON log in a file, killed at the end (tests/support/daemon.py
has the same for synchronous tests)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import aiohttp

from tests.support.daemon import free_port

__all__ = [
    "ADMIN_TOKEN",
    "PALYRAD",
    "UPSTREAM_KEY",
    "Daemon",
    "clean_env",
    "free_port",
    "start_daemon",
]

PALYRAD = str(Path(sys.executable).with_name("palyrad"))
ADMIN_TOKEN = "process-test-admin-token-42"
UPSTREAM_KEY = "sk-process-test-upstream-secret"
START_WITHIN_S = 30.0


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PALYRA_")}
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
        XDG_STATE_HOME=str(tmp_path / "xdg-state"),
    )
    env.update(extra)
    return env


class Daemon:
    def __init__(self, process: asyncio.subprocess.Process, port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]


async def start_daemon(
    tmp_path: Path, args: list[str], env: dict[str, str], port: int | None = None
) -> Daemon:
    port = port or free_port()
    log_path = tmp_path / f"palyrad-{port}.log"
    with open(log_path, "wb") as log:
        process = await asyncio.create_subprocess_exec(
            PALYRAD, "--port", str(port), *args, env=env, stdout=log, stderr=log
        )
    daemon = Daemon(process, port, log_path)
    # Seconds on an idle machine; a loaded one (a CI host running other suites) has taken
    # more than ten.
    deadline = asyncio.get_running_loop().time() + START_WITHIN_S
    async with aiohttp.ClientSession() as http:
        while asyncio.get_running_loop().time() < deadline:
            if process.returncode is not None:
                raise AssertionError(f"palyrad exited: {log_path.read_text()}")
            try:
                async with http.get(daemon.url + "/healthz") as response:
                    if response.status == 200:
                        return daemon
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    process.kill()
    raise AssertionError(f"palyrad did not start: {log_path.read_text()}")
