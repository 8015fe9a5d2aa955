"""CPU per request of several palyrad trees or configs, side by side on one mock, in
alternating windows: each round loads every daemon in turn (the order reversed every other
round), so a change of load on the machine falls on all of them alike.

    .venv/bin/python benchmarks/ab.py TARGET[,TARGET...] [--only chat-c1,chat-c16]
        [--rounds 9] [--seconds 3]

A target is `head` (this tree), `head:ledger-off` (`[usage] enabled = false`),
`head:asyncio` (`PALYRA_EVENT_LOOP=asyncio`), or a directory holding an older tree (a
`git worktree` of the commit, served through `PYTHONPATH` as `run.py --palyra-src` does).
Prints, per scenario, each target's median CPU ms per request (user + system of its
process, from /proc), its ratio to the first target, and every round's figure: medians of
nine rounds tell apart a 5% change where two single runs of `run.py` wander by 20%.
Whole requests are driven by wrk (by loadgen.py where wrk cannot be had), streams by
loadgen.py, on the config that older trees can load.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Sibling scripts, not a package.
from measure import cpu_seconds, ensure_wrk, run_loadgen, run_wrk  # noqa: E402
from processes import (  # noqa: E402
    ADMIN_TOKEN,
    daemon_config,
    gateway_routes,
    spawn_daemon,
    start_mock,
    stop,
    workdir,
)
from scenarios import Scenario, body_for, headers_for, scenarios  # noqa: E402

WARM_UP_S = 2.0


def load(
    scenario: Scenario,
    route: str,
    headers: dict[str, str],
    body: bytes,
    seconds: float,
    work: Path,
    use_wrk: bool,
) -> int:
    """Loads one daemon for `seconds`; the requests it served."""
    if scenario.stream or not use_wrk:
        timed = dataclasses.replace(scenario, duration_s=seconds)
        return int(run_loadgen(route, headers, body, timed, work, seconds + 30)["requests"])
    return int(run_wrk(route, headers, body, scenario.concurrency, seconds, work)["requests"])


def spawn(
    work: Path, index: int, target: str, mock_url: str, dialects: bool
) -> tuple[subprocess.Popen[bytes], str]:
    config = daemon_config(mock_url, dialects=dialects)
    env: dict[str, str] = {}
    src = ""
    if target == "head:ledger-off":
        config += "\n[usage]\nenabled = false\n"
    elif target == "head:asyncio":
        env["PALYRA_EVENT_LOOP"] = "asyncio"
    elif target != "head":
        if not Path(target).is_dir():
            sys.exit(f"{target}: neither head, head:ledger-off, head:asyncio nor a directory")
        src = target
    return spawn_daemon(work, f"-{index}", config, src, extra_env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", help="comma-separated targets; the first is the baseline")
    parser.add_argument("--only", default="chat-c1,chat-c16,failover-c16,embeddings-c16")
    parser.add_argument(
        "--dialects",
        action="store_true",
        help="the config with the Responses and Messages providers (trees since issue 13), "
        "for the responses-* and messages-* scenarios",
    )
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warm-up", type=float, default=WARM_UP_S, help="seconds, first round")
    args = parser.parse_args()
    use_wrk = ensure_wrk()
    targets = args.targets.split(",")
    served_here = gateway_routes("", dialects=args.dialects)
    runnable = {
        s.key: s for s in scenarios(quick=False) if not s.requests and s.route_key in served_here
    }
    keys = args.only.split(",")
    unknown = [k for k in keys if k not in runnable]
    if unknown:
        sys.exit(f"{', '.join(unknown)}: not one of {', '.join(runnable)}")
    with workdir(False) as work:
        mock, mock_url = start_mock(work, 50.0)
        daemons: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        try:
            for index, target in enumerate(targets):
                daemons[target] = spawn(work, index, target, mock_url, args.dialects)
            figures: dict[tuple[str, str], list[float]] = {
                (t, k): [] for t in targets for k in keys
            }
            for round_no in range(args.rounds):
                order = targets if round_no % 2 == 0 else targets[::-1]
                for key in keys:
                    scenario = runnable[key]
                    for target in order:
                        process, url = daemons[target]
                        route, model = gateway_routes(url, dialects=args.dialects)[
                            scenario.route_key
                        ]
                        body = body_for(scenario, model)
                        headers = headers_for(scenario, ADMIN_TOKEN)
                        if round_no == 0:
                            load(scenario, route, headers, body, args.warm_up, work, use_wrk)
                        before = cpu_seconds(process.pid)
                        served = load(scenario, route, headers, body, args.seconds, work, use_wrk)
                        spent = cpu_seconds(process.pid) - before
                        figures[(target, key)].append(spent / max(served, 1) * 1000)
            for key in keys:
                base = statistics.median(figures[(targets[0], key)])
                for target in targets:
                    runs = figures[(target, key)]
                    median = statistics.median(runs)
                    print(
                        f"{key:16s} {target:20s} {median:.3f} ms/req  x{median / base:.3f}  "
                        f"({', '.join(f'{r:.3f}' for r in runs)})"
                    )
        finally:
            for process, _ in daemons.values():
                stop(process)
            stop(mock)


if __name__ == "__main__":
    main()
