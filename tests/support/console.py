"""What the console pages' browser tests share: the admin token their daemon runs with, the
console's URL (its pages polling fast), signing in and opening a section, the fields of a table
row, the admin API, the check that a page fits a narrow screen, the pages' screenshots (written
to docs/img/ with PALYRA_SCREENSHOTS=1), and a week of requests seeded into the daemon's ledger.

The fixtures (the daemon, a browser page on UTC) are in tests/console/conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from palyra.state import DB_FILE
from palyra.state.db import SqliteDatabase
from palyra.usage.records import UsageRecord, row
from palyra.usage.store import UsageStore
from tests.support.process import Daemon, clean_env, start_daemon

ADMIN = "console-keys-token-7321"

# The console's pages want a model to list and to run agents on: the deterministic one.
DETERMINISTIC_TOML = (
    "[[model_provider.providers]]\n"
    'provider_id = "local"\nkind = "deterministic"\n'
    "[[model_provider.models]]\n"
    'model_id = "deterministic"\nprovider_id = "local"\n'
)


@contextlib.asynccontextmanager
async def console_daemon(
    tmp_path: Path, sections: str = "", admin: str = ADMIN
) -> AsyncIterator[Daemon]:
    """palyrad on the deterministic model, with the config `sections` ([state], [agents], ...)
    besides, the admin token `admin`, and no OS keyring; stopped on leaving."""
    config = tmp_path / "config.toml"
    config.write_text("version = 1\n" + sections + DETERMINISTIC_TOML)
    env = clean_env(tmp_path, PALYRA_ADMIN_TOKEN=admin, PALYRA_VAULT_KEYRING="off")
    started = await start_daemon(tmp_path, ["--config", str(config)], env)
    try:
        yield started
    finally:
        started.process.terminate()
        await started.process.wait()


IMAGES = Path(__file__).resolve().parents[2] / "docs" / "img"
# Every page polls at this interval (poll.js) rather than every few seconds: a test waits for
# a refresh in a fraction of a second.
POLL_MS = 100


def console_url(daemon: Daemon) -> str:
    return f"{daemon.url}/console/?poll_ms={POLL_MS}"


async def open_console(page: Any, daemon: Daemon, section: str, heading: str) -> None:
    await page.goto(console_url(daemon))
    await page.get_by_label("Admin token").fill(ADMIN)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("heading", name="Providers").wait_for()
    await page.get_by_role("link", name=section, exact=True).click()
    await page.get_by_role("heading", name=heading, exact=True).wait_for()


async def hold_older_pages(page: Any, path: str, polls: int = 3) -> None:
    """Hold each "Older" request for `path` (one with `before=`) until the console shell has
    polled the daemon's status `polls` more times: while it is held, the list's own refresh,
    polling as often, would have gone out."""

    async def hold(route: Any) -> None:
        seen = asyncio.Event()
        count = 0

        def polled(request: Any) -> None:
            nonlocal count
            if urlsplit(request.url).path == "/console/v1/models/status":
                count += 1
                if count >= polls:
                    seen.set()

        page.on("request", polled)
        try:
            await asyncio.wait_for(seen.wait(), 10)
        finally:
            page.remove_listener("request", polled)
        await route.continue_()

    def older(url: str) -> bool:
        parts = urlsplit(url)
        return parts.path == path and "before=" in parts.query

    await page.route(older, hold)


async def shot(page: Any, name: str, full_page: bool = True) -> None:
    if os.environ.get("PALYRA_SCREENSHOTS"):
        IMAGES.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(IMAGES / f"{name}.png"), full_page=full_page)


async def fits_narrow_screen(page: Any) -> None:
    await page.set_viewport_size({"width": 380, "height": 800})
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 380, f"the page scrolls sideways on a 380 px screen ({width} px wide)"


async def cells(row: Any) -> dict[str, str]:
    fields = row.locator("[data-field]")
    return {
        str(await fields.nth(i).get_attribute("data-field")): (await fields.nth(i).inner_text())
        for i in range(await fields.count())
    }


async def api(daemon: Daemon, method: str, path: str, body: Any = None) -> Any:
    async with aiohttp.ClientSession() as http:
        async with http.request(
            method, daemon.url + path, json=body, headers={"Authorization": f"Bearer {ADMIN}"}
        ) as response:
            assert response.status < 300, await response.text()
            return await response.json()


def record(at_ms: int, model: str, provider: str, **fields: Any) -> UsageRecord:
    base: dict[str, Any] = {
        "at_ms": at_ms,
        "request_id": "req_" + secrets.token_hex(6),
        "key_id": None,
        "key_name": None,
        "agent_id": None,
        "route": "/v1/chat/completions",
        "model": model,
        "provider": provider,
        "deployment": f"{model}@{provider}",
        "status": 200,
        "input_tokens": 0,
        "output_tokens": 0,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "cost_usd": None,
        "cost_estimated": False,
        "latency_ms": 100.0,
        "ttft_ms": None,
        "retries": 0,
        "failovers": 0,
        "error": None,
        "stream": False,
    }
    return UsageRecord(**(base | fields))


async def seed_ledger(daemon_state: Path, records: Iterable[UsageRecord]) -> None:
    """Into the running daemon's SQLite state (WAL: it keeps serving meanwhile)."""
    db = await SqliteDatabase.open(daemon_state / DB_FILE)
    try:
        store = UsageStore(db)
        await store.migrate()
        await store.insert_many([row(secrets.token_hex(8), r) for r in records])
    finally:
        await db.close()


def state_dir(daemon: Daemon) -> Path:
    # clean_env puts XDG_STATE_HOME beside the daemon's log.
    return daemon.log_path.parent / "xdg-state" / "palyra"
