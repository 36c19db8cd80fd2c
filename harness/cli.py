"""The `harness` command line: sweep, report, variants."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Hybrid linear-attention harness.")


@app.command()
def variants(as_json: bool = typer.Option(False, "--json", help="Print the registry as JSON.")) -> None:
    """List the registered token mixers (built-in and plug-in) with their metadata."""
    from harness.registry import VARIANTS

    rows = [cls.metadata() for _, cls in VARIANTS.items()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    cols = ("name", "display_name", "generation", "state_kind", "gating", "delta_rule", "flops_coeff")
    table = Table(title="Registered variants")
    for col in cols:
        table.add_column(col)
    for r in rows:
        table.add_row(*("-" if r[c] is None else str(r[c]) for c in cols))
    Console().print(table)


DEFAULT_SUITE = "quickstart"


@app.command()
def sweep(
    suite: Optional[str] = typer.Argument(
        None, help="Suite file, or a name in suites/ (e.g. quickstart). Default: suites/quickstart.yaml."
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Results directory. Default: results/<suite-name>."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the suite and list its cells; run nothing."),
    workers: Optional[int] = typer.Option(
        None, "--workers", min=1, help="Worker processes (pool) or local Ray CPUs. >1 implies --executor pool."
    ),
    executor: Optional[str] = typer.Option(
        None, "--executor", help="serial | pool | ray. Default: serial; pool when --workers > 1; ray with --address."
    ),
    address: Optional[str] = typer.Option(
        None, "--address", help="Ray cluster address (e.g. ray://head:10001 or auto); default: a local Ray instance."
    ),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Also re-run cells stored as failed/oom/diverged."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not build the report after the sweep."),
) -> None:
    """Run a suite's cells (skipping finished ones) into a results table, then build the report."""
    from rich.console import Console

    from harness.runner import EXECUTORS, print_summary, run_sweep
    from harness.suite import SuiteError, expand_cells, find_suite, load_suite

    err = Console(stderr=True)
    if executor is None:
        executor = "ray" if address else "pool" if (workers or 1) > 1 else "serial"
    if executor not in EXECUTORS:
        err.print(f"[red]error[/]: unknown --executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
        raise typer.Exit(2)
    if address and executor != "ray":
        err.print("[red]error[/]: --address is for --executor ray")
        raise typer.Exit(2)
    notes: list[str] = []
    try:
        path = find_suite(suite or DEFAULT_SUITE)
        spec = load_suite(path)
        cells = expand_cells(spec, notes)
    except SuiteError as exc:
        err.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(2)
    for note in notes:
        err.print(note, markup=False, highlight=False)
    results_dir = out or Path("results") / spec.name
    if dry_run:
        _print_cells(spec.name, cells, results_dir)
        return
    try:
        summary = run_sweep(spec.name, cells, results_dir, executor=executor, workers=workers, address=address,
                            retry_failed=retry_failed, console=err)
    except RuntimeError as exc:  # the executor could not start (Ray missing or unreachable)
        err.print(f"[red]error[/]: {exc}", highlight=False)
        raise typer.Exit(2)
    print_summary(summary, err)
    if summary.interrupted:
        raise typer.Exit(130)
    report_ok = no_report or _build_report(results_dir, None, err)
    if summary.not_ok or not report_ok:
        raise typer.Exit(1)


@app.command()
def report(
    results: Path = typer.Argument(..., help="A results directory (results/<suite>) or a results .parquet file."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report directory. Default: reports/<suite-name>."),
) -> None:
    """Build the Markdown report from a stored results table (re-runs nothing)."""
    from rich.console import Console

    err = Console(stderr=True)
    if not results.exists() and (Path("results") / results.name).exists():
        results = Path("results") / results.name  # `harness report quickstart`
    if not results.exists():
        err.print(f"[red]error[/]: no results at {results}")
        raise typer.Exit(2)
    if not _build_report(results, out, err):
        raise typer.Exit(1)


def _build_report(results: Path, out: Optional[Path], console) -> bool:
    """Build the report; False (with a message) if it could not be built. A missing report
    package is not a failure of the sweep: the tables are the product, the report a view."""
    try:
        from harness.report import build_report
    except ImportError as exc:
        console.print(f"report not available ({exc}); the results table is written", highlight=False)
        return True
    try:
        path = build_report(results, out)
    except Exception as exc:  # the results are safe; say what broke and how to retry
        console.print(f"[red]report failed[/]: {type(exc).__name__}: {exc}\n"
                      f"the results are saved; retry with: harness report {results}", highlight=False)
        return False
    console.print(f"report: {path}", highlight=False)
    return True


def _print_cells(name: str, cells, results_dir: Path) -> None:
    """The cells as a table; settings equal in every cell go in one line above it."""
    from rich.console import Console
    from rich.table import Table

    from harness.cell import canonical_json
    from harness.store import cell_statuses

    done = cell_statuses(results_dir) if results_dir.is_dir() else {}
    rows = []
    for c in cells:
        m = c.model
        rows.append({"task": c.task, "variant": m["variant"], "layout": m["layout"], "n_layers": m["n_layers"],
                     "d_model": m["d_model"], "n_heads": m["n_heads"], "seq_len": c.seq_len, "batch": c.batch,
                     "seed": c.seed, "dtype": c.dtype, "device": c.device, "backend": c.backend,
                     "params": canonical_json(c.params), "stored": done.get(c.cell_id, "-")})
    keys = list(rows[0]) if rows else []
    varying = [k for k in keys if len({str(r[k]) for r in rows}) > 1 or k in ("variant", "layout", "seq_len")]
    fixed = [f"{k}={rows[0][k]}" for k in keys if k not in varying]
    console = Console(width=max(120, Console().width))
    console.print(f"[bold]{name}[/]: {len(cells)} cells; results: {results_dir}", highlight=False)
    if fixed:
        console.print("same in every cell: " + " ".join(fixed), highlight=False)
    table = Table()
    for col in ["#", "cell_id", *varying]:
        table.add_column(col, no_wrap=col in ("#", "cell_id", "variant", "layout"))
    for i, (c, r) in enumerate(zip(cells, rows)):
        table.add_row(str(i), c.cell_id, *(str(r[k]) for k in varying))
    console.print(table)


if __name__ == "__main__":
    app()
