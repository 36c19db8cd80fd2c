"""On-disk cache of generated data: ``<cache dir>/<sha256 of kind + config + seed>.pt``.

The cache directory is ``$HARNESS_CACHE_DIR`` if set, else
``~/.cache/hybrid-attention-harness/data`` (docs/suites.md, "The data cache"; `harness cache info`
and `harness cache clear` show and empty it). Nothing is ever evicted automatically: a few suites
leave tens of MB. Files are written atomically (a temporary file in the
same directory, then ``os.replace``), so concurrent workers generating the same data never see a
half-written file; the last writer wins with identical content. A file that cannot be read back
(truncated, from an incompatible torch) is regenerated, never trusted.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.sweep.cell import canonical_json

if TYPE_CHECKING:
    import torch

ENV_VAR = "HARNESS_CACHE_DIR"


def cache_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "hybrid-attention-harness" / "data"


def cache_key(kind: str, config: Mapping[str, Any], seed: int) -> str:
    """sha256 (hex) of the canonical JSON of the generator's name, config and seed."""
    ident = {"kind": kind, "config": dict(config), "seed": int(seed)}
    return hashlib.sha256(canonical_json(ident).encode()).hexdigest()


def cache_path(kind: str, config: Mapping[str, Any], seed: int) -> Path:
    return cache_dir() / f"{cache_key(kind, config, seed)}.pt"


#: the files this cache writes: <sha256>.pt, and <sha256>.pt.<random>.tmp while writing
_OURS = re.compile(r"^[0-9a-f]{64}\.pt(\.[^/]+\.tmp)?$")


def cache_files() -> list[Path]:
    """The cache's own files (never anything else in the directory)."""
    d = cache_dir()
    return sorted(p for p in d.iterdir() if p.is_file() and _OURS.match(p.name)) if d.is_dir() else []


def cache_info() -> tuple[Path, int, int]:
    """(directory, number of files, bytes) of the data cache."""
    files = cache_files()
    return cache_dir(), len(files), sum(p.stat().st_size for p in files)


def clear_cache() -> tuple[int, int]:
    """Delete the cache's files (only those it wrote); return (files, bytes) removed. Data is
    regenerated on the next run that needs it."""
    n = size = 0
    for p in cache_files():
        try:
            s = p.stat().st_size
            p.unlink()
        except FileNotFoundError:  # a concurrent run moved it meanwhile
            continue
        n, size = n + 1, size + s
    return n, size


def _atomic_save(obj: Any, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cached(
    kind: str,
    config: Mapping[str, Any],
    seed: int,
    build: Callable[[], dict[str, torch.Tensor]],
    enabled: bool = True,
) -> dict[str, torch.Tensor]:
    """Return ``build()``'s tensors, from the cache when present. ``config`` must be JSON-able
    and must contain everything that changes the output (including a generator version)."""
    import torch

    if not enabled:
        return build()
    path = cache_path(kind, config, seed)
    if path.exists():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # unreadable: regenerate below and overwrite
            pass
    data = build()
    try:
        _atomic_save(data, path)
    except OSError:  # a read-only home must not stop a run; the data is still correct
        pass
    return data
