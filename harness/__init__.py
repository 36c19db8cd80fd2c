"""Hybrid-attention harness: compare linear-attention token mixers and hybrids.

`harness.load_results(path)` loads a results table (see harness.sweep.store). Imports stay lazy so
`import harness` pulls in neither torch nor pandas.
"""
from __future__ import annotations

from typing import Any

__all__ = ["load_results", "__version__"]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("hybrid-attention-harness")
    except Exception:  # not installed (a bare checkout on sys.path)
        return "0+unknown"


__version__ = _version()


def __getattr__(name: str) -> Any:
    if name == "load_results":
        from harness.sweep.store import load_results

        return load_results
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
