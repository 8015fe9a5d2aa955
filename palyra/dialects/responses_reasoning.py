"""Anthropic's signed thinking carried through the Responses API.

A translated answer's thinking blocks (signature and redacted data included, which Anthropic
needs back to continue a tool loop) travel in the reasoning item's `encrypted_content`, the
field the Responses API keeps for a provider's opaque state: Palyra's format is a prefix
naming it and its version, then base64 of the blocks as JSON. It is not encrypted: Anthropic
signs thinking and encrypts the redacted kind itself, and chat completions shows the same
blocks in the clear (`thinking_blocks`). Content without the prefix is someone else's (an
OpenAI model's) and is left to them.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from palyra.errors import InvalidRequest

# What `include` asks for to be shown a reasoning item's `encrypted_content`.
INCLUDE_REASONING_STATE = "reasoning.encrypted_content"
# Names Palyra's format of `encrypted_content` (see the module doc): version 1, thinking blocks.
REASONING_STATE_PREFIX = "palyra.thinking_blocks.v1:"


def encode_reasoning_state(blocks: list[dict[str, Any]]) -> str:
    """Thinking blocks as a reasoning item's `encrypted_content`, in Palyra's format."""
    return REASONING_STATE_PREFIX + base64.b64encode(orjson.dumps(blocks)).decode()


def carries_palyra_state(item: dict[str, Any]) -> bool:
    content = item.get("encrypted_content")
    return (
        item.get("type") == "reasoning"
        and isinstance(content, str)
        and content.startswith(REASONING_STATE_PREFIX)
    )


def reasoning_state(where: str, item: dict[str, Any]) -> list[dict[str, Any]]:
    """The thinking blocks a reasoning item carries in Palyra's `encrypted_content`; none for
    an item without it or with content Palyra did not make."""
    if not carries_palyra_state(item):
        return []
    at = f"{where}.encrypted_content"
    damaged = InvalidRequest(
        f"{at}: Palyra's reasoning state is damaged; send it back as the response gave it",
        param=at,
    )
    try:
        raw = base64.b64decode(
            item["encrypted_content"].removeprefix(REASONING_STATE_PREFIX), validate=True
        )
        blocks = orjson.loads(raw)
    except (binascii.Error, orjson.JSONDecodeError):
        raise damaged from None
    if not isinstance(blocks, list) or not blocks or not all(map(is_thinking_block, blocks)):
        raise damaged
    return blocks


def is_thinking_block(block: Any) -> bool:
    """A thinking or redacted_thinking block as Anthropic gives it (`anthropic_response`)."""
    if not isinstance(block, dict):
        return False
    if block.get("type") == "thinking":
        return isinstance(block.get("thinking"), str) and isinstance(
            block.get("signature", ""), str
        )
    return block.get("type") == "redacted_thinking" and isinstance(block.get("data"), str)
