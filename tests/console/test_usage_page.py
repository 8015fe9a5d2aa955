"""The Usage page in a real browser against a real daemon whose ledger holds a week of
requests, written with the ledger's own store into the daemon's state database: the page's
figures come through the real `/console/v1/usage` route, and its charts are drawn by the
vendored uPlot the daemon serves."""

from __future__ import annotations

import time
from typing import Any

from palyra.usage.records import UsageRecord
from tests.support.console import (
    api,
    cells,
    fits_narrow_screen,
    open_console,
    record,
    seed_ledger,
    shot,
    state_dir,
)
from tests.support.process import Daemon

HOUR_MS = 3_600_000


def week(key_id: str, now_ms: int) -> list[UsageRecord]:
    ci = {"key_id": key_id, "key_name": "ci-bot"}

    def hours(n: int) -> int:
        return now_ms - n * HOUR_MS

    return [
        # ci-bot: 30 answers over the week (5 of them in the last 24 hours) and 2 refusals.
        *(
            record(
                hours(3 + 5 * i),
                "gpt-4o-mini",
                "openai",
                **ci,
                input_tokens=1000,
                output_tokens=200,
                cached_tokens=100,
                cost_usd=0.00027,
                latency_ms=800.0,
                ttft_ms=200.0,
            )
            for i in range(30)
        ),
        *(
            record(
                hours(50 + i),
                "gpt-4o-mini",
                "openai",
                **ci,
                status=429,
                cost_usd=0.0,
                error="rate_limit_exceeded: ci-bot is over its 60 requests a minute",
            )
            for i in range(2)
        ),
        # The admin token: 10 answers in the last 10 hours, and 3 with no price.
        *(
            record(
                hours(1 + i),
                "claude-sonnet-4",
                "anthropic",
                input_tokens=2000,
                output_tokens=500,
                reasoning_tokens=100,
                cost_usd=0.015,
                latency_ms=1500.0,
            )
            for i in range(10)
        ),
        *(
            record(hours(48), "deterministic", "local", input_tokens=50, output_tokens=20)
            for _ in range(3)
        ),
    ]


async def canvas(page: Any, chart_id: str) -> dict[str, Any]:
    """The chart's canvas: its size on the page, and how many of its pixels are painted in
    the first series' colour (#2456c7)."""
    drawn = dict(
        await page.evaluate(
            """(id) => {
                const c = document.querySelector(`#${id} canvas`);
                if (!c) return { width: 0, height: 0, painted: 0, missing: true };
                const box = c.getBoundingClientRect();
                const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                let painted = 0;
                for (let i = 0; i < d.length; i += 4) {
                  if (d[i + 3] > 100 && Math.abs(d[i] - 0x24) < 24 && Math.abs(d[i + 1] - 0x56) < 24
                      && Math.abs(d[i + 2] - 0xc7) < 24) painted++;
                }
                return { width: box.width, height: box.height, painted };
            }""",
            chart_id,
        )
    )
    text = await page.locator(f"#{chart_id}").inner_text()
    assert not drawn.get("missing"), f"no chart in #{chart_id}: {text!r}"
    return drawn


async def test_usage_shows_totals_tables_and_charts(ui: Any, daemon: Daemon) -> None:
    key = (await api(daemon, "POST", "/console/v1/keys", {"name": "ci-bot"}))["key"]
    await seed_ledger(state_dir(daemon), week(key["key_id"], int(time.time() * 1000)))
    asked: list[str] = []
    ui.on("request", lambda r: asked.append(r.url) if "/console/v1/usage" in r.url else None)

    await open_console(ui, daemon, "Usage", "Usage")
    summary = ui.locator("#usage-summary")
    await summary.get_by_text("Last 7 days").wait_for()
    assert await summary.inner_text() == (
        "Last 7 days: 45 requests (2 failed), 50k tokens in, 11k out, cost $0.16."
        " 3 requests had no price and are not in the cost."
    )
    assert {u.split("?", 1)[1] for u in asked} == {
        "group_by=day&since=7d",
        "group_by=model&since=7d",
        "group_by=key&since=7d",
    }

    mini = await cells(ui.locator('#usage-model-table tr[data-group="gpt-4o-mini"]'))
    assert (mini["requests"], mini["errors"], mini["input"], mini["output"]) == (
        "32",
        "2",
        "30k",
        "6000",
    )
    assert (mini["cached"], mini["cost"]) == ("3000", "$0.0081")
    claude = await cells(ui.locator('#usage-model-table tr[data-group="claude-sonnet-4"]'))
    assert (claude["requests"], claude["reasoning"], claude["cost"]) == ("10", "1000", "$0.15")
    unpriced = await cells(ui.locator('#usage-model-table tr[data-group="deterministic"]'))
    assert unpriced["cost"] == "—\n3 unpriced"

    ci = ui.locator(f'#usage-key-table tr[data-group="{key["key_id"]}"]')
    assert (await ci.locator("th").inner_text()) == f"ci-bot\n{key['key_id']}"
    assert (await cells(ci))["requests"] == "32"
    admin = ui.locator('#usage-key-table tr[data-group="admin"]')
    assert (await cells(admin))["requests"] == "13"

    for chart in ("chart-requests", "chart-tokens", "chart-cost", "chart-model", "chart-key"):
        drawn = await canvas(ui, chart)
        assert drawn["width"] > 300 and drawn["height"] > 100, (chart, drawn)
    assert (await canvas(ui, "chart-requests"))["painted"] > 100, "no request bars drawn"
    assert (await canvas(ui, "chart-model"))["painted"] > 100, "no model bars drawn"
    assert await ui.locator("#chart-model figcaption").inner_text() == "Requests by model"
    await shot(ui, "usage")

    asked.clear()
    await ui.get_by_label("Period").select_option("24h")
    await summary.get_by_text("Last 24 hours").wait_for()
    assert (await summary.inner_text()).startswith("Last 24 hours: 15 requests (0 failed)")
    assert "group_by=hour&since=24h" in {u.split("?", 1)[1] for u in asked}
    assert (
        await ui.locator("#chart-requests figcaption").inner_text() == "Requests and errors an hour"
    )
    assert (await canvas(ui, "chart-requests"))["painted"] > 50

    await ui.get_by_label("Bars show").select_option("cost")
    await ui.locator("#chart-model figcaption", has_text="Cost (USD) by model").wait_for()
    assert (await canvas(ui, "chart-model"))["painted"] > 50


async def test_usage_of_an_empty_ledger_says_so(ui: Any, daemon: Daemon) -> None:
    await open_console(ui, daemon, "Usage", "Usage")
    summary = ui.locator("#usage-summary")
    await summary.get_by_text("Last 7 days").wait_for()
    assert await summary.inner_text() == "Last 7 days: no requests."
    assert await ui.locator("#usage-by-model").inner_text() == "No requests in this period."
    # The charts are still drawn, at zero, and fit their boxes.
    assert (await canvas(ui, "chart-requests"))["width"] > 300


async def test_the_usage_page_fits_a_narrow_screen(ui: Any, daemon: Daemon) -> None:
    key = (await api(daemon, "POST", "/console/v1/keys", {"name": "ci-bot"}))["key"]
    await seed_ledger(state_dir(daemon), week(key["key_id"], int(time.time() * 1000)))
    await open_console(ui, daemon, "Usage", "Usage")
    await ui.locator("#usage-model-table").wait_for()
    await fits_narrow_screen(ui)
    # The charts shrink with the screen (each keeps to its box).
    await ui.wait_for_function(
        "() => document.querySelector('#chart-requests canvas').getBoundingClientRect().width < 360"
    )
