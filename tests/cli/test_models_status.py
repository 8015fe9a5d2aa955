"""`palyra models status` and its Deployments table, against a daemon's status payload.

The payload is served over loopback by a stand-in for the daemon's admin route, so the
command runs as a user runs it: a real process, the real client, a real (pseudo) terminal.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from palyra.cli.models import deployments_view
from palyra.config import ModelConfig
from palyra.deployments import Admission, DeploymentBoard
from tests.support.cli import PALYRA, in_terminal, isolated_env, palyra
from tests.support.deployments import deployment_row as deployment

TOKEN = "status-admin-token-77"


def deployments(now_ms: float) -> list[dict[str, Any]]:
    return [
        deployment(
            "gpt-4o-mini",
            "openai",
            weight=3,
            strategy="least_busy",
            in_flight=7,
            requests_last_minute=45,
            rpm_limit=500,
            tokens_last_minute=81_234,
            tpm_limit=200_000,
            ttft_ms=310.4,
            share=0.74,
            dispatched=901,
            skipped={"reason": "tpm_limit 200000 reached", "at_ms": int(now_ms - 300_000)},
        ),
        deployment(
            "gpt-4o-mini",
            "azure-east",
            priority=1,
            strategy="least_busy",
            requests_last_minute=16,
            tokens_last_minute=30_000,
            share=0.26,
            upstream={
                "remaining_requests": 0,
                "remaining_tokens": None,
                "exhausted_until_ms": int(now_ms + 600_000),
            },
        ),
        deployment("text-embedding-3-small", "openai", requests_last_minute=200, share=1.0),
    ]


def status_payload(with_deployments: bool) -> dict[str, Any]:
    status: dict[str, Any] = {
        "providers": [
            {
                "provider_id": "openai",
                "kind": "openai_compatible",
                "enabled": True,
                "base_url": None,
                "health": {
                    "state": "ok",
                    "last_probe_at_ms": None,
                    "last_probe_latency_ms": None,
                    "last_error": None,
                },
                "circuit": {"state": "closed", "retry_after_ms": 0},
                "discovery": None,
                "configured_models": ["gpt-4o-mini"],
            }
        ],
        "models": [
            {
                "model_id": "gpt-4o-mini",
                "provider_id": "openai",
                "role": "chat",
                "source": "configured",
                "available": True,
                "reason": "provider ok",
            }
        ],
        "degraded": False,
        "dependencies": {},
    }
    if with_deployments:
        status["deployments"] = deployments(time.time() * 1000)
    return status


class StatusServer:
    """Answers the admin status route with a payload of the test's choosing."""

    def __init__(self) -> None:
        self.payload: dict[str, Any] = {}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self.send_response(401)
                    self.end_headers()
                    return
                if self.path != "/console/v1/models/status":
                    self.send_response(404)
                    self.end_headers()
                    return
                body = json.dumps(owner.payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def daemon() -> Iterator[StatusServer]:
    server = StatusServer()
    yield server
    server.stop()


@pytest.fixture
def env(tmp_path: Path, daemon: StatusServer) -> dict[str, str]:
    return isolated_env(tmp_path, PALYRA_URL=daemon.url, PALYRA_ADMIN_TOKEN=TOKEN)


def test_deployments_fit_an_80_column_terminal(daemon: StatusServer, env: dict[str, str]) -> None:
    daemon.payload = status_payload(with_deployments=True)
    shown = in_terminal([PALYRA, "models", "status"], {**env, "TERM": "xterm"})
    lines = [line.rstrip() for line in shown.splitlines()]
    assert max(len(line) for line in lines) <= 80, shown
    start = lines.index("Deployments")
    table = lines[start:]
    rows = [line.split() for line in table if line.startswith(("gpt-4o-mini ", "text-emb"))]
    # Whole ids, every figure in its row: used/limit, compact tokens, TTFT, share.
    assert rows == [
        ["gpt-4o-mini", "openai", "3/0", "7", "45/500", "81k/200k", "310ms", "74%"],
        ["gpt-4o-mini", "azure-east", "1/1", "0", "16", "30k", "-", "26%"],
        ["text-embedding-3-small", "openai", "1/0", "0", "200", "0", "-", "100%"],
    ]
    # The strategy of a model with several deployments sits under its name.
    first = next(i for i, line in enumerate(table) if line.startswith("gpt-4o-mini "))
    assert table[first + 1].strip() == "(least_busy)"
    assert shown.count("(least_busy)") == 1 and "(weighted)" not in shown
    notes = " ".join(" ".join(table).split())  # notes may wrap at 80 columns
    assert "gpt-4o-mini@openai: skipped 5m ago: tpm_limit 200000 reached" in notes
    assert "gpt-4o-mini@azure-east: upstream exhausted for 10m more (0 requests left)" in notes
    # Nothing about text-embedding-3-small: it was never skipped.
    assert "text-embedding-3-small@" not in notes


def test_an_older_daemon_without_deployments_shows_no_deployments_table(
    daemon: StatusServer, env: dict[str, str]
) -> None:
    daemon.payload = status_payload(with_deployments=False)
    result = palyra("models", "status", env=env)
    assert result.returncode == 0, result.stderr
    assert "gpt-4o-mini" in result.stdout  # the models table is there
    assert "Deployments" not in result.stdout
    assert result.stderr == ""


def test_json_is_the_raw_status(daemon: StatusServer, env: dict[str, str]) -> None:
    daemon.payload = status_payload(with_deployments=True)
    result = palyra("models", "status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == daemon.payload


def test_piped_output_keeps_one_line_per_deployment(
    daemon: StatusServer, env: dict[str, str]
) -> None:
    # `| grep azure` must find the whole row, model included.
    daemon.payload = status_payload(with_deployments=True)
    result = palyra("models", "status", env=env)
    assert result.returncode == 0, result.stderr
    azure = [line for line in result.stdout.splitlines() if "azure-east" in line]
    assert azure[0].split() == ["gpt-4o-mini", "azure-east", "1/1", "0", "16", "30k", "-", "26%"]


NOW_MS = 1_800_000_000_000


def render(rows: list[dict[str, Any]], width: int) -> str:
    console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(deployments_view(rows, NOW_MS))
    return console.export_text()


def test_long_ids_fold_rather_than_end_in_an_ellipsis() -> None:
    rows = [
        deployment("gpt-4o-mini-2024-07-18", "azure-sweden-central-prod", share=0.5),
        deployment("gpt-4o-mini-2024-07-18", "openai-org-research", share=0.5),
    ]
    text = render(rows, 80)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    squeezed = "".join(text.split())
    assert "gpt-4o-mini-2024-07-" in squeezed and "azure-sweden-centra" in squeezed


def test_figures_read_against_their_limits() -> None:
    text = render(
        [
            deployment(
                "m",
                "p",
                weight=0.5,
                requests_last_minute=1200,
                tokens_last_minute=45_000_000,
                tpm_limit=50_000_000,
                ttft_ms=12.4,
            ),
            deployment("m", "q", requests_last_minute=12, rpm_limit=60, tokens_last_minute=9999),
        ],
        200,
    )
    rows = [line.split() for line in text.splitlines() if line.startswith("m ")]
    assert rows == [
        ["m", "p", "0.5/0", "0", "1200", "45M/50M", "12ms", "0%"],
        ["m", "q", "1/0", "0", "12/60", "9999", "-", "0%"],
    ]
    # A reset that has passed is no exhaustion; a skip with no time left still says when.
    past = deployment(
        "m",
        "p",
        upstream={"remaining_requests": 0, "remaining_tokens": 0, "exhausted_until_ms": NOW_MS},
        skipped={"reason": "rpm_limit 60 reached", "at_ms": NOW_MS - 4_000},
    )
    text = render([past], 200)
    assert "exhausted" not in text
    assert "m@p: skipped 4s ago: rpm_limit 60 reached" in text


async def test_a_deployment_boards_view_renders() -> None:
    # The real board's rows, so the table and the board keep agreeing on the shape.
    now = [1000.0]
    board = DeploymentBoard(clock=lambda: now[0], wall_clock=lambda: NOW_MS / 1000 + now[0])
    first = board.deployment(ModelConfig(model_id="m", provider_id="a", rpm_limit=60, weight=3))
    second = board.deployment(ModelConfig(model_id="m", provider_id="b", priority=1))
    admission = await board.admit(first, 100)
    assert isinstance(admission, Admission)
    board.settle(admission, ttft_s=0.25, tokens=120)
    board.exhaust(second, 30.0, "upstream answered 429")
    now_ms = NOW_MS + now[0] * 1000
    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(deployments_view(board.view(), now_ms))
    text = console.export_text()
    rows = [line.split() for line in text.splitlines() if line.startswith("m ")]
    assert rows == [
        ["m", "a", "3/0", "0", "1/60", "120", "250ms", "100%"],
        ["m", "b", "1/1", "0", "0", "0", "-", "0%"],
    ]
    assert "m@b: upstream exhausted for 30s more" in text
