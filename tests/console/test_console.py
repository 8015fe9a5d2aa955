"""The web console in a real browser, against a real daemon process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.auth.oauth_server import CLIENT_ID, OAuthTestServer
from tests.console.conftest import sign_in, snap
from tests.fakes.oauth_upstream import TokenUpstream
from tests.support.console import console_url
from tests.support.process import Daemon, clean_env, start_daemon

ADMIN = "console-admin-token-0123"
KEY = "sk-console-upstream-key"
CONNECTED_KEY = "sk-connected-in-the-console-4242"


@pytest.fixture
def oauth() -> Iterator[OAuthTestServer]:
    server = OAuthTestServer().start()
    yield server
    server.stop()


@pytest.fixture
async def upstream(oauth: OAuthTestServer) -> AsyncIterator[TokenUpstream]:
    # Accepts the daemon's own key, keys connected in the console, and issued OAuth tokens.
    async with TokenUpstream(oauth, static_keys=(KEY, CONNECTED_KEY)) as fake:
        yield fake


@pytest.fixture
async def daemon(
    tmp_path: Path, upstream: TokenUpstream, oauth: OAuthTestServer
) -> AsyncIterator[Daemon]:
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
        "[auth.openai_oauth]\n"
        f'authorization_endpoint = "{oauth.url}/oauth/authorize"\n'
        f'token_endpoint = "{oauth.url}/oauth/token"\n'
        f'client_id = "{CLIENT_ID}"\n'
    )
    env = clean_env(
        tmp_path, PALYRA_ADMIN_TOKEN=ADMIN, UPSTREAM_KEY=KEY, PALYRA_VAULT_KEYRING="off"
    )
    started = await start_daemon(tmp_path, ["--config", str(config)], env)
    yield started
    started.process.terminate()
    await started.process.wait()


async def test_sign_in_is_required_and_wrong_tokens_are_refused(page: Any, daemon: Daemon) -> None:
    await page.goto(console_url(daemon))
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
    page: Any, daemon: Daemon, upstream: TokenUpstream
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
    await page.goto(console_url(daemon))
    # Keyboard only: the token field takes focus by itself; type and press Enter.
    await page.wait_for_function("document.activeElement?.id === 'admin-token'")
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


async def test_connect_a_key_and_sign_in_with_openai(
    page: Any, daemon: Daemon, oauth: OAuthTestServer
) -> None:
    await sign_in(page, daemon, ADMIN)
    await page.get_by_role("link", name="Auth profiles").click()
    await page.get_by_role("heading", name="Auth profiles").wait_for()

    # An API key: checked by the daemon against the provider, then stored; never kept here.
    await page.get_by_label("Provider", exact=True).select_option("openai")
    await page.get_by_label("Profile id", exact=True).fill("console-key")
    await page.get_by_label("API key").fill(CONNECTED_KEY)
    await page.get_by_role("button", name="Check and save key").click()
    row = page.locator('tr[data-profile="console-key"]')
    await row.wait_for()
    assert await page.get_by_label("API key").input_value() == ""
    assert CONNECTED_KEY not in await page.content()

    # A wrong key is refused with the daemon's message, and nothing is saved.
    await page.get_by_label("Profile id", exact=True).fill("wrong-key")
    await page.get_by_label("API key").fill("sk-wrong-key-000000000000")
    await page.get_by_role("button", name="Check and save key").click()
    await page.wait_for_function("document.querySelector('#key-error').textContent.length > 0")
    assert "refused" in (await page.locator("#key-error").inner_text()).lower()
    assert await page.locator('tr[data-profile="wrong-key"]').count() == 0

    # Sign in with OpenAI: a popup to the (loopback) authorization server, whose redirect
    # lands on the daemon's callback page, which tells the console it is done.
    await page.get_by_label("Profile id (optional)").fill("console-oauth")
    async with page.expect_popup() as popup_info:
        await page.get_by_role("button", name="Sign in with OpenAI").click()
    popup = await popup_info.value
    await popup.wait_for_load_state()
    await page.get_by_text("Signed in: profile console-oauth saved.").wait_for(timeout=15_000)
    oauth_row = page.locator('tr[data-profile="console-oauth"]')
    await oauth_row.wait_for()
    assert "OAuth" in await oauth_row.inner_text()
    assert len(oauth.token_requests) == 1
    for token in oauth.issued_access_tokens():
        assert token not in await page.content()
    await snap(page, "auth")

    # Refresh, make default, delete (with confirmation).
    await page.get_by_role("button", name="Refresh console-oauth").click()
    await page.get_by_text("Refreshed console-oauth.").wait_for()
    assert await row.locator(".badge", has_text="default").count() == 1  # set_default
    await page.get_by_role("button", name="Make console-oauth the default").click()
    await oauth_row.locator(".badge", has_text="default").wait_for()
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Delete console-oauth").click()
    await oauth_row.wait_for(state="detached")


async def test_add_a_cron_job_and_watch_its_first_run(page: Any, daemon: Daemon) -> None:
    await sign_in(page, daemon, ADMIN)
    await page.get_by_role("link", name="Cron jobs").click()
    await page.get_by_role("button", name="Add job").click()
    await page.get_by_label("Name").fill("nightly summary")
    await page.get_by_label("Schedule kind").select_option("cron")
    await page.get_by_label("Schedule", exact=True).fill("61 * * * *")
    await page.get_by_label("Prompt").fill("say hello")
    await page.get_by_role("button", name="Add job").last.click()
    # The daemon's validation message shows beside the schedule field.
    error = page.locator('[data-error-for="schedule"]')
    await error.wait_for()
    assert (await error.inner_text()).strip()

    await page.get_by_label("Schedule kind").select_option("every")
    await page.get_by_label("Schedule", exact=True).fill("2s")
    await page.get_by_role("button", name="Add job").last.click()
    job = page.locator("#jobs-table tbody tr").filter(has_text="nightly summary")
    await job.wait_for()
    assert await job.locator("ol li").count() == 5  # the next five fire times
    await snap(page, "cron")
    await page.get_by_role("button", name="Run history of nightly summary").click()
    await (
        page.locator("#runs-table tbody tr")
        .filter(has_text="succeeded")
        .first.wait_for(timeout=20_000)
    )
    await snap(page, "cron-runs")
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Delete nightly summary").click()
    await job.wait_for(state="detached")


async def test_start_a_run_and_watch_its_events(page: Any, daemon: Daemon) -> None:
    await sign_in(page, daemon, ADMIN)
    await page.get_by_role("link", name="Runs").click()
    await page.get_by_label("Input").fill("hello from the console")
    await page.get_by_role("button", name="Start run").click()
    events = page.locator("#run-events li")
    await page.locator('#run-events li[data-type="run_finished"]').wait_for(timeout=15_000)
    types = [await events.nth(i).get_attribute("data-type") for i in range(await events.count())]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert "model_text" in types
    await snap(page, "run")
