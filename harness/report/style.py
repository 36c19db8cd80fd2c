"""One place for how variants and layouts look in a report: colours, labels, markers, ordering.

A variant's colour and label are its own (`color`, `display_name` on its class, read from its
source so the report never imports torch); `set_report_variants` gives variants without a colour
one that no other variant of the report has. Every figure and table takes colours and order from
here, so a variant keeps the same colour throughout.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable

from harness.metrics import lookup
from harness.model.layout import parse_ratio, placement_key
from harness.registry import VARIANTS

LAYOUT_MARKERS: dict[str, str] = {
    "pure": "o",
    "24:1": "v",
    "12:1": "<",
    "6:1": ">",
    "3:1": "^",
    "1:1": "s",
    "transformer": "*",
}

#: colours for variants that declare none (plug-ins), handed out in name order, never one a
#: variant of the same report already has
EXTRA_COLORS = ["#9467bd", "#e377c2", "#17becf", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5",
                "#ff9896", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5", "#393b79", "#637939"]
_palette: dict[str, str] = {}


def _describe(variant: str) -> dict:
    return VARIANTS.describe(str(variant))  # read from the variant's source: no torch import


def set_report_variants(variants: Iterable[str]) -> None:
    """Fix the colours of one report: each variant's declared `color` (harness.model.mixer.Mixer),
    else the next free extra colour in name order, so no two variants of a report share one.
    The registered variants are included, so a variant keeps its colour across reports."""
    global _palette
    names = sorted(set(VARIANTS.names()) | {str(v) for v in variants})
    declared = {n: _describe(n).get("color") for n in names}
    used = {str(c).lower() for c in declared.values() if c}
    free = [c for c in EXTRA_COLORS if c.lower() not in used]
    palette, i = {}, 0
    for n in names:
        if declared[n]:
            palette[n] = str(declared[n])
        else:
            palette[n] = free[i] if i < len(free) else _generated(i - len(free))
            i += 1
    _palette = palette


def _generated(i: int) -> str:
    """The i-th colour beyond the palette: golden-ratio hues, distinct for any number of variants."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((0.13 + 0.618034 * i) % 1.0, 0.65, 0.85)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def variant_color(variant: str) -> str:
    if str(variant) not in _palette:
        set_report_variants([*_palette, str(variant)])
    return _palette[str(variant)]


def variant_label(variant: str) -> str:
    """The variant's `display_name` ("Transformer" for softmax attention), else its name."""
    return str(_describe(variant).get("display_name") or variant)


def variant_sort_key(variant: str) -> tuple[int, int, str]:
    """By the paper's generations (1, 2, 3), then name; unknown variants after, the Transformer last."""
    v = str(variant)
    if v == "attention":
        return (2, 0, v)
    gen = _describe(v).get("generation")
    return (0, gen, v) if isinstance(gen, int) else (1, 0, v)


def sort_variants(variants) -> list[str]:
    return sorted({str(v) for v in variants}, key=variant_sort_key)


def attn_fraction(layout: str) -> float:
    """Fraction of layers that are full softmax attention, from the layout string (NaN if unknown);
    a placed layout ("3:1 bottom") has its ratio's, a head-wise one ("heads:1/4") its fraction of
    softmax heads, so that it sits beside the layer ratio of the same KV cache (3:1)."""
    s = str(layout).strip().split(" ")[0]
    if s == "pure":
        return 0.0
    if s == "transformer":
        return 1.0
    heads = re.fullmatch(r"heads:(\d+)/(\d+)", s)
    if heads and 0 < int(heads.group(1)) < int(heads.group(2)):
        return int(heads.group(1)) / int(heads.group(2))
    r = parse_ratio(s)
    if r is not None:
        return 1.0 / (r + 1)
    p = re.sub(r"[\s\-_]", "", s).upper()
    if p and set(p) <= {"L", "A"}:
        return p.count("A") / len(p)
    return math.nan


def layout_sort_key(layout: str) -> tuple:
    """By attention fraction, then placement (the paper's interleave first), then window (the
    smallest first, full attention last: sparse to dense), then name."""
    f = attn_fraction(layout)
    parts = str(layout).strip().split(" ")[1:]
    window = [p for p in parts if re.fullmatch(r"w=\d+", p)]
    rest = [p for p in parts if p not in window]
    place = placement_key(rest[0]) if rest else (0, ())
    return (2.0 if math.isnan(f) else f, place, int(window[0][2:]) if window else math.inf, str(layout))


def sort_layouts(layouts) -> list[str]:
    return sorted({str(x) for x in layouts}, key=layout_sort_key)


def is_hybrid(layout: str) -> bool:
    f = attn_fraction(layout)
    return not math.isnan(f) and 0.0 < f < 1.0


def layout_marker(layout: str) -> str:
    return LAYOUT_MARKERS.get(str(layout), "D")


def metric_label(metric: str) -> str:
    """The catalogue's label (harness.metrics); the name itself for an unknown metric."""
    info = lookup(metric)
    return info.label if info is not None else metric


def metric_unit(metric: str, unit: str | None = None) -> str:
    """The table's unit where it has one, else the catalogue's."""
    if unit is not None and isinstance(unit, str) and unit.strip():
        return unit.strip()
    info = lookup(metric)
    return info.unit if info is not None else ""


def axis_label(metric: str, unit: str | None = None) -> str:
    u = metric_unit(metric, unit)
    return f"{metric_label(metric)} [{u}]" if u else metric_label(metric)
