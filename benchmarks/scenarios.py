"""What the benchmark runs: the scenarios, and for each the request a client sends (body,
headers) and how its stream ends.

Each scenario names the mock's behaviour (`mode`), the client's wire format (`endpoint`) and,
for the Responses and Messages dialects, which setup serves it (`via`): the headline is the
common one (Messages to an Anthropic provider, passed through; Responses to an
OpenAI-compatible provider, translated onto chat completions), the variants the other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

SYSTEM = "You are a concise assistant. Answer in one sentence."
QUESTION = "What is the difference between latency and throughput?"
CHAT_MESSAGES = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": QUESTION},
]
ANTHROPIC_VERSION = "2023-06-01"
# What the last event of a stream holds, per wire format: a stream that ends without it
# counts as an error. The event's type, not its `event:` line or JSON spacing.
STREAM_ENDS = {
    "chat": "data: [DONE]",
    "responses": "response.completed",
    "messages": "message_stop",
}
# The wire formats the daemon serves through a dialect added after chat completions.
DIALECTS = ("responses", "messages")
# `via` of the chat scenarios served by the model with several deployments (issue 14): only
# palyrad serves them (the floor has no models; LiteLLM is not set up for them), in a daemon
# of their own whose config has that model and 100 more.
DEPLOYED = "deployed"
# `via` of the chat scenarios sent with a client key instead of the admin token (issue 15):
# the same model and daemon as chat-c1 and chat-c16, so the difference is the key's lookup,
# its limits and budget, and its share of the ledger. Only palyrad serves them.
CLIENT_KEY = "key"
# `via` prefix of the worker-scaling pair (issue 17): whole chat at 64 concurrent to a palyrad
# with `[daemon] workers = N`, via "workers1" and "workers2"; only palyrad serves them, each
# from a daemon of its own.
WORKERS = "workers"
# The many-open-streams scenarios: 1,000 (every gateway) and 5,000 (issue 17: through one
# palyrad worker); `requests` is how many streams are open at once.
OPEN_STREAMS = ("streams-1000", "streams-5000")


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    mode: str  # the mock's behaviour: fast | slow | hold | failover
    endpoint: str  # chat | embeddings | responses | messages
    concurrency: int
    duration_s: float = 5.0
    stream: bool = False
    requests: int = 0  # when set: exactly this many, one per client (open-streams test)
    base64: bool = False  # embeddings: encoding_format "base64", the OpenAI SDK's default
    # Responses and Messages: "" is the headline setup, "passthrough" or "translated" the other.
    # Chat: "" is a model with one deployment, DEPLOYED the model with three, CLIENT_KEY the
    # one deployment sent with a client key.
    via: str = ""
    # Open streams on loadgen.py's bare asyncio client (--raw), not aiohttp's: at 5,000
    # streams aiohttp's client would spend about what the gateway does.
    raw_client: bool = False

    @property
    def route_key(self) -> tuple[str, str, str]:
        return (self.mode, self.endpoint, self.via)


# The mock's pause between a /hold/ stream's chunks (its --hold-interval-ms): 50 ms, 5 ms in a
# --quick run.
HOLD_MS = 50.0
QUICK_HOLD_MS = 5.0


def scenarios(quick: bool, hold_ms: float = 0.0) -> list[Scenario]:
    """Every scenario; the open-streams titles name `hold_ms`, the mock's pause between
    chunks (by default HOLD_MS, or QUICK_HOLD_MS when quick)."""
    d = 0.3 if quick else 5.0
    hold = f"{hold_ms or (QUICK_HOLD_MS if quick else HOLD_MS):g} ms apart"
    open_streams = 20 if quick else 1000
    many_streams = 30 if quick else 5000
    return [
        Scenario("chat-c1", "chat, 1 concurrent", "fast", "chat", 1, d),
        Scenario("chat-c16", "chat, 16 concurrent", "fast", "chat", 16, d),
        # Right after chat-c1 and chat-c16, which they are judged against: measured after the
        # streams and dialects, the same daemon had grown (its ledger, its heap) and key-c16
        # read 0.81x where it read 0.91x beside chat-c16.
        *deployment_scenarios(d),
        *client_key_scenarios(d),
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
            f"{open_streams} concurrent open streams (50 chunks, {hold})",
            "hold",
            "chat",
            open_streams,
            0.0,
            True,
            open_streams,
        ),
        *dialect_scenarios(d),
        *worker_scenarios(d),
        # Last: what 5,000 streams leave in the daemon (its pool's idle connections, a bigger
        # heap) stays out of the scenarios compared with chat-c16.
        Scenario(
            "streams-5000",
            f"{many_streams} concurrent open streams (50 chunks, {hold})",
            "hold",
            "chat",
            many_streams,
            0.0,
            True,
            many_streams,
            raw_client=True,
        ),
    ]


def dialect_scenarios(d: float) -> list[Scenario]:
    """/v1/responses and /v1/messages: whole and streamed, 1 and 16 concurrent, in the
    headline setup; the other setup at 1 concurrent."""
    out = []
    for endpoint, headline, other in (
        ("responses", "translated to chat", "passthrough"),
        ("messages", "Anthropic pass-through", "translated"),
    ):
        for stream in (False, True):
            kind = "stream 50 deltas" if stream else "whole"
            prefix = f"{endpoint}-stream" if stream else endpoint
            for c in (1, 16):
                title = f"{endpoint} ({headline}), {kind}, {c} concurrent"
                out.append(Scenario(f"{prefix}-c{c}", title, "fast", endpoint, c, d, stream))
            via_title = "pass-through" if other == "passthrough" else f"{other} to chat"
            out.append(
                Scenario(
                    f"{endpoint}-{other}{'-stream' if stream else ''}-c1",
                    f"{endpoint} ({via_title}), {kind}, 1 concurrent",
                    "fast",
                    endpoint,
                    1,
                    d,
                    stream,
                    via=other,
                )
            )
    return out


def deployment_scenarios(d: float) -> list[Scenario]:
    """Whole chat to one model over three deployments (weighted), among 100 more models: at 1
    concurrent for the added latency, at 16 beside chat-c16 (one deployment) for req/s."""
    return [
        Scenario(
            f"deploy-c{c}",
            f"chat, 1 model over 3 deployments (+100 models), {c} concurrent",
            "fast",
            "chat",
            c,
            d,
            via=DEPLOYED,
        )
        for c in (1, 16)
    ]


def client_key_scenarios(d: float) -> list[Scenario]:
    """chat-c1 and chat-c16 again, sent with a client key (models, rpm, tpm and a budget, none
    of which binds) instead of the admin token: at 1 concurrent for the added latency, at 16
    beside chat-c16 for req/s."""
    return [
        Scenario(
            f"key-c{c}",
            f"chat with a client key, {c} concurrent",
            "fast",
            "chat",
            c,
            d,
            via=CLIENT_KEY,
        )
        for c in (1, 16)
    ]


def worker_scenarios(d: float) -> list[Scenario]:
    """Whole chat at 64 concurrent to a palyrad with one worker and to one with two: req/s of
    the second over the first is what the second core buys."""
    return [
        Scenario(
            f"workers-{n}-c64",
            f"chat, 64 concurrent, [daemon] workers = {n}",
            "fast",
            "chat",
            64,
            d,
            via=f"{WORKERS}{n}",
        )
        for n in (1, 2)
    ]


def worker_counts(chosen: list[Scenario]) -> list[int]:
    """The `workers` of each palyrad the chosen worker scenarios need."""
    return [int(s.via.removeprefix(WORKERS)) for s in chosen if s.via.startswith(WORKERS)]


def uses_client_key(chosen: list[Scenario]) -> bool:
    """Whether the harness must create a client key once palyrad is up."""
    return any(s.via == CLIENT_KEY for s in chosen)


def uses_deployments(chosen: list[Scenario]) -> bool:
    """Whether the daemon with the deployed model (and 100 more) is needed."""
    return any(s.via == DEPLOYED for s in chosen)


def uses_dialects(chosen: list[Scenario]) -> bool:
    """Whether the daemon needs the providers of the Responses and Messages setups."""
    return any(s.endpoint in DIALECTS for s in chosen)


def body_for(scenario: Scenario, model: str) -> bytes:
    """The same question in each wire format, as its SDK would send it."""
    body: dict[str, Any]
    if scenario.endpoint == "embeddings":
        body = {"model": model, "input": ["The quick brown fox jumps over the lazy dog."] * 4}
        if scenario.base64:
            body["encoding_format"] = "base64"
    elif scenario.endpoint == "responses":
        body = {"model": model, "instructions": SYSTEM, "input": QUESTION, "temperature": 0.2}
    elif scenario.endpoint == "messages":
        body = {
            "model": model,
            "max_tokens": 256,
            "system": SYSTEM,
            "messages": [{"role": "user", "content": QUESTION}],
            "temperature": 0.2,
        }
    else:
        body = {"model": model, "messages": CHAT_MESSAGES, "temperature": 0.2}
    if scenario.stream:
        body["stream"] = True
        if scenario.endpoint == "chat":
            body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def headers_for(scenario: Scenario, token: str) -> dict[str, str]:
    """The anthropic SDK sends its key as x-api-key with anthropic-version; the others as a
    bearer token."""
    headers = {"Content-Type": "application/json"}
    if scenario.endpoint == "messages":
        headers["anthropic-version"] = ANTHROPIC_VERSION
        if token:
            headers["x-api-key"] = token
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def stream_end(scenario: Scenario) -> str:
    return STREAM_ENDS.get(scenario.endpoint, STREAM_ENDS["chat"])
