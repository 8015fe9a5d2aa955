"""Agent runs as the daemon serves them: start a run, follow its events live, cancel it, and
record everything in the run store.

Every run gets its own task and `RequestContext` (principal, agent, auth profile, session,
origin, run id), so provider calls below it see whose work they do. Events are stored as they
happen and fanned out to followers (the SSE route, the cron scheduler).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from palyra.agents.lease import LEASE_MS, RENEW_EVERY_S
from palyra.agents.loop import AgentLoop, ChatFn, RunLimit
from palyra.agents.registry import AgentRegistry, AgentSpec
from palyra.agents.store import RunFinish, RunStore
from palyra.agents.tools import ToolEnv, fetch_session
from palyra.callers import CALLER, agent_caller
from palyra.context import ADMIN_PRINCIPAL, Origin, RequestContext, request_context
from palyra.errors import NotFound, PalyraError
from palyra.redact import redact_secrets
from palyra.state.db import Database
from palyra.tasks import cancel_and_wait
from palyra.types import Usage

log = structlog.get_logger("palyra.agents")

MAX_OUTPUT_CHARS = 64_000
MAX_ERROR_CHARS = 500
PURGE_EVERY_BEATS = 180  # about an hour of lease renewals


@dataclass(slots=True)
class RunOutcome:
    run_id: str
    status: str  # succeeded | failed | cancelled
    error_kind: str | None
    error_message: str | None
    usage: Usage
    tool_calls: int
    turns: int
    output: str | None


@dataclass
class ActiveRun:
    """A run in progress: its events so far, for followers that join late."""

    run_id: str
    agent: AgentSpec
    context: RequestContext
    input: str
    events: list[dict[str, Any]] = field(default_factory=list)
    outcome: RunOutcome | None = None
    task: asyncio.Task[RunOutcome] | None = None
    cancel_reason: str = ""
    # The last event number handed out (1: run_started). Counted apart from `events`: an
    # event whose write was cancelled may still be stored, so its number is never reused.
    last_seq: int = 1
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def next_seq(self) -> int:
        self.last_seq += 1
        return self.last_seq

    def publish(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def follow(self) -> AsyncIterator[dict[str, Any]]:
        index = 0
        while True:
            changed = self._changed
            while index < len(self.events):
                yield self.events[index]
                index += 1
            if self.outcome is not None:
                return
            await changed.wait()


class AgentService:
    def __init__(
        self,
        registry: AgentRegistry,
        chat: ChatFn,
        *,
        node_id: str,
        retention_days: int = 30,
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.registry = registry
        self.retention_ms = retention_days * 86_400_000
        self._chat = chat
        self.node_id = node_id
        self._now_ms = now_ms
        self._store: RunStore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._retired_sessions: list[aiohttp.ClientSession] = []
        self._active: dict[str, ActiveRun] = {}
        self._heartbeat: asyncio.Task[None] | None = None

    @property
    def store(self) -> RunStore:
        if self._store is None:
            raise RuntimeError("the agent service is not started")
        return self._store

    async def start(self, db: Database, *, heartbeat: bool = True) -> None:
        self._store = RunStore(db)
        await self._store.migrate()
        interrupted = await self._store.interrupt_orphans(
            self.node_id, self._now_ms(), at_start=True
        )
        if interrupted:
            log.warning("agent_runs_interrupted", count=interrupted)
        await self._store.purge(self._now_ms() - self.retention_ms)
        # One pool for every agent's http_fetch: its guard lets through the private hosts any
        # agent names, and each URL must still match its own agent's allowed_hosts first.
        self._session = fetch_session(
            entry for agent in self.registry.all() for entry in agent.allowed_hosts
        )
        if heartbeat:
            self._heartbeat = asyncio.create_task(self._renew_forever())

    def reload(self, registry: AgentRegistry) -> None:
        """Serve these agent definitions from now on; runs already going keep theirs (and
        the fetch pool they started with, closed with the service)."""
        self.registry = registry
        if self._session is not None:
            self._retired_sessions.append(self._session)
            self._session = fetch_session(
                entry for agent in registry.all() for entry in agent.allowed_hosts
            )

    async def aclose(self) -> None:
        await cancel_and_wait(self._heartbeat)
        for active in list(self._active.values()):
            await self.cancel(active.run_id, reason="interrupted")
        for session in [*self._retired_sessions, self._session]:
            if session is not None:
                await session.close()

    async def _renew_forever(self) -> None:
        beats = 0
        while True:
            await asyncio.sleep(RENEW_EVERY_S)
            beats += 1
            try:
                now = self._now_ms()
                await self.store.renew_leases(self.node_id, now + LEASE_MS)
                await self.store.interrupt_orphans(self.node_id, now, at_start=False)
                if beats % PURGE_EVERY_BEATS == 0:
                    await self.store.purge(now - self.retention_ms)
            except Exception:
                log.exception("agent_lease_renewal_failed")

    # --- runs -------------------------------------------------------------------------

    def agent(self, agent_id: str) -> AgentSpec:
        agent = self.registry.get(agent_id)
        if agent is None:
            known = ", ".join(a.agent_id for a in self.registry.all())
            raise NotFound(f"no agent {agent_id!r} (agents: {known})", param="agent_id")
        return agent

    async def start_run(
        self,
        agent_id: str,
        input: str,
        *,
        origin: Origin = "api",
        principal: str = ADMIN_PRINCIPAL,
        session_id: str | None = None,
        auth_profile_id: str | None = None,
    ) -> ActiveRun:
        agent = self.agent(agent_id)
        run_id = "run_" + uuid.uuid4().hex
        context = RequestContext(
            principal=principal,
            origin=origin,
            agent_id=agent.agent_id,
            auth_profile_id=auth_profile_id or agent.auth_profile_id or None,
            session_id=session_id or "ses_" + uuid.uuid4().hex,
            run_id=run_id,
        )
        active = ActiveRun(run_id, agent, context, input)
        now = self._now_ms()
        started = {
            "agent_id": agent.agent_id,
            "origin": origin,
            "principal": principal,
            "session_id": context.session_id,
            "model": agent.model or None,
            "input": input,
        }
        await self.store.create(
            run_id=run_id,
            agent_id=agent.agent_id,
            origin=origin,
            principal=principal,
            session_id=context.session_id,
            auth_profile_id=context.auth_profile_id,
            model=agent.model,
            input=input,
            started_at=now,
            owner_node=self.node_id,
            lease_expires_at=now + LEASE_MS,
            first_event=started,
        )
        active.publish({"seq": 1, "type": "run_started", "at_ms": now, "run_id": run_id, **started})
        self._active[run_id] = active
        active.task = asyncio.create_task(self._execute(active), name=f"agent-run-{run_id}")
        return active

    async def run(self, agent_id: str, input: str, **kwargs: Any) -> RunOutcome:
        active = await self.start_run(agent_id, input, **kwargs)
        assert active.task is not None
        return await asyncio.shield(active.task)

    def active(self, run_id: str) -> ActiveRun | None:
        return self._active.get(run_id)

    async def cancel(self, run_id: str, reason: str = "cancelled") -> bool:
        active = self._active.get(run_id)
        if active is None or active.task is None or active.task.done():
            return False
        active.cancel_reason = reason
        active.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await active.task
        return True

    async def _emit(self, active: ActiveRun, type: str, data: dict[str, Any]) -> None:
        seq = active.next_seq()
        now = self._now_ms()
        await self.store.append(active.run_id, seq, type, now, data)
        active.publish({"seq": seq, "type": type, "at_ms": now, "run_id": active.run_id, **data})

    async def _execute(self, active: ActiveRun) -> RunOutcome:
        agent = active.agent
        # The run's own task (start_run made it): every model call below, cron's included,
        # is the agent's, whoever started the run.
        CALLER.set(agent_caller(agent.agent_id, active.run_id))
        env = ToolEnv(allowed_hosts=agent.allowed_hosts, session=self._session)

        async def emit(type: str, data: dict[str, Any]) -> None:
            await self._emit(active, type, data)

        loop = AgentLoop(agent, active.input, self._chat, env, emit)
        status, kind, message = "succeeded", None, None
        try:
            with request_context(active.context):
                async with asyncio.timeout(agent.timeout_s):
                    await loop.run()
        except RunLimit as exc:
            status, kind, message = "failed", exc.kind, str(exc)
        except TimeoutError:
            status, kind = "failed", "timeout"
            message = f"the run took longer than the agent's timeout_s ({agent.timeout_s:g} s)"
        except asyncio.CancelledError:
            # Our own cancel (API, replace, shutdown): recorded, not propagated — this task
            # belongs to the service and ends here.
            reason = active.cancel_reason or "cancelled"
            if reason == "interrupted":
                status, kind, message = "failed", "interrupted", "the daemon shut down"
            else:
                status, kind, message = "cancelled", "cancelled", reason
        except PalyraError as exc:
            status, kind = "failed", "provider_error"
            message = f"{exc.code or exc.type}: {exc.message}"
        except Exception as exc:
            log.exception("agent_run_crashed", run_id=active.run_id)
            status, kind, message = "failed", "internal", f"internal error ({type(exc).__name__})"
        if message is not None:
            message = redact_secrets(message)[:MAX_ERROR_CHARS]
        output = loop.output[:MAX_OUTPUT_CHARS] if loop.output is not None else None
        outcome = RunOutcome(
            active.run_id,
            status,
            kind,
            message,
            Usage(loop.usage.prompt_tokens, loop.usage.completion_tokens),
            loop.tool_calls,
            loop.turns,
            output,
        )
        finished = {
            "status": status,
            "error_kind": kind,
            "error_message": message,
            "usage": outcome.usage.as_openai(),
            "tool_calls": loop.tool_calls,
            "turns": loop.turns,
            "model": loop.model or None,
            "output": output,
        }
        seq = active.next_seq()
        now = self._now_ms()
        try:
            await self.store.finish(
                active.run_id,
                seq,
                now,
                RunFinish(
                    status,
                    kind,
                    message,
                    outcome.usage.prompt_tokens,
                    outcome.usage.completion_tokens,
                    loop.tool_calls,
                    loop.turns,
                    output,
                ),
                finished,
            )
        except Exception:
            log.exception("agent_run_record_failed", run_id=active.run_id)
        active.outcome = outcome
        active.publish(
            {"seq": seq, "type": "run_finished", "at_ms": now, "run_id": active.run_id, **finished}
        )
        self._active.pop(active.run_id, None)
        log.info(
            "agent_run_finished",
            run_id=active.run_id,
            agent_id=agent.agent_id,
            origin=active.context.origin,
            status=status,
            error_kind=kind,
        )
        return outcome
