"""Hybrid layouts: which layers are linear ("L"), full softmax attention ("A") or head-wise hybrids ("H").

Accepted forms (see `resolve_layout`):
- ``"pure"``: every layer linear; ``"transformer"``: every layer softmax attention.
- ``"r:1"`` (e.g. ``"3:1"``): the paper's composite block, r linear layers followed by one
  full-attention layer, repeated. The depth must be a whole number of blocks, i.e. divisible by
  r + 1; anything else is rejected (the paper never says how it placed layers in a depth that
  does not divide, so we refuse to guess). Full layers sit at indices r, 2r+1, ...
- an explicit pattern over ``L``/``A`` with one letter per layer, e.g. ``"LLALLA"`` (spaces and
  ``-`` ignored);
- ``"attn:3,7,11"``: 0-based indices of the attention layers, as in fla's ``attn.layers``;
- ``"heads:1/4"`` (any fraction k/n strictly between 0 and 1): a head-wise (intra-layer) hybrid,
  every layer "H": softmax attention with that fraction of the model's ``n_heads`` beside the
  linear variant, in parallel (harness.model.headwise). The fraction times ``n_heads`` must be a
  whole number of heads (``resolve_layout(..., n_heads=...)`` checks it); it is stored reduced, so
  ``"heads:2/8"`` and ``"heads:1/4"`` are one cell. It takes no placement.

A ratio layout has a *placement*: where its n / (r + 1) attention layers sit. Named ones
(`PLACEMENTS`): ``interleave`` (the default) is the paper's block above; ``bottom`` and ``top``
stack them at the first / last layers, ``middle`` centres them, ``ends`` splits them between the
first and the last layers (the extra one, if odd, at the bottom). Or explicit indices,
``"attn:2"`` / ``"attn:0,5"``, as many as the ratio has attention layers. Explicit layout patterns
and ``attn:`` layouts place layers themselves and take no placement.

The canonical form of any pattern (`canonical_layout`) whose attention layers divide the depth is
its ratio and the first named placement that gives it (so "top" of one 3:1 block is
"interleave", and "ends" of one attention layer is "bottom"), else its ratio and its attention
indices ("LLAL" is 3:1 at "attn:2"); other patterns stay explicit ("LLALA"). Specs that give the
same layers are the same cell. A head-wise layout is canonical as its reduced fraction.
"""
from __future__ import annotations

import re
from fractions import Fraction

LINEAR, ATTN, HEADWISE = "L", "A", "H"
#: where a ratio layout's attention layers sit; the first is the default (the paper's)
PLACEMENTS = ("interleave", "bottom", "top", "middle", "ends")
DEFAULT_PLACEMENT = PLACEMENTS[0]


class LayoutError(ValueError):
    pass


def parse_ratio(layout: str) -> int | None:
    """Return r for an "r:1" layout, None for anything else."""
    m = re.fullmatch(r"\s*(\d+)\s*:\s*1\s*", str(layout))
    return int(m.group(1)) if m else None


def head_fraction(layout: str) -> Fraction | None:
    """The attention-head fraction of a head-wise layout ("heads:1/4" -> 1/4, reduced), None for
    any other layout; LayoutError for a fraction outside 0 < f < 1."""
    m = re.fullmatch(r"\s*heads\s*:\s*(\d+)\s*/\s*(\d+)\s*", str(layout))
    if not m:
        if str(layout).strip().startswith("heads:"):
            raise LayoutError(f"layout {layout!r}: expected a fraction of attention heads such as 'heads:1/4' "
                              f"or 'heads:1/2'")
        return None
    num, den = int(m.group(1)), int(m.group(2))
    if den == 0 or not 0 < num < den:
        raise LayoutError(
            f"layout {layout!r}: the attention-head fraction must lie strictly between 0 and 1 (no softmax "
            f"head is 'pure', every head is 'transformer'); use e.g. 'heads:1/4' or 'heads:1/2'")
    return Fraction(num, den)


def attention_heads(layout: str, n_heads: int) -> int:
    """How many of `n_heads` heads are softmax attention in each layer of head-wise `layout`:
    n_heads times its fraction, which must be a whole number k with 1 <= k < n_heads."""
    f = head_fraction(layout)
    if f is None:
        raise LayoutError(f"layout {layout!r} is not a head-wise layout ('heads:1/4')")
    if (n_heads * f).denominator != 1:
        fits = [str(x) for x in sorted({Fraction(k, n_heads) for k in range(1, n_heads)})]
        hint = (f"with n_heads={n_heads} use one of " + ", ".join(f"'heads:{x}'" for x in fits[:4])
                if fits else "n_heads=1 has no heads to split")
        raise LayoutError(
            f"layout {layout!r} does not fit n_heads={n_heads}: {f} of {n_heads} heads is "
            f"{n_heads * f} softmax heads, not a whole number; {hint}, or make n_heads a multiple of "
            f"{f.denominator}")
    return int(n_heads * f)


