"""`[daemon] workers = N`: one port served by N processes.

The master (the `palyrad` process) binds the port, then starts N workers, each a fresh
interpreter running the whole daemon (palyra.daemon.build_app) on a listening socket of its
own bound to that port with SO_REUSEPORT, so the kernel spreads new connections evenly among
them. No socket stays open without a worker behind it: when a worker exits, the master closes
its copy of that worker's socket (what was queued there is reset, and new connections go to
the other workers) and binds a fresh one for the replacement; when stopping begins, the master
closes all of its copies at once, so new connections are refused while requests drain.

The master serves the workers' channel (palyra.channel: shared rate counts, breaker and health
decisions, budget spend, unless Redis is set), restarts a worker that exits (with backoff),
on SIGHUP re-reads and checks the config and passes SIGHUP on to every worker, which reloads in
place (palyra.reload; an invalid config is logged and no worker is told), and
on SIGTERM / SIGINT passes SIGTERM to every worker, which drains its requests within
`shutdown_grace_ms`; then it exits 0. A worker that exits before any worker has served means
the workers cannot start (what went wrong is the worker's last line on stderr): palyrad stops
them all and exits 1. A worker whose channel closes (the master is gone) drains and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import structlog

from palyra.channel import Hub
from palyra.config import PalyraConfig

log = structlog.get_logger("palyra.workers")

SPEC_ENV: Final = "PALYRA_WORKER_SPEC"
CHANNEL_FILE: Final = "channel.sock"
CONFIG_FILE: Final = "config.toml"
METRICS_DIR: Final = "metrics"
BACKLOG: Final = 4096
# Restart backoff: doubled at each exit in a row, back to the first after a worker lived long.
FIRST_BACKOFF_S: Final = 0.5
MAX_BACKOFF_S: Final = 30.0
LIVED_LONG_S: Final = 30.0
# Exits (or failed starts) in a row after which a worker is logged as crash-looping.
CRASH_LOOP_FAILURES: Final = 3
# Past shutdown_grace_ms, how long a worker may take to close its stores before it is killed.
CLOSE_MARGIN_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker is told by the master (in its environment, as JSON)."""

    index: int
    count: int
    fd: int  # its listening socket
    node_id: str  # its own: runs it leaves behind when it dies are told apart from the others'
    channel: str  # the Unix socket of the master's channel
    config_path: str | None  # where agents.toml is looked for, and what errors name
    # A file of the config's text as the master read it last (at start, or at its last
    # reload); absent when there was no config file.
    config_text: str | None
    overrides: dict[str, Any]
    master_pid: int = 0  # whom a reload asked of this worker over HTTP is passed to


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on host:port sharing it with SO_REUSEPORT. OSError when the
    port is taken, by anything, including another palyrad's workers: their sockets have
    SO_REUSEPORT too and would otherwise take ours in, so a plain bind is tried first."""
    if not hasattr(socket, "SO_REUSEPORT") or sys.platform != "linux":
        # Elsewhere SO_REUSEPORT is missing, or (BSD, macOS) hands every connection to the
        # last socket bound rather than spreading them.
        raise OSError("[daemon] workers > 1 needs Linux (SO_REUSEPORT); set workers = 1")
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise listen_error(host, port, exc) from None
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(bind_shared(family, kind, proto, address))
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise listen_error(host, port, exc) from None
    return sockets


def listen_error(host: str, port: int, exc: OSError) -> OSError:
    """What palyrad says when it cannot listen on host:port, one or many workers alike: a
    port in use says so and what to do."""
    if exc.errno == errno.EADDRINUSE:
        return OSError(
            f"cannot listen on {host}:{port}: the address is already in use "
            "(another palyrad?); stop it, or choose another port with --port or [daemon] port"
        )
    return OSError(f"cannot listen on {host}:{port}: {exc.strerror}")


def bind_shared(family: int, kind: int, proto: int, address: Any) -> socket.socket:
    """One more listening socket on `address`, sharing it with SO_REUSEPORT."""
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


class Master:
    def __init__(
        self,
        sockets: list[socket.socket],
        *,
        node_id: str,
        config_path: str | None,
        config_text: str | None = None,
        overrides: Mapping[str, Any],
        grace_s: float,
        run_dir: Path,
        url: str = "",
        env: Mapping[str, str] | None = None,
        config: PalyraConfig | None = None,
    ) -> None:
        # The master's copy of each worker's listening socket, None while that worker is down.
        self._sockets: list[socket.socket | None] = list(sockets)
        self._count = len(sockets)
        first = sockets[0]
        self._address = (first.family, first.type, first.proto, first.getsockname())
        self._node_id = node_id
        self._config_path = config_path
        # Every worker, a restarted one too, serves the config palyrad started with (or last
        # reloaded), whatever the file on disk says by then.
        self._snapshot = run_dir / CONFIG_FILE
        if config_text is not None:
            self._snapshot.write_text(config_text, encoding="utf-8")
        self._env = os.environ if env is None else env
        self._config = config  # what the workers serve, for naming what a reload cannot change
        self._overrides = dict(overrides)
        self._grace_s = grace_s
        self._run_dir = run_dir
        self._hub = Hub()
        self._hub.on_ready = self._ready
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._served = False
        self._url = url
        self._ready_once: set[int] = set()  # the workers that have served, each at least once
        self._stop = asyncio.Event()
        self.failure: str | None = None

    @property
    def count(self) -> int:
        return self._count

    def _ready(self, index: int, pid: int) -> None:
        self._served = True
        log.info("worker_ready", worker=index, pid=pid)
        if len(self._ready_once) < self.count:
            self._ready_once.add(index)
            if len(self._ready_once) == self.count:
                log.info("all_workers_ready", url=self._url, workers=self.count)

    async def run(self) -> int:
        """Serve until SIGTERM / SIGINT (0) or until the workers cannot start (1)."""
        await self._hub.start(self._run_dir / CHANNEL_FILE)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        log.info("workers_starting", workers=self.count)
        watchers = [asyncio.create_task(self._watch(i)) for i in range(self.count)]
        await self._stop.wait()
        log.info("shutting_down", workers=self.count, grace_s=self._grace_s)
        # New connections are refused at once from here on (the workers close their copies
        # as SIGTERM reaches them) rather than queued where nobody will accept them.
        for index in range(self.count):
            self._close_socket(index)
        await self._stop_all()
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        for index in range(self.count):  # one bound by a restart that raced the stop
            self._close_socket(index)
        await self._hub.aclose()
        log.info("stopped")
        return 1 if self.failure else 0

    async def _watch(self, index: int) -> None:
        backoff = FIRST_BACKOFF_S
        failures = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                process = await self._spawn(index)
            except OSError as exc:  # no socket (the port taken meanwhile), or no process
                self._close_socket(index)
                if self._stop.is_set():
                    return
                failures += 1
                if not self._served and failures >= CRASH_LOOP_FAILURES:
                    self.failure = f"worker {index} could not be started: {exc}"
                    self._stop.set()
                    return
                log.error(
                    "worker_spawn_failed",
                    worker=index,
                    error=str(exc),
                    failures_in_a_row=failures,
                    restart_in_s=backoff,
                )
            else:
                code = await process.wait()
                self._processes.pop(index, None)
                # Its queue goes with it: nothing is left waiting where nobody accepts.
                self._close_socket(index)
                self._forget(process.pid)
                if self._stop.is_set():
                    return
                if not self._served:
                    self.failure = (
                        f"worker {index} exited with code {code} before any worker served"
                    )
                    self._stop.set()
                    return
                if time.monotonic() - started > LIVED_LONG_S:
                    backoff = FIRST_BACKOFF_S
                    failures = 0
                failures += 1
                log.warning(
                    "worker_exited",
                    worker=index,
                    pid=process.pid,
                    code=code,
                    failures_in_a_row=failures,
                    restart_in_s=backoff,
                )
            if failures >= CRASH_LOOP_FAILURES:
                # Loud: this share of the machine serves nothing until it comes back.
                log.error("worker_crash_looping", worker=index, failures_in_a_row=failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _close_socket(self, index: int) -> None:
        sock, self._sockets[index] = self._sockets[index], None
        if sock is not None:
            sock.close()

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        sock = self._sockets[index]
        if sock is None:  # the last one closed when its worker exited
            sock = self._sockets[index] = bind_shared(*self._address)
        spec = WorkerSpec(
            index=index,
            count=self.count,
            fd=sock.fileno(),
            node_id=f"{self._node_id}-w{index}",
            channel=str(self._run_dir / CHANNEL_FILE),
            config_path=self._config_path,
            config_text=str(self._snapshot),
            overrides=self._overrides,
            master_pid=os.getpid(),
        )
        env = dict(os.environ)
        env[SPEC_ENV] = json.dumps(asdict(spec))
        # prometheus_client reads it at import: each worker's counters go to files there, and
        # whichever worker answers /metrics adds up everyone's (palyra.metrics).
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self._run_dir / METRICS_DIR)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from palyra.workers import worker_main; worker_main()",
            pass_fds=(sock.fileno(),),
            env=env,
        )
        self._processes[index] = process
        log.info("worker_started", worker=index, pid=process.pid)
        return process

    def reload(self) -> bool:
        """SIGHUP: check the config as it is now; when it holds, hand it to every worker
        (restarted ones too) and tell each to reload. Whether it was passed on."""
        from palyra.reload import ReloadRefused, effective, pending_restart, read_candidate

        try:
            candidate = read_candidate(self._config_path, env=self._env, overrides=self._overrides)
        except ReloadRefused as refused:
            log.error(
                "config_reload_refused",
                source=refused.source,
                problems=refused.problems,
                note="the workers keep serving the config they have",
            )
            return False
        if candidate.text is None:
            self._snapshot.unlink(missing_ok=True)
        else:
            # Whole or not at all: a worker starting now reads it.
            staged = self._snapshot.with_suffix(".new")
            staged.write_text(candidate.text, encoding="utf-8")
            os.replace(staged, self._snapshot)
        if self._config is not None:
            pending = pending_restart(self._config, candidate.config)
            if pending:
                log.warning(
                    "config_reload_needs_restart",
                    keys=pending,
                    note="these settings keep their old values until palyrad restarts",
                )
            self._config = effective(self._config, candidate.config)
        for process in list(self._processes.values()):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGHUP)
        log.info("config_reload_forwarded", workers=len(self._processes))
        return True

    def _forget(self, pid: int) -> None:
        """A dead worker's live gauges leave /metrics; its counters stay counted."""
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid, str(self._run_dir / METRICS_DIR))  # type: ignore[no-untyped-call]

    async def _stop_all(self) -> None:
        processes = list(self._processes.values())
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        waits = [process.wait() for process in processes]
        try:
            async with asyncio.timeout(self._grace_s + CLOSE_MARGIN_S):
                await asyncio.gather(*waits)
        except TimeoutError:
            for process in processes:
                if process.returncode is None:
                    log.warning("worker_killed", pid=process.pid, after_s=self._grace_s)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            await asyncio.gather(*(process.wait() for process in processes))


