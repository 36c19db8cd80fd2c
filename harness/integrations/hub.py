"""The Hugging Face Hub, in one place: the harness's online/offline policy and finding a
checkpoint (a local directory or a Hub id).

Offline by default: unless the environment sets HARNESS_ONLINE=1, Hugging Face libraries are
kept off the network (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE = 1, and the
matching constants of libraries already imported), so a checkpoint or data set that is not in
the local cache is a clear error, never a download. A local path that does not exist is said to
be missing, not "offline".
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.model.fla_config import ConversionError

ONLINE_ENV = "HARNESS_ONLINE"
OFFLINE_VARS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
#: files fetched from the Hub for a checkpoint (config, safetensors weights, tokenizer); torch
#: .bin weights are fetched only when a repository has no safetensors
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt"]


def online() -> bool:
    """True when the user allowed network access (HARNESS_ONLINE=1)."""
    return os.environ.get(ONLINE_ENV, "").strip().lower() in ("1", "true", "yes")


def default_offline_env() -> None:
    """Set the offline variables unless HARNESS_ONLINE=1 (variables already set win); call it
    before datasets / huggingface_hub are imported, which read them once."""
    if not online():
        for var in OFFLINE_VARS:
            os.environ.setdefault(var, "1")


@contextlib.contextmanager
def hf_offline(enabled: bool = True) -> Iterator[None]:
    """Keep Hugging Face libraries off the network inside the block (env vars, and the constants
    that huggingface_hub / datasets / transformers read at import time), then restore."""
    if not enabled:
        yield
        return
    saved_env = {k: os.environ.get(k) for k in OFFLINE_VARS}
    os.environ.update({k: "1" for k in OFFLINE_VARS})
    saved_attrs: list[tuple[Any, str, Any]] = []
    for mod_name, attrs in (
        ("huggingface_hub.constants", ("HF_HUB_OFFLINE",)),
        ("datasets.config", ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")),
        ("transformers.utils.hub", ("_is_offline_mode",)),
    ):
        mod = sys.modules.get(mod_name)
        for attr in attrs:
            if mod is not None and hasattr(mod, attr) and not callable(getattr(mod, attr)):
                saved_attrs.append((mod, attr, getattr(mod, attr)))
                setattr(mod, attr, True)
    try:
        yield
    finally:
        for mod, attr, val in saved_attrs:
            setattr(mod, attr, val)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _looks_like_hub_id(s: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+", s)) and not s.startswith((".", "/"))


def local_checkpoint_problem(path_or_hub_id: str | os.PathLike) -> str | None:
    """Why `path_or_hub_id` cannot be a checkpoint, when that is clear without the network: a
    path that is not a Hub id (owner/name) and does not exist, a file, or a directory without a
    config.json. None when it may be one (a checkpoint directory, or a Hub id to look up)."""
    s = str(path_or_hub_id)
    p = Path(s).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            return f"checkpoint {s!r}: the directory {p} has no config.json, so it is not a checkpoint"
        return None
    if p.exists():
        return f"checkpoint {s!r}: {p} is a file; a checkpoint is a directory (config.json + weights)"
    if not _looks_like_hub_id(s):
        return (f"checkpoint {s!r}: the directory {p} does not exist (and {s!r} is not a Hugging Face id, "
                f"owner/name); check the path")
    return None


def resolve_checkpoint_dir(path_or_hub_id: str | os.PathLike, revision: str | None = None) -> Path:
    """A local directory for a checkpoint: the path itself, or a Hub snapshot.

    A Hub id is fetched with huggingface_hub. With HF_HUB_OFFLINE=1 (the harness default unless
    HARNESS_ONLINE=1) only the local cache is used, and a missing checkpoint is a clear error.
    """
    p = Path(path_or_hub_id).expanduser()
    if p.is_dir():
        return p
    s = str(path_or_hub_id)
    problem = local_checkpoint_problem(s)
    if problem:  # a path that does not exist is not a reason to go online
        raise ConversionError(problem)
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - transformers/datasets pull it in
        raise ConversionError(
            f"{s!r} looks like a Hugging Face id, but huggingface_hub is not installed (pip install huggingface_hub)"
        ) from None
    try:
        directory = Path(snapshot_download(repo_id=s, revision=revision, allow_patterns=HUB_PATTERNS))
        if not any(directory.glob("*.safetensors")):
            directory = Path(snapshot_download(repo_id=s, revision=revision, allow_patterns=HUB_PATTERNS + ["*.bin"]))
        return directory
    except Exception as exc:  # offline cache miss, no network, unknown repo, ...
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = (
            " The Hub is offline (HF_HUB_OFFLINE=1): download it once with network access "
            f"(set {ONLINE_ENV}=1 for the harness, or `hf download {s}`), or pass a local directory."
            if offline else " Check the id and the network, or pass a local directory."
        ) + f" (No local directory {p} exists either.)"
        raise ConversionError(f"cannot fetch checkpoint {s!r}: {type(exc).__name__}: {exc}.{hint}") from None
