"""Whether a TypedDict of Palyra's wire modules has the keys of its counterpart in an SDK
(openai-python's models and `*_param.py` TypedDicts): shared by the tests that hold the wire
modules to the SDKs."""

from __future__ import annotations

from typing import Any


def keys(shape: Any) -> set[str]:
    """The keys of a TypedDict (its bases' included) or the fields of an SDK model."""
    fields = getattr(shape, "model_fields", None)
    return set(fields if fields is not None else shape.__annotations__)


def mismatch(ours: Any, theirs: Any, extensions: set[str]) -> str | None:
    """What tells `ours` from `theirs` with `extensions` known, or None."""
    missing = keys(theirs) - keys(ours)
    unknown = keys(ours) - keys(theirs) - extensions
    stale = extensions & keys(theirs)  # the SDK has it now: no longer ours alone
    if not (missing or unknown or stale):
        return None
    return (
        f"{ours.__name__} against {theirs.__module__}.{theirs.__name__}: "
        f"missing {sorted(missing)}, not the SDK's {sorted(unknown)}, "
        f"the SDK's now {sorted(stale)}"
    )
