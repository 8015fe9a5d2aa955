"""The Providers page's Deployments section, in a real browser against a real daemon.

The daemon's own status answer is taken as it is and given the deployments rows of the
test's choosing on the way to the page, so what the page shows can be checked exactly.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import sign_in, snap
from tests.support.console import console_daemon
from tests.support.deployments import deployment_row as deployment
from tests.support.process import Daemon

ADMIN = "console-deployments-token-5150"


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    async with console_daemon(tmp_path, admin=ADMIN) as started:
        yield started


def rows(in_flight: int) -> list[dict[str, Any]]:
    now_ms = time.time() * 1000
    return [
        deployment(
            "gpt-4o-mini",
            "openai",
            weight=3,
            strategy="least_busy",
            in_flight=in_flight,
            requests_last_minute=45,
            rpm_limit=500,
            tokens_last_minute=81_234,
            tpm_limit=200_000,
            ttft_ms=310.4,
            share=0.74,
            skipped={"reason": "tpm_limit 200000 reached", "at_ms": int(now_ms - 30_000)},
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
    ]


async def relay(route: Any, change: Callable[[dict[str, Any]], None]) -> None:
    """The daemon's status answer, changed on the way to the page. The page polls until it
    closes, which is after the daemon has stopped: a poll that finds no daemon is dropped."""
    try:
        response = await route.fetch()
    except Exception:  # playwright's Error: the daemon has stopped
        await route.abort()
        return
    body = await response.json()
    change(body)
    await route.fulfill(response=response, json=body)


async def cells(row: Any) -> dict[str, str]:
    fields = row.locator("[data-field]")
    return {
        str(await fields.nth(i).get_attribute("data-field")): (await fields.nth(i).inner_text())
        for i in range(await fields.count())
    }


async def test_deployments_show_their_load_limits_and_last_skip(page: Any, daemon: Daemon) -> None:
    served: dict[str, Any] = {"rows": None}

    def change(body: dict[str, Any]) -> None:
        body.pop("deployments", None)  # as an older daemon answers
        if served["rows"] is not None:
            body["deployments"] = served["rows"]

    async def status(route: Any) -> None:
        await relay(route, change)

    await page.route("**/console/v1/models/status", status)
    await sign_in(page, daemon, ADMIN)
    await page.locator('tr[data-provider="local"]').wait_for()
    section = page.locator("#deployments")
    # Without deployments rows nothing of the section shows.
    assert await section.is_hidden()

    served["rows"] = rows(in_flight=7)
    openai = page.locator('tr[data-deployment="gpt-4o-mini@openai"]')
    await openai.wait_for(timeout=10_000)  # the page's own refresh brings them
    await page.get_by_role("heading", name="Deployments").wait_for()
    shown = await cells(openai)
    assert shown["weight"] == "3 / 0"
    assert shown["strategy"] == "least busy"
    assert shown["in-flight"] == "7"
    assert shown["requests"] == "45 / 500"
    assert shown["tokens"] == "81k / 200k"
    assert shown["ttft"] == "310 ms"
    assert shown["share"] == "74%"
    assert shown["skipped"].startswith("tpm_limit 200000 reached")
    assert "s ago" in shown["skipped"]
    assert "exhausted" not in shown

    azure = await cells(page.locator('tr[data-deployment="gpt-4o-mini@azure-east"]'))
    assert azure["weight"] == "1 / 1"
    assert azure["requests"] == "16"  # no limit: the count alone
    assert azure["tokens"] == "30k"
    assert azure["ttft"] == "—"
    assert azure["exhausted"].startswith("Upstream exhausted for 10 min more")
    assert "(0 requests left)" in azure["exhausted"]
    assert "skipped" not in azure
    await snap(page, "deployments")

    # Refreshed like the rest of the page.
    served["rows"] = rows(in_flight=2)
    await openai.locator('[data-field="in-flight"]', has_text="2").wait_for(timeout=10_000)


async def test_deployments_fit_a_narrow_screen(page: Any, daemon: Daemon) -> None:
    async def status(route: Any) -> None:
        await relay(route, lambda body: body.update(deployments=rows(in_flight=1)))

    await page.route("**/console/v1/models/status", status)
    await page.set_viewport_size({"width": 380, "height": 800})
    await sign_in(page, daemon, ADMIN)
    await page.locator('tr[data-deployment="gpt-4o-mini@openai"]').wait_for(timeout=10_000)
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, "the page must not scroll sideways on a narrow screen"
