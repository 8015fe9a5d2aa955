"""Profile `palyrad` on the hot path: start the mock and the daemon as `run.py` does, load one
scenario with wrk (or loadgen.py for streams), and sample the daemon with py-spy meanwhile.

    .venv/bin/python benchmarks/profile.py [--scenario chat-c16] [--seconds 8] [--palyra-src DIR]

py-spy comes from PyPI into benchmarks/.venv-tools (made on first use). Output: the hottest
frames by own and by total time, and collapsed stacks (for flamegraph tools) in the work dir.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import threading
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Sibling scripts, not a package.
from measure import ensure_wrk, measure  # noqa: E402
from processes import (  # noqa: E402
    raise_fd_limit,
    start_client_key,
    start_daemon,
    start_mock,
    start_workers_daemon,
    stop,
    workdir,
)
from scenarios import (  # noqa: E402
    Scenario,
    scenarios,
    uses_client_key,
    uses_dialects,
    worker_counts,
)

TOOLS = HERE / ".venv-tools"


def py_spy() -> Path:
    binary = TOOLS / "bin" / "py-spy"
    if not binary.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(TOOLS)
        subprocess.run(
            [str(TOOLS / "bin" / "python"), "-m", "pip", "install", "-q", "py-spy"], check=True
        )
    return binary


def summarize(collapsed: Path, top: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    print(f"\n{samples} samples\n\nby own time:")
    for frame, count in own.most_common(top):
        print(f"{count / samples:6.1%}  {frame}")
    print("\nby total time:")
    for frame, count in total.most_common(top):
        print(f"{count / samples:6.1%}  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="chat-c16")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument(
        "--palyra-src", default="", help="profile the daemon of another tree (as run.py's)"
    )
    args = parser.parse_args()
    spy = py_spy()
    raise_fd_limit()
    known = {s.key: s for s in scenarios(False)}
    if args.scenario not in known:
        parser.error(f"--scenario: one of {', '.join(known)}")
    scenario = Scenario(**{**known[args.scenario].__dict__, "duration_s": args.seconds})
    with workdir(keep=True) as work:
        mock_process, mock = start_mock(work, 50)
        workers = worker_counts([scenario])
        if workers:
            # workers-*: a daemon with that many workers, sampled with its children.
            daemon = start_workers_daemon(work, mock, workers[0], palyra_src=args.palyra_src)
        else:
            daemon = start_daemon(
                work, mock, dialects=uses_dialects([scenario]), palyra_src=args.palyra_src
            )
        assert daemon.process is not None
        try:
            # key-*: the same daemon, sent a client key it makes now.
            target = start_client_key(daemon) if uses_client_key([scenario]) else daemon
            collapsed = work / "profile.txt"
            spy_cmd = [
                str(spy),
                "record",
                "--pid",
                str(daemon.process.pid),
                "--rate",
                str(args.rate),
                "--duration",
                str(int(args.seconds)),
                "--format",
                "raw",
                "--output",
                str(collapsed),
                "--nonblocking",
                *(["--subprocesses"] if workers else []),
            ]
            result: dict[str, object] = {}

            def load() -> None:
                result.update(measure(target, scenario, work, ensure_wrk(), True))

            loader = threading.Thread(target=load)
            loader.start()
            subprocess.run(spy_cmd, check=True, capture_output=True)
            loader.join()
            print(
                f"{scenario.key}: {result.get('rps', 0):,.0f} req/s "
                f"latency {result.get('latency_ms')}"
            )
            summarize(collapsed, args.top)
        finally:
            stop(daemon.process)
            stop(mock_process)


if __name__ == "__main__":
    main()
