"""The sliced parse of a large JSON body (`palyra/server/json_body.py`): whatever the
body, it gives what orjson gives for the whole of it. (Bodies over HTTP, and the limits on
them, are in test_limits.py.)"""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest

from palyra.server import json_body

_ALPHABET = ["a", " ", "\n", '"', "\\", "/", "é", "日", "😀", "\u2028", "\x01", "\ue000"]


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 4 or roll < 0.3:
        return "".join(rng.choices(_ALPHABET, k=rng.choice([0, 3, 40, 300])))
    if roll < 0.4:
        return rng.choice([1, -2.5, True, None, 10**18, 1e-7])
    if roll < 0.55:  # a flat array of numbers, cut out when long
        return [rng.choice([1, 2.5, -3, 10**17, None, False]) for _ in range(rng.randint(0, 60))]
    if roll < 0.75:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["".join(rng.choices(_ALPHABET, k=rng.choice([1, 3, 40]))) for _ in range(4)]
    return {key: _random_json(rng, depth + 1) for key in keys[: rng.randint(0, 4)]}


async def test_the_sliced_parse_is_orjson_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    # Slices, long strings and long arrays made tiny, so that every cut lands everywhere:
    # inside escapes, surrogate pairs, UTF-8 sequences, keys, runs of backslashes.
    monkeypatch.setattr(json_body, "SLICE_BYTES", 7)
    monkeypatch.setattr(json_body, "_LONG_STRING", 12)
    monkeypatch.setattr(json_body, "_LONG_ARRAY", 20)
    rng = random.Random(5)
    for _ in range(400):
        value = {"x": _random_json(rng)}
        raw = json.dumps(value, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1]))
        assert await json_body.parse_large(raw.encode()) == orjson.loads(raw), raw
    for text in ("\\" * 500, "\n" * 500, "😀" * 300, 'é\\"' * 300):
        for ascii_only in (True, False):
            raw = json.dumps({"t": text}, ensure_ascii=ascii_only).encode()
            assert await json_body.parse_large(bytearray(raw)) == {"t": text}


def test_a_value_of_no_type_a_union_takes_says_what_it_may_be() -> None:
    # Found in review: `content: 5` read "Input should be a valid string", which is what one
    # branch of the union wanted, not what the field takes.
    from palyra.errors import InvalidRequest
    from palyra.types import ChatRequest

    for body, expected in [
        (
            {"messages": [{"role": "user", "content": 5}]},
            "messages[0].content: must be a string or a list",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "stop": 5},
            "stop: must be a string or a list",
        ),
        # Found in review: pydantic's words, naming its class ("a valid dictionary or
        # instance of ImageURL"), and "1 more problems".
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]},
            "messages[0].content[0].image_url: must be an object",
        ),
        (
            {"messages": "hi"},
            "messages: must be a list",
        ),
        (
            {"messages": [{"role": "user", "content": 5}, {"role": "user", "content": 6}]},
            "messages[0].content: must be a string or a list (and 1 more problem)",
        ),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            json_body.validate(body, ChatRequest)
        assert caught.value.message == expected