def run_master(
    host: str,
    port: int,
    count: int,
    *,
    state_dir: Path,
    config_path: Path | None,
    overrides: Mapping[str, Any],
    grace_s: float,
    env: Mapping[str, str],
    config_text: str | None = None,
    config: PalyraConfig | None = None,
) -> int:
    """palyrad with `count` workers; the exit code. Raises OSError when the port is taken."""
    from palyra.agents.lease import load_node_id
    from palyra.fs import ensure_private_dir
    from palyra.server.auth import load_or_create_admin_token

    sockets = bind_sockets(host, port, count)
    # What workers would otherwise each make at their start, racing: made once, here.
    ensure_private_dir(state_dir)
    load_or_create_admin_token(state_dir, env)
    node_id = load_node_id(state_dir)
    # Private to this user (0700), and short: a Unix socket's path has at most ~100 bytes.
    run_dir = Path(tempfile.mkdtemp(prefix="palyrad-"))
    (run_dir / METRICS_DIR).mkdir()
    try:
        master = Master(
            sockets,
            node_id=node_id,
            config_path=str(config_path) if config_path else None,
            config_text=config_text,
            overrides=overrides,
            grace_s=grace_s,
            run_dir=run_dir,
            url=f"http://{host}:{port}",
            env=env,
            config=config,
        )
        # Bound: the kernel queues connections from here on; `ready` once every worker serves.
        log.info("bound", url=f"http://{host}:{port}", workers=count)
        code = asyncio.run(master.run())
        if master.failure:
            print(f"palyrad: cannot start: {master.failure} (its error is above)", file=sys.stderr)
        return code
    finally:
        for sock in sockets:
            sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def worker_spec(env: Mapping[str, str]) -> WorkerSpec:
    return WorkerSpec(**json.loads(env[SPEC_ENV]))


def worker_main() -> None:
    """A worker's process: the daemon of palyra.daemon on the socket the master gave it."""
    from palyra.daemon import serve_worker

    sys.exit(serve_worker(worker_spec(os.environ)))
