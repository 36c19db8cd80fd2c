"""Sliding windows in the results table and the report (issue 25, item 1): the `window` column,
windows kept apart in every grouping, the bounded cache against the context length, recall at
each window beside the full-attention model, and `harness recommend` over windowed models."""
from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from harness.report import build_report_from_frame
from harness.report import cost_tables as CT
from harness.report import window as W
from harness.report.normalise import normalize, ok_rows
from harness.report.recommend import Constraints, recommend
from harness.report.style import sort_layouts

D, H = 64, 4
LENGTHS = [16, 32, 64, 128, 256]
PLATEAU, CHANCE = 0.125, 0.01
#: (variant, layout, window): (recall per seed, attention layers of 4, decode s)
MODELS = {
    ("attention", "transformer", None): ([0.99, 0.98], 4, 0.010),
    ("attention", "transformer", 64): ([0.52, 0.48], 4, 0.006),
    ("attention", "transformer", 16): ([0.20, 0.22], 4, 0.005),
    ("gla", "3:1", None): ([0.95, 0.96], 1, 0.004),
    ("gla", "3:1", 64): ([0.90, 0.91], 1, 0.003),
    ("gla", "pure", None): ([0.13, 0.12], 0, 0.002),  # at the plateau: did not learn
}


def _cache(n_attn: int, window, L: int) -> float:
    kv = n_attn * 2 * min(L, window or L) * D * 4
    return kv + (4 - n_attn) * H * (D // H) ** 2 * 4


def make_table(models=MODELS, window_in_column: bool = True) -> pd.DataFrame:
    rows = []
    for (variant, layout, window), (recall, n_attn, decode) in models.items():
        model = {"variant": variant, "layout": layout, "n_layers": 4, "d_model": D,
                 **({"window": window} if window else {})}
        base = {"suite": "w", "variant": variant, "layout": layout, "placement": "interleave", "n_layers": 4,
                "n_full_attn_layers": n_attn, "d_model": D, "n_heads": H, "status": "ok", "batch": 1,
                "cell_id": f"{variant}-{layout}-{window}", "model_config": json.dumps(model, sort_keys=True)}
        if window_in_column:
            base["window"] = window
        for seed, r in enumerate(recall):
            for metric, value in (("recall_acc", r), ("recall_plateau", PLATEAU), ("recall_chance", CHANCE)):
                rows.append({**base, "task": "mqar", "metric": metric, "value": value, "unit": "accuracy",
                             "seq_len": 128, "seed": seed, "subtask": "mqar"})
        for L in LENGTHS:
            rows.append({**base, "task": "analytic", "metric": "cache_bytes", "value": _cache(n_attn, window, L),
                         "unit": "bytes", "seq_len": L, "seed": 0})
            rows.append({**base, "task": "efficiency", "metric": "decode_token_s", "value": decode, "unit": "s",
                         "seq_len": L, "context_len": L, "seed": 0})
    return pd.DataFrame(rows)


def test_normalize_folds_the_window_into_the_layout_and_reads_old_tables_as_full():
    df = normalize(make_table())
    layouts = set(df["layout"])
    assert {"transformer", "transformer w=64", "transformer w=16", "3:1", "3:1 w=64", "pure"} == layouts
    assert df.loc[df["layout"] == "3:1 w=64", "window"].eq(64).all()
    assert (df.loc[df["layout"] == "3:1 w=64", "ratio"] == "3:1").all()
    # a table from before the column: the window comes from model_config, else full attention
    old = normalize(make_table(window_in_column=False))
    assert set(old["layout"]) == layouts
    bare = normalize(make_table(window_in_column=False).drop(columns="model_config"))
    assert bare["window"].isna().all() and set(bare["layout"]) == {"transformer", "3:1", "pure"}
    assert normalize(normalize(make_table()))["layout"].tolist() == df["layout"].tolist()  # idempotent


def test_layouts_sort_windows_before_full_attention():
    got = sort_layouts(["transformer", "transformer w=64", "3:1 bottom", "3:1", "3:1 w=16", "pure", "3:1 w=64"])
    assert got == ["pure", "3:1 w=16", "3:1 w=64", "3:1", "3:1 bottom", "transformer w=64", "transformer"]


def test_the_baseline_is_the_full_attention_transformer():
    vt = CT.vs_transformer(ok_rows(normalize(make_table())), "decode_token_s")
    at = vt[vt["context_len"] == 256].set_index("layout")
    assert not at.index.duplicated().any() and "transformer" not in at.index
    assert at.loc["transformer w=64", "ratio"] == pytest.approx(0.6)
    assert at.loc["3:1 w=64", "ratio"] == pytest.approx(0.3)


def test_cache_vs_length_stops_growing_at_the_window():
    pts = W.cache_vs_length(ok_rows(normalize(make_table())))
    assert set(pts["model"]) == {"Transformer", "Transformer w=64", "Transformer w=16", "GLA 3:1", "GLA 3:1 w=64"}
    by = pts.set_index(["model", "seq_len"])["bytes"]
    assert by[("Transformer w=16", 256)] == by[("Transformer w=16", 16)] == _cache(4, 16, 16)
    assert by[("Transformer w=64", 256)] == by[("Transformer w=64", 64)] > by[("Transformer w=64", 32)]
    assert by[("Transformer", 256)] == 4 * by[("Transformer", 64)]
    table = W.cache_table(pts)
    assert table["model"].tolist() == ["GLA 3:1 w=64", "GLA 3:1", "Transformer w=16", "Transformer w=64",
                                       "Transformer"]
    assert table["window"].tolist() == ["w=64", "full", "w=16", "w=64", "full"]


def test_recall_vs_window_table_has_full_attention_as_the_reference_column():
    s = W.recall_vs_window(ok_rows(normalize(make_table())))
    t = W.recall_window_table(s).set_index(["variant", "layout"])
    assert list(t.columns) == ["w=16", "w=64", "full"]
    assert t.loc[("attention", "transformer"), "full"].startswith("0.985")
    assert t.loc[("attention", "transformer"), "w=16"].startswith("0.21")
    assert t.loc[("gla", "3:1"), "w=16"] == "—" and t.loc[("gla", "3:1"), "w=64"].startswith("0.905")
    assert ("gla", "pure") not in t.index  # no windowed twin


def test_report_has_the_window_section_and_keeps_windows_apart(tmp_path):
    text = build_report_from_frame(make_table(), tmp_path / "r").read_text()
    assert "## Sliding windows" in text and "### Recall vs window" in text
    assert "### Inference cache vs context length" in text
    assert "- layouts: pure, 3:1 w=64, 3:1, transformer w=16, transformer w=64, transformer" in text
    assert "The claims are tested on the models with full attention" in text
    figs = {p.name for p in (tmp_path / "r" / "figures").iterdir()}
    assert {"recall-vs-window.png", "cache-vs-length-window.svg"} <= figs
    plain = make_table({k: v for k, v in MODELS.items() if k[2] is None})
    text = build_report_from_frame(plain, tmp_path / "p").read_text()
    assert "Sliding windows" not in text and "w=" not in text


def test_recommend_considers_windowed_models_with_their_bounded_cache():
    budget = _cache(1, None, 4096) / 2  # the full 3:1 hybrid does not fit at 4K
    table = make_table()
    extra = table[(table["task"] == "analytic")].copy()
    for L in (4096,):
        part = extra[extra["seq_len"] == 256].copy()
        part["seq_len"] = L
        part["value"] = [_cache(MODELS[(v, lay, None if pd.isna(w) else int(w))][1], None if pd.isna(w) else int(w), L)
                         for v, lay, w in zip(part["variant"], part["layout"], part["window"])]
        table = pd.concat([table, part], ignore_index=True)
    ans = recommend(table, Constraints(seq_len=4096, max_cache_bytes=budget, accuracy_len="all"))
    assert ans.answered and (ans.choice["variant"], ans.choice["layout"]) == ("gla", "3:1 w=64")
    rows = ans.rows.set_index(["variant", "layout"])
    assert rows.loc[("gla", "3:1 w=64"), "cache_bytes"] == _cache(1, 64, 4096) == _cache(1, 64, 64)
    assert not rows.loc[("gla", "3:1"), "feasible"]
    assert any("w=64" in r and "window" in r for r in ans.reasons)


def test_a_real_sweep_writes_the_window_column_and_the_report_shows_the_bounded_cache(tmp_path):
    from rich.console import Console

    from harness.sweep import expand_cells, load_results, load_suite
    from harness.sweep.driver import run_sweep

    path = tmp_path / "s.yaml"
    path.write_text("name: s\ntask: analytic\nmodel: {n_layers: 4, d_model: 32, n_heads: 2}\n"
                    "axes: {variant: gla, layout: ['3:1', transformer], window: [null, 16], seq_len: [8, 16, 64]}\n")
    run_sweep("s", expand_cells(load_suite(path)), tmp_path / "r", console=Console(file=io.StringIO()),
              progress=False)
    df = load_results(tmp_path / "r")
    assert str(df["window"].dtype) == "Int64"
    assert set(df["window"].dropna()) == {16} and df["window"].isna().sum() > 0
    pts = W.cache_vs_length(ok_rows(normalize(df))).set_index(["model", "seq_len"])["bytes"]
    assert pts[("Transformer w=16", 64)] == pts[("Transformer w=16", 16)] < pts[("Transformer", 64)]
    assert pts[("GLA 3:1 w=16", 64)] == pts[("GLA 3:1 w=16", 16)]
    text = build_report_from_frame(df, tmp_path / "rep").read_text()
    assert "### Inference cache vs context length" in text and "Transformer w=16" in text
