"""One place for how variants and layouts look: colours, labels, markers, ordering, units.

Every figure and table in the report takes its colours and order from here, so a variant keeps
the same colour throughout.
"""
from __future__ import annotations

import math
import re
import zlib

from harness.model.layout import parse_ratio
from harness.sweep.metrics import lookup

#: Fixed colour per registry variant name (softmax attention / the Transformer is black).
VARIANT_COLORS: dict[str, str] = {
    "hgrn": "#8c564b",  # brown   (generation 1)
    "retnet": "#bcbd22",  # olive   (generation 2, fixed decay)
    "gla": "#1f77b4",  # blue    (generation 2, data-dependent gating)
    "hgrn2": "#2ca02c",  # green   (generation 2, tied gating)
    "deltanet": "#ff7f0e",  # orange  (generation 3)
    "gated_deltanet": "#d62728",  # red     (generation 3)
    "attention": "#000000",  # black   (softmax attention / Transformer)
}
#: Colours for variants not known here (plug-ins), picked by a stable hash of the name.
_EXTRA_COLORS = ["#9467bd", "#e377c2", "#17becf", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5"]

VARIANT_ORDER = ["hgrn", "retnet", "gla", "hgrn2", "deltanet", "gated_deltanet", "attention"]

VARIANT_LABELS: dict[str, str] = {
    "hgrn": "HGRN",
    "retnet": "RetNet",
    "gla": "GLA",
    "hgrn2": "HGRN-2",
    "deltanet": "DeltaNet",
    "gated_deltanet": "Gated DeltaNet",
    "attention": "Transformer",
}

LAYOUT_MARKERS: dict[str, str] = {
    "pure": "o",
    "24:1": "v",
    "12:1": "<",
    "6:1": ">",
    "3:1": "^",
    "1:1": "s",
    "transformer": "*",
}

def variant_color(variant: str) -> str:
    if variant in VARIANT_COLORS:
        return VARIANT_COLORS[variant]
    return _EXTRA_COLORS[zlib.crc32(str(variant).encode()) % len(_EXTRA_COLORS)]


def variant_label(variant: str) -> str:
    return VARIANT_LABELS.get(variant, str(variant))


def variant_sort_key(variant: str) -> tuple[int, str]:
    v = str(variant)
    if v == "attention":
        return (2, v)
    if v in VARIANT_ORDER:
        return (0, f"{VARIANT_ORDER.index(v):02d}")
    return (1, v)


def sort_variants(variants) -> list[str]:
    return sorted({str(v) for v in variants}, key=variant_sort_key)


def attn_fraction(layout: str) -> float:
    """Fraction of layers that are full softmax attention, from the layout string (NaN if unknown)."""
    s = str(layout).strip()
    if s == "pure":
        return 0.0
    if s == "transformer":
        return 1.0
    r = parse_ratio(s)
    if r is not None:
        return 1.0 / (r + 1)
    p = re.sub(r"[\s\-_]", "", s).upper()
    if p and set(p) <= {"L", "A"}:
        return p.count("A") / len(p)
    return math.nan


def layout_sort_key(layout: str) -> tuple[float, str]:
    f = attn_fraction(layout)
    return (2.0 if math.isnan(f) else f, str(layout))


def sort_layouts(layouts) -> list[str]:
    return sorted({str(x) for x in layouts}, key=layout_sort_key)


def is_hybrid(layout: str) -> bool:
    f = attn_fraction(layout)
    return not math.isnan(f) and 0.0 < f < 1.0


def layout_marker(layout: str) -> str:
    return LAYOUT_MARKERS.get(str(layout), "D")


def metric_label(metric: str) -> str:
    """The catalogue's label (harness.sweep.metrics); the name itself for an unknown metric."""
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
