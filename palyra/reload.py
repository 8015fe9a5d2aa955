"""Config reload: SIGHUP to palyrad, or `POST /console/v1/config/reload` (`palyra config
reload`), re-reads config.toml and agents.toml and serves them without a restart.

What a reload changes: `[model_provider]` (providers, models, routing settings), the agents
(agents.toml and `[agents] file`) and `[daemon] public_base_url`. A
request already being served finishes on the providers and router it started with; the next
one is routed by the new config. Any other setting that changed (the port, workers, the state
store, log level, cron, usage, telemetry, OAuth) needs a restart: it is named in the answer
and the log, and the old value stays in force until then. A config with any problem is
refused whole, its problems listed, and the old one keeps serving.

With `[daemon] workers = N` the master re-reads the file, checks it, hands the new text to
its workers (as it does at start) and passes SIGHUP on to each; each reloads in place as a
single daemon does. A reload asked of one worker over HTTP is checked there, then passed to
the master as SIGHUP, so every worker reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from palyra.config import ConfigError, LoadedConfig, PalyraConfig, find_config_path, load_config

if TYPE_CHECKING:
    from palyra.agents.registry import AgentRegistry
    from palyra.agents.service import AgentService
    from palyra.gateway import Gateway

log = structlog.get_logger("palyra.reload")

# The keys a reload applies; any other that changed waits for a restart.
RELOADABLE_SECTIONS = ("model_provider", "agents")
RELOADABLE_KEYS = ("daemon.public_base_url",)
# How long a worker asked over HTTP waits for the master's SIGHUP to come back to it.
FORWARDED_WAIT_S = 30.0


class ReloadRefused(Exception):
    """The new config has problems; nothing was changed."""

    def __init__(self, problems: list[str], source: str | None) -> None:
        self.problems = problems
        self.source = source
        super().__init__("; ".join(problems))


@dataclass(frozen=True, slots=True)
class Reloaded:
    source: str | None  # the file read; None for built-in defaults
    restart_required: list[str]  # changed keys a reload does not apply, e.g. "daemon.port"
    workers: int = 1

    def view(self) -> dict[str, Any]:
        return {
            "status": "reloaded",
            "source": self.source,
            "restart_required": self.restart_required,
            "workers": self.workers,
        }


@dataclass(frozen=True, slots=True)
class Candidate:
    """A config read and checked, not yet applied."""

    config: PalyraConfig
    agents: AgentRegistry
    path: Path | None
    text: str | None  # the file's text as read; None: no file, built-in defaults


def read_candidate(
    path: Path | str | None,
    *,
    env: Mapping[str, str],
    overrides: Mapping[str, Any],
    text: str | None = None,
) -> Candidate:
    """config.toml (or `text`, its contents as read elsewhere) and agents.toml, checked. Raises
    ReloadRefused listing every problem of both."""
    from palyra.agents.registry import load_agents

    try:
        loaded: LoadedConfig = load_config(path, env=env, overrides=overrides, text=text)
    except ConfigError as exc:
        raise ReloadRefused(exc.problems, exc.source) from None
    config_path = loaded.path or find_config_path(None, env)
    try:
        agents = load_agents(loaded.config, config_path, env)
    except ConfigError as exc:
        raise ReloadRefused(exc.problems, exc.source) from None
    return Candidate(loaded.config, agents, loaded.path, loaded.text)


def flatten(config: PalyraConfig) -> dict[str, Any]:
    """`{"daemon.port": 7142, "model_provider.models": [...], ...}`: each section's keys."""
    data = config.model_dump(mode="json")
    flat: dict[str, Any] = {}
    for section, values in data.items():
        if isinstance(values, dict):
            for key, value in values.items():
                flat[f"{section}.{key}"] = value
        else:
            flat[section] = values
    return flat


def pending_restart(old: PalyraConfig, new: PalyraConfig) -> list[str]:
    """The keys that differ between the two and that a reload does not apply."""
    before, after = flatten(old), flatten(new)
    return sorted(
        key
        for key in before.keys() | after.keys()
        if before.get(key) != after.get(key)
        and key.partition(".")[0] not in RELOADABLE_SECTIONS
        and key not in RELOADABLE_KEYS
    )


