"""Instructions per request: palyrad under callgrind, loaded by wrk, counted only while the
timed load runs. A figure other load on the machine does not move, so two trees (or two
configs) compare within a percent where CPU time per request wanders by five to ten.

    .venv/bin/python benchmarks/instructions.py [--scenario chat-c16] [--seconds 20]
        [--palyra-src DIR] [--ledger off] [--keep]

Whole-request scenarios only (wrk drives them). Needs valgrind (`apt-get install valgrind`).
Under callgrind palyrad serves some 70 requests a second, so a loop iteration carries fewer
requests than at full speed: what is paid once an iteration (the event loop's own work, a
ledger batch) weighs more here than in `run.py`'s figures. Compare like with like.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Sibling scripts, not a package.
from measure import ensure_wrk, run_wrk  # noqa: E402
from processes import (  # noqa: E402
    ADMIN_TOKEN,
    PYTHON,
    UPSTREAM_KEY_ENV,
    daemon_config,
    free_port,
    gateway_routes,
    start_mock,
    stop,
    wait_http,
    workdir,
)
from scenarios import body_for, headers_for, scenarios  # noqa: E402

WARM_UP_S = 5


def callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=60)


def totals(dump: Path) -> int:
    """The instructions a callgrind dump counted (its `totals:` line)."""
    for line in dump.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"{dump} has no totals line")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="chat-c16")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--palyra-src", default="", help="run palyrad on the package in DIR")
    parser.add_argument("--ledger", choices=("on", "off"), default="on")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("needs valgrind: apt-get install valgrind")
    ensure_wrk()
    served_here = gateway_routes("", dialects=False)
    runnable = [
        s
        for s in scenarios(quick=False)
        if not s.stream and not s.requests and s.route_key in served_here
    ]
    chosen = next((s for s in runnable if s.key == args.scenario), None)
    if chosen is None:
        sys.exit(f"{args.scenario}: not one of {', '.join(s.key for s in runnable)}")
    with workdir(args.keep) as work:
        mock, mock_url = start_mock(work, 50.0)
        daemon: subprocess.Popen[bytes] | None = None
        try:
            config = daemon_config(mock_url, dialects=False)
            if args.ledger == "off":
                config += "\n[usage]\nenabled = false\n"
            (work / "palyra.toml").write_text(config)
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("PALYRA_")}
            env.update(
                PALYRA_ADMIN_TOKEN=ADMIN_TOKEN,
                XDG_CONFIG_HOME=str(work / "xdg-config"),
                XDG_STATE_HOME=str(work / "xdg-state"),
                # pymalloc's arenas confuse nothing here, but valgrind reads plain malloc best.
                PYTHONMALLOC="malloc",
            )
            env[UPSTREAM_KEY_ENV] = "sk-bench-upstream"
            if args.palyra_src:
                env["PYTHONPATH"] = str(Path(args.palyra_src).resolve())
            dump = work / "callgrind.out"
            log = open(work / "palyrad.log", "wb")  # noqa: SIM115 - lives as long as the process
            daemon = subprocess.Popen(
                [
                    "valgrind",
                    "--tool=callgrind",
                    "--instr-atstart=no",
                    f"--callgrind-out-file={dump}",
                    PYTHON,
                    str(Path(PYTHON).with_name("palyrad")),
                    "--config",
                    str(work / "palyra.toml"),
                    "--port",
                    str(port),
                    "--state-dir",
                    str(work / "state"),
                ],
                env=env,
                stdout=log,
                stderr=log,
            )
            url = f"http://127.0.0.1:{port}"
            wait_http(url + "/healthz", daemon, 300, "palyrad under callgrind")
            target, model = gateway_routes(url, dialects=False)[chosen.route_key]
            body = body_for(chosen, model)
            headers = headers_for(chosen, ADMIN_TOKEN)
            run_wrk(target, headers, body, chosen.concurrency, WARM_UP_S, work)
            callgrind_control("-i", "on", str(daemon.pid))
            figures = run_wrk(target, headers, body, chosen.concurrency, args.seconds, work)
            callgrind_control("-d", str(daemon.pid))
            callgrind_control("-i", "off", str(daemon.pid))
            counted = sum(totals(p) for p in work.glob("callgrind.out.*"))
            served = figures["requests"]
            print(
                f"{args.scenario} ledger {args.ledger}"
                f"{' tree ' + args.palyra_src if args.palyra_src else ''}: "
                f"{served} requests, {counted:,} instructions, "
                f"{counted // max(served, 1):,} a request ({figures['errors']} errors)"
            )
        finally:
            stop(daemon)
            stop(mock)


if __name__ == "__main__":
    main()
