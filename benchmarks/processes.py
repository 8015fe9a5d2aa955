"""The processes under test, each on loopback: the mock upstream, the floor, `palyrad`,
LiteLLM's proxy and Portkey's gateway, and for each a `Target`: where it serves each scenario
and what else it needs sent. Every process may be pinned to CPUs (`CPU_AFFINITY`, run.py's
`--pin`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import litellm_peer
import portkey_peer
from scenarios import CLIENT_KEY, DEPLOYED, WORKERS, Scenario

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
ADMIN_TOKEN = "palyra-bench-admin-token"
UPSTREAM_KEY_ENV = "PALYRA_BENCH_UPSTREAM_KEY"
PEER_TOKEN = "sk-bench-admin"

# (mode, endpoint, via) -> (url, model)
RouteKey = tuple[str, str, str]
Routes = dict[RouteKey, tuple[str, str]]


@dataclass
class Target:
    name: str
    process: subprocess.Popen[bytes] | None
    token: str = ""
    routes: Routes = field(default_factory=dict)
    # Sent beside the wire format's own headers, per route (Portkey's x-portkey-*).
    headers: dict[RouteKey, dict[str, str]] = field(default_factory=dict)
    # Scenarios this target sits out, and why (a peer too slow for 5,000 open streams).
    skips: dict[str, str] = field(default_factory=dict)

    def route(self, scenario: Scenario) -> tuple[str, str] | None:
        """Where this target serves the scenario; None when it does not."""
        if scenario.key in self.skips:
            return None
        return self.routes.get(scenario.route_key)

    def extra_headers(self, scenario: Scenario) -> dict[str, str]:
        return self.headers.get(scenario.route_key, {})


# --- CPU pinning ------------------------------------------------------------------------------

# Role -> the CPUs its processes may run on (run.py's `--pin ROLE=CPUS`); a role not named
# runs where the scheduler puts it. Roles: ROLES.
CPU_AFFINITY: dict[str, set[int]] = {}
ROLES = ("mock", "floor", "palyra", "litellm", "portkey", "loadgen")


def parse_cpus(text: str) -> set[int]:
    """ "0", "1,3" or "0-1" -> a set of CPU numbers; a ValueError names what is wrong."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ValueError(f"not a CPU list: {text!r} (say 0, 0,1 or 0-1)")
        cpus.update(range(int(first), int(last or first) + 1))
    usable = os.sched_getaffinity(0)
    if not cpus <= usable:
        raise ValueError(f"CPUs {sorted(cpus - usable)} are not usable here ({sorted(usable)})")
    return cpus


def pin(role: str) -> Callable[[], None] | None:
    """A `preexec_fn` that pins the child to its role's CPUs before it runs (so that what it
    forks, palyrad's workers say, inherits them); None when the role is not pinned."""
    cpus = CPU_AFFINITY.get(role)
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def describe_pins() -> str:
    if not CPU_AFFINITY:
        return "no CPU pinning (every process where the scheduler put it)"
    return "CPU pinning: " + ", ".join(
        f"{role} on {','.join(map(str, sorted(cpus)))}" for role, cpus in CPU_AFFINITY.items()
    )


def process_tree(pid: int) -> list[int]:
    """`pid` and every process under it (LiteLLM and palyrad's workers fork)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
    return pids


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


def raise_fd_limit() -> int:
    """Raises this process's open-file limit, which its children inherit, to 16,384 where the
    hard limit allows; returns the limit now. N open streams hold about 2N sockets in the
    gateway (client and upstream sides), N in the mock and N in the load generator."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 16384:
        soft = min(16384, hard) if hard != resource.RLIM_INFINITY else 16384
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def fd_room(streams: int) -> int:
    """The open-file limit that N open streams through a gateway need: 2N sockets in it, and
    room for its other files (the log, the state store, its pools' idle connections)."""
    return 2 * streams + 1024


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


# --- the mock upstream ----------------------------------------------------------------------


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
        preexec_fn=pin("mock"),
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/fast/v1/models", process, 20, "mock upstream")
    return process, url


