"""One agent run: a model turn, the tool calls it asked for, their results fed back, again —
until a final answer or a limit (`max_turns`, `max_tool_calls`). Timeouts and cancels come
from outside (the run service); the counters here survive them, so a cut-short run still
reports the usage it spent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from palyra.agents.registry import AgentSpec
from palyra.agents.tools import BUILTIN_TOOLS, ToolEnv, run_tool
from palyra.routing import Routed
from palyra.types import ChatRequest, ChatResult, FunctionCall, Message, ToolCall, Usage

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]
ChatFn = Callable[[ChatRequest], Awaitable[Routed[ChatResult]]]


class RunLimit(Exception):
    """The run hit one of its agent's limits; `kind` names it."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class AgentLoop:
    agent: AgentSpec
    input: str
    chat: ChatFn
    env: ToolEnv
    emit: Emit
    usage: Usage = field(default_factory=Usage)
    turns: int = 0
    tool_calls: int = 0
    model: str = ""
    output: str | None = None

    def _request(self, messages: list[Message]) -> ChatRequest:
        tools = [BUILTIN_TOOLS[name].definition() for name in self.agent.tools]
        return ChatRequest(
            model=self.agent.model or None,
            messages=messages,
            tools=tools or None,
            tool_choice="auto" if tools else None,
        )

    async def run(self) -> str:
        """The final answer; raises `RunLimit` when a limit ends the run first."""
        messages: list[Message] = []
        if self.agent.system_prompt:
            messages.append(Message(role="system", content=self.agent.system_prompt))
        messages.append(Message(role="user", content=self.input))
        while True:
            if self.turns >= self.agent.max_turns:
                raise RunLimit(
                    "max_turns", f"no final answer within {self.agent.max_turns} model turns"
                )
            self.turns += 1
            routed = await self.chat(self._request(messages))
            result = routed.value
            self.model = routed.route.model_id or self.model
            self.usage.prompt_tokens += result.usage.prompt_tokens
            self.usage.completion_tokens += result.usage.completion_tokens
            if result.content:
                await self.emit(
                    "model_text",
                    {"turn": self.turns, "text": result.content, "model": self.model},
                )
            if not result.tool_calls:
                self.output = result.content or ""
                return self.output
            if self.tool_calls + len(result.tool_calls) > self.agent.max_tool_calls:
                raise RunLimit(
                    "max_tool_calls",
                    f"the model asked for more than {self.agent.max_tool_calls} tool calls",
                )
            messages.append(
                Message(
                    role="assistant",
                    content=result.content,
                    tool_calls=[
                        ToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments))
                        for c in result.tool_calls
                    ],
                )
            )
            for call in result.tool_calls:
                self.tool_calls += 1
                await self.emit(
                    "tool_call",
                    {
                        "turn": self.turns,
                        "id": call.id,
                        "name": call.name,
                        "arguments": call.arguments,
                    },
                )
                outcome = await run_tool(call.name, call.arguments, self.agent.tools, self.env)
                await self.emit(
                    "tool_result",
                    {
                        "id": call.id,
                        "name": call.name,
                        "ok": outcome.ok,
                        "content": outcome.content,
                    },
                )
                messages.append(Message(role="tool", tool_call_id=call.id, content=outcome.content))
