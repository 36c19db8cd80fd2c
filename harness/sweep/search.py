"""A placement search as a sweep: a suite's `placement_search:` block, checked, and the cells it
has to run given what is stored (the rule of the search: harness.placement_search).

The cells are those of ordinary suites derived from the searching one: per variant, one suite per
round whose `layout` axis holds that round's candidates ("attn:2,5"); per k the depth allows,
one suite with `layout: r:1` and the compared policies as its `placement` axis. Each round is
built from the stored rows of the rounds before it (`greedy_placement` on the rows of those
cells), so expanding again after a round has run adds the next one, and a rerun recomputes every
choice from the table and skips every stored cell (harness.sweep.search_run drives the rounds).
"""
from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from harness import metrics
from harness.model.config import ModelConfig
from harness.model.layout import PLACEMENTS
from harness.placement_search import SEARCH_METRICS, greedy_placement, layout_spec, policy_layers
from harness.sweep.cell import Cell
from harness.sweep.messages import hint
from harness.sweep.schema import Suite

__all__ = ["check_search", "search_cells", "search_metric_of", "search_depth"]

#: the axes a search may vary: the families it searches (variant) and the seeds each candidate runs on
FREE_AXES = ("variant", "seed")


def search_depth(suite: Suite) -> int:
    """The depth the search places attention in: the suite's (or its one size's) n_layers."""
    for source in (*(e.model for e in suite.task), *(suite.axes.size or [])[:1], suite.model):
        if source.n_layers is not None:
            return int(source.n_layers)
    return int(suite.axes.n_layers[0]) if suite.axes.n_layers else ModelConfig().n_layers


def search_metric_of(suite: Suite) -> tuple[str | None, str | None]:
    """(the metric the search ranks by, None) or (None, why not): the block's metric, which must
    be the score the report reads back for the suite's tasks (the first of SEARCH_METRICS they
    write), or that score when the block names none."""
    ps = suite.placement_search
    written = {m for e in suite.task for m in metrics.names(task=e.name)}
    score = next((m for m in SEARCH_METRICS if m in written), None)
    asked = ps.metric if ps is not None else None
    if asked is not None and metrics.lookup(asked) is None:
        known = [m.name for m in metrics.catalogue()]
        return None, f"unknown metric {asked!r}.{hint(asked, known)} Search metrics: {', '.join(SEARCH_METRICS)}"
    if score is None:
        tasks = ", ".join(e.name for e in suite.task)
        return None, (f"no task of this suite ({tasks}) writes a metric the search can rank by "
                      f"({', '.join(SEARCH_METRICS)}); search with a training task such as mqar, niah or lm")
    if asked is not None and asked != score:
        return None, (f"metric {asked!r}: the search ranks by the task's score, which the report reads back from the "
                      f"table alone: {score!r} for this suite's tasks (the first of {', '.join(SEARCH_METRICS)} "
                      f"they write; ties are broken by fewer train_steps). Write `metric: {score}` or leave it out")
    return score, None


def check_search(suite: Suite) -> list[str]:
    """Every problem of the suite's `placement_search:` block (none when it has none)."""
    ps = suite.placement_search
    if ps is None:
        return []
    errors: list[str] = []
    n, k = search_depth(suite), ps.attention_layers
    if not 1 <= k < n:
        errors.append(f"placement_search.attention_layers: {k}; at depth n_layers={n} a search places 1 to {n - 1} "
                      f"attention layers (k = {n} is the Transformer)")
    _, why = search_metric_of(suite)
    if why:
        errors.append(f"placement_search.metric: {why}")
    for i, policy in enumerate(ps.compare):
        if policy not in PLACEMENTS:
            errors.append(f"placement_search.compare[{i}]: unknown policy {policy!r}.{hint(policy, list(PLACEMENTS))} "
                          f"Policies: {', '.join(PLACEMENTS)}")
    errors += _layout_clashes(suite)
    errors += _varying_axes(suite)
    if "attention" in (suite.axes.variant or [suite.model.variant]):
        errors.append("placement_search: variant 'attention' has no linear layers to place attention among; "
                      "search a linear variant (the Transformer is every layer attention)")
    return errors


def _layout_clashes(suite: Suite) -> list[str]:
    """The search chooses layouts itself: a layout or placement elsewhere in the suite is refused."""
    errors = []
    scopes = [("", suite.model, suite.axes)] + [(f"task[{i}].", e.model, e.axes) for i, e in enumerate(suite.task)]
    for prefix, model, axes in scopes:
        for key in ("layout", "placement"):
            if getattr(axes, key):
                errors.append(f"{prefix}axes.{key}: the placement search chooses the layouts itself (round by round, "
                              f"and the compared policies); remove this axis, or run fixed layouts in their own suite")
            if getattr(model, key) is not None:
                errors.append(f"{prefix}model.{key}: the placement search chooses the layouts itself; remove "
                              f"`{key}:` from the model settings")
    return errors


