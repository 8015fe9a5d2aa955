"""The web console in a real browser, against a real daemon process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import sign_in, snap
from tests.fakes.upstream import FakeUpstream
from tests.test_daemon import Daemon, clean_env, start_daemon

ADMIN = "console-admin-token-0123"
KEY = "sk-console-upstream-key"


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def daemon(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[Daemon]:
    config = tmp_path / "config.toml"
    config.write_text(
        "version = 1\n"
        "[model_provider]\nhealth_ttl_ms = 1000\n"
        "[[model_provider.providers]]\n"
        'provider_id = "fake-openai"\nkind = "openai_compatible"\n'
        f'base_url = "{upstream.openai_base_url}"\n'
        'allow_private_base_url = true\napi_key_env = "UPSTREAM_KEY"\n'
        "[[model_provider.providers]]\n"
        'provider_id = "local"\nkind = "deterministic"\n'
        "[[model_provider.models]]\n"
        'model_id = "gpt-4o-mini"\nprovider_id = "fake-openai"\n'
        "[[model_provider.models]]\n"
        'model_id = "deterministic"\nprovider_id = "local"\n'
    )
    env = clean_env(tmp_path, PALYRA_ADMIN_TOKEN=ADMIN, UPSTREAM_KEY=KEY)
    started = await start_daemon(tmp_path, ["--config", str(config)], env)
    yield started
    started.process.terminate()
    await started.process.wait()


async def test_sign_in_is_required_and_wrong_tokens_are_refused(page: Any, daemon: Daemon) -> None:
    await page.goto(daemon.url + "/console/")
    await page.get_by_label("Admin token").fill("not-the-token")
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_text("that is not the daemon's admin token").wait_for()
    await snap(page, "sign-in")
    await sign_in(page, daemon, ADMIN)
    # The session cookie is HttpOnly: scripts on the page cannot read it.
    assert await page.evaluate("document.cookie") == ""
    # A state-changing call without the CSRF token is refused, even with the cookie.
    status = await page.evaluate(
        """fetch('/console/v1/models/discover', {method: 'POST', credentials: 'same-origin'})
           .then(r => r.status)"""
    )
    assert status == 403


async def test_a_provider_turns_unhealthy_when_its_upstream_stops(
    page: Any, daemon: Daemon, upstream: FakeUpstream
) -> None:
    await sign_in(page, daemon, ADMIN)
    health = page.locator('tr[data-provider="fake-openai"] [data-field="health"]')
    await health.get_by_text("ok").wait_for(timeout=10_000)
    await snap(page, "providers")
    upstream.set_down(True)
    await health.get_by_text("unreachable").wait_for(timeout=10_000)
    error = page.locator('tr[data-provider="fake-openai"] [data-field="last-error"]')
    assert (await error.inner_text()).strip()
    assert KEY not in await page.content()
    upstream.set_down(False)
    await page.get_by_role("button", name="Test connection to fake-openai").click()
    await health.get_by_text("ok").wait_for(timeout=10_000)


async def test_narrow_screen_and_keyboard(page: Any, daemon: Daemon) -> None:
    await page.set_viewport_size({"width": 380, "height": 800})
    await page.goto(daemon.url + "/console/")
    # Keyboard only: the token field has focus; type and press Enter.
    await page.keyboard.type(ADMIN)
    await page.keyboard.press("Enter")
    await page.get_by_role("heading", name="Providers").wait_for()
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, "the page must not scroll sideways on a narrow screen"
    unlabeled = await page.evaluate(
        """[...document.querySelectorAll('input, select, textarea')]
           .filter(e => e.type !== 'hidden')
           .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
           .map(e => e.id || e.name)"""
    )
    assert unlabeled == []
