"""The OpenAI Responses API: `/v1/responses` (to be written)."""

from __future__ import annotations

from palyra.dialects.base import Dialect

DIALECT = Dialect("openai_responses", ())
