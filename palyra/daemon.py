"""`palyrad`: load config, wire the parts, serve until SIGTERM.

The wiring lives in `build_app`, on one screen: state dir, admin token, the gateway
(providers, router, discovery, health), the state store, the HTTP app.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web_protocol import RequestPayloadError

from palyra import logs, telemetry
from palyra.accounting import Accounting
from palyra.agents.lease import load_node_id
from palyra.agents.registry import load_agents
from palyra.agents.service import AgentService
from palyra.auth.service import AuthService
from palyra.budgets import BudgetBook
from palyra.channel import Channel, ChannelSpend
from palyra.config import (
    ConfigError,
    DaemonConfig,
    PalyraConfig,
    find_config_path,
    load_config,
    resolve_state_dir,
)
from palyra.credentials import StoreCredentials
from palyra.cron.clock import SystemClock
from palyra.cron.runner import AgentJobRunner
from palyra.cron.service import CronService
from palyra.fs import ensure_private_dir
from palyra.gateway import Gateway
from palyra.keylimits import KeyLimits
from palyra.keys import KeyStore
from palyra.logs import configure_logging
from palyra.reload import Reloader
from palyra.routing import Routed
from palyra.runtime import Runtime
from palyra.server.app import create_app
from palyra.server.auth import load_or_create_admin_token
from palyra.server.keys import RESPONSES, RUNTIME, SESSIONS
from palyra.state import open_database
from palyra.types import ChatRequest, ChatResult
from palyra.usage.writer import UsageWriter
from palyra.vault import open_vault
from palyra.workers import WorkerSpec, listen_error, run_master

log = structlog.get_logger("palyra.daemon")

CHANNEL = web.AppKey("channel", Channel)


def build_app(
    config: PalyraConfig,
    *,
    env: Mapping[str, str] | None = None,
    config_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    worker: WorkerSpec | None = None,
) -> web.Application:
    """`config_path`: the file `config` came from (agents.toml is looked for beside it).
    `overrides`: the command line's settings, which a reload keeps over the file's.
    `worker`: this process is one of several serving the port (palyra.workers)."""
    env = os.environ if env is None else env
    # To the master and the other workers; without Redis, what they share goes through it.
    channel = Channel(worker.channel) if worker is not None else None
    state_dir = resolve_state_dir(config, env)
    ensure_private_dir(state_dir)
    credentials = StoreCredentials(env)
    runtime = Runtime(
        config=config,
        env=env,
        state_dir=state_dir,
        admin_token=load_or_create_admin_token(state_dir, env),
        gateway=Gateway(
            config.model_provider,
            credentials=credentials,
            redis_url=config.state.redis_url,
            channel=channel,
        ),
    )
    if worker is not None:
        runtime.worker = {"index": worker.index, "workers": worker.count, "pid": os.getpid()}
    agents = load_agents(config, config_path or find_config_path(None, env), env)
    node_id = worker.node_id if worker is not None else load_node_id(state_dir)

    def chat(request: ChatRequest) -> Awaitable[Routed[ChatResult]]:
        # The router of the moment: a reload replaces it.
        return runtime.gateway.router.chat(request)

    runtime.agents = AgentService(
        agents,
        chat,
        node_id=node_id,
        retention_days=config.cron.history_retention_days,
    )
    runtime.cron = CronService(
        config.cron,
        AgentJobRunner(runtime.agents),
        clock=SystemClock(),
        node_id=node_id,
        agent_exists=lambda agent_id: runtime.agents.registry.get(agent_id) is not None,
    )
    runtime.reloader = Reloader(
        runtime,
        path=config_path,
        overrides=dict(overrides or {}),
        env=env,
        snapshot=Path(worker.config_text) if worker is not None and worker.config_text else None,
        master_pid=worker.master_pid if worker is not None else None,
        workers=worker.count if worker is not None else 1,
        warm=credentials.warm,
    )
    runtime.usage = UsageWriter(
        runtime.gateway.metrics,
        enabled=config.usage.enabled,
        log_payloads=config.usage.log_payloads,
    )
    app = create_app(runtime)
    app[RESPONSES] = runtime.responses
    if channel is not None:
        app[CHANNEL] = channel

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        # The tokenizer's vocabulary is not loaded here: it costs ~63 MB and most prompts never
        # need it (see palyra.tokens.warm_up; measured in benchmarks/README.md).
        if channel is not None:
            await channel.connect()
        runtime.db = await open_database(config.state, state_dir)
        # Console sign-outs, loaded before the first request (see palyra.server.sessions).
        await app[SESSIONS].start(runtime.db)
        # Client keys, loaded before the first request and re-read every 0.5 s after.
        await runtime.keys.open(KeyStore(runtime.db))
        runtime.keys.start()
        vault = await open_vault(runtime.db, state_dir, env)
        runtime.auth = await AuthService.open(config, runtime.db, vault)
        credentials.attach(runtime.auth)
        runtime.auth.start_background()
        await runtime.gateway.start(runtime.db)
        # Requests then find their keys in memory; other processes' changes come in behind.
        await credentials.warm(p for p in config.model_provider.providers if p.enabled)
        credentials.start()
        runtime.dependencies.add("state_store", runtime.db.ping, config.state.url)
        if runtime.gateway.shared is not None and config.state.redis_url:
            runtime.dependencies.add("redis", runtime.gateway.shared.ping, config.state.redis_url)
        if channel is not None:
            runtime.dependencies.add("workers", channel.ping)
        runtime.dependencies.start()
        await runtime.agents.start(runtime.db)
        await runtime.cron.start(runtime.db)
        await runtime.responses.start(runtime.db)
        await runtime.usage.start(runtime.db, retention_days=config.usage.retention_days)
        # What callers may spend (a key's models, limits and budget) and what each request
        # spent, recorded in the ledger: from here on every routed request is accounted.
        budgets = BudgetBook(
            config.state.redis_url,
            known=runtime.keys.keys,
            spend=ChannelSpend(channel) if channel is not None else None,
        )
        await budgets.load(await runtime.keys.store.list(), runtime.usage.store.spend_since)
        budgets.start()
        accounting = runtime.gateway.router.accounting = Accounting(
            # The registry of the moment: a reload replaces it.
            find_model=lambda model_id, provider_id: runtime.gateway.router.registry.deployment(
                model_id, provider_id
            ),
            limits=KeyLimits(runtime.gateway.deployments.counter),
            budgets=budgets,
            usage=runtime.usage,
            log_payloads=config.usage.log_payloads,
        )
        telemetry.configure(config.telemetry)
        log.info("ready", providers=sorted(runtime.gateway.providers), state_dir=str(state_dir))
        yield
        # Cron first: its runs are agent runs, closed as interrupted before the agents stop.
        await runtime.cron.aclose()
        await runtime.agents.aclose()
        # After every run that records usage has ended; before the store closes.
        await accounting.limits.drain()
        await budgets.aclose()
        await runtime.usage.aclose()
        await telemetry.shutdown()
        await runtime.responses.aclose()
        await runtime.dependencies.aclose()
        await app[SESSIONS].aclose()
        await runtime.keys.aclose()
        await runtime.gateway.aclose()
        await credentials.aclose()
        await runtime.auth.aclose()
        await runtime.db.close()
        if channel is not None:
            await channel.aclose()

    app.cleanup_ctx.append(lifecycle)
    return app


class QuietBadRequests(logging.Filter):
    """aiohttp logs every request it cannot parse (a control byte in a header, a line too
    long) with a traceback: anyone who can connect could fill the log with them. One line
    instead, without the offending bytes, which may hold a key. Errors in handlers stay loud.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BadHttpMessage):
            log.info("bad_http_request", status=exc.code, error=type(exc).__name__)
            return False
        if isinstance(exc, RequestPayloadError):
            # A body not in its Content-Encoding: the handler answered 400 already, and
            # aiohttp then fails again reading what is left of it before the next request.
            log.info("bad_http_request", status=400, error=type(exc).__name__)
            return False
        return True