def mock_target(mock: str) -> Target:
    """Straight to the mock, in the client's own wire format: the baseline of "added"."""
    routes: Routes = {
        ("fast", "chat", ""): (f"{mock}/fast/v1/chat/completions", "gpt-4o-mini"),
        ("slow", "chat", ""): (f"{mock}/slow/v1/chat/completions", "gpt-4o-mini"),
        ("hold", "chat", ""): (f"{mock}/hold/v1/chat/completions", "gpt-4o-mini"),
        # Straight to the provider that answers: what failover adds shows as added latency.
        ("failover", "chat", ""): (f"{mock}/fast/v1/chat/completions", "gpt-4o-mini"),
        ("fast", "embeddings", ""): (f"{mock}/fast/v1/embeddings", "text-embedding-3-small"),
        ("fast", "chat", DEPLOYED): (f"{mock}/fast/v1/chat/completions", "gpt-4o-mini"),
        ("fast", "chat", CLIENT_KEY): (f"{mock}/fast/v1/chat/completions", "gpt-4o-mini"),
    }
    for n in (1, 2):
        routes[("fast", "chat", f"{WORKERS}{n}")] = routes[("fast", "chat", "")]
    for via in ("", "passthrough", "translated"):
        routes[("fast", "responses", via)] = (f"{mock}/fast/v1/responses", "gpt-4o-mini")
        routes[("fast", "messages", via)] = (f"{mock}/fast/v1/messages", "claude-sonnet-4-5")
    return Target("direct", None, "", routes)


# --- palyrad --------------------------------------------------------------------------------

DAEMON_CONFIG = """\
version = 1

[daemon]
log_level = "info"
{workers}
[model_provider]
failover_enabled = true

{providers}
{models}
"""


def daemon_config(
    mock: str, dialects: bool = True, deployments: bool = False, workers: int = 0
) -> str:
    """Six models on five OpenAI-compatible providers; with `dialects`, also an Anthropic
    provider (Messages passed through natively) and an OpenAI-compatible one with Responses
    pass-through. Without, the config is the one the daemon had before those dialects, which
    an older tree can still load (for before/after figures). With `deployments`, also
    `DEPLOYED_MODEL` on three more providers and `EXTRA_MODELS` models spread over all of
    them (see `deployed_models`). With `workers`, `[daemon] workers` is set to it (without,
    the key is left out: older trees refuse it)."""
    providers = [
        ("mock-fast", "openai_compatible", f"{mock}/fast/v1", ""),
        ("mock-slow", "openai_compatible", f"{mock}/slow/v1", ""),
        ("mock-hold", "openai_compatible", f"{mock}/hold/v1", ""),
        # Down: answers 503 at once; no retries so the request fails over straight away.
        ("mock-down", "openai_compatible", f"{mock}/fail/v1", "max_retries = 0\n"),
        ("mock-backup", "openai_compatible", f"{mock}/fast/v1", ""),
    ]
    models = [
        ("bench-chat", "mock-fast", "gpt-4o-mini", "chat", ""),
        ("bench-slow", "mock-slow", "gpt-4o-mini", "chat", ""),
        ("bench-hold", "mock-hold", "gpt-4o-mini", "chat", ""),
        (
            "bench-failover",
            "mock-down",
            "gpt-4o-mini",
            "chat",
            'fallbacks = ["bench-failover-b"]\n',
        ),
        ("bench-failover-b", "mock-backup", "gpt-4o-mini", "chat", ""),
        ("bench-embed", "mock-fast", "gpt-4o-mini", "embeddings", ""),
    ]
    if dialects:
        # The Anthropic kind appends /v1/messages to its base URL, OpenAI-compatible kinds
        # /chat/completions or /responses to theirs.
        providers += [
            ("mock-anthropic", "anthropic", f"{mock}/fast", ""),
            (
                "mock-responses",
                "openai_compatible",
                f"{mock}/fast/v1",
                "responses_passthrough = true\n",
            ),
        ]
        models += [
            ("bench-claude", "mock-anthropic", "claude-sonnet-4-5", "chat", ""),
            ("bench-responses", "mock-responses", "gpt-4o-mini", "chat", ""),
        ]
    if deployments:
        providers += [
            (pid, "openai_compatible", f"{mock}/fast/v1", "") for pid in DEPLOYMENT_PROVIDERS
        ]
        models += deployed_models([pid for pid, *_ in providers])
    provider_text = [
        "[[model_provider.providers]]\n"
        f'provider_id = "{pid}"\nkind = "{kind}"\n'
        f'base_url = "{base_url}"\napi_key_env = "{UPSTREAM_KEY_ENV}"\n'
        f"allow_private_base_url = true\ndiscovery = false\n{extra}"
        for pid, kind, base_url, extra in providers
    ]
    model_text = [
        "[[model_provider.models]]\n"
        f'model_id = "{mid}"\nprovider_id = "{pid}"\nupstream_model = "{upstream}"\n'
        f'role = "{role}"\n{extra}'
        for mid, pid, upstream, role, extra in models
    ]
    return DAEMON_CONFIG.format(
        workers=f"workers = {workers}\n" if workers else "",
        providers="\n".join(provider_text),
        models="\n".join(model_text),
    )


