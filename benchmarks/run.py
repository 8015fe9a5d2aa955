"""The benchmark harness: the daemon's overhead, measured against a fast mock upstream, side by
side with LiteLLM's proxy, in one run.

    .venv/bin/python benchmarks/run.py            # everything; writes benchmarks/results.md
    .venv/bin/python benchmarks/run.py --quick --no-peer   # a few seconds, as the smoke test does

Processes, all on loopback: the mock upstream (benchmarks/mock_upstream.py), `palyrad` with a
config pointing at it, LiteLLM's proxy (benchmarks/.venv-litellm, installed on first use) and
the load generator (wrk when installed, else benchmarks/loadgen.py; streams always use
loadgen.py, which sees the first chunk). Each scenario runs straight against the mock first,
then through each gateway: "added" latency is the gateway's percentile minus the mock's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import litellm_peer  # noqa: E402  (a sibling script, not a package)

PYTHON = sys.executable
ADMIN_TOKEN = "palyra-bench-admin-token"
UPSTREAM_KEY_ENV = "PALYRA_BENCH_UPSTREAM_KEY"
PEER_TOKEN = "sk-bench-admin"

CHAT_MESSAGES = [
    {"role": "system", "content": "You are a concise assistant. Answer in one sentence."},
    {"role": "user", "content": "What is the difference between latency and throughput?"},
]


# --- scenarios ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    mode: str  # the mock's behaviour: fast | slow | hold | failover
    endpoint: str  # chat | embeddings
    concurrency: int
    duration_s: float = 5.0
    stream: bool = False
    requests: int = 0  # when set: exactly this many, one per client (open-streams test)
    base64: bool = False  # embeddings: encoding_format "base64", the OpenAI SDK's default


def scenarios(quick: bool) -> list[Scenario]:
    d = 0.3 if quick else 5.0
    open_streams = 20 if quick else 1000
    return [
        Scenario("chat-c1", "chat, 1 concurrent", "fast", "chat", 1, d),
        Scenario("chat-c16", "chat, 16 concurrent", "fast", "chat", 16, d),
        Scenario("chat-c64", "chat, 64 concurrent", "fast", "chat", 64, d),
        Scenario("chat-50ms-c16", "chat, upstream 50 ms, 16 concurrent", "slow", "chat", 16, d),
        Scenario("stream-c1", "stream 50 chunks, 1 concurrent", "fast", "chat", 1, d, True),
        Scenario("stream-c16", "stream 50 chunks, 16 concurrent", "fast", "chat", 16, d, True),
        Scenario("failover-c16", "failover (first 503), 16 concurrent", "failover", "chat", 16, d),
        Scenario("embeddings-c16", "embeddings, 16 concurrent", "fast", "embeddings", 16, d),
        Scenario(
            "embeddings-b64-c16",
            "embeddings as base64, 16 concurrent",
            "fast",
            "embeddings",
            16,
            d,
            base64=True,
        ),
        Scenario(
            "streams-1000",
            f"{open_streams} concurrent open streams (50 chunks, 50 ms apart)",
            "hold",
            "chat",
            open_streams,
            0.0,
            True,
            open_streams,
        ),
    ]


# --- targets ------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    process: subprocess.Popen[bytes] | None
    token: str = ""
    # (mode, endpoint) -> (url, model)
    routes: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)

    def route(self, scenario: Scenario) -> tuple[str, str]:
        return self.routes[(scenario.mode, scenario.endpoint)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, process: subprocess.Popen[bytes], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready within {timeout_s:.0f} s")


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_mock(work: Path, hold_interval_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = open(work / "mock.log", "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [
            PYTHON,
            str(HERE / "mock_upstream.py"),
            "--port",
            str(port),
            "--hold-interval-ms",
            str(hold_interval_ms),
        ],
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/fast/v1/models", process, 20, "mock upstream")
    return process, url


DAEMON_CONFIG = """\
version = 1

[daemon]
log_level = "info"

[model_provider]
failover_enabled = true