def _varying_axes(suite: Suite) -> list[str]:
    """A search compares models that differ only in where attention sits: only `variant` and
    `seed` may take several values (on the suite, or on a task whose rows rank the search)."""
    metric, _ = search_metric_of(suite)
    writers = set(metrics.lookup(metric).tasks) if metric else set()
    scopes = [("", suite.axes)] + [(f"task[{i}].", e.axes) for i, e in enumerate(suite.task) if e.name in writers]
    errors = []
    for prefix, axes in scopes:
        for key, values in axes.model_dump(exclude_none=True).items():
            many = [k for k, v in values.items() if len(v) > 1] if key == "params" else [key] * (len(values) > 1)
            for name in many:
                shown = f"params.{name}" if key == "params" else name
                if shown not in FREE_AXES:
                    errors.append(f"{prefix}axes.{shown}: a placement search varies only {' and '.join(FREE_AXES)} "
                                  f"(its candidates must differ only in where attention sits); give one value, and "
                                  f"run one search per value (e.g. --set {prefix}axes.{shown}=[...])")
    return errors


Expand = Callable[[Suite, list[str]], list[Cell]]


def derived_suite(suite: Suite, layouts: list[str], variant: str | None = None,
                  placements: list[str] | None = None) -> Suite:
    """An ordinary suite: `suite` without its search, with these layouts (and placements, and
    one variant) as axes."""
    sub = suite.model_copy(deep=True)
    sub.placement_search = None
    order = [k for k in suite.axes_order if k not in ("layout", "placement")]
    if variant is not None:
        sub.axes.variant = [variant]
        order = order if "variant" in order else ["variant", *order]
    at = order.index("variant") + 1 if "variant" in order else 0
    sub.axes.layout, sub.axes.placement = layouts, placements
    order[at:at] = ["layout"] + (["placement"] if placements else [])
    sub._axes_order = order
    return sub


def _rows_of(table: pd.DataFrame | None, cells: list[Cell]) -> pd.DataFrame:
    cols = ["cell_id", "metric", "value", "status", "layout", "placement", "n_layers", "seed"]
    if table is None or table.empty:
        return pd.DataFrame(columns=cols)
    return table[table["cell_id"].isin({c.cell_id for c in cells})]


def _variant_cells(suite: Suite, variant: str, table: pd.DataFrame | None, expand: Expand,
                   metric: str) -> tuple[list[Cell], str]:
    """The cells of one variant's rounds that the stored table lets us build, and where it stands."""
    n, k = search_depth(suite), suite.placement_search.attention_layers
    writers = set(metrics.lookup(metric).tasks)
    cells: list[Cell] = []
    base: tuple[int, ...] = ()
    for j in range(1, k + 1):
        sets = [tuple(sorted((*base, i))) for i in range(n) if i not in base]
        cells += expand(derived_suite(suite, [layout_spec(s) for s in sets], variant), [])
        seeds = sorted({c.seed for c in cells if c.task in writers})
        last = greedy_placement(_rows_of(table, cells), metric, n, j, seeds)[-1]
        if not last.complete:
            return cells, f"{variant}: round {j} of {k} to run ({len(last.missing)} of {len(sets)} candidates)"
        base = last.chosen
    return cells, f"{variant}: every round done, found {layout_spec(base)}"


def search_cells(suite: Suite, table: pd.DataFrame | None, expand: Expand, notes: list[str]) -> list[Cell]:
    """The search's cells given the stored `table` (None: nothing stored): per variant, its rounds
    up to the first one not yet decided; and the fixed policies at every k the depth allows."""
    metric, why = search_metric_of(suite)
    if metric is None:
        raise ValueError(why)
    ps, n = suite.placement_search, search_depth(suite)
    out: dict[str, Cell] = {}
    states = []
    for variant in suite.axes.variant or [suite.model.variant or ModelConfig().variant]:
        cells, state = _variant_cells(suite, variant, table, expand, metric)
        states.append(state)
        for c in cells:
            out.setdefault(c.cell_id, c)
    for k in range(1, ps.attention_layers + 1):
        places = [p for p in ps.compare if policy_layers(n, k, p) is not None]
        if places:
            for c in expand(derived_suite(suite, [f"{n // k - 1}:1"], placements=places), []):
                out.setdefault(c.cell_id, c)
    where = str(suite.source) if suite.source else suite.name
    notes.append(f"{where}: placement search of 1..{ps.attention_layers} attention layers at depth {n} by {metric} "
                 f"(each round is built from the stored results of the one before): " + "; ".join(states))
    return list(out.values())