def effective(old: PalyraConfig, new: PalyraConfig) -> PalyraConfig:
    """What the daemon serves after a reload: `new`'s reloadable keys, `old`'s others (still
    in force until a restart), so what it reports of itself stays true."""
    daemon = old.daemon.model_copy(update={"public_base_url": new.daemon.public_base_url})
    return old.model_copy(
        update={"daemon": daemon, "model_provider": new.model_provider, "agents": new.agents}
    )


class Reloadable(Protocol):
    """What a reload changes in a running daemon (`palyra.runtime.Runtime` is one)."""

    config: PalyraConfig

    @property
    def gateway(self) -> Gateway: ...

    @property
    def agents(self) -> AgentService: ...


@dataclass
class Reloader:
    """How one daemon process reloads itself. `snapshot`: in a worker, the file where the
    master leaves the config's text (read instead of config.toml, which may have changed
    again since the master checked it). `master_pid`: in a worker, whom to pass a reload
    asked over HTTP to."""

    runtime: Reloadable
    path: Path | None
    overrides: Mapping[str, Any]
    env: Mapping[str, str]
    snapshot: Path | None = None
    master_pid: int | None = None
    workers: int = 1
    # Told of each provider of a new config (to read its credential before its first request).
    warm: Callable[[Iterable[Any]], Awaitable[None]] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _done: asyncio.Condition = field(default_factory=asyncio.Condition)
    _generation: int = 0
    _last: Reloaded | ReloadRefused | None = None

    def _read(self, *, from_snapshot: bool) -> Candidate:
        text = None
        if from_snapshot and self.snapshot is not None and self.snapshot.exists():
            text = self.snapshot.read_text(encoding="utf-8")
        return read_candidate(self.path, env=self.env, overrides=self.overrides, text=text)

    async def reload(self, origin: str) -> Reloaded:
        """Read, check and apply the config; ReloadRefused (nothing changed) when it has
        problems. Logged either way."""
        async with self._lock:
            result: Reloaded | ReloadRefused
            try:
                result = reloaded = await self._apply(self._read(from_snapshot=True))
            except ReloadRefused as refused:
                log.error(
                    "config_reload_refused",
                    origin=origin,
                    source=refused.source,
                    problems=refused.problems,
                )
                result = refused
            else:
                log.info("config_reloaded", origin=origin, source=reloaded.source)
                if reloaded.restart_required:
                    log.warning(
                        "config_reload_needs_restart",
                        keys=reloaded.restart_required,
                        note="these settings keep their old values until palyrad restarts",
                    )
            async with self._done:
                self._generation += 1
                self._last = result
                self._done.notify_all()
        if isinstance(result, ReloadRefused):
            raise result
        return result

    async def _apply(self, candidate: Candidate) -> Reloaded:
        runtime = self.runtime
        old = runtime.config
        new = effective(old, candidate.config)
        await runtime.gateway.reload(new.model_provider)
        runtime.agents.reload(candidate.agents)
        runtime.config = new
        if self.warm is not None:
            await self.warm(p for p in new.model_provider.providers if p.enabled)
        return Reloaded(
            str(candidate.path) if candidate.path else None,
            pending_restart(old, candidate.config),
            self.workers,
        )

    async def request(self) -> Reloaded:
        """A reload asked over HTTP. In a worker: checked here (so problems are answered),
        then passed to the master, which reloads every worker; answered once this worker
        has reloaded."""
        if self.master_pid is None:
            return await self.reload("http")
        self._read(from_snapshot=False)  # raises ReloadRefused with the problems
        async with self._done:
            generation = self._generation
            os.kill(self.master_pid, signal.SIGHUP)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FORWARDED_WAIT_S):
                    await self._done.wait_for(lambda: self._generation > generation)
            last = self._last
        if self._generation == generation or last is None:
            raise ReloadRefused(
                [f"the master did not reload this worker within {FORWARDED_WAIT_S:.0f} s"],
                None,
            )
        if isinstance(last, ReloadRefused):
            raise last
        return last

    def on_sighup(self) -> None:
        """SIGHUP's handler: reload in the background (its outcome is logged)."""
        task = asyncio.get_running_loop().create_task(self._reload_quietly())
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def _reload_quietly(self) -> None:
        with contextlib.suppress(ReloadRefused):
            await self.reload("sighup")


_background: set[asyncio.Task[None]] = set()
