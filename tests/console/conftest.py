"""Browser fixtures: Debian's Chromium driven by Playwright against a real daemon process.

Where Chromium or Playwright is missing the tests skip and say so (`scripts/test` installs
Chromium with apt-get when it runs as root). Set PALYRA_SCREENSHOTS=1 to write each page's
screenshot to docs/screenshots/.

`daemon` (on the deterministic model, with tests/support/console.py's admin token) and `ui` (a
page on UTC, as the pages show local times) serve the Keys, Usage, Requests and Runs pages'
tests; a module that needs another daemon defines its own `daemon`, which takes precedence.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.console import console_daemon, console_url
from tests.support.process import Daemon

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
# As the machine notes say: without these, Chromium reaches for the network at every start.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        pytest.skip("Chromium is not installed (scripts/test installs it with apt-get as root)")
    return path


@pytest.fixture
async def browser(chromium_path: str) -> AsyncIterator[Any]:
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    await context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    async with console_daemon(tmp_path) as started:
        yield started


@pytest.fixture
async def ui(browser: Any) -> AsyncIterator[Any]:
    """A page on UTC, with the clipboard allowed; fails the test on any JavaScript error."""
    context = await browser.new_context(
        viewport={"width": 1100, "height": 800}, timezone_id="UTC", locale="en-US"
    )
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    await context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


async def snap(page: Any, name: str) -> None:
    if os.environ.get("PALYRA_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def sign_in(page: Any, daemon: Daemon, token: str) -> None:
    await page.goto(console_url(daemon))
    await page.get_by_label("Admin token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("heading", name="Providers").wait_for()
