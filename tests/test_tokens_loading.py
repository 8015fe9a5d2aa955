"""The tokenizer's vocabulary is never loaded on the event loop: loading it is half a second
of blocking work, and the request path does no blocking work."""

from __future__ import annotations

import asyncio
import threading

import pytest

from palyra import tokens


@pytest.fixture
def unloaded() -> object:
    saved = dict(tokens._encoders)
    tokens._encoders.clear()
    yield
    tokens._encoders.clear()
    tokens._encoders.update(saved)


async def test_load_vocabulary_runs_in_a_worker_thread(
    unloaded: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    loaded_on: list[int] = []
    real = tokens.quicktok.get_encoding

    def recording(name: str) -> object:
        loaded_on.append(threading.get_ident())
        return real(name)

    monkeypatch.setattr(tokens.quicktok, "get_encoding", recording)
    assert not tokens.vocabulary_loaded()
    await tokens.load_vocabulary()
    assert tokens.vocabulary_loaded()
    assert loaded_on and loaded_on[0] != loop_thread
    await tokens.load_vocabulary()  # loaded once
    assert len(loaded_on) == 1


async def test_small_prompts_on_a_remote_provider_never_load_it(
    unloaded: object,
) -> None:
    from palyra.config import validate_config
    from palyra.credentials import EnvCredentials
    from palyra.gateway import Gateway
    from palyra.types import ChatRequest

    config = validate_config(
        {
            "version": 1,
            "model_provider": {
                "providers": [
                    {
                        # Loopback, nothing listening: background probes go nowhere.
                        "provider_id": "far",
                        "kind": "openai_compatible",
                        "base_url": "http://127.0.0.1:9/v1",
                        "allow_private_base_url": True,
                        "discovery": False,
                        "api_key_env": "K",
                    },
                ],
                "models": [{"model_id": "m", "provider_id": "far"}],
            },
        }
    ).model_provider
    gateway = Gateway(config, credentials=EnvCredentials({"K": "x"}))
    await gateway.start()
    try:
        request = ChatRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        )
        plan = await gateway.router._chat_candidates(request)
        assert list(plan.candidates)
        assert not tokens.vocabulary_loaded()
        big = ChatRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "word " * 40_000}]}
        )
        await asyncio.wait_for(gateway.router._chat_candidates(big), 10)
        assert tokens.vocabulary_loaded()  # near the budget: counted, after loading off-loop
    finally:
        await gateway.aclose()