def quiet_bad_requests() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, QuietBadRequests) for f in server_log.filters):
        server_log.addFilter(QuietBadRequests())


# How long a thread holding the GIL keeps it when another asks (Python's default: 5 ms).
# Long prompts are counted in worker threads; each time the event loop wakes while one
# holds the GIL it waited up to the whole interval, and a request spans several wake-ups
# (tests/server/test_limits.py measured /healthz 50 ms late behind a 32 MB prompt).
SWITCH_INTERVAL_S = 0.001


# Allocations less deallocations of container objects before a young-generation collection
# (Python's default: 700). Sixteen requests in flight hold more young objects than 700
# between them, so the collector ran about once every ten requests, walking objects that
# reference counting frees a moment later (what that cost a request, timed with
# gc.callbacks, is in benchmarks/README.md). A request leaves almost no cycles behind, so at
# 10,000 the collector hardly runs while serving; what start-up made is frozen out of its
# sight anyway (see serve).
GC_YOUNG_THRESHOLD = 10_000


OPEN_FILES_IF_UNLIMITED = 1_048_576


def tune_interpreter() -> None:
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
    raise_open_files_limit()


def raise_open_files_limit() -> int:
    """The soft limit of open files raised to the hard one (as Go's runtime does); the limit
    now. A stream holds two files, the client's connection and the upstream's, and the soft
    limit is often 1,024: 500 streams would be the most a daemon could carry. The upstream
    pools size themselves from it (palyra.models.connection_limit)."""
    if sys.platform == "win32":
        return 0  # (no such limit there)
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or (hard != resource.RLIM_INFINITY and soft >= hard):
        return soft
    # (An unlimited hard limit is not taken literally: some systems refuse it for files.)
    target = hard if hard != resource.RLIM_INFINITY else OPEN_FILES_IF_UNLIMITED
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