# The model of the deploy-* scenarios: one model_id on three providers that all answer at
# once, weighted alike (the default strategy, `weighted`).
DEPLOYED_MODEL = "bench-deployed"
DEPLOYMENT_PROVIDERS = ("mock-deploy-a", "mock-deploy-b", "mock-deploy-c")
# Configured beside it so that the registry is the size of a real gateway's, not six models.
EXTRA_MODELS = 100


def deployed_models(provider_ids: list[str]) -> list[tuple[str, str, str, str, str]]:
    """`DEPLOYED_MODEL`'s three deployments, then `EXTRA_MODELS` models `bench-extra-NNN`
    dealt round the providers (every tenth an embeddings model), as `daemon_config` rows."""
    rows = [(DEPLOYED_MODEL, pid, "gpt-4o-mini", "chat", "") for pid in DEPLOYMENT_PROVIDERS]
    for n in range(EXTRA_MODELS):
        embeddings = n % 10 == 9
        rows.append(
            (
                f"bench-extra-{n:03d}",
                provider_ids[n % len(provider_ids)],
                "text-embedding-3-small" if embeddings else f"gpt-4o-mini-{n:03d}",
                "embeddings" if embeddings else "chat",
                "",
            )
        )
    return rows


def gateway_routes(url: str, dialects: bool = True) -> Routes:
    """Where each scenario is served by a gateway at `url`: both gateways are configured with
    the same model names for chat and embeddings."""
    chat, embed = url + "/v1/chat/completions", url + "/v1/embeddings"
    routes: Routes = {
        ("fast", "chat", ""): (chat, "bench-chat"),
        ("slow", "chat", ""): (chat, "bench-slow"),
        ("hold", "chat", ""): (chat, "bench-hold"),
        ("failover", "chat", ""): (chat, "bench-failover"),
        ("fast", "embeddings", ""): (embed, "bench-embed"),
    }
    if dialects:
        responses, messages = url + "/v1/responses", url + "/v1/messages"
        routes |= {
            # Headlines: Responses translated onto chat completions, Messages passed through.
            ("fast", "responses", ""): (responses, "bench-chat"),
            ("fast", "responses", "passthrough"): (responses, "bench-responses"),
            ("fast", "messages", ""): (messages, "bench-claude"),
            ("fast", "messages", "translated"): (messages, "bench-chat"),
        }
    return routes


def start_daemon(work: Path, mock: str, *, dialects: bool = True, palyra_src: str = "") -> Target:
    """`palyrad`, the real console script; with `palyra_src`, the package is imported from
    that tree instead (a git worktree of an older commit, for before/after figures)."""
    process, url = spawn_daemon(work, "", daemon_config(mock, dialects), palyra_src)
    return Target("palyra", process, ADMIN_TOKEN, gateway_routes(url, dialects))


def start_deployed_daemon(work: Path, mock: str, *, palyra_src: str = "") -> Target:
    """A second `palyrad` for the deploy-* scenarios only, its config the usual one plus
    `DEPLOYED_MODEL` (three deployments) and `EXTRA_MODELS` more models. A daemon of its own,
    so that chat-c16 in the same run is the usual single-deployment figure, and what the
    bigger registry costs per request shows in the comparison rather than on both sides."""
    config = daemon_config(mock, dialects=False, deployments=True)
    process, url = spawn_daemon(work, "-deployed", config, palyra_src)
    routes: Routes = {("fast", "chat", DEPLOYED): (url + "/v1/chat/completions", DEPLOYED_MODEL)}
    return Target("palyra", process, ADMIN_TOKEN, routes)


