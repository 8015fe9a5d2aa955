"""What one request to an inference route may ask of the daemon, in one place.

Every limit keeps the work of a request bounded (memory, CPU, time on the event loop) and is
set at or above what the OpenAI API itself accepts, so that no client written for that API
meets one. A request past a limit is answered 400 (413 for sizes) in the OpenAI error shape,
naming the limit and its value. The total size of a request body, multipart included, is
`[daemon] max_request_bytes` (default 32 MiB): a setting, so it lives in the config.

The JSON checks at the end are here because the body, the models and the deterministic
provider all apply the same depth rule.
"""

from __future__ import annotations

from typing import Any

# --- any JSON body ----------------------------------------------------------------------

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects in a JSON request body, and in JSON carried inside
one (tool-call arguments, `/tool` arguments). The OpenAI API allows 10 levels of nesting in a
structured-output schema, which with the envelope around it is about 30 here. Deeper values
break things downstream: orjson will not encode past 255 levels (the request to an upstream),
and Python's own recursion limit is about 1000 (json.dumps when counting tokens)."""

MAX_JSON_COST = 500_000
"""How much JSON one body may hold, weighed by what parsing it costs: each value counts 3
(1 in a long array of numbers, which is parsed apart in slices), each string 3 more, each
array or object 8 more. The parse of everything but long strings and long arrays is one call
that holds the interpreter throughout, so this is what keeps it short (about 10 ms at the
limit on an idle slow core) and a body's objects few (a few tens of MB at most). The largest
request the OpenAI API accepts, 300,000 embedding token ids, costs about 320,000; 2,048 chat
messages about 55,000."""

# --- /v1/chat/completions ---------------------------------------------------------------

MAX_CHAT_MESSAGES = 2048
"""Messages in one chat request: the OpenAI API's own limit."""

MAX_CHAT_TOOLS = 128
"""Tools offered in one chat request: the OpenAI API's own limit."""

MAX_TOOL_CALLS_PER_MESSAGE = 128
"""Tool calls in one assistant message of the history: the OpenAI API's own limit."""

MAX_INTEGER = 2**63 - 1
"""Largest integer parameter (`seed`, `max_tokens`, ...): a signed 64-bit integer, the most
any upstream's JSON decoder takes, and what orjson can encode."""

# --- /v1/embeddings ---------------------------------------------------------------------

MAX_EMBEDDING_INPUTS = 2048
"""Inputs in one embeddings request: the OpenAI API's own limit."""

MAX_EMBEDDING_TOKEN_IDS = 300_000
"""Token ids, summed over all token-array inputs of one request: the OpenAI API's limit of
300,000 tokens summed over all inputs, for the inputs whose tokens are known up front."""

MAX_EMBEDDING_DIMENSIONS = 8192
"""`dimensions` of one embedding: twice OpenAI's largest model (3072), room for the larger
OpenAI-compatible models."""

MAX_EMBEDDING_VALUES = 2048 * 3072
"""Numbers in one embeddings answer, inputs times `dimensions`, checked when the dimensions
are known before asking (the request names them, or the deterministic provider's own): the
largest answer OpenAI gives, 2,048 inputs at text-embedding-3-large's 3,072. As JSON that is
about 120 MB, which is rendered and sent in slices."""

DETERMINISTIC_MAX_EMBEDDING_VALUES = 2048 * 512
"""Numbers the deterministic provider computes for one embeddings request (2,048 inputs of
512 dimensions, 128 of 8,192): each is hashed in Python, about a second of CPU and 32 MB at
this limit; it is a provider for tests and offline use, not for bulk."""

# --- /v1/audio/transcriptions -----------------------------------------------------------

MAX_AUDIO_BYTES = 25 * 1024 * 1024
"""The audio file of one transcription: the OpenAI API's own limit (25 MB)."""

MAX_FORM_FIELD_BYTES = 64 * 1024
"""One multipart field other than the file (`model`, `prompt`, `language`, ...). A Whisper
prompt is at most 224 tokens; this is a hundred times more."""

MAX_FORM_PARTS = 100
"""Parts in one multipart body: the transcription API has about a dozen fields, some of them
repeated (`timestamp_granularities[]`, `include[]`)."""

ALLOWED_TRANSFER_ENCODINGS = frozenset({"binary", "8bit", "7bit"})
"""Content-Transfer-Encoding values a multipart part may name. RFC 7578 deprecates the header
for form data and clients do not send it; any other value (base64, quoted-printable, gzip) is
refused rather than guessed at."""


# --- checks -----------------------------------------------------------------------------


def json_too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays and objects nest more than `limit` deep in a parsed JSON value.

    Iterative, so no depth can exhaust the stack, and it stops at the first container past
    the limit."""
    if not isinstance(value, (dict, list)):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, (dict, list)):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


_ONE_KIND = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def may_be_too_deep(text: str | bytes | bytearray, limit: int = MAX_JSON_DEPTH) -> bool:
    """False when JSON text cannot nest more than `limit` deep; True means maybe (brackets
    inside strings are taken for structure), and `json_too_deep` on the parsed value decides.

    This runs on every body, so it is a few C calls: the brackets alone, then, when there are
    more of them than `limit`, passes that each remove every innermost "[]" and so take one
    level away; `limit` passes empty any text within the limit (a typical chat body: none;
    an agent's, with tools: eight or so)."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    brackets = raw.translate(_ONE_KIND, _NOT_BRACKETS)
    if len(brackets) <= limit:
        return False
    for _ in range(limit):
        if not brackets:
            return False
        fewer = brackets.replace(b"[]", b"")
        if len(fewer) == len(brackets):
            return True  # unbalanced: brackets inside strings
        brackets = fewer
    return bool(brackets)