{providers}
{models}
"""


def daemon_config(mock: str) -> str:
    providers = []
    for pid, mode, extra in (
        ("mock-fast", "fast", ""),
        ("mock-slow", "slow", ""),
        ("mock-hold", "hold", ""),
        # Down: answers 503 at once; no retries so the request fails over straight away.
        ("mock-down", "fail", "max_retries = 0\n"),
        ("mock-backup", "fast", ""),
    ):
        providers.append(
            "[[model_provider.providers]]\n"
            f'provider_id = "{pid}"\nkind = "openai_compatible"\n'
            f'base_url = "{mock}/{mode}/v1"\napi_key_env = "{UPSTREAM_KEY_ENV}"\n'
            f"allow_private_base_url = true\ndiscovery = false\n{extra}"
        )
    models = []
    for mid, pid, role, extra in (
        ("bench-chat", "mock-fast", "chat", ""),
        ("bench-slow", "mock-slow", "chat", ""),
        ("bench-hold", "mock-hold", "chat", ""),
        ("bench-failover", "mock-down", "chat", 'fallbacks = ["bench-failover-b"]\n'),
        ("bench-failover-b", "mock-backup", "chat", ""),
        ("bench-embed", "mock-fast", "embeddings", ""),
    ):
        models.append(
            "[[model_provider.models]]\n"
            f'model_id = "{mid}"\nprovider_id = "{pid}"\nupstream_model = "gpt-4o-mini"\n'
            f'role = "{role}"\n{extra}'
        )
    return DAEMON_CONFIG.format(providers="\n".join(providers), models="\n".join(models))


def gateway_routes(url: str) -> dict[tuple[str, str], tuple[str, str]]:
    """Where each (mock mode, endpoint) is served by a gateway at `url`: both gateways are
    configured with the same model names."""
    chat, embed = url + "/v1/chat/completions", url + "/v1/embeddings"
    return {
        ("fast", "chat"): (chat, "bench-chat"),
        ("slow", "chat"): (chat, "bench-slow"),
        ("hold", "chat"): (chat, "bench-hold"),
        ("failover", "chat"): (chat, "bench-failover"),
        ("fast", "embeddings"): (embed, "bench-embed"),
    }


def start_daemon(work: Path, mock: str) -> Target:
    config = work / "palyra.toml"
    config.write_text(daemon_config(mock))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PALYRA_")}
    env.update(
        PALYRA_ADMIN_TOKEN=ADMIN_TOKEN,
        XDG_CONFIG_HOME=str(work / "xdg-config"),
        XDG_STATE_HOME=str(work / "xdg-state"),
    )
    env[UPSTREAM_KEY_ENV] = "sk-bench-upstream"
    palyrad = Path(PYTHON).with_name("palyrad")
    log = open(work / "palyrad.log", "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [
            str(palyrad),
            "--config",
            str(config),
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
    wait_http(url + "/healthz", process, 60, "palyrad")
    return Target("palyra", process, ADMIN_TOKEN, gateway_routes(url))


def start_litellm(work: Path, mock: str) -> Target:
    binary = litellm_peer.ensure_venv()
    config = work / "litellm.yaml"
    litellm_peer.write_config(config, mock)
    port = free_port()
    log = open(work / "litellm.log", "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [
            str(binary),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        env=litellm_peer.env(),
        stdout=log,
        stderr=log,
        cwd=work,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health/liveliness", process, 240, "litellm")
    return Target("litellm", process, PEER_TOKEN, gateway_routes(url))


def start_floor(work: Path, mock: str) -> Target:
    """The bare aiohttp pass-through (benchmarks/floor.py): what any aiohttp gateway costs."""
    port = free_port()
    log = open(work / "floor.log", "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [PYTHON, str(HERE / "floor.py"), "--port", str(port), "--upstream", mock],
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz", process, 20, "floor")
    direct = mock_target(mock)
    routes = {
        key: (url + route.removeprefix(mock), model)
        for key, (route, model) in direct.routes.items()
    }
    return Target("floor", process, "", routes)


def mock_target(mock: str) -> Target:
    routes = {
        ("fast", "chat"): (f"{mock}/fast/v1/chat/completions", "gpt-4o-mini"),
        ("slow", "chat"): (f"{mock}/slow/v1/chat/completions", "gpt-4o-mini"),
        ("hold", "chat"): (f"{mock}/hold/v1/chat/completions", "gpt-4o-mini"),
        # Straight to the provider that answers: what failover adds shows as added latency.
        ("failover", "chat"): (f"{mock}/fast/v1/chat/completions", "gpt-4o-mini"),
        ("fast", "embeddings"): (f"{mock}/fast/v1/embeddings", "text-embedding-3-small"),
    }
    return Target("direct", None, "", routes)


# --- memory -------------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
    return pids


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (LiteLLM may fork), in MB."""
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process tree so far. Per request, it is a figure that
    other load on the machine barely moves, unlike latency and req/s."""
    ticks = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


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


# --- load ---------------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
{auth}
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


def body_for(scenario: Scenario, model: str) -> bytes:
    if scenario.endpoint == "embeddings":
        body: dict[str, Any] = {
            "model": model,
            "input": ["The quick brown fox jumps over the lazy dog."] * 4,
        }
        if scenario.base64:
            body["encoding_format"] = "base64"
    else:
        body = {"model": model, "messages": CHAT_MESSAGES, "temperature": 0.2}
        if scenario.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def run_wrk(
    url: str, token: str, body: bytes, concurrency: int, seconds: float, work: Path
) -> dict[str, Any]:
    script = work / "wrk.lua"
    auth = f'wrk.headers["Authorization"] = "Bearer {token}"' if token else ""
    script.write_text(WRK_SCRIPT.format(body=lua_string(body), auth=auth))
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
    url: str, token: str, body: bytes, scenario: Scenario, work: Path, timeout_s: float
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
    if token:
        cmd += ["--token", token]
    if scenario.requests:
        cmd += ["--requests", str(scenario.requests)]
    else:
        cmd += ["--duration", str(scenario.duration_s)]
    if scenario.stream:
        cmd.append("--stream")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s * 3 + 60)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed: {out.stderr[-800:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["tool"] = "loadgen"
    return result


def measure(
    target: Target, scenario: Scenario, work: Path, use_wrk: bool, quick: bool
) -> dict[str, Any]:
    url, model = target.route(scenario)
    body = body_for(scenario, model)
    pid = target.process.pid if target.process is not None else None
    wrk_ok = use_wrk and not scenario.stream and not scenario.requests
    if wrk_ok and not quick:
        run_wrk(url, target.token, body, scenario.concurrency, 1, work)  # warm-up, untimed
    timeout_s = 120.0 if scenario.requests else 30.0
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    with PeakRSS(pid) as peak:
        if wrk_ok:
            result = run_wrk(
                url, target.token, body, scenario.concurrency, scenario.duration_s, work
            )
        else:
            result = run_loadgen(url, target.token, body, scenario, work, timeout_s)
    result["peak_rss_mb"] = peak.peak if pid is not None else None
    served = result["requests"] + result["errors"]
    result["cpu_ms_per_req"] = (
        (cpu_seconds(pid) - cpu_before) * 1000 / served if pid is not None and served else None
    )
    return result


# --- token estimator ----------------------------------------------------------------------

PALYRA_TOKENS = """
import json, statistics, sys, time
from pathlib import Path
from palyra import tokens
from palyra.types import ChatRequest
text = Path({prompt!r}).read_text()
request = ChatRequest.model_validate({{"messages": [{{"role": "user", "content": text}}]}})
tokens.warm_up()
count = tokens.estimate_token_count(request)
runs = []
for _ in range({runs}):
    t = time.perf_counter(); tokens.estimate_token_count(request)
    runs.append((time.perf_counter() - t) * 1000)
