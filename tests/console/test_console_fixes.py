"""What a newcomer found wrong in the console (issue 16), each in a real browser against a real
daemon: the cron table's layout and its time zone error, the Providers page's stale error,
polled pages that rebuilt their rows (closing what was open), nav links on the sign-in page,
the OAuth error in grey, a degraded store told only in grey text (Redis, and PostgreSQL lost
while the daemon runs), and counts whose noun did not agree with them ("1 tool calls").

The pages poll every POLL_MS here (tests/support/console.py), so waiting for a refresh is
short."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.fakes.proxy import CuttableProxy
from tests.fakes.upstream import FakeUpstream
from tests.state.conftest import drop_schema, postgres_schema_url
from tests.support.console import (
    ADMIN,
    POLL_MS,
    api,
    cells,
    console_daemon,
    console_url,
    open_console,
    record,
    seed_ledger,
    state_dir,
)
from tests.support.process import Daemon, clean_env, start_daemon

PALYRA = str(Path(sys.executable).with_name("palyra"))
ERROR_RED = "rgb(179, 38, 30)"  # --bad in app.css
UPSTREAM_KEY = "sk-kept-in-the-vault-5150"
VAULT_REF = "global/upstream_key"


async def colour(locator: Any) -> str:
    return str(await locator.evaluate("e => getComputedStyle(e).color"))


async def polls(page: Any, path: str, times: int = 2) -> None:
    """Wait until the page has asked for `path` `times` more times: the refresh that the
    first answer fed is on the page once the second request goes out."""
    for _ in range(times):
        async with page.expect_response(lambda r: urlsplit(r.url).path == path, timeout=5_000):
            pass


async def test_the_sign_in_page_shows_no_nav_links(ui: Any, daemon: Daemon) -> None:
    await ui.goto(console_url(daemon))
    await ui.get_by_label("Admin token").wait_for()
    assert await ui.get_by_role("link", name="Providers").is_hidden()
    assert await ui.locator("#nav").is_hidden()
    await open_console(ui, daemon, "Keys", "Keys")
    assert await ui.get_by_role("link", name="Providers").is_visible()
    await ui.get_by_role("button", name="Sign out").click()
    await ui.get_by_label("Admin token").wait_for()
    assert await ui.locator("#nav").is_hidden()


async def test_the_oauth_error_without_a_client_id_is_an_error(ui: Any, daemon: Daemon) -> None:
    await open_console(ui, daemon, "Auth profiles", "Auth profiles")
    await ui.get_by_role("button", name="Sign in with OpenAI").click()
    status = ui.locator("#oauth-status")
    await ui.wait_for_function("document.querySelector('#oauth-status').textContent.length > 0")
    assert "client_id" in await status.inner_text()
    assert await colour(status) == ERROR_RED
    assert await status.get_attribute("role") == "alert"


def job(name: str, schedule: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "agent_id": "default", "prompt": f"{name}: say hi", "schedule": schedule}


async def test_the_cron_table_lines_up_and_history_opens_in_view(ui: Any, daemon: Daemon) -> None:
    await api(daemon, "POST", "/console/v1/cron/jobs", job("every hour", {"every": "1h"}))
    for i in range(5):
        body = job(f"morning {i}", {"cron": f"{i} 9 * * 1-5", "timezone": "Europe/Prague"})
        await api(daemon, "POST", "/console/v1/cron/jobs", body)
    await open_console(ui, daemon, "Cron jobs", "Cron jobs")
    rows = ui.locator("#jobs-table tbody tr")
    await rows.nth(5).wait_for()
    await polls(ui, "/console/v1/cron/jobs")
    # Each Actions cell is a cell of its row: same top, same height.
    misaligned = await ui.evaluate(
        """[...document.querySelectorAll('#jobs-table tbody tr')].filter(tr => {
             const row = tr.getBoundingClientRect();
             const cell = tr.lastElementChild.getBoundingClientRect();
             return Math.abs(cell.top - row.top) > 1 || Math.abs(cell.height - row.height) > 1;
           }).map(tr => tr.dataset.job)"""
    )
    # The schedule once, and each fire time on one line.
    every = rows.filter(has_text="every hour").locator("td").nth(0)
    cron_cell = rows.filter(has_text="morning 0").locator("td").nth(0)
    written = (
        (await every.inner_text()).count("every"),
        (await cron_cell.inner_text()).count("Prague"),
    )
    heights = await rows.locator("td:nth-child(3) li").evaluate_all(
        """els => els.map(e => e.getBoundingClientRect().height
                            / parseFloat(getComputedStyle(e).lineHeight))"""
    )
    wrapped = [h for h in heights if h >= 1.5]
    assert (misaligned, written, len(heights), wrapped) == ([], (1, 1), 30, [])
    # History of the last job opens where it can be seen.
    await ui.get_by_role("button", name="Run history of morning 4").click()
    title = ui.get_by_role("heading", name="Runs of morning 4")
    await title.wait_for()
    box = await title.bounding_box()
    viewport = ui.viewport_size
    assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"]


async def test_a_time_zone_error_shows_beside_the_zone(ui: Any, daemon: Daemon) -> None:
    await open_console(ui, daemon, "Cron jobs", "Cron jobs")
    await ui.get_by_role("button", name="Add job").click()
    await ui.get_by_label("Name").fill("nowhere")
    await ui.get_by_label("Schedule kind").select_option("cron")
    await ui.get_by_label("Schedule", exact=True).fill("0 9 * * *")
    await ui.get_by_label("Time zone (cron only)").fill("Europe/Nowhere")
    await ui.get_by_label("Prompt").fill("say hello")
    await ui.get_by_role("button", name="Add job").last.click()
    zone_error = ui.locator('[data-error-for="timezone"]')
    await zone_error.wait_for()
    assert "Europe/Nowhere" in await zone_error.inner_text()
    assert await ui.locator('[data-error-for="schedule"]').inner_text() == ""
    assert await ui.evaluate("document.activeElement.id") == "job-timezone"


async def test_polling_keeps_open_rows_open_and_the_scroll_in_place(
    ui: Any, daemon: Daemon
) -> None:
    await ui.set_viewport_size({"width": 1100, "height": 300})
    await open_console(ui, daemon, "Providers", "Providers")
    row = ui.locator('tr[data-provider="local"]')
    await row.wait_for()
    await row.locator("summary").click()
    await ui.evaluate("document.querySelector('tr[data-provider=\"local\"]').__seen = true")
    await ui.evaluate("window.scrollTo(0, 120)")
    scrolled = await ui.evaluate("window.scrollY")
    assert scrolled > 0
    await polls(ui, "/console/v1/models/status", 3)
    assert await row.locator("details").get_attribute("open") is not None
    assert await ui.evaluate("document.querySelector('tr[data-provider=\"local\"]').__seen")
    assert await ui.evaluate("window.scrollY") == scrolled


@pytest.mark.parametrize(
    ("section", "heading", "row", "path"),
    [
        ("Keys", "Keys", "#keys-table tbody tr", "/console/v1/keys"),
        ("Cron jobs", "Cron jobs", "#jobs-table tbody tr", "/console/v1/cron/jobs"),
        ("Requests", "Requests", "#requests-table tbody tr", "/console/v1/requests"),
        ("Runs", "Runs", "#runs-list tbody tr", "/console/v1/runs"),
    ],
)
async def test_every_polled_page_keeps_its_rows(
    ui: Any, daemon: Daemon, section: str, heading: str, row: str, path: str
) -> None:
    await api(daemon, "POST", "/console/v1/keys", {"name": "ci-bot"})
    await api(daemon, "POST", "/console/v1/cron/jobs", job("hourly", {"every": "1h"}))
    await api(daemon, "POST", "/console/v1/runs", {"input": "hello"})  # a run and a request
    await open_console(ui, daemon, section, heading)
    await ui.locator(row).first.wait_for()
    await ui.locator(row).first.evaluate("e => { e.__seen = true }")
    await polls(ui, path)
    assert await ui.locator(row).first.evaluate("e => e.__seen === true"), f"{section} rebuilt"


# --- Providers: a secret set after the start --------------------------------------------------


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(api_key=UPSTREAM_KEY) as fake:
        yield fake


@pytest.fixture
async def vault_daemon(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[Daemon]:
    config = tmp_path / "config.toml"
    config.write_text(
        "version = 1\n"
        "[model_provider]\nhealth_ttl_ms = 1000\n"
        "[[model_provider.providers]]\n"
        'provider_id = "vaulted"\nkind = "openai_compatible"\n'
        f'base_url = "{upstream.openai_base_url}"\n'
        f'allow_private_base_url = true\napi_key_vault_ref = "{VAULT_REF}"\n'
        "[[model_provider.models]]\n"
        'model_id = "gpt-4o-mini"\nprovider_id = "vaulted"\n'
    )
    env = clean_env(tmp_path, PALYRA_ADMIN_TOKEN=ADMIN, PALYRA_VAULT_KEYRING="off")
    started = await start_daemon(tmp_path, ["--config", str(config)], env)
    started.env = env  # type: ignore[attr-defined]
    yield started
    started.process.terminate()
    await started.process.wait()


async def test_a_recovered_provider_shows_no_old_error(ui: Any, vault_daemon: Daemon) -> None:
    await open_console(ui, vault_daemon, "Providers", "Providers")
    row = ui.locator('tr[data-provider="vaulted"]')
    error = row.locator('[data-field="last-error"]')
    await error.filter(has_text="is not set").wait_for(timeout=10_000)
    process = await asyncio.create_subprocess_exec(
        PALYRA,
        "vault",
        "set",
        VAULT_REF,
        "--value-stdin",
        env={**os.environ, **vault_daemon.env},  # type: ignore[attr-defined]
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate(UPSTREAM_KEY.encode())
    assert process.returncode == 0, err.decode()
    await ui.get_by_role("button", name="Test connection to vaulted").click()
    await row.locator('[data-field="health"]').get_by_text("ok").wait_for(timeout=10_000)
    await polls(ui, "/console/v1/models/status")
    assert (await error.inner_text()).strip() == ""


# --- A store that does not answer --------------------------------------------------------------


@pytest.fixture
async def redis_down(tmp_path: Path) -> AsyncIterator[Daemon]:
    nowhere = '[state]\nredis_url = "redis://127.0.0.1:1/0"\n'
    async with console_daemon(tmp_path, nowhere) as started:
        yield started


async def test_a_degraded_store_is_a_banner_on_every_page(ui: Any, redis_down: Daemon) -> None:
    await open_console(ui, redis_down, "Keys", "Keys")
    banner = ui.get_by_role("alert").filter(has_text="Degraded")
    await banner.wait_for(timeout=15_000)
    text = await banner.inner_text()
    assert "Redis does not answer" in text
    # What it means, for this dependency (not the state store's words).
    assert "this daemon's own circuit breakers and health" in text, text
    assert "needs the store" not in text, text
    await ui.get_by_role("link", name="Providers").click()
    await ui.locator("#providers-updated").filter(has_text="Updated").wait_for()
    assert await banner.is_visible()
    assert "degraded" not in (await ui.locator("#providers-updated").inner_text()).lower()


@pytest.fixture
async def postgres_via_proxy() -> AsyncIterator[tuple[str, CuttableProxy]]:
    """A schema of its own on the test server (skips where PostgreSQL does not answer), reached
    through a proxy the test can cut."""
    url, schema = await postgres_schema_url()
    proxy = CuttableProxy(5432)
    await proxy.start()
    yield url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"), proxy
    await proxy.close()
    await drop_schema(schema)


@pytest.fixture
async def postgres_daemon(
    tmp_path: Path, postgres_via_proxy: tuple[str, CuttableProxy]
) -> AsyncIterator[Daemon]:
    url, _ = postgres_via_proxy
    state = f'[state]\nbackend = "postgres"\nurl = "{url}"\n'
    async with console_daemon(tmp_path, state) as started:
        yield started


async def test_a_lost_postgresql_store_is_a_banner_until_it_is_back(
    ui: Any, postgres_daemon: Daemon, postgres_via_proxy: tuple[str, CuttableProxy]
) -> None:
    _, proxy = postgres_via_proxy
    await open_console(ui, postgres_daemon, "Keys", "Keys")
    await polls(ui, "/console/v1/models/status")
    banner = ui.locator("#degraded")
    assert await banner.is_hidden()
    proxy.cut()
    await banner.filter(has_text="Degraded").wait_for(timeout=15_000)
    text = await banner.inner_text()
    assert "The state store does not answer" in text
    # Requests go on (they never touch the store); what needs it does not.
    assert "Requests are still served; what needs the store" in text, text
    assert "circuit breakers" not in text, text
    assert await banner.get_attribute("role") == "alert"
    await ui.get_by_role("link", name="Runs").click()
    await ui.get_by_role("heading", name="Runs", exact=True).wait_for()
    assert await banner.is_visible()
    proxy.up = True
    await banner.wait_for(state="hidden", timeout=15_000)


# --- Counts and their nouns ----------------------------------------------------------------------


async def test_a_count_of_one_takes_the_singular(ui: Any, daemon: Daemon) -> None:
    once = record(
        int(time.time() * 1000) - 60_000,
        "deterministic",
        "local",
        request_id="req_once",
        status=429,
        retries=1,
        failovers=1,
        input_tokens=1,
    )
    await seed_ledger(state_dir(daemon), [once])
    await open_console(ui, daemon, "Usage", "Usage")
    summary = ui.locator("#usage-summary")
    await summary.get_by_text("Last 7 days").wait_for()
    assert await summary.inner_text() == (
        "Last 7 days: 1 request (1 failed), 1 token in, 0 out, cost unknown."
        " 1 request had no price and is not in the cost."
    )
    await ui.get_by_role("link", name="Requests").click()
    row = ui.locator('tr[data-request="req_once"]')
    await row.wait_for()
    assert (await cells(row))["status"] == "429\n1 retry, 1 failover"

    # A cron run that called one tool (the deterministic model's /tool command).
    body = job("one tool", {"every": "1h"}) | {"prompt": '/tool calculator {"expression": "2+2"}'}
    created = await api(daemon, "POST", "/console/v1/cron/jobs", body)
    await api(daemon, "POST", f"/console/v1/cron/jobs/{created['job_id']}/trigger")
    await ui.get_by_role("link", name="Cron jobs").click()
    await ui.get_by_role("button", name="Run history of one tool").click()
    finished = ui.locator("#runs-table tbody tr").filter(has_text="succeeded")
    await finished.wait_for()
    usage = await finished.inner_text()
    assert " tokens, 1 tool call" in usage and "1 tool calls" not in usage, usage


# --- The poll interval the tests shorten -------------------------------------------------------


async def test_poll_ms_only_shortens_the_intervals_of_the_console_it_is_given_to(
    ui: Any, daemon: Daemon
) -> None:
    every = "[5000, 30000].map(ms => import('/console/static/poll.js').then(m => m.every(ms)))"
    await ui.goto(daemon.url + "/console/")
    assert await ui.evaluate(f"Promise.all({every})") == [5000, 30000]
    await ui.goto(console_url(daemon))
    assert await ui.evaluate(f"Promise.all({every})") == [POLL_MS, POLL_MS]
    await ui.goto(daemon.url + "/console/?poll_ms=60000")  # never longer than a page's own
    assert await ui.evaluate(f"Promise.all({every})") == [5000, 30000]
