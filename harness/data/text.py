"""Text corpora for language modelling, with a fixed train/validation split.

Corpus specs (`load_corpus`):
- ``"pydoc"`` (default): the English documentation topics shipped inside CPython
  (``pydoc_data.topics.topics``, about 0.47 MB), joined in sorted-key order. Present on every
  machine with Python, so it needs no download.
- a path, a directory (every ``*.txt`` / ``*.md`` / ``*.rst`` below it) or a glob
  (``"~/books/*.txt"``): local UTF-8 text files, read in sorted path order.
- ``"hf:<dataset>[:<config>][@<split>]"`` with ``tokenizer="<HF tokenizer name>"``: a Hugging Face
  dataset and tokenizer (needs the optional ``datasets`` and ``transformers`` packages and the
  network, or their local caches). With ``HF_DATASETS_OFFLINE=1`` / ``HF_HUB_OFFLINE=1`` or the
  packages missing, it fails with a clear error instead of trying.

Tokenisation is byte-level by default: token = UTF-8 byte, vocabulary 256, so bits per byte is
the loss in nats / ln 2. The split is fixed by position: the last ``val_fraction`` (10%) of the
token stream is validation, the rest training, whatever the seed.
"""
from __future__ import annotations

import glob as globmod
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from harness._lazy import import_extra

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
BYTE_VOCAB = 256


@dataclass
class Corpus:
    name: str
    train: torch.Tensor  # [N_train] long token ids
    val: torch.Tensor  # [N_val] long token ids
    vocab_size: int
    #: UTF-8 bytes per token in the validation split (1.0 for byte-level); converts nats/token
    #: to bits/byte: bpb = loss / ln 2 / bytes_per_token
    val_bytes_per_token: float = 1.0
    tokenizer: str = "bytes"

    def bits_per_byte(self, loss_nats_per_token: float) -> float:
        return loss_nats_per_token / math.log(2) / self.val_bytes_per_token


def pydoc_text() -> str:
    """CPython's bundled documentation topics, joined deterministically."""
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # some distributions strip it
        raise RuntimeError(
            "this Python has no pydoc_data.topics (the default LM corpus); pass corpus=<path or glob> "
            "with local text files instead"
        ) from exc
    return "\n\n".join(topics[k] for k in sorted(topics))


def resolve_files(spec: str) -> list[Path]:
    """The text files a path / directory / glob spec names, sorted."""
    p = Path(os.path.expanduser(spec))
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES)
    else:
        files = sorted(Path(f) for f in globmod.glob(os.path.expanduser(spec), recursive=True) if Path(f).is_file())
    if not files:
        raise FileNotFoundError(
            f"corpus {spec!r}: no text files found (expected 'pydoc', a file, a directory with "
            f"{'/'.join(TEXT_SUFFIXES)} files, a glob, or 'hf:<dataset>')"
        )
    return files


def byte_tokens(text: str) -> torch.Tensor:
    data = text.encode("utf-8")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


