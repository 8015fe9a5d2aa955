"""What a cron tick does: run the job's agent on its prompt, as `system:daemon`.

The agent run's `RequestContext` carries the job's agent and auth profile (the job's own
profile wins over the agent's), origin `cron`, and the job id as its session, so provider
calls see whose work they do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from palyra.agents.service import AgentService
from palyra.context import SYSTEM_DAEMON_PRINCIPAL
from palyra.cron.jobs import Job
from palyra.cron.scheduler import AttemptResult
from palyra.errors import PalyraError
from palyra.state.db import Row


class AgentJobRunner:
    def __init__(self, agents: AgentService) -> None:
        self.agents = agents

    async def __call__(
        self, job: Job, record: Row, link: Callable[[str], Awaitable[None]]
    ) -> AttemptResult:
        try:
            active = await self.agents.start_run(
                job.agent_id,
                job.prompt,
                origin="cron",
                principal=SYSTEM_DAEMON_PRINCIPAL,
                session_id=f"cron:{job.job_id}",
                auth_profile_id=job.auth_profile_id,
            )
        except PalyraError as exc:  # e.g. the agent was removed from agents.toml
            return AttemptResult("failed", exc.code or "error", exc.message)
        await link(active.run_id)
        assert active.task is not None
        try:
            # Shielded so that cancelling this attempt goes through the service, which
            # records the agent run as cancelled rather than losing it mid-write.
            outcome = await asyncio.shield(active.task)
        except asyncio.CancelledError:
            await self.agents.cancel(active.run_id, reason="the cron run was cancelled")
            raise
        return AttemptResult(
            outcome.status,
            outcome.error_kind,
            outcome.error_message,
            outcome.usage.prompt_tokens,
            outcome.usage.completion_tokens,
            outcome.tool_calls,
            outcome.output,
        )
