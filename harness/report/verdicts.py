"""The verdicts of the report's claims (harness.report.claims): their names, how parts combine,
the thresholds the claims state, and the small formatting the claims share."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HOLDS, FAILS, PARTLY, UNDECIDED, NO_DATA = "holds", "fails", "partly", "undecided", "no data"

SPEEDUP_MIN = 1.30  # "≥ 30 % faster": Transformer time / hybrid time ≥ 1.30
MEM_SAVING_MIN = 0.40  # "≥ 40 % less memory": 1 − hybrid / Transformer ≥ 0.40
SATURATION_TOL = 0.02  # recall points counted as "no real gain" (or the seeds' spread if larger)
LM_STABLE_REL = 0.01  # the paper's "less than 1 %" across ratios
RANK_WEAK, RANK_STRONG = 0.4, 0.8  # Spearman ρ below / above: does not / does predict
RANK_MIN_DECIDABLE = 0.5  # a rank correlation needs at least this share of pairs ordered beyond noise
NO_SPREAD = "only one seed was run, so no spread is known and the verdict is at most 'partly'"


@dataclass
class Claim:
    title: str
    verdict: str
    summary: str
    details: str = ""


def combine(verdicts: list[str]) -> str:
    """One verdict from many: undecided parts neither confirm nor refute. All decided parts hold
    and none undecided: holds; all decided parts fail: fails; nothing decided: undecided."""
    v = [x for x in verdicts if x != NO_DATA]
    if not v:
        return NO_DATA
    decided = [x for x in v if x != UNDECIDED]
    if not decided:
        return UNDECIDED
    if all(x == HOLDS for x in decided):
        return HOLDS if len(decided) == len(v) else PARTLY
    if all(x == FAILS for x in decided):
        return FAILS
    return PARTLY


def at_most_partly(verdict: str) -> str:
    """With no known spread a claim cannot be said to hold everywhere."""
    return PARTLY if verdict == HOLDS else verdict


def width_text(d) -> str:
    return "?" if d is None or (isinstance(d, float) and np.isnan(d)) else str(int(d))


def lens_text(lens) -> str:
    lens = sorted(int(x) for x in set(lens))
    return "L=" + ",".join(str(x) for x in lens)