def split_tokens(tokens: torch.Tensor, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = max(1, int(round(len(tokens) * val_fraction)))
    return tokens[:-n_val].clone(), tokens[-n_val:].clone()


def load_corpus(spec: str = "pydoc", val_fraction: float = 0.1, tokenizer: str | None = None,
                max_chars: int | None = None) -> Corpus:
    """Load and tokenise a corpus (see the module docstring); split off the last `val_fraction`."""
    if spec.startswith("hf:"):
        return _load_hf(spec[3:], tokenizer, val_fraction, max_chars)
    if tokenizer not in (None, "bytes"):
        raise ValueError(f"tokenizer {tokenizer!r} is only supported with an 'hf:' corpus; local corpora are "
                         "byte-level")
    if spec == "pydoc":
        text, name = pydoc_text(), "pydoc"
    else:
        files = resolve_files(spec)
        text = "\n\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
        name = spec
    if max_chars is not None:
        text = text[:max_chars]
    tokens = byte_tokens(text)
    if len(tokens) < 2:
        raise ValueError(f"corpus {spec!r} is empty")
    train, val = split_tokens(tokens, val_fraction)
    return Corpus(name=name, train=train, val=val, vocab_size=BYTE_VOCAB)


def hf_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _load_hf(spec: str, tokenizer: str | None, val_fraction: float, max_chars: int | None) -> Corpus:
    """``<dataset>[:<config>][@<split>]`` through `datasets`, tokenised with a `transformers`
    tokenizer (byte-level if `tokenizer` is None). The text field is ``text``."""
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise RuntimeError(
            f"corpus 'hf:{spec}' needs the optional 'datasets' package (pip install datasets); "
            f"use corpus='pydoc' or local files to stay offline"
        ) from None
    if hf_offline():
        raise RuntimeError(
            f"corpus 'hf:{spec}' needs the network, but HF offline mode is set "
            f"(HF_DATASETS_OFFLINE / HF_HUB_OFFLINE); use corpus='pydoc' or local text files"
        )
    datasets = import_extra("datasets", "lm-eval", f"corpus 'hf:{spec}'")
    split = "train"
    if "@" in spec:
        spec, split = spec.rsplit("@", 1)
    name, config = (spec.split(":", 1) + [None])[:2]
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:
        raise RuntimeError(f"could not load Hugging Face dataset {name!r} ({config}, {split}): {exc}") from exc
    if "text" not in ds.column_names:
        raise ValueError(f"dataset {name!r} has no 'text' column; columns: {ds.column_names}")
    pieces, total = [], 0
    for row in ds:
        pieces.append(row["text"])
        total += len(row["text"])
        if max_chars is not None and total >= max_chars:
            break
    text = "\n\n".join(pieces)
    if max_chars is not None:
        text = text[:max_chars]
    if tokenizer in (None, "bytes"):
        tokens = byte_tokens(text)
        train, val = split_tokens(tokens, val_fraction)
        return Corpus(name=f"hf:{spec}", train=train, val=val, vocab_size=BYTE_VOCAB)
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise RuntimeError(f"tokenizer {tokenizer!r} needs the optional 'transformers' package") from None
    tok = AutoTokenizer.from_pretrained(tokenizer)
    # split the *text* at a fixed byte fraction so the validation bytes are known exactly
    raw = text.encode("utf-8")
    cut = len(raw) - max(1, int(round(len(raw) * val_fraction)))
    train_text = raw[:cut].decode("utf-8", errors="ignore")
    val_text = raw[cut:].decode("utf-8", errors="ignore")
    train = torch.tensor(tok(train_text)["input_ids"], dtype=torch.long)
    val = torch.tensor(tok(val_text)["input_ids"], dtype=torch.long)
    bpt = len(val_text.encode("utf-8")) / max(1, len(val))
    return Corpus(name=f"hf:{spec}", train=train, val=val, vocab_size=len(tok), val_bytes_per_token=bpt,
                  tokenizer=tokenizer)


def random_windows(tokens: torch.Tensor, seq_len: int, batch: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """`batch` random windows of seq_len + 1 tokens: inputs = w[:-1], targets = w[1:]."""
    if len(tokens) < seq_len + 1:
        raise ValueError(f"corpus split of {len(tokens)} tokens is shorter than seq_len + 1 = {seq_len + 1}")
    starts = torch.randint(0, len(tokens) - seq_len, (batch,), generator=g)
    idx = starts[:, None] + torch.arange(seq_len + 1)
    w = tokens[idx]
    return {"inputs": w[:, :-1], "targets": w[:, 1:]}


def eval_windows(tokens: torch.Tensor, seq_len: int, max_windows: int | None = None) -> dict[str, torch.Tensor]:
    """Non-overlapping windows over the split from its start (deterministic): every target token
    of the covered prefix is scored exactly once."""
    n = (len(tokens) - 1) // seq_len
    if n < 1:
        raise ValueError(f"validation split of {len(tokens)} tokens is shorter than seq_len + 1 = {seq_len + 1}")
    if max_windows is not None:
        n = min(n, max_windows)
    idx = torch.arange(n)[:, None] * seq_len + torch.arange(seq_len + 1)
    w = tokens[idx]
    return {"inputs": w[:, :-1], "targets": w[:, 1:]}
