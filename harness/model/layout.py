"""Hybrid layouts: which layers are linear ("L") and which are full softmax attention ("A").

Accepted forms (see `resolve_layout`):
- ``"pure"``: every layer linear; ``"transformer"``: every layer softmax attention.
- ``"r:1"`` (e.g. ``"3:1"``): the paper's composite block, r linear layers followed by one
  full-attention layer, repeated. The depth must be a whole number of blocks, i.e. divisible by
  r + 1; anything else is rejected (the paper never says how it placed layers in a depth that
  does not divide, so we refuse to guess). Full layers sit at indices r, 2r+1, ...
- an explicit pattern over ``L``/``A`` with one letter per layer, e.g. ``"LLALLA"`` (spaces and
  ``-`` ignored);
- ``"attn:3,7,11"``: 0-based indices of the attention layers, as in fla's ``attn.layers``.
"""
from __future__ import annotations

import re

LINEAR, ATTN = "L", "A"


class LayoutError(ValueError):
    pass


def parse_ratio(layout: str) -> int | None:
    """Return r for an "r:1" layout, None for anything else."""
    m = re.fullmatch(r"\s*(\d+)\s*:\s*1\s*", str(layout))
    return int(m.group(1)) if m else None


def resolve_layout(layout: str, n_layers: int) -> list[str]:
    """Turn a layout spec into one kind per layer ("L" or "A")."""
    if not isinstance(layout, str):
        raise LayoutError(f"layout must be a string, got {type(layout).__name__}: {layout!r}")
    if n_layers < 1:
        raise LayoutError(f"n_layers must be >= 1, got {n_layers}")
    spec = layout.strip()
    if spec == "pure":
        return [LINEAR] * n_layers
    if spec == "transformer":
        return [ATTN] * n_layers
    r = parse_ratio(spec)
    if r is not None:
        if r < 1:
            raise LayoutError(f"layout {layout!r}: the linear count r in 'r:1' must be >= 1")
        block = r + 1
        if n_layers % block:
            lower = (n_layers // block) * block
            options = [d for d in (lower, lower + block) if d > 0]
            raise LayoutError(
                f"layout {layout!r} does not fit n_layers={n_layers}: an {r}:1 block is {block} "
                f"layers ({r} linear + 1 attention), so the depth must be a multiple of {block} "
                f"(e.g. {' or '.join(map(str, options))}). Use an explicit pattern such as "
                f"'attn:{r}' or {'L' * r + 'A'!r}... to place attention layers by hand."
            )
        return ([LINEAR] * r + [ATTN]) * (n_layers // block)
    if spec.startswith("attn:"):
        body = spec[5:].strip()
        try:
            idx = sorted({int(i) for i in body.split(",") if i.strip()})
        except ValueError:
            raise LayoutError(f"layout {layout!r}: expected comma-separated layer indices after 'attn:'") from None
        bad = [i for i in idx if not 0 <= i < n_layers]
        if bad:
            raise LayoutError(f"layout {layout!r}: attention indices {bad} are outside 0..{n_layers - 1}")
        return [ATTN if i in idx else LINEAR for i in range(n_layers)]
    pattern = re.sub(r"[\s\-_]", "", spec).upper()
    if pattern and set(pattern) <= {LINEAR, ATTN}:
        if len(pattern) != n_layers:
            raise LayoutError(
                f"layout pattern {layout!r} has {len(pattern)} layers but n_layers={n_layers}"
            )
        return list(pattern)
    raise LayoutError(
        f"unknown layout {layout!r}: expected 'pure', 'transformer', a ratio like '3:1', "
        f"a pattern like 'LLLA', or attention indices like 'attn:3,7'"
    )


def layout_name(kinds: list[str]) -> str:
    """A canonical short name for a resolved layout (used in result tables)."""
    n_attn = kinds.count(ATTN)
    if n_attn == 0:
        return "pure"
    if n_attn == len(kinds):
        return "transformer"
    for r in range(1, len(kinds)):
        if len(kinds) % (r + 1) == 0 and kinds == ([LINEAR] * r + [ATTN]) * (len(kinds) // (r + 1)):
            return f"{r}:1"
    return "".join(kinds)


def attention_layers(kinds: list[str]) -> list[int]:
    return [i for i, k in enumerate(kinds) if k == ATTN]
