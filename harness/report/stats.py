"""Rank statistics for the ranking claim, in numpy (no scipy dependency)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def spearman(a, b) -> float:
    """Spearman's ρ: Pearson correlation of average ranks (ties share a rank)."""
    ra = pd.Series(a, dtype=float).rank().values
    rb = pd.Series(b, dtype=float).rank().values
    if len(ra) < 2 or np.std(ra) == 0 or np.std(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def kendall_tau_b(a, b) -> float:
    """Kendall's τ-b (tie-corrected)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    n = len(a)
    if n < 2:
        return float("nan")
    i, j = np.triu_indices(n, 1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    s = float((da * db).sum())
    n0 = len(i)
    ta, tb = float((da == 0).sum()), float((db == 0).sum())
    denom = np.sqrt((n0 - ta) * (n0 - tb))
    return float(s / denom) if denom > 0 else float("nan")
