"""Statistics the report's verdicts rest on, in numpy (no scipy dependency): when two means are
a tie, ranks that know ties, and rank correlations over them.

One rule for "within the seeds' spread", used by every claim, ranking and front of the report:
two means tie when their difference is at most the sum of their sample stds across seeds (their
`mean ± std` intervals, as the tables print them, overlap), or at most a stated floor. A mean
with one seed has no known std (NaN): it counts as 0 here, and callers say that no spread is
known (`spread_known`)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def _std(s) -> float:
    s = float(s) if s is not None else float("nan")
    return 0.0 if np.isnan(s) else s


def tie_tolerance(std_a, std_b, floor: float = 0.0) -> float:
    """The largest difference of two means that is still a tie: std_a + std_b (NaN counts as 0),
    at least `floor`."""
    return max(float(floor), _std(std_a) + _std(std_b))


def is_tie(mean_a, std_a, mean_b, std_b, floor: float = 0.0) -> bool:
    """True when |mean_a − mean_b| is within the seeds' spread (`tie_tolerance`)."""
    return abs(float(mean_a) - float(mean_b)) <= tie_tolerance(std_a, std_b, floor)


def spread_known(stds) -> bool:
    """True when every std is a number (each mean had ≥ 2 seeds)."""
    s = pd.Series(list(stds), dtype=float)
    return bool(len(s)) and not s.isna().any()


def pair_signs(means, stds, floor: float = 0.0) -> np.ndarray:
    """[n, n] sign(mean_i − mean_j), 0 where the pair is a tie (within the seeds' spread)."""
    m = np.asarray(means, float)
    s = np.nan_to_num(np.asarray(stds, float))
    diff = m[:, None] - m[None, :]
    tol = np.maximum(float(floor), s[:, None] + s[None, :])
    return np.where(np.abs(diff) <= tol, 0.0, np.sign(diff))


def tied_ranks(means, stds, floor: float = 0.0) -> np.ndarray:
    """Rank 1 = highest. rank_i = 1 + (models decidably above i) + ½ (models tied with i): the
    average rank where ties group cleanly, and still defined where they chain (a ~ b ~ c, a > c)."""
    sg = pair_signs(means, stds, floor)
    n = len(sg)
    above = (sg < 0).sum(1)
    ties = (sg == 0).sum(1) - 1  # not itself
    return 1.0 + above + 0.5 * ties if n else np.array([])


def spearman(a, b) -> float:
    """Spearman's ρ: Pearson correlation of average ranks (ties share a rank)."""
    ra = pd.Series(a, dtype=float).rank().values
    rb = pd.Series(b, dtype=float).rank().values
    return _pearson(ra, rb)


def _pearson(ra, rb) -> float:
    ra, rb = np.asarray(ra, float), np.asarray(rb, float)
    if len(ra) < 2 or np.std(ra) == 0 or np.std(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def kendall_tau_b(a, b) -> float:
    """Kendall's τ-b (tie-corrected)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2:
        return float("nan")
    i, j = np.triu_indices(len(a), 1)
    return _tau_b(np.sign(a[i] - a[j]), np.sign(b[i] - b[j]))


def _tau_b(da: np.ndarray, db: np.ndarray) -> float:
    n0 = len(da)
    ta, tb = float((da == 0).sum()), float((db == 0).sum())
    denom = np.sqrt((n0 - ta) * (n0 - tb))
    return float((da * db).sum() / denom) if denom > 0 else float("nan")


def noisy_rank_correlation(mean_a, std_a, mean_b, std_b, floor: float = 0.0) -> dict:
    """Spearman ρ and Kendall τ-b of two scorings of the same items, every pair within the seeds'
    spread counted as a tie. Returns rho, tau, ranks_a, ranks_b (rank 1 = highest), n_pairs and
    n_decidable: the pairs ordered beyond the spread in both scorings (the only pairs that can
    agree or disagree)."""
    sa, sb = pair_signs(mean_a, std_a, floor), pair_signs(mean_b, std_b, floor)
    i, j = np.triu_indices(len(sa), 1)
    da, db = sa[i, j], sb[i, j]
    ra, rb = tied_ranks(mean_a, std_a, floor), tied_ranks(mean_b, std_b, floor)
    return {"rho": _pearson(ra, rb), "tau": _tau_b(da, db) if len(da) else float("nan"),
            "ranks_a": ra, "ranks_b": rb, "n_pairs": len(da),
            "n_decidable": int(((da != 0) & (db != 0)).sum()),
            "n_concordant": int((da * db > 0).sum()), "n_discordant": int((da * db < 0).sum())}
