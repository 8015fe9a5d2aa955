"""The Anthropic Messages API: `/v1/messages` (to be written)."""

from __future__ import annotations

from palyra.dialects.base import Dialect

DIALECT = Dialect("anthropic_messages", ())
