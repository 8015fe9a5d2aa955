"""Palyra: one door to LLM providers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("palyra")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
