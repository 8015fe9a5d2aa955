"""Palyra: one door to LLM providers."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # Worked out when first asked for: importlib.metadata costs every `import palyra` some
    # 20 ms (the CLI's start, each worker's, tab completion's), and few ask.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("palyra")
        except PackageNotFoundError:  # run from a source tree that was never installed
            found = "0+unknown"
        globals()["__version__"] = found
        return found
    raise AttributeError(f"module 'palyra' has no attribute {name!r}")