def check_placement(placement: str) -> str:
    """`placement` if it is a named placement or explicit indices ("attn:2,5"), else LayoutError."""
    if placement in PLACEMENTS or re.fullmatch(r"attn:\d+(,\d+)*", str(placement)):
        return placement
    raise LayoutError(f"unknown placement {placement!r}; expected one of {', '.join(PLACEMENTS)} or attention "
                      f"layer indices such as 'attn:2'")


def placement_key(placement: str) -> tuple[int, tuple[int, ...]]:
    """Sort key: the named placements in `PLACEMENTS` order, then explicit indices by position."""
    if placement in PLACEMENTS:
        return PLACEMENTS.index(placement), ()
    if str(placement).startswith("attn:"):
        return len(PLACEMENTS), tuple(int(i) for i in placement[5:].split(",") if i.isdigit())
    return len(PLACEMENTS) + 1, ()


def place_attention(r: int, n_layers: int, placement: str) -> list[str]:
    """The layers of an r:1 layout at depth `n_layers` (a multiple of r + 1) with its attention
    layers placed as `placement` says."""
    check_placement(placement)
    n_attn = n_layers // (r + 1)
    if placement.startswith("attn:"):
        at = sorted({int(i) for i in placement[5:].split(",")})
        if len(at) != n_attn or not all(0 <= i < n_layers for i in at):
            raise LayoutError(f"placement {placement!r}: {r}:1 at depth {n_layers} has {n_attn} attention layer(s), "
                              f"so it needs {n_attn} distinct indices in 0..{n_layers - 1}")
    elif placement == "interleave":
        return ([LINEAR] * r + [ATTN]) * n_attn
    elif placement == "bottom":
        at = range(n_attn)
    elif placement == "top":
        at = range(n_layers - n_attn, n_layers)
    elif placement == "middle":
        start = (n_layers - n_attn) // 2
        at = range(start, start + n_attn)
    else:  # ends
        first = (n_attn + 1) // 2
        at = [*range(first), *range(n_layers - (n_attn - first), n_layers)]
    idx = set(at)
    return [ATTN if i in idx else LINEAR for i in range(n_layers)]


def resolve_layout(layout: str, n_layers: int, placement: str = DEFAULT_PLACEMENT,
                   n_heads: int | None = None) -> list[str]:
    """Turn a layout spec (and, for a ratio, its placement) into one kind per layer ("L", "A" or,
    for a head-wise layout, "H"). With `n_heads`, a head-wise layout's fraction is checked against
    it (a whole number of softmax heads)."""
    kinds = _resolve(layout, n_layers, check_placement(placement))
    if n_heads is not None and HEADWISE in kinds:
        attention_heads(layout, n_heads)
    return kinds


def _resolve(layout: str, n_layers: int, placement: str) -> list[str]:
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
        return place_attention(r, n_layers, placement)
    if head_fraction(spec) is not None:
        if placement != DEFAULT_PLACEMENT:
            raise LayoutError(
                f"placement {placement!r} applies to ratio layouts such as '3:1'; the head-wise layout {layout!r} "
                f"has softmax heads in every layer (leave placement at {DEFAULT_PLACEMENT!r})")
        return [HEADWISE] * n_layers
    if placement != DEFAULT_PLACEMENT:
        raise LayoutError(
            f"placement {placement!r} applies to ratio layouts such as '3:1'; layout {layout!r} places its "
            f"attention layers itself (leave placement at {DEFAULT_PLACEMENT!r})"
        )
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
        f"a pattern like 'LLLA', attention indices like 'attn:3,7', or a head fraction like 'heads:1/4'"
    )


def canonical_layout(kinds: list[str], heads: Fraction | None = None) -> tuple[str, str]:
    """(layout, placement): the canonical spec of a resolved layout (used in cells and result
    tables): "pure", "transformer", a ratio "r:1" with the first placement that gives these
    layers, or the explicit pattern (placement "interleave", i.e. none). Head-wise layers ("H")
    need their fraction `heads` (`head_fraction` of the spec): "heads:1/4", reduced."""
    if HEADWISE in kinds:
        if heads is None or set(kinds) != {HEADWISE}:
            raise LayoutError(f"head-wise layers {''.join(kinds)!r}: every layer must be 'H' and the head "
                              f"fraction must be given")
        return f"heads:{heads.numerator}/{heads.denominator}", DEFAULT_PLACEMENT
    n, n_attn = len(kinds), kinds.count(ATTN)
    if n_attn == 0:
        return "pure", DEFAULT_PLACEMENT
    if n_attn == n:
        return "transformer", DEFAULT_PLACEMENT
    if n % n_attn == 0:
        r = n // n_attn - 1
        for placement in PLACEMENTS:
            if place_attention(r, n, placement) == kinds:
                return f"{r}:1", placement
        return f"{r}:1", "attn:" + ",".join(str(i) for i in attention_layers(kinds))
    return "".join(kinds), DEFAULT_PLACEMENT


def attention_layers(kinds: list[str]) -> list[int]:
    return [i for i, k in enumerate(kinds) if k == ATTN]