async def serve(
    app: web.Application,
    host: str,
    port: int,
    grace_s: float,
    *,
    sock: socket.socket | None = None,
    on_listening: Callable[[asyncio.Event], None] | None = None,
) -> None:
    """Serve until SIGTERM / SIGINT; SIGHUP reloads the config (palyra.reload). `sock`:
    listen there (a worker's socket) rather than bind host:port; `on_listening` is then
    handed the event that stops the daemon."""
    quiet_bad_requests()
    tune_interpreter()
    # The port first: when it is taken, nothing has started (and nothing logged `ready`).
    sockets = [sock] if sock is not None else bind_listening(host, port)
    # handler_cancellation: a client that goes away cancels its handler, and with it the
    # upstream request it was waiting on.
    runner = web.AppRunner(
        app, handler_cancellation=True, shutdown_timeout=grace_s, access_log=None
    )
    await runner.setup()
    try:
        # A burst of new connections (a thousand clients at once) waits in the kernel's
        # queue rather than having SYNs dropped and retried a second later.
        for listening in sockets:
            await web.SockSite(runner, listening, backlog=4096).start()
        # What start-up made lives as long as the process. Frozen out of the collector's
        # sight, a full collection takes microseconds instead of ~50 ms, which would land in
        # some request's latency (benchmarks/README.md).
        gc.collect()
        gc.freeze()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        reloader = app[RUNTIME].reloader if RUNTIME in app else None
        if reloader is not None:
            loop.add_signal_handler(signal.SIGHUP, reloader.on_sighup)
        if on_listening is None:
            log.info("listening", url=f"http://{host}:{port}")
        else:
            on_listening(stop)
        await stop.wait()
        if reloader is not None:
            # No reload into parts that are closing.
            loop.remove_signal_handler(signal.SIGHUP)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        log.info("shutting_down", grace_s=grace_s)
    finally:
        # Stops accepting, lets in-flight requests finish (up to grace_s), then closes.
        await runner.cleanup()
        for listening in sockets:
            listening.close()
    log.info("stopped")


