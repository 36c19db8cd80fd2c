"""Number formatting and a tiny Markdown table writer (no `tabulate` dependency)."""
from __future__ import annotations

import math

import pandas as pd

_BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
_SI = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]


def _isnum(v) -> bool:
    try:
        return v is not None and not isinstance(v, bool) and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def fmt_value(v, unit: str = "", sig: int = 4) -> str:
    """Format one number for a table, using its unit (bytes, s, FLOP, ...); `sig` digits otherwise."""
    if not _isnum(v):
        return "—"
    x = float(v)
    u = (unit or "").strip().lower()
    if u in ("bytes", "byte", "b"):
        a, i = abs(x), 0
        while a >= 1024 and i < len(_BYTE_UNITS) - 1:
            a /= 1024
            i += 1
        return f"{math.copysign(a, x):.3g} {_BYTE_UNITS[i]}" if i else f"{x:.0f} B"
    if u in ("s", "sec", "seconds"):
        a = abs(x)
        if a == 0:
            return "0 s"
        if a < 1e-3:
            return f"{x * 1e6:.3g} µs"
        if a < 1:
            return f"{x * 1e3:.3g} ms"
        return f"{x:.3g} s"
    if u in ("flop", "flops"):
        a = abs(x)
        for scale, prefix in _SI:
            if a >= scale:
                return f"{x / scale:.3g} {prefix}FLOP"
        return f"{x:.3g} FLOP"
    if u in ("x", "ratio"):
        return f"{x:.3g}×"
    if u in ("count", "params"):
        for scale, prefix in _SI:
            if abs(x) >= scale:
                return f"{x / scale:.3g}{prefix}"
        return f"{x:.0f}"
    if u in ("tokens/s",):
        return f"{x:.4g}"
    if u in ("accuracy", "acc", "fraction"):
        return f"{x:.3f}"
    return f"{x:.{sig}g}"


def fmt_delta(v, unit: str = "") -> str:
    """A signed difference: 3 decimals for accuracies, 3 significant digits otherwise."""
    if not _isnum(v):
        return "—"
    x = float(v)
    if (unit or "").strip().lower() in ("accuracy", "acc", "fraction"):
        return f"{x:+.3f}"
    return f"{x:+.3g}"


def fmt_mean_std(mean, std=None, n=None, unit: str = "") -> str:
    """'mean ± std (n=k)' where there is more than one seed, else just the mean."""
    s = fmt_value(mean, unit)
    if s == "—":
        return s
    if n is not None and _isnum(n) and int(n) > 1 and _isnum(std):
        s += f" ± {fmt_value(std, unit, sig=2)}"
        s += f" (n={int(n)})"
    return s


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v).replace("|", "\\|").replace("\n", " ")


def md_table(df: pd.DataFrame, index: bool = False) -> str:
    """Render a DataFrame (ideally of pre-formatted strings) as a GitHub Markdown table."""
    if index:
        df = df.reset_index()
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(_cell(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)
