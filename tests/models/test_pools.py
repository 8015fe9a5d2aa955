"""The upstream pools' size: half the files the process may open, within bounds."""

from __future__ import annotations

import resource
import subprocess
import sys

from palyra.models import MAX_CONNECTIONS, MIN_CONNECTIONS, connection_limit


def test_half_the_open_files_within_bounds() -> None:
    assert connection_limit(1024) == 512
    assert connection_limit(16_384) == 8_192
    assert connection_limit(64) == MIN_CONNECTIONS
    assert connection_limit(10_000_000) == MAX_CONNECTIONS
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    expected = 2 * MAX_CONNECTIONS if soft == resource.RLIM_INFINITY else soft
    assert connection_limit() == max(MIN_CONNECTIONS, min(MAX_CONNECTIONS, expected // 2))


def test_the_daemon_raises_its_soft_limit_to_the_hard_one() -> None:
    # In a child whose soft limit starts low: what palyrad does when it starts serving.
    script = (
        "import resource\n"
        "from palyra.daemon import raise_open_files_limit\n"
        "from palyra.models import connection_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "assert soft == 256, soft\n"
        "now = raise_open_files_limit()\n"
        "assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == now\n"
        "print(now, hard, connection_limit())\n"
    )

    def lower() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    done = subprocess.run(
        [sys.executable, "-c", script],
        preexec_fn=lower,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    now, hard, pool = (int(x) for x in done.stdout.split())
    if hard == resource.RLIM_INFINITY:
        assert now == 1_048_576
    else:
        assert now == hard
    assert pool == max(MIN_CONNECTIONS, min(MAX_CONNECTIONS, now // 2))
