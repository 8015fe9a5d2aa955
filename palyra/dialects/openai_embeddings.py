"""OpenAI embeddings: `POST /v1/embeddings`."""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import cast

import orjson
from aiohttp import web

from palyra import tokens
from palyra.dialects.base import Dialect
from palyra.dialects.common import json_response, route_headers
from palyra.models.openai_wire import CreateEmbeddingResponse, Embedding
from palyra.server.json_body import parse_body
from palyra.server.keys import GATEWAY, ROUTE, STARTED
from palyra.types import EmbeddingsRequest, EmbeddingsResult, FloatsJson, ProviderModelRole


async def embeddings(request: web.Request) -> web.StreamResponse:
    started = request[STARTED]
    router = request.app[GATEWAY].router
    body, size = await parse_body(request, EmbeddingsRequest)
    if size <= tokens.COUNT_INLINE_BYTES:
        routed = await router.embed(body)
    else:
        with tokens.remembering():
            model = router.registry.resolve(body.model, ProviderModelRole.EMBEDDINGS)
            await tokens.prepare_texts(body.texts(), budget=router.smallest_budget(model))
            routed = await router.embed(body)
    request[ROUTE] = routed.route
    headers = route_headers(routed.route, started)
    if _answer_size(routed.value) <= INLINE_ANSWER_NUMBERS:
        payload = render_embeddings(routed.value, routed.route.model_id, body.encoding_format)
        return json_response(payload, headers)
    return await _stream_embeddings(
        request, routed.value, routed.route.model_id, body.encoding_format, headers
    )


# An embeddings answer of up to this many numbers is rendered in one go (orjson takes about
# 140 ns a number); a larger one is rendered and sent a slice of vectors at a time, letting
# other requests run between slices and never holding the whole JSON in memory.
INLINE_ANSWER_NUMBERS = 16 * 1024


def _answer_size(result: EmbeddingsResult) -> int:
    # A base64 vector (as an upstream sent it) holds 4 bytes a number, 3 bytes per 4 chars.
    return sum(len(v) if isinstance(v, list) else len(v) * 3 // 16 for v in result.vectors)


async def _stream_embeddings(
    request: web.Request,
    result: EmbeddingsResult,
    model_id: str,
    encoding_format: str,
    headers: dict[str, str],
) -> web.StreamResponse:
    response = web.StreamResponse(headers={**headers, "Content-Type": "application/json"})
    await response.prepare(request)
    per_vector = max(1, _answer_size(result) // max(1, len(result.vectors)))
    step = max(1, INLINE_ANSWER_NUMBERS // per_vector)
    payload: CreateEmbeddingResponse | None = None
    vectors = result.vectors
    for start in range(0, len(vectors), step):
        part = EmbeddingsResult(vectors[start : start + step], result.usage)
        # Sent vectors are let go of as they go: a million floats freed at once, at the end,
        # would hold up the event loop for 20 ms.
        vectors[start : start + step] = [[]] * len(part.vectors)
        payload = render_embeddings(part, model_id, encoding_format)
        for item in payload["data"]:
            item["index"] += start
        items = orjson.dumps(payload["data"])[1:-1]  # the elements, without the brackets
        head = b'{"object":"list","data":[' if start == 0 else b","
        # The slice's vectors are let go of before the write waits on the client.
        payload["data"] = []
        del part
        await response.write(head + items)
        await asyncio.sleep(0)  # let other requests run between slices
    # What follows the data in the whole answer ("model", "usage"), rendered by the same code.
    rest = {key: value for key, value in (payload or {}).items() if key not in ("object", "data")}
    await response.write(b"]," + orjson.dumps(rest)[1:])
    await response.write_eof()
    return response


def render_embeddings(
    result: EmbeddingsResult, model_id: str, encoding_format: str
) -> CreateEmbeddingResponse:
    data: list[Embedding] = []
    for index, vector in enumerate(result.vectors):
        embedding = vector
        if isinstance(vector, FloatsJson) and encoding_format != "base64":
            # orjson writes a Fragment's bytes as they are: the upstream's own array.
            embedding = cast("list[float]", orjson.Fragment(vector.json))
        elif encoding_format == "base64" and not isinstance(vector, str):
            # The OpenAI SDK asks for base64 by default: little-endian float32, base64-encoded.
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        elif encoding_format != "base64" and isinstance(vector, str):
            packed = base64.b64decode(vector)
            embedding = list(struct.unpack(f"<{len(packed) // 4}f", packed))
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {
        "object": "list",
        "data": data,
        "model": model_id,
        "usage": {
            "prompt_tokens": result.usage.prompt_tokens,
            "total_tokens": result.usage.prompt_tokens,
        },
    }


DIALECT = Dialect("openai_embeddings", (("POST", "/v1/embeddings", embeddings),))
