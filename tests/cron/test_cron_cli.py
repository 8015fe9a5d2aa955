"""`palyra cron ...`, `palyra agents ...` and `palyra run` as a user runs them, against a real
`palyrad` process on the deterministic provider."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from palyra.cron.jobs import Job
from palyra.cron.schedule import Schedule
from palyra.cron.store import CronStore
from palyra.state import DB_FILE
from palyra.state.db import SqliteDatabase
from tests.support.cli import (
    PALYRAD,
    Daemon,
    isolated_env,
    one_error_line,
    palyra,
    run,
    stop,
)
from tests.support.daemon import free_port, wait_healthy


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("cron-daemon")
    state_dir = root / "palyra-state"
    port = free_port()
    env = isolated_env(root, PALYRA_STATE_DIR=str(state_dir))
    # No config file: agents.toml is taken from $XDG_CONFIG_HOME/palyra.
    agents = root / "config" / "palyra" / "agents.toml"
    agents.parent.mkdir(parents=True, exist_ok=True)
    agents.write_text(
        'version = 1\n[[agents]]\nagent_id = "mathbot"\ndisplay_name = "Math bot"\n'
        'tools = ["calculator"]\nmax_turns = 4\n'
    )
    log = root / "palyrad.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [PALYRAD, "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_healthy(process, port, log)
        yield Daemon(process, port, state_dir, {**env, "PALYRA_DAEMON_PORT": str(port)})
    finally:
        stop(process)


def ok(*args: str, env: dict[str, str]) -> str:
    result = palyra(*args, env=env)
    assert result.returncode == 0, (args, result.stderr)
    return result.stdout


def test_agents_list_show_and_run(daemon: Daemon) -> None:
    agents = json.loads(ok("agents", "list", "--json", env=daemon.env))
    assert [a["agent_id"] for a in agents] == ["default", "mathbot"]
    shown = ok("agents", "show", "mathbot", env=daemon.env)
    assert "Math bot" in shown and "calculator" in shown
    result = palyra(
        "run", "--agent", "mathbot", '/tool calculator {"expression": "2**10"}', env=daemon.env
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == '[tool call] calculator {"expression":"2**10"}'
    assert lines[1] == "[tool result] calculator: 1024"
    assert lines[2].endswith("returned: 1024")
    assert "[succeeded]" in result.stderr and "1 tool call, 2 turns" in result.stderr
    missing = palyra("agents", "show", "ghost", env=daemon.env)
    assert missing.returncode == 1 and "no agent 'ghost'" in one_error_line(missing)


def test_cron_commands(daemon: Daemon) -> None:
    env = daemon.env
    added = json.loads(
        ok(
            "cron", "add", "--name", "weekday digest", "--agent", "mathbot",
            "--cron", "0 9 * * mon-fri", "--tz", "America/New_York",
            "--prompt", "hello", "--misfire", "skip", "--concurrency", "queue_one",
            "--json", env=env,
        )
    )  # fmt: skip
    job_id = added["job_id"]
    assert added["misfire"] == "skip" and added["concurrency"] == "queue_one"
    listed = json.loads(ok("cron", "list", "--json", env=env))
    assert job_id in [j["job_id"] for j in listed]
    shown = ok("cron", "show", job_id, env=env)
    times = [line.strip() for line in shown.splitlines() if line.startswith("  ")]
    assert len(times) == 5 and all("T09:00:00-0" in t for t in times)
    assert "cron '0 9 * * mon-fri' (America/New_York)" in shown
    assert "started" in ok("cron", "trigger", job_id, env=env)
    with ThreadPoolExecutor(2) as pool:  # a table and JSON, side by side
        table, runs_json = pool.map(
            lambda args: ok(*args, env=env),
            [("cron", "runs", job_id), ("cron", "runs", job_id, "--json")],
        )
    assert "manual" in table
    assert json.loads(runs_json)[0]["trigger"] == "manual"
    assert "disabled" in ok("cron", "disable", job_id, env=env)
    assert "enabled" in ok("cron", "enable", job_id, env=env)
    assert f"removed {job_id}" in ok("cron", "rm", job_id, env=env)
    gone = palyra("cron", "show", job_id, env=env)
    assert gone.returncode == 1
    assert f"no cron job with id or name '{job_id}'" in one_error_line(gone)


def test_cron_add_errors_are_one_line(daemon: Daemon) -> None:
    env = daemon.env
    bad = palyra(
        "cron", "add", "--name", "x", "--agent", "default", "--cron", "0 9 * *",
        "--prompt", "p", env=env,
    )  # fmt: skip
    assert bad.returncode == 1
    assert "schedule.cron: '0 9 * *' has 4 fields; five are needed" in one_error_line(bad)
    both = palyra(
        "cron", "add", "--name", "x", "--agent", "default", "--every", "1m", "--at",
        "2030-01-01T00:00:00Z", "--prompt", "p", env=env,
    )  # fmt: skip
    assert both.returncode == 2 and "exactly one of" in one_error_line(both)
    every = json.loads(
        ok(
            "cron", "add", "--name", "tick", "--agent", "default", "--every", "90s",
            "--prompt", "p", "--json", env=env,
        )
    )  # fmt: skip
    assert every["schedule"] == {"kind": "every", "every": "1m30s", "description": "every 1m30s"}
    ok("cron", "rm", every["job_id"], env=env)


async def _store_as_an_older_version_did(state_dir: Path, job: Job) -> None:
    db = await SqliteDatabase.open(state_dir / DB_FILE)
    try:
        await CronStore(db).insert_job(job)
    finally:
        await db.close()


def test_far_future_schedules_are_refused_and_cron_list_survives_a_stored_one(
    daemon: Daemon,
) -> None:
    env = daemon.env
    for flag, value, words in (
        ("--every", "100000000d", "schedule.every: '100000000d' is longer than the maximum"),
        ("--every", "99999999999999999d", "maximum of 366 days (366d)"),
        ("--at", "9999-12-31T23:59:59-12:00", "schedule.at: '9999-12-31T23:59:59-12:00' is out"),
    ):
        bad = palyra(
            "cron", "add", "--name", "far", "--agent", "default", flag, value, "--prompt", "p",
            env=env,
        )  # fmt: skip
        assert bad.returncode == 1 and words in one_error_line(bad), bad.stderr
    listed = json.loads(ok("cron", "list", "--json", env=env))
    assert "far" not in [j["name"] for j in listed]
    # A job an older version stored with such a schedule: listed, shown and removable.
    created = 1_767_571_200_000
    old = Job(
        job_id="job_from_an_older_version",
        name="far",
        agent_id="default",
        prompt="p",
        schedule=Schedule("every", every_ms=100_000_000 * 86_400_000, anchor_ms=created),
        created_at=created,
        updated_at=created,
        next_fire_at=created + 100_000_000 * 86_400_000,
    )
    asyncio.run(_store_as_an_older_version_did(daemon.state_dir, old))
    table = ok("cron", "list", env=env)
    # Its row says it has no next fire; why is said below the table.
    assert "job_from_an_older_version: every: 100000000d has no tick" in table
    shown = ok("cron", "show", old.job_id, env=env)
    assert "problem" in shown and "next fire times: none" in shown
    bad_limit = palyra("cron", "runs", old.job_id, "--limit", "0", env=env)
    assert bad_limit.returncode == 1
    assert "limit: must be a decimal integer from 1 to 1000" in one_error_line(bad_limit)
    assert f"removed {old.job_id}" in ok("cron", "rm", old.job_id, env=env)


def test_palyrad_refuses_a_bad_agents_file_before_binding(tmp_path: Path) -> None:
    env = isolated_env(tmp_path, PALYRA_STATE_DIR=str(tmp_path / "state"))
    config = tmp_path / "config.toml"
    config.write_text("version = 1\n")
    (tmp_path / "agents.toml").write_text(
        'version = 1\n[[agents]]\nagent_id = "fetcher"\ntools = ["http_fetch"]\nmax_turns = -1\n'
    )
    result = run([PALYRAD, "--config", str(config), "--port", str(free_port())], env, timeout=30)
    assert result.returncode == 1
    assert "agent 'fetcher' (agents[0]).max_turns: input should be greater than or equal to 1" in (
        result.stderr
    )
