"""`palyra` and `palyrad` run as a user runs them, for the CLI tests: the commands' paths, an
environment cut off from the user's, a run that captures the output, a daemon process and its
stop, and a pseudo-terminal of a given width for what the CLI shows on a screen."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
PALYRA = str(BIN / "palyra")
PALYRAD = str(BIN / "palyrad")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def isolated_env(root: Path, **extra: str) -> dict[str, str]:
    """The inherited env minus every PALYRA_*, with HOME and XDG dirs of our own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PALYRA_", "XDG_")) and k not in ("COLUMNS", "LINES")
    }
    for name in ("home", "config", "state"):
        (root / name).mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(root / "home"),
        XDG_CONFIG_HOME=str(root / "config"),
        XDG_STATE_HOME=str(root / "state"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run(
    args: list[str], env: Mapping[str, str], stdin: str | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        env=dict(env),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def palyra(
    *args: str, env: Mapping[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return run([PALYRA, *args], env, stdin)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    port: int
    state_dir: Path
    env: dict[str, str]  # what the CLI needs to find it: PALYRA_DAEMON_PORT, PALYRA_STATE_DIR


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def pseudo_terminal(columns: int) -> tuple[int, int]:
    """(leader, follower) of a new pseudo-terminal `columns` wide and 50 high."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    return leader, follower


def read_until_closed(leader: int) -> bytes:
    """Everything shown on a pseudo-terminal until its other end closes."""
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def in_terminal(args: list[str], env: dict[str, str], columns: int = 80) -> str:
    """Run the CLI with stdout on a pseudo-terminal of `columns` columns; the text it shows."""
    leader, follower = pseudo_terminal(columns)
    with subprocess.Popen(
        args, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=subprocess.PIPE
    ) as process:
        os.close(follower)
        shown = read_until_closed(leader)
        assert process.wait(timeout=20) == 0, process.stderr.read() if process.stderr else ""
    os.close(leader)
    return ANSI.sub("", shown.decode()).replace("\r\n", "\n")