def start_workers_daemon(work: Path, mock: str, workers: int, *, palyra_src: str = "") -> Target:
    """A `palyrad` with `[daemon] workers = N` for the workers-* scenarios (whole chat at 64
    concurrent), the usual config otherwise. A RuntimeError when it refuses the key, or when it
    answers from fewer processes than N workers need: a tree that reads the key but does not
    serve it yet would otherwise pass for N workers."""
    config = daemon_config(mock, dialects=False, workers=workers)
    process, url = spawn_daemon(work, f"-workers{workers}", config, palyra_src)
    try:
        wait_workers(process, url, workers)
    except RuntimeError:
        stop(process)
        raise
    route = (url + "/v1/chat/completions", "bench-chat")
    routes: Routes = {("fast", "chat", f"{WORKERS}{workers}"): route}
    return Target("palyra", process, ADMIN_TOKEN, routes)


# Once palyrad answers, how long its process count may take to show N workers, and all of
# them to answer.
WORKERS_COUNT_S = 5.0
WORKERS_READY_S = 60.0


def python_processes(pid: int) -> int:
    """How many processes of the tree under `pid` (itself included) run Python: palyrad's
    workers, not a helper it may run (`/proc/PID/exe`)."""
    count = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            if "python" in os.path.basename(os.readlink(f"/proc/{p}/exe")):
                count += 1
    return count


def wait_workers(process: subprocess.Popen[bytes], url: str, n: int) -> None:
    """Waits until palyrad, which answers already, runs at least `n` Python processes and
    each of them answers: every worker has a listening socket of its own on the port
    (SO_REUSEPORT), and a new connection may be queued on one still starting, so 8 answers
    a worker on new connections (each one lands on a given worker with chance 1/n) say that
    all are up. One process when n > 1: the key is read but not served."""
    deadline = time.monotonic() + WORKERS_COUNT_S
    seen = python_processes(process.pid)
    while seen < n and time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"palyrad exited with {process.returncode}")
        time.sleep(0.1)
        seen = python_processes(process.pid)
    if seen < n:
        raise RuntimeError(
            f"palyrad with [daemon] workers = {n} runs {seen} Python "
            f"process{'es' if seen != 1 else ''} (the key is read but not served by this tree)"
        )
    deadline = time.monotonic() + WORKERS_READY_S
    answered = 0
    while answered < 8 * n:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"palyrad's {n} workers did not all answer within {WORKERS_READY_S:.0f} s"
            )
        try:
            # urllib opens a new connection each time, so the kernel picks a worker each time.
            with urllib.request.urlopen(url + "/healthz", timeout=2):
                answered += 1
        except (urllib.error.URLError, OSError):
            answered = 0


