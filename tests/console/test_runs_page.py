"""The Runs page in a real browser against a real daemon: the history of runs from the CLI (the
real `palyra run`), cron and the console, filtered and paged; a run's page with its events,
output, usage and error, which a reload keeps; and cron history rows that show their output
and link to their run's page."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import snap
from tests.support.console import (
    ADMIN,
    api,
    console_daemon,
    fits_narrow_screen,
    hold_older_pages,
    open_console,
)
from tests.support.process import Daemon

PALYRA = str(Path(sys.executable).with_name("palyra"))
AGENTS = """version = 1
[[agents]]
agent_id = "broken"
model = "no-such-model"
"""


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    (tmp_path / "agents.toml").write_text(AGENTS)
    agents = f'[agents]\nfile = "{tmp_path / "agents.toml"}"\n'
    async with console_daemon(tmp_path, agents) as started:
        yield started


async def cli_run(daemon: Daemon, text: str) -> str:
    env = {**os.environ, "PALYRA_URL": daemon.url, "PALYRA_ADMIN_TOKEN": ADMIN}
    process = await asyncio.create_subprocess_exec(
        PALYRA, "run", text, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def cron_run(daemon: Daemon) -> tuple[dict[str, Any], dict[str, Any]]:
    job = await api(
        daemon,
        "POST",
        "/console/v1/cron/jobs",
        {
            "name": "hourly digest",
            "agent_id": "default",
            "prompt": "digest of the hour",
            "schedule": {"every": "1h"},
        },
    )
    await api(daemon, "POST", f"/console/v1/cron/jobs/{job['job_id']}/trigger")
    for _ in range(100):
        runs = (await api(daemon, "GET", f"/console/v1/cron/jobs/{job['job_id']}/runs"))["runs"]
        if runs[0]["status"] != "running":
            return job, runs[0]
        await asyncio.sleep(0.05)
    raise AssertionError("the cron run did not finish")


async def test_runs_of_every_source_are_listed_and_a_run_page_survives_a_reload(
    ui: Any, daemon: Daemon
) -> None:
    await cli_run(daemon, "from the terminal")
    job, cron = await cron_run(daemon)
    await open_console(ui, daemon, "Runs", "Runs")

    # Started here: the page moves to the run's own URL and follows it to the end.
    await ui.get_by_label("Input").fill('/tool calculator {"expression": "17*23"}')
    await ui.get_by_role("button", name="Start run").click()
    await ui.locator('#run-events li[data-type="run_finished"]').wait_for(timeout=15_000)
    run_id = ui.url.rsplit("/", 1)[-1]
    assert run_id.startswith("run_"), ui.url
    assert "returned: 391" in await ui.locator("#run-output").inner_text()
    assert "tokens" in await ui.locator('#run-summary [data-field="usage"]').inner_text()
    assert await ui.locator("#run-error-box").is_hidden()

    # A reload finds the same run, with all its events.
    await ui.reload()
    await ui.locator('#run-events li[data-type="run_finished"]').wait_for(timeout=15_000)
    assert run_id in await ui.get_by_role("heading", level=1).inner_text()
    types = await ui.locator("#run-events li").evaluate_all("els => els.map(e => e.dataset.type)")
    assert types == ["run_started", "tool_call", "tool_result", "model_text", "run_finished"]
    assert "succeeded" in await ui.locator('#run-summary [data-field="status"]').inner_text()

    # The history: newest first, every source.
    await ui.locator("#all-runs").click()
    rows = ui.locator("#runs-list tbody tr")
    await rows.nth(2).wait_for()
    sources = await rows.locator('[data-field="source"]').evaluate_all(
        "els => els.map(e => e.firstChild.textContent)"
    )
    assert sources == ["console", "cron", "CLI"]
    assert job["job_id"] in await rows.nth(1).inner_text()
    assert "from the terminal" in await rows.nth(2).inner_text()
    await snap(ui, "runs")

    # Filters: the daemon's answer to each, and a link to the cron run's page.
    await ui.get_by_label("Source").select_option("cron")
    await ui.locator("#runs-list tbody tr").filter(has_text="console").wait_for(state="detached")
    assert await rows.count() == 1
    await rows.first.get_by_role("link", name=cron["agent_run_id"], exact=True).click()
    await ui.locator('#run-events li[data-type="run_finished"]').wait_for()
    assert ui.url.endswith(cron["agent_run_id"])
    assert "digest of the hour" in await ui.locator("#run-input-text").inner_text()
    await ui.go_back()
    await ui.get_by_label("Status").select_option("failed")
    await ui.locator("#runs-empty").wait_for()


async def test_a_failed_run_shows_its_error(ui: Any, daemon: Daemon) -> None:
    await open_console(ui, daemon, "Runs", "Runs")
    await ui.get_by_label("Agent to run").select_option("broken")
    await ui.get_by_label("Input").fill("anything")
    await ui.get_by_role("button", name="Start run").click()
    await ui.locator('#run-events li[data-type="run_finished"]').wait_for(timeout=15_000)
    error = ui.locator("#run-error-message")
    await error.wait_for()
    assert "no-such-model" in await error.inner_text()
    assert "failed" in await ui.locator('#run-summary [data-field="status"]').inner_text()
    await fits_narrow_screen(ui)
    await ui.set_viewport_size({"width": 1100, "height": 800})
    await ui.locator("#all-runs").click()
    row = ui.locator("#runs-list tbody tr").first
    await row.wait_for()
    assert "no-such-model" in await row.locator('[data-field="output"] .error-text').inner_text()
    await fits_narrow_screen(ui)


async def test_older_runs_page_back(ui: Any, daemon: Daemon) -> None:
    for batch in range(6):
        await asyncio.gather(
            *(
                api(daemon, "POST", "/console/v1/runs", {"input": f"run {batch * 10 + i:02d}"})
                for i in range(10)
            )
        )
    await open_console(ui, daemon, "Runs", "Runs")
    rows = ui.locator("#runs-list tbody tr")
    await rows.nth(49).wait_for()
    assert await rows.count() == 50
    # Even when the list's refresh comes due while the older page loads.
    await hold_older_pages(ui, "/console/v1/runs")
    await ui.get_by_role("button", name="Older").click()
    await rows.nth(59).wait_for()
    assert await ui.get_by_role("button", name="Older").is_hidden()
    inputs = await rows.locator('[data-field="input"]').all_inner_texts()
    assert sorted(inputs) == [f"run {i:02d}" for i in range(60)]


async def test_cron_history_shows_output_and_links_to_the_run(ui: Any, daemon: Daemon) -> None:
    job, cron = await cron_run(daemon)
    await open_console(ui, daemon, "Cron jobs", "Cron jobs")
    await ui.get_by_role("button", name="Run history of hourly digest").click()
    row = ui.locator(f'#runs-table tr[data-run="{cron["cron_run_id"]}"]')
    await row.wait_for()
    output = row.locator('[data-field="output"]')
    assert cron["output_excerpt"] and cron["output_excerpt"][:40] in await output.inner_text()
    await output.get_by_role("link").click()
    await ui.locator('#run-events li[data-type="run_finished"]').wait_for()
    assert ui.url.endswith(f"#/runs/{cron['agent_run_id']}")
    assert job["job_id"] in await ui.locator('#run-summary [data-field="source"]').inner_text()


async def test_the_list_shows_whole_run_ids_and_a_run_links_to_its_cron_job(
    ui: Any, daemon: Daemon
) -> None:
    job, cron = await cron_run(daemon)
    await open_console(ui, daemon, "Runs", "Runs")
    link = ui.locator(f'#runs-list tr[data-run="{cron["agent_run_id"]}"] [data-field="run"] a')
    await link.wait_for()
    # Whole (issue 16: ids are never cut), and wrapped in its column: the table fits the page.
    assert await link.inner_text() == cron["agent_run_id"]
    overflow = await ui.locator("#runs-list").evaluate(
        "t => t.parentElement.scrollWidth - t.parentElement.clientWidth"
    )
    assert overflow <= 0, f"the runs table scrolls sideways by {overflow} px"

    # The run's page links to the job that made it: its row marked, its history open.
    await link.click()
    await ui.locator('#run-events li[data-type="run_finished"]').wait_for()
    summary = ui.locator("#run-summary")
    await summary.get_by_role("link", name=f"cron job {job['job_id']}").click()
    await ui.get_by_role("heading", name="Runs of hourly digest").wait_for(timeout=5_000)
    assert ui.url.endswith(f"#/cron/{job['job_id']}")
    row = ui.locator(f'#jobs-table tr[data-job="{job["job_id"]}"]')
    assert await row.get_attribute("aria-current") == "true"
    assert await ui.locator(f'#runs-table tr[data-run="{cron["cron_run_id"]}"]').is_visible()
