"""Hybrid-attention harness: compare linear-attention token mixers and hybrids.

`harness.load_results(path)` loads a results table (see harness.sweep.store). Imports stay lazy so
`import harness` pulls in neither torch nor pandas.
"""
from __future__ import annotations

from harness._lazy import lazy_exports

__all__ = ["load_results", "__version__"]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("hybrid-attention-harness")
    except Exception:  # not installed (a bare checkout on sys.path)
        return "0+unknown"


__version__ = _version()


__getattr__ = lazy_exports("harness", {"load_results": "harness.sweep.store"})
