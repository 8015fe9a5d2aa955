"""One scenario against one target: the load (wrk for whole requests when installed, else
benchmarks/loadgen.py; streams always loadgen.py, which sees the first event), and the
target's peak memory and CPU time per request meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from processes import HERE, PYTHON, Target, pin, process_tree
from scenarios import Scenario, body_for, headers_for, stream_end

# --- memory and CPU -------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (LiteLLM may fork), in MB."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process tree so far. Per request, it is a figure that
    other load on the machine barely moves, unlike latency and req/s."""
    return sum(cpu_by_process(pid).values())


def cpu_by_process(pid: int) -> dict[int, float]:
    """User plus system CPU seconds so far of each process of the tree (`pid` first)."""
    out: dict[int, float] = {}
    for p in process_tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
            out[p] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy so far (/proc/stat: all but idle
    and iowait): against what the harness's processes spent, what else ran meanwhile."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    # guest time is counted in user already.
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class PeakRSS:
    """Samples a process tree's RSS every 20 ms while a scenario runs."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.pid is not None:
                self.peak = max(self.peak, rss_mb(self.pid))
            self._stop.wait(0.02)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.pid is not None:
            self.peak = max(self.peak, rss_mb(self.pid))


# --- load -----------------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
{headers}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK-JSON {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{b}" for b in data) + '"'


def ensure_wrk() -> bool:
    if shutil.which("wrk"):
        return True
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk missing: installing it from Debian (apt-get install wrk)", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-qq", "wrk"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True)
    if shutil.which("wrk"):
        return True
    print(
        "wrk unavailable: whole requests use the Python load generator (slower, so "
        "req/s figures are lower bounds)",
        flush=True,
    )
    return False


def run_wrk(
    url: str,
    headers: dict[str, str],
    body: bytes,
    concurrency: int,
    seconds: float,
    work: Path,
) -> dict[str, Any]:
    script = work / "wrk.lua"
    header_lines = "\n".join(
        f"wrk.headers[{lua_string(k.encode())}] = {lua_string(v.encode())}"
        for k, v in headers.items()
    )
    script.write_text(WRK_SCRIPT.format(body=lua_string(body), headers=header_lines))
    duration = f"{max(1, round(seconds))}s"
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{duration}",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        preexec_fn=pin("loadgen"),
    )
    for line in out.stdout.splitlines():
        if line.startswith("WRK-JSON "):
            raw = json.loads(line.removeprefix("WRK-JSON "))
            secs = raw["duration_us"] / 1e6
            errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
            ok = max(0, raw["requests"] - raw["status"])
            return {
                "requests": raw["requests"],
                "errors": errors,
                "seconds": secs,
                "rps": ok / secs if secs else 0.0,
                "latency_ms": {
                    "p50": raw["p50"] / 1000,
                    "p90": raw["p90"] / 1000,
                    "p99": raw["p99"] / 1000,
                    "max": raw["max"] / 1000,
                },
                "ttfc_ms": None,
                "tool": "wrk",
            }
    raise RuntimeError(f"wrk printed no figures: {out.stdout[-500:]} {out.stderr[-500:]}")


def run_loadgen(
    url: str,
    headers: dict[str, str],
    body: bytes,
    scenario: Scenario,
    work: Path,
    timeout_s: float,
) -> dict[str, Any]:
    body_file = work / "body.json"
    body_file.write_bytes(body)
    cmd = [
        PYTHON,
        str(HERE / "loadgen.py"),
        url,
        "--body-file",
        str(body_file),
        "--concurrency",
        str(scenario.concurrency),
        "--timeout",
        str(timeout_s),
    ]
    for name, value in headers.items():
        cmd += ["--header", f"{name}: {value}"]
    if scenario.requests:
        cmd += ["--requests", str(scenario.requests)]
        if scenario.raw_client:
            cmd += ["--raw"]
    else:
        cmd += ["--duration", str(scenario.duration_s)]
    if scenario.stream:
        cmd += ["--stream", "--stream-end", stream_end(scenario)]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout_s * 3 + 60,
        preexec_fn=pin("loadgen"),
    )
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed: {out.stderr[-800:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["tool"] = "loadgen"
    return result


def measure(
    target: Target, scenario: Scenario, work: Path, use_wrk: bool, quick: bool
) -> dict[str, Any]:
    route = target.route(scenario)
    if route is None:
        raise KeyError(f"{target.name} does not serve {scenario.key}")
    url, model = route
    body = body_for(scenario, model)
    headers = headers_for(scenario, target.token) | target.extra_headers(scenario)
    pid = target.process.pid if target.process is not None else None
    wrk_ok = use_wrk and not scenario.stream and not scenario.requests
    if wrk_ok and not quick:
        run_wrk(url, headers, body, scenario.concurrency, 1, work)  # warm-up, untimed
    timeout_s = 120.0 if scenario.requests else 30.0
    cpu_before = cpu_by_process(pid) if pid is not None else {}
    # wrk or loadgen.py is the only child that ends meanwhile: what it spent is the load
    # generator's share of the machine.
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before = machine_busy_seconds()
    with PeakRSS(pid) as peak:
        if wrk_ok:
            result = run_wrk(url, headers, body, scenario.concurrency, scenario.duration_s, work)
        else:
            result = run_loadgen(url, headers, body, scenario, work, timeout_s)
    result["machine_busy_s"] = round(machine_busy_seconds() - busy_before, 2)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["loadgen_cpu_s"] = round(
        children.ru_utime + children.ru_stime - children_before.ru_utime - children_before.ru_stime,
        2,
    )
    result["peak_rss_mb"] = peak.peak if pid is not None else None
    served = result["requests"] + result["errors"]
    if pid is not None:
        cpu_after = cpu_by_process(pid)
        # Per process, the tree's root first (palyrad's master when it runs workers).
        spent = [round(t - cpu_before.get(p, 0.0), 2) for p, t in cpu_after.items()]
        result["cpu_s_by_process"] = spent
        result["cpu_ms_per_req"] = sum(spent) * 1000 / served if served else None
    else:
        result["cpu_ms_per_req"] = None
    return result
