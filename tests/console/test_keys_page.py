"""The Keys page in a real browser against a real daemon: keys are created, rotated and revoked
through the daemon's own routes, and the secret the page shows once is checked to work."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.support.console import api, cells, fits_narrow_screen, open_console, shot
from tests.support.process import Daemon


async def models_with(daemon: Daemon, secret: str) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.get(
            daemon.url + "/v1/models", headers={"Authorization": f"Bearer {secret}"}
        ) as response:
            return response.status


async def test_a_created_key_is_listed_and_its_secret_shown_once(ui: Any, daemon: Daemon) -> None:
    await open_console(ui, daemon, "Keys", "Keys")
    await ui.get_by_text("No client keys yet").wait_for()
    await ui.get_by_role("button", name="Create key").click()
    await ui.get_by_label("Name").fill("ci-bot")
    await ui.get_by_label("Models").fill("deterministic, gpt-4o-mini")
    await ui.get_by_label("Requests per minute").fill("60")
    await ui.get_by_label("Tokens per minute").fill("100000")
    await ui.get_by_label("Budget (USD)").fill("25")
    await ui.get_by_label("Budget period").select_option("week")
    await ui.get_by_label("Expires after").fill("30d")
    await ui.locator("#key-form").get_by_role("button", name="Create key").click()

    box = ui.locator("#secret-box")
    await box.wait_for()
    assert "it will not be shown again" in await box.inner_text()
    secret = await box.locator("#new-secret").inner_text()
    assert secret.startswith("pk-") and len(secret) > 40
    # The secret shown is the key itself: the daemon takes it.
    assert await models_with(daemon, secret) == 200
    await box.get_by_role("button", name="Copy").click()
    await box.get_by_text("Copied.").wait_for()
    assert await ui.evaluate("navigator.clipboard.readText()") == secret

    (key,) = (await api(daemon, "GET", "/console/v1/keys"))["keys"]
    row = ui.locator(f'tr[data-key="{key["key_id"]}"]')
    await row.wait_for()
    shown = await cells(row)
    assert shown["prefix"] == f"{secret[:8]}…"
    assert shown["models"] == "deterministic, gpt-4o-mini"
    assert shown["limits"] == "60 rpm · 100k tpm"
    assert shown["budget"] == "$25.00 / week"
    assert shown["expires"].endswith("in 30 days")
    assert shown["agent"] == "—"
    assert shown["state"] == "active"
    assert (await row.locator("th").inner_text()).startswith(f"ci-bot\n{key['key_id']}\ncreated 20")
    await shot(ui, "keys")

    await box.get_by_role("button", name="Dismiss").click()
    await box.wait_for(state="detached")
    assert secret not in await ui.content(), "the secret must be gone from the page"
    # Still not in what the daemon lists.
    assert secret not in str(await api(daemon, "GET", "/console/v1/keys"))


async def test_rotate_and_revoke_ask_first_and_take_effect(ui: Any, daemon: Daemon) -> None:
    created = await api(daemon, "POST", "/console/v1/keys", {"name": "app <b>one</b>"})
    key_id, old_secret = created["key"]["key_id"], created["secret"]
    await open_console(ui, daemon, "Keys", "Keys")
    row = ui.locator(f'tr[data-key="{key_id}"]')
    await row.wait_for()
    # The name is text, never markup.
    assert await row.locator("th b").count() == 0
    assert "app <b>one</b>" in await row.locator("th").inner_text()

    answers = iter([False, True])
    prompts: list[str] = []

    async def on_dialog(dialog: Any) -> None:
        prompts.append(dialog.message)
        await (dialog.accept() if next(answers) else dialog.dismiss())

    ui.on("dialog", on_dialog)
    await row.get_by_role("button", name="Rotate").click()  # declined: nothing happens
    assert prompts and "Rotate app <b>one</b>?" in prompts[0]
    assert await ui.locator("#secret-box").count() == 0
    assert await models_with(daemon, old_secret) == 200

    await row.get_by_role("button", name="Rotate").click()
    box = ui.locator("#secret-box")
    await box.wait_for()
    new_secret = await box.locator("#new-secret").inner_text()
    assert new_secret != old_secret and new_secret.startswith("pk-")
    assert "previous secret no longer works" in await box.inner_text()
    assert await models_with(daemon, new_secret) == 200
    assert await models_with(daemon, old_secret) == 401
    await cells(row)  # the row is still there, with the new prefix
    assert (await cells(row))["prefix"] == f"{new_secret[:8]}…"

    ui.remove_listener("dialog", on_dialog)
    ui.once("dialog", lambda dialog: dialog.accept())
    await row.get_by_role("button", name="Revoke").click()
    await row.locator('[data-field="state"]', has_text="revoked").wait_for()
    assert await row.get_by_role("button").count() == 0
    listed = (await api(daemon, "GET", f"/console/v1/keys/{key_id}"))["key"]
    assert listed["revoked_at_ms"] is not None
    assert await models_with(daemon, new_secret) == 401


async def test_a_refused_field_is_named_beside_it(ui: Any, daemon: Daemon) -> None:
    await open_console(ui, daemon, "Keys", "Keys")
    await ui.get_by_role("button", name="Create key").click()
    await ui.get_by_label("Name").fill("bad expiry")
    await ui.get_by_label("Expires after").fill("soon")
    await ui.locator("#key-form").get_by_role("button", name="Create key").click()
    error = ui.locator('[data-error-for="expires_in"]')
    await error.wait_for()
    assert "soon" in await error.inner_text()
    assert await ui.locator("#secret-box").count() == 0
    assert (await api(daemon, "GET", "/console/v1/keys"))["keys"] == []


async def test_the_keys_page_fits_a_narrow_screen(ui: Any, daemon: Daemon) -> None:
    await api(
        daemon,
        "POST",
        "/console/v1/keys",
        {"name": "a-rather-long-key-name-for-a-team", "models": ["deterministic"], "rpm": 5},
    )
    await open_console(ui, daemon, "Keys", "Keys")
    await ui.locator("tr[data-key]").wait_for()
    await ui.get_by_role("button", name="Create key").click()
    await fits_narrow_screen(ui)
