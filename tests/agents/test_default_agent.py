"""The default agent on the default setup (no config at all), as the README shows it: a
`/tool` line makes the deterministic model call the built-in calculator, and `palyra run`
shows the call, its result and the answer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.daemon import running_daemon

PALYRA = str(Path(sys.executable).with_name("palyra"))
ADMIN = "default-agent-admin-token-0123456789"


def test_palyra_run_on_the_default_agent_shows_a_calculator_call(tmp_path: Path) -> None:
    with running_daemon(tmp_path, {"version": 1}, {"PALYRA_ADMIN_TOKEN": ADMIN}) as daemon:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PALYRA_", "XDG_"))}
        env.update(HOME=str(tmp_path), PALYRA_URL=daemon.url, PALYRA_ADMIN_TOKEN=ADMIN)
        shown = subprocess.run(
            [PALYRA, "agents", "show", "default"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        assert "calculator" in shown.stdout
        result = subprocess.run(
            [PALYRA, "run", "--agent", "default", '/tool calculator {"expression": "17 * 23"}'],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == '[tool call] calculator {"expression":"17 * 23"}'
    assert lines[1] == "[tool result] calculator: 391"
    assert lines[2].endswith("returned: 391")
    assert "[succeeded]" in result.stderr