runs.sort()
print(json.dumps({{"chars": len(text), "tokens": count, "p50": statistics.median(runs),
                  "p99": runs[min(len(runs) - 1, int(len(runs) * 0.99))]}}))
"""

# LiteLLM's own counter, as its proxy uses it for budgets; gpt-4o (o200k) when its
# vocabulary is available offline, else the cl100k it bundles.
PEER_TOKENS = """
import json, statistics, sys, time, warnings
from pathlib import Path
warnings.simplefilter("ignore")
import litellm
text = Path({prompt!r}).read_text()
messages = [{{"role": "user", "content": text}}]
model = "gpt-4o"
try:
    count = litellm.token_counter(model=model, messages=messages)
except Exception:
    model = "gpt-3.5-turbo"
    count = litellm.token_counter(model=model, messages=messages)
runs = []
for _ in range({runs}):
    t = time.perf_counter(); litellm.token_counter(model=model, messages=messages)
    runs.append((time.perf_counter() - t) * 1000)
runs.sort()
print(json.dumps({{"chars": len(text), "tokens": count, "model": model,
                  "p50": statistics.median(runs),
                  "p99": runs[min(len(runs) - 1, int(len(runs) * 0.99))]}}))
"""


def token_bench(
    python: str, template: str, prompt: Path, runs: int, env: dict[str, str] | None = None
) -> dict[str, Any] | str:
    code = template.format(prompt=str(prompt), runs=runs)
    out = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, timeout=600, env=env, cwd=str(ROOT)
    )
    if out.returncode != 0:
        return "failed: " + (out.stderr.strip().splitlines() or ["?"])[-1][:200]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# --- report -------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def added(result: dict[str, Any], base: dict[str, Any] | None, key: str, q: str) -> float | None:
    if base is None or result.get(key) is None or base.get(key) is None:
        return None
    mine, theirs = result[key].get(q), base[key].get(q)
    if mine is None or theirs is None:
        return None
    return float(mine - theirs)


def report(
    results: dict[str, dict[str, dict[str, Any]]],
    tokens: dict[str, Any],
    meta: dict[str, Any],
    scenario_list: list[Scenario],
) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Run {meta['when']} on {meta['machine']}; "
        f"load generator: {meta['loadgen']}; quick: {meta['quick']}.",
        "Latency in ms; for streams, p50/p90/p99 are the time to the last chunk and TTFC "
        "the time to the first. *added* = through the gateway minus straight to the mock, same "
        "percentile, same run. *floor* is a bare aiohttp pass-through (benchmarks/floor.py). "
        "Peak RSS is the gateway's process tree during the scenario; "
        "CPU ms/req is the gateway's CPU time (user + system) per request, the figure that "
        "other load on the machine moves least.",
        "",
        "| scenario | target | req/s | errors | p50 | p90 | p99 | added p50 | added p90 | "
        "added p99 | TTFC p50 | TTFC p99 | added TTFC p50 | added TTFC p99 | peak RSS MB | "
        "CPU ms/req |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for sc in scenario_list:
        per = results.get(sc.key, {})
        base = per.get("direct")
        for name in ("direct", "floor", "palyra", "litellm"):
            r = per.get(name)
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {sc.title} | {name} | failed: {r['error'][:120]} |" + " |" * 14)
                continue
            lat, ttfc = r["latency_ms"], r.get("ttfc_ms") or {}
            is_base = name == "direct"
            lines.append(
                "| "
                + " | ".join(
                    [
                        sc.title,
                        name,
                        fmt(r["rps"], 0),
                        str(r["errors"]),
                        fmt(lat["p50"]),
                        fmt(lat["p90"]),
                        fmt(lat["p99"]),
                        "" if is_base else fmt(added(r, base, "latency_ms", "p50")),
                        "" if is_base else fmt(added(r, base, "latency_ms", "p90")),
                        "" if is_base else fmt(added(r, base, "latency_ms", "p99")),
                        fmt(ttfc.get("p50")),
                        fmt(ttfc.get("p99")),
                        "" if is_base or not ttfc else fmt(added(r, base, "ttfc_ms", "p50")),
                        "" if is_base or not ttfc else fmt(added(r, base, "ttfc_ms", "p99")),
                        fmt(r.get("peak_rss_mb"), 0),
                        fmt(r.get("cpu_ms_per_req"), 3),
                    ]
                )
                + " |"
            )
    lines += [
        "",
        "## Palyra vs LiteLLM",
        "",
        "| scenario | palyra req/s | litellm req/s | ratio | palyra added p50 | "
        "litellm added p50 | palyra peak RSS MB | litellm peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for sc in scenario_list:
        per = results.get(sc.key, {})
        p, peer, base = per.get("palyra"), per.get("litellm"), per.get("direct")
        if p is None or "error" in p:
            continue
        if peer is None or "error" in peer:
            lines.append(
                f"| {sc.title} | {fmt(p['rps'], 0)} | – | – | "
                f"{fmt(added(p, base, 'latency_ms', 'p50'))} | – | "
                f"{fmt(p.get('peak_rss_mb'), 0)} | – |"
            )
            continue
        ratio = p["rps"] / peer["rps"] if peer["rps"] else None
        lines.append(
            f"| {sc.title} | {fmt(p['rps'], 0)} | {fmt(peer['rps'], 0)} | "
            f"{fmt(ratio, 1)}× | {fmt(added(p, base, 'latency_ms', 'p50'))} | "
            f"{fmt(added(peer, base, 'latency_ms', 'p50'))} | "
            f"{fmt(p.get('peak_rss_mb'), 0)} | {fmt(peer.get('peak_rss_mb'), 0)} |"
        )
    lines += floor_table(results, scenario_list)
    lines += ["", "## Token estimator, 100 KB prompt", ""]
    for name, r in tokens.items():
        if isinstance(r, str):
            lines.append(f"- {name}: {r}")
        else:
            extra = f" (tokenizer for {r['model']})" if "model" in r else ""
            lines.append(
                f"- {name}{extra}: {r['chars']:,} chars → {r['tokens']:,} tokens; "
                f"p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms"
            )
    lines += ["", "## Targets", ""] + [f"- {t}" for t in targets(results)]
    notes = meta.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def floor_table(
    results: dict[str, dict[str, dict[str, Any]]], scenario_list: list[Scenario]
) -> list[str]:
    """Palyra against the bare aiohttp pass-through: what its features cost."""
    rows = []
    for sc in scenario_list:
        per = results.get(sc.key, {})
        p, fl, base = per.get("palyra"), per.get("floor"), per.get("direct")
        if p is None or fl is None or "error" in p or "error" in fl:
            continue
        cpu_p, cpu_f = p.get("cpu_ms_per_req"), fl.get("cpu_ms_per_req")
        ratio = cpu_p / cpu_f if cpu_p and cpu_f else None
        rows.append(
            f"| {sc.title} | {fmt(fl['rps'], 0)} | {fmt(p['rps'], 0)} | "
            f"{fmt(added(fl, base, 'latency_ms', 'p50'))} | "
            f"{fmt(added(p, base, 'latency_ms', 'p50'))} | "
            f"{fmt(cpu_f, 3)} | {fmt(cpu_p, 3)} | {fmt(ratio, 2)}× |"
        )
    if not rows:
        return []
    return [
        "",
        "## Palyra vs the floor (bare aiohttp pass-through)",
        "",
        "| scenario | floor req/s | palyra req/s | floor added p50 | palyra added p50 | "
        "floor CPU ms/req | palyra CPU ms/req | CPU ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]


def targets(results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    def get(key: str, name: str) -> dict[str, Any] | None:
        r = results.get(key, {}).get(name)
        return None if r is None or "error" in r else r

    out: list[str] = []

    def check(label: str, value: float | None, limit: float, at_most: bool, unit: str) -> None:
        if value is None:
            out.append(f"{label}: not measured")
            return
        ok = value <= limit if at_most else value >= limit
        sign = "≤" if at_most else "≥"
        out.append(
            f"{'PASS' if ok else 'FAIL'} {label}: {value:,.2f} {unit} "
            f"(target {sign} {limit:,} {unit})"
        )

    base1, p1 = get("chat-c1", "direct"), get("chat-c1", "palyra")
    if p1:
        check(
            "added latency at 1 concurrent, p50",
            added(p1, base1, "latency_ms", "p50"),
            1,
            True,
            "ms",
        )
        check(
            "added latency at 1 concurrent, p99",
            added(p1, base1, "latency_ms", "p99"),
            3,
            True,
            "ms",
        )
    base16, p16 = get("chat-c16", "direct"), get("chat-c16", "palyra")
    if p16:
        check("req/s at 16 concurrent", p16["rps"], 1500, False, "req/s")
        check("added p99 at 16 concurrent", added(p16, base16, "latency_ms", "p99"), 15, True, "ms")
    bs, ps = get("stream-c1", "direct"), get("stream-c1", "palyra")
    if ps:
        check(
            "streamed added TTFC p50 (1 concurrent)", added(ps, bs, "ttfc_ms", "p50"), 1, True, "ms"
        )
    po = get("streams-1000", "palyra")
    if po:
        check("open streams: errors", po["errors"], 0, True, "errors")
        check("open streams: peak RSS", po.get("peak_rss_mb"), 150, True, "MB")
    peer16 = get("chat-c16", "litellm")
    if p16 and peer16 and peer16["rps"]:
        check("req/s at 16 concurrent vs LiteLLM", p16["rps"] / peer16["rps"], 5, False, "×")
    elif p16:
        out.append("req/s vs LiteLLM: not measured (peer not run)")
    return out


# --- main ---------------------------------------------------------------------------------


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


def raise_fd_limit() -> None:
    # 1,000 open streams hold ~4,000 sockets across the processes; children inherit this.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 16384:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(16384, hard), hard))


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="palyra-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"logs kept in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Palyra benchmarks, side by side with LiteLLM")
    parser.add_argument("--quick", action="store_true", help="tiny runs (smoke test)")
    parser.add_argument("--no-peer", action="store_true", help="skip LiteLLM")
    parser.add_argument(
        "--no-floor", action="store_true", help="skip the bare aiohttp pass-through"
    )
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load generator")
    parser.add_argument("--only", default="", help="comma-separated scenario keys")
    parser.add_argument(
        "--output",
        default="",
        help="results file (default: benchmarks/results.md, not written with --quick)",
    )
    parser.add_argument("--json", default="", help="also write raw figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir with logs")
    args = parser.parse_args(argv)

    raise_fd_limit()
    use_wrk = not args.no_wrk and ensure_wrk()
    chosen = scenarios(args.quick)
    if args.only:
        keys = set(args.only.split(","))
        chosen = [s for s in chosen if s.key in keys]
    notes: list[str] = []
    results: dict[str, dict[str, dict[str, Any]]] = {}
    processes: list[subprocess.Popen[bytes]] = []
    with workdir(args.keep) as work:
        try:
            mock_process, mock = start_mock(work, 5 if args.quick else 50)
            processes.append(mock_process)
            targets_: list[Target] = [mock_target(mock)]
            if not args.no_floor:
                floor = start_floor(work, mock)
                assert floor.process is not None
                processes.append(floor.process)
                targets_.append(floor)
            daemon = start_daemon(work, mock)
            assert daemon.process is not None
            processes.append(daemon.process)
            targets_.append(daemon)
            if not args.no_peer:
                try:
                    peer = start_litellm(work, mock)
                    assert peer.process is not None
                    processes.append(peer.process)
                    targets_.append(peer)
                except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
                    notes.append(f"LiteLLM peer not run: {exc}")
                    print(f"LiteLLM peer not run: {exc}", flush=True)
            for sc in chosen:
                for target in targets_:
                    print(f"{sc.key:16s} {target.name:8s} ...", end=" ", flush=True)
                    try:
                        r = measure(target, sc, work, use_wrk, args.quick)
                    except (RuntimeError, subprocess.TimeoutExpired, KeyError) as exc:
                        r = {"error": str(exc)}
                        print(f"failed: {exc}", flush=True)
                    else:
                        lat = r["latency_ms"]
                        print(
                            f"{r['rps']:8,.0f} req/s  errors {r['errors']}  "
                            f"p50 {fmt(lat['p50'])}  p99 {fmt(lat['p99'])}  "
                            f"rss {fmt(r.get('peak_rss_mb'), 0)}  "
                            f"cpu/req {fmt(r.get('cpu_ms_per_req'), 3)} ms",
                            flush=True,
                        )
                        if r.get("error_samples"):
                            print("   e.g. " + "; ".join(r["error_samples"][:2]), flush=True)
                    results.setdefault(sc.key, {})[target.name] = r
            if daemon.process is not None:
                notes.append(f"palyrad RSS after the run: {rss_mb(daemon.process.pid):.0f} MB")
        finally:
            for process in reversed(processes):
                stop(process)
        runs = 5 if args.quick else 100
        # The same 100 KB mixed prompt (prose, code, JSON) as benchmarks/tokens_bench.py.
        from tokens_bench import mixed_prompt

        prompt = work / "prompt.txt"
        prompt.write_text(mixed_prompt())
        tokens: dict[str, Any] = {"palyra": token_bench(PYTHON, PALYRA_TOKENS, prompt, runs)}
        if not args.no_peer and litellm_peer.ready():
            tokens["litellm"] = token_bench(
                str(litellm_peer.python()),
                PEER_TOKENS,
                prompt,
                max(5, runs // 5),
                litellm_peer.env(),
            )
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.machine()}",
        "loadgen": "wrk (whole requests) + loadgen.py (streams)" if use_wrk else "loadgen.py",
        "quick": args.quick,
        "notes": notes,
    }
    text = report(results, tokens, meta, chosen)
    print()
    print(text)
    output = args.output or ("" if args.quick else str(HERE / "results.md"))
    if output:
        Path(output).write_text(text)
        print(f"written to {output}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"results": results, "tokens": tokens, "meta": meta}, indent=1)
        )
    failed = [k for k, per in results.items() for r in per.values() if "error" in r]
    return 1 if failed and args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
