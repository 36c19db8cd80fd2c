"""End to end: `harness sweep suites/recall-smoke.yaml` trains and scores every cell."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_recall_smoke_sweep(tmp_path):
    harness = Path(sys.executable).with_name("harness")
    cmd = [str(harness)] if harness.exists() else [sys.executable, "-m", "harness.cli"]
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "results"
    proc = subprocess.run([*cmd, "sweep", str(REPO / "suites" / "recall-smoke.yaml"), "--out", str(out),
                           "--no-report"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = pd.read_parquet(out / "results.parquet")
    assert (table["status"] == "ok").all()
    acc = table[table["metric"] == "recall_acc"]
    # 2 variants x 2 layouts, each scored at 2 lengths
    assert acc["cell_id"].nunique() == table["cell_id"].nunique() == 4
    assert sorted(acc.groupby("cell_id").size().unique()) == [2]
    assert set(acc["context_len"]) == {32, 48} and set(acc["subtask"]) == {"mqar"}
    assert acc["value"].between(0, 1).all()
    assert set(table["metric"]) >= {"recall_acc", "recall_chance", "recall_plateau", "final_loss", "train_steps"}
    # reference levels beside every recall row: plateau 1/num_kv_pairs, chance 1/|values| = 2/vocab
    for metric, level in (("recall_plateau", 1 / 4), ("recall_chance", 2 / 64)):
        ref = table[table["metric"] == metric]
        assert sorted(zip(ref["cell_id"], ref["context_len"])) == sorted(zip(acc["cell_id"], acc["context_len"]))
        assert (ref["value"] == level).all(), (metric, ref["value"].unique())
    assert set(zip(acc["variant"], acc["layout"])) == {("gla", "pure"), ("gla", "1:1"),
                                                      ("gated_deltanet", "pure"), ("gated_deltanet", "1:1")}