def spawn_daemon(
    work: Path,
    suffix: str,
    config_text: str,
    palyra_src: str,
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Starts `palyrad` on `config_text`, with its config file, state and log under `work`
    (`palyra{suffix}.toml`, `palyrad{suffix}.log`, ...); returns the process and its URL
    once it answers. `extra_env` is set last (e.g. `PALYRA_EVENT_LOOP`, which the caller's
    own `PALYRA_*` variables never reach)."""
    config = work / f"palyra{suffix}.toml"
    config.write_text(config_text)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PALYRA_")}
    env.update(
        PALYRA_ADMIN_TOKEN=ADMIN_TOKEN,
        XDG_CONFIG_HOME=str(work / f"xdg-config{suffix}"),
        XDG_STATE_HOME=str(work / f"xdg-state{suffix}"),
    )
    env[UPSTREAM_KEY_ENV] = "sk-bench-upstream"
    if palyra_src:
        # Ahead of the editable install's finder, which comes last on sys.meta_path.
        env["PYTHONPATH"] = str(Path(palyra_src).resolve())
    env.update(extra_env or {})
    palyrad = Path(PYTHON).with_name("palyrad")
    log = open(work / f"palyrad{suffix}.log", "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [
            str(palyrad),
            "--config",
            str(config),
            "--port",
            str(port),
            "--state-dir",
            str(work / f"state{suffix}"),
        ],
        env=env,
        stdout=log,
        stderr=log,
        preexec_fn=pin("palyra"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", process, 60, f"palyrad ({config.name})")
    except RuntimeError:
        stop(process)
        raise
    return process, url


_DISPATCHED = re.compile(
    r"^palyra_deployment_dispatched_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$", re.M
)


def dispatched(target: Target, model: str) -> dict[str, int] | None:
    """Requests the daemon has dispatched to each deployment of `model` (provider id ->
    count), from its /metrics; None when it has no per-deployment figures for that model."""
    if not target.routes:
        return None
    return dispatched_counts(read_metrics(target), model)


def base_url(target: Target) -> str:
    """The gateway's own address, from any of its routes."""
    route = next(iter(target.routes.values()))
    return route[0].split("/v1/", 1)[0]


def read_metrics(target: Target) -> str:
    request = urllib.request.Request(
        base_url(target) + "/metrics", headers={"Authorization": f"Bearer {target.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text: str = response.read().decode()
    return text


def dispatched_counts(metrics_text: str, model: str) -> dict[str, int] | None:
    """`palyra_deployment_dispatched_total` of `model` per provider, read from Prometheus
    text; None when there is none."""
    counts: dict[str, int] = {}
    for match in _DISPATCHED.finditer(metrics_text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if labels.get("model") == model:
            counts[labels.get("provider", "?")] = int(float(match["value"]))
    return counts or None


# --- client keys and the ledger (issue 15) ---------------------------------------------------

CLIENT_KEY_NAME = "bench-key"
# Limits and a budget that no run comes near (a full run sends a few hundred thousand requests
# of a few dozen tokens at a fraction of a cent), so every request pays for the key's checks
# and budget without ever being refused by them.
CLIENT_KEY_SETTINGS: dict[str, Any] = {
    "models": ["bench-chat"],
    "rpm": 10_000_000,
    "tpm": 100_000_000_000,
    "budget_usd": 1_000_000.0,
    "budget_period": "total",
}


def admin_json(target: Target, method: str, path: str, body: Any = None) -> Any:
    """One call to the daemon's console API with the admin token; a RuntimeError names the
    status and the start of the answer when it is not a success (an older tree has no such
    route, say)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    request = urllib.request.Request(
        base_url(target) + path, data=data, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:200].decode(errors="replace")
        raise RuntimeError(f"{method} {path} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RuntimeError(f"{method} {path} failed: {exc}") from None


def start_client_key(daemon: Target) -> Target:
    """A client key for the key-* scenarios, made with the admin token once the daemon is up,
    and that daemon as the target that sends it: `bench-chat` on the same daemon as chat-c1
    and chat-c16, so what differs is only who asks."""
    answer = admin_json(
        daemon, "POST", "/console/v1/keys", {"name": CLIENT_KEY_NAME, **CLIENT_KEY_SETTINGS}
    )
    secret = answer.get("secret") if isinstance(answer, dict) else None
    if not isinstance(secret, str) or not secret.startswith("pk-"):
        raise RuntimeError("POST /console/v1/keys answered without a pk- secret")
    route = (base_url(daemon) + "/v1/chat/completions", "bench-chat")
    return Target("palyra", daemon.process, secret, {("fast", "chat", CLIENT_KEY): route})


# The writer sends a batch 0.5 s after its first record: two reads this far apart that agree
# mean it has caught up with the load.
LEDGER_SETTLE_S = 0.7
LEDGER_WAIT_S = 15.0


def ledger_by_key(daemon: Target) -> dict[str, Any]:
    """The daemon's ledger per key (`GET /console/v1/usage?group_by=key`, the last 30 days,
    so the whole run) once its writer has caught up, with the records it dropped (from
    /metrics): `{"groups": [...], "total": {...}, "dropped": N or None}`."""
    path = "/console/v1/usage?group_by=key"
    answer = admin_json(daemon, "GET", path)
    deadline = time.monotonic() + LEDGER_WAIT_S
    while time.monotonic() < deadline:
        time.sleep(LEDGER_SETTLE_S)
        again = admin_json(daemon, "GET", path)
        if again["total"]["requests"] == answer["total"]["requests"]:
            break
        answer = again
    try:
        dropped = metric_value(read_metrics(daemon), "palyra_usage_records_dropped_total")
    except OSError:
        dropped = None
    return {"groups": answer["groups"], "total": answer["total"], "dropped": dropped}


def metric_value(metrics_text: str, name: str) -> int | None:
    """An unlabelled sample's value from Prometheus text; None when it is not there."""
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", metrics_text, re.M)
    return None if match is None else int(float(match[1]))


# --- the floor and the peer -----------------------------------------------------------------


def start_floor(work: Path, mock: str, loop: str = "asyncio") -> Target:
    """The bare aiohttp pass-through (benchmarks/floor.py) on `loop` (asyncio or uvloop): what
    any aiohttp gateway costs. It relays every path as it came, so it serves every wire
    format the mock speaks."""
    port = free_port()
    log = open(work / "floor.log", "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [
            PYTHON,
            str(HERE / "floor.py"),
            "--port",
            str(port),
            "--upstream",
            mock,
            "--loop",
            loop,
        ],
        stdout=log,
        stderr=log,
        preexec_fn=pin("floor"),
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz", process, 20, "floor")
    direct = mock_target(mock)
    routes = {
        key: (url + route.removeprefix(mock), model)
        for key, (route, model) in direct.routes.items()
        # A pass-through has no models, let alone deployments, and no keys but the upstream's.
        if key[2] not in (DEPLOYED, CLIENT_KEY) and not key[2].startswith(WORKERS)
    }
    return Target("floor", process, "", routes)


def start_litellm(work: Path, mock: str) -> Target:
    """LiteLLM's proxy, configured for chat and embeddings only (its Responses and Messages
    routes are not set up here, so those scenarios skip it)."""
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
        preexec_fn=pin("litellm"),
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health/liveliness", process, 240, "litellm")
    return Target("litellm", process, PEER_TOKEN, gateway_routes(url, dialects=False))


def start_portkey(work: Path, mock: str) -> Target:
    """Portkey's gateway (benchmarks/portkey_peer.py), one Node process, with the headers that
    name its upstream sent per route: chat, embeddings and failover as for the other
    gateways, and /v1/responses and /v1/messages passed through (Portkey's way: its
    Responses route goes to the provider's own /responses, its Messages route to an
    Anthropic provider's /messages)."""
    portkey_peer.ensure_installed()
    port = free_port()
    log = open(work / "portkey.log", "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        portkey_peer.command(port),
        stdout=log,
        stderr=log,
        cwd=work,
        preexec_fn=pin("portkey"),
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/", process, 60, "portkey")
    chat, embed = url + "/v1/chat/completions", url + "/v1/embeddings"
    responses, messages = url + "/v1/responses", url + "/v1/messages"
    routes: Routes = {
        ("fast", "chat", ""): (chat, "gpt-4o-mini"),
        ("slow", "chat", ""): (chat, "gpt-4o-mini"),
        ("hold", "chat", ""): (chat, "gpt-4o-mini"),
        ("failover", "chat", ""): (chat, "gpt-4o-mini"),
        ("fast", "embeddings", ""): (embed, "text-embedding-3-small"),
        ("fast", "responses", ""): (responses, "gpt-4o-mini"),
        ("fast", "responses", "passthrough"): (responses, "gpt-4o-mini"),
        ("fast", "messages", ""): (messages, "claude-sonnet-4-5"),
    }
    host = portkey_peer.headers
    headers: dict[RouteKey, dict[str, str]] = {
        ("fast", "chat", ""): host(f"{mock}/fast/v1"),
        ("slow", "chat", ""): host(f"{mock}/slow/v1"),
        ("hold", "chat", ""): host(f"{mock}/hold/v1"),
        ("failover", "chat", ""): portkey_peer.fallback_config(
            f"{mock}/fail/v1", f"{mock}/fast/v1"
        ),
        ("fast", "embeddings", ""): host(f"{mock}/fast/v1"),
        ("fast", "responses", ""): host(f"{mock}/fast/v1"),
        ("fast", "responses", "passthrough"): host(f"{mock}/fast/v1"),
        ("fast", "messages", ""): host(f"{mock}/fast/v1", "anthropic"),
    }
    return Target("portkey", process, portkey_peer.UPSTREAM_KEY, routes, headers)