def bind_listening(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on host:port, one per address the host names (as aiohttp's own
    site would bind). A port in use is one OSError that says so and what to do."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(
            (i[0], i[1], i[2], "", i[4]) for i in infos
        ):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise listen_error(host, port, exc) from None
            sock.listen(4096)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _say_config_error(exc: ConfigError) -> None:
    # One problem a line, as `palyra config validate` lists them: a config with several
    # problems is read, not deciphered from one `;`-joined line.
    for line in exc.lines():
        print(f"palyrad: config error: {line}", file=sys.stderr)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (a pinned dependency off Windows): its loop and transports
    are C, so the same daemon spends less CPU per request (figures in benchmarks/README.md).
    `PALYRA_EVENT_LOOP=asyncio` keeps the standard loop, for comparing or debugging."""
    if os.environ.get("PALYRA_EVENT_LOOP", "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


cli = typer.Typer(add_completion=False, help="The Palyra daemon: an OpenAI-compatible LLM gateway.")


@cli.command()
def run(
    config: Annotated[
        Path | None, typer.Option("--config", help="config.toml (else $PALYRA_CONFIG, else XDG)")
    ] = None,
    bind: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on")] = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help="state directory")] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="debug|info|warning|error")
    ] = None,
) -> None:
    """Run the daemon until SIGTERM or Ctrl-C; SIGHUP reloads config.toml and agents.toml."""
    # Until the reload handler is in place (when serving starts), a SIGHUP must not kill
    # a daemon still starting.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    overrides = {
        "daemon.bind": bind,
        "daemon.port": port,
        "daemon.state_dir": str(state_dir) if state_dir else None,
        "daemon.log_level": log_level,
    }
    try:
        loaded = load_config(config, overrides=overrides)
    except ConfigError as exc:
        _say_config_error(exc)
        raise typer.Exit(1) from None
    settings = loaded.config
    configure_logging(settings.daemon.log_level)
    workers = settings.daemon.worker_count()
    if workers > 1:
        try:
            code = run_master(
                settings.daemon.bind,
                settings.daemon.port,
                workers,
                state_dir=resolve_state_dir(settings),
                config_path=loaded.path,
                config_text=loaded.text,
                config=settings,
                overrides=overrides,
                grace_s=settings.daemon.shutdown_grace_ms / 1000,
                env=os.environ,
            )
        except OSError as exc:
            print(f"palyrad: cannot start: {exc}", file=sys.stderr)
            raise typer.Exit(1) from None
        raise typer.Exit(code)
    try:
        run_until_stopped(
            build_app(settings, config_path=loaded.path, overrides=overrides), settings.daemon
        )
    except ConfigError as exc:  # agents.toml
        _say_config_error(exc)
        raise typer.Exit(1) from None
    except OSError as exc:
        print(f"palyrad: cannot start: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None


def run_until_stopped(
    app: web.Application,
    daemon: DaemonConfig,
    *,
    sock: socket.socket | None = None,
    on_listening: Callable[[asyncio.Event], None] | None = None,
) -> None:
    """`serve` on the event loop of `event_loop_factory`, until SIGTERM or SIGINT."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(
            serve(
                app,
                daemon.bind,
                daemon.port,
                daemon.shutdown_grace_ms / 1000,
                sock=sock,
                on_listening=on_listening,
            )
        )


def serve_worker(spec: WorkerSpec) -> int:
    """One worker of several (palyra.workers): the daemon above on the master's socket; the
    exit code."""
    # Until the reload handler is in place (when serving starts): a SIGHUP from the master
    # must not kill a worker still starting.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # The master's reading of config.toml (at start, or at its last reload), not the file as
    # it is now (it may have changed).
    snapshot = Path(spec.config_text) if spec.config_text else None
    try:
        text = snapshot.read_text("utf-8") if snapshot is not None and snapshot.exists() else None
        loaded = load_config(spec.config_path, overrides=spec.overrides, text=text)
    except ConfigError as exc:
        _say_config_error(exc)
        return 1
    settings = loaded.config
    configure_logging(settings.daemon.log_level)
    # Every line this worker logs says which it is (bound before the loop copies the context).
    logs.bind_process(worker=spec.index)
    sock = socket.socket(fileno=spec.fd)

    def listening(stop: asyncio.Event) -> None:
        channel = app[CHANNEL]
        channel.send("ready", spec.index, os.getpid())
        log.info("worker_listening", pid=os.getpid())
        # The master gone (killed, or crashed): drain and exit rather than serve on alone.
        asyncio.get_running_loop().create_task(_stop_when(channel.lost, stop))
        # A reload the master passed on while this worker started went unheard (SIGHUP was
        # ignored until now): what it left for the workers says whether there was one.
        now = snapshot.read_text("utf-8") if snapshot is not None and snapshot.exists() else None
        reloader = app[RUNTIME].reloader
        if now != text and reloader is not None:
            reloader.on_sighup()

    try:
        app = build_app(settings, config_path=loaded.path, overrides=spec.overrides, worker=spec)
        run_until_stopped(app, settings.daemon, sock=sock, on_listening=listening)
    except ConfigError as exc:  # agents.toml
        _say_config_error(exc)
        return 1
    except OSError as exc:
        print(f"palyrad: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


async def _stop_when(event: asyncio.Event, stop: asyncio.Event) -> None:
    await event.wait()
    if not stop.is_set():
        log.warning("master_gone")
        stop.set()


def main() -> None:
    from palyra.cli import run_typer

    run_typer(cli, "palyrad")
