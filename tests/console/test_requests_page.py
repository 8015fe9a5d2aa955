"""The Requests page in a real browser against a real daemon whose ledger holds 53 requests
(written with the ledger's own store): what a row shows, the filters' queries and what the
daemon answers to them, paging back with "Older", and text that is never markup."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from palyra.usage.records import UsageRecord
from tests.support.console import (
    api,
    cells,
    fits_narrow_screen,
    hold_older_pages,
    open_console,
    record,
    seed_ledger,
    shot,
    state_dir,
)
from tests.support.process import Daemon

MINUTE_MS = 60_000
HOSTILE = "<img src=x onerror=alert(1)>"


def ledger(key_id: str, now_ms: int) -> list[UsageRecord]:
    return [
        record(
            now_ms - MINUTE_MS,
            "gpt-4o-mini",
            "openai",
            request_id="req_newest",
            key_id=key_id,
            key_name="ci-bot",
            input_tokens=1200,
            output_tokens=350,
            cached_tokens=1024,
            cost_usd=0.00039,
            latency_ms=812.4,
            ttft_ms=231.2,
            stream=True,
        ),
        record(
            now_ms - 2 * MINUTE_MS,
            "claude-sonnet-4",
            "anthropic",
            request_id="req_limited",
            status=429,
            latency_ms=3.2,
            retries=2,
            error="rate_limit_exceeded: over 60 requests a minute",
        ),
        *(
            record(
                now_ms - (3 + i) * MINUTE_MS,
                "deterministic",
                "local",
                request_id=f"req_filler_{i:02d}",
                input_tokens=40,
                output_tokens=12,
            )
            for i in range(50)
        ),
        record(
            now_ms - 180 * MINUTE_MS,
            HOSTILE,
            "local",
            request_id="req_oldest",
            status=500,
            error="<script>alert(2)</script>",
        ),
    ]


async def has_rows(rows: Any, n: int) -> None:
    expect = pytest.importorskip("playwright.async_api").expect
    await expect(rows).to_have_count(n)


def query_of(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


async def test_requests_are_listed_filtered_and_paged(ui: Any, daemon: Daemon) -> None:
    key = (await api(daemon, "POST", "/console/v1/keys", {"name": "ci-bot"}))["key"]
    now_ms = int(time.time() * 1000)
    await seed_ledger(state_dir(daemon), ledger(key["key_id"], now_ms))
    asked: list[dict[str, str]] = []
    ui.on(
        "request",
        lambda r: asked.append(query_of(r.url)) if "/console/v1/requests" in r.url else None,
    )

    await open_console(ui, daemon, "Requests", "Requests")
    rows = ui.locator("#requests-table tbody tr")
    newest = ui.locator('tr[data-request="req_newest"]')
    await newest.wait_for()
    assert asked[0] == {"limit": "50"}
    assert await rows.count() == 50
    shown = await cells(newest)
    at = dt.datetime.fromtimestamp((now_ms - MINUTE_MS) / 1000, dt.UTC)
    assert shown["time"] == at.strftime("%Y-%m-%d %H:%M:%S")
    assert shown["key"] == "ci-bot"
    assert shown["model"] == "gpt-4o-mini\nstreamed"
    assert shown["provider"] == "openai"  # its deployment, gpt-4o-mini@openai, goes unsaid
    assert shown["status"] == "200"
    assert (shown["latency"], shown["ttft"]) == ("812 ms", "231 ms")
    assert shown["tokens"] == "1200 / 350\n1024 cached"
    assert shown["cost"] == "$0.00039"
    assert shown["error"] == ""
    limited = await cells(ui.locator('tr[data-request="req_limited"]'))
    assert limited["key"] == "admin"
    assert limited["status"] == "429\n2 retries"
    assert (limited["ttft"], limited["cost"]) == ("—", "—")
    assert limited["error"] == "rate_limit_exceeded: over 60 requests a minute"
    await shot(ui, "requests", full_page=False)  # the first rows are enough

    # Older: the page before, appended (even when the refresh came due while it was loading);
    # the end says so.
    await hold_older_pages(ui, "/console/v1/requests")
    older = ui.get_by_role("button", name="Older")
    async with ui.expect_request(lambda r: "before=" in r.url) as sent:
        await older.click()
    assert query_of((await sent.value).url)["before"].startswith(str(now_ms - 50 * MINUTE_MS))
    oldest = ui.locator('tr[data-request="req_oldest"]')
    await oldest.wait_for()
    assert await rows.count() == 53
    assert await older.is_hidden()
    assert "no older ones" in await ui.locator("#requests-state").inner_text()
    # A model name and an error that look like markup are shown as text.
    assert (await cells(oldest))["model"] == HOSTILE
    assert (await cells(oldest))["error"] == "<script>alert(2)</script>"
    assert await ui.locator("#main img, #main script").count() == 0

    # Each filter is sent as it is chosen, and what the daemon answers is what shows.
    async with ui.expect_request(lambda r: "key_id=" in r.url) as sent:
        await ui.get_by_label("Key").select_option(key["key_id"])
    assert query_of((await sent.value).url) == {"key_id": key["key_id"], "limit": "50"}
    await has_rows(rows, 1)
    assert await newest.is_visible()

    async with ui.expect_request(lambda r: "status=" in r.url) as sent:
        await ui.get_by_label("Status").select_option("error")
    assert query_of((await sent.value).url) == {
        "key_id": key["key_id"],
        "status": "error",
        "limit": "50",
    }
    await ui.get_by_text("No requests match.").wait_for()

    await ui.get_by_label("Key").select_option("")
    await has_rows(rows, 2)
    assert await ui.locator('tr[data-request="req_limited"]').is_visible()
    assert await oldest.is_visible()

    async with ui.expect_request(lambda r: "model=" in r.url) as sent:
        await ui.get_by_label("Model").fill("claude-sonnet-4")
        await ui.get_by_role("button", name="Filter").click()
    assert query_of((await sent.value).url) == {
        "model": "claude-sonnet-4",
        "status": "error",
        "limit": "50",
    }
    await has_rows(rows, 1)
    assert await ui.locator('tr[data-request="req_limited"]').is_visible()


async def test_the_requests_page_fits_a_narrow_screen(ui: Any, daemon: Daemon) -> None:
    key = (await api(daemon, "POST", "/console/v1/keys", {"name": "ci-bot"}))["key"]
    await seed_ledger(state_dir(daemon), ledger(key["key_id"], int(time.time() * 1000)))
    await open_console(ui, daemon, "Requests", "Requests")
    await ui.locator('tr[data-request="req_newest"]').wait_for()
    await fits_narrow_screen(ui)
