"""The `harness` command line: sweep, report, variants, suites, cache (commands only; how errors,
warnings and signals reach the user is harness.console).

Exit codes (docs/suites.md): 0 all cells ok; 1 some cell not ok; 2 invalid suite, arguments or
results directory, or another error that stopped the command (a report that cannot be built
after a sweep is said, but keeps the cells' code); 128 + signal when interrupted (130 Ctrl-C,
143 SIGTERM; 141 when the reader of the output went away, `| head -1`).
"""
from __future__ import annotations

import json
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from harness.console import (
    _DEBUG_HELP,
    _debug_env,
    err_console,
    fail,
    guarded,
    path_option,
    print_cells,
    print_table,
    quiet_broken_pipe,
)

app = typer.Typer(no_args_is_help=True, help="Hybrid linear-attention harness.", pretty_exceptions_enable=False,
                  rich_markup_mode=None)
cache_app = typer.Typer(no_args_is_help=True, help="The cache of generated data (docs/suites.md, 'The data cache').",
                        rich_markup_mode=None)
app.add_typer(cache_app, name="cache")

DEFAULT_SUITE = "quickstart"


def _version(value: bool) -> None:
    if value:
        from harness import __version__

        typer.echo(f"hybrid-attention-harness {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """Hybrid linear-attention harness."""


@app.command()
@guarded
@quiet_broken_pipe
def variants(as_json: bool = typer.Option(False, "--json", help="Print the registry as JSON."),
             debug: bool = typer.Option(False, "--debug", help=_DEBUG_HELP)) -> None:
    """List the registered token mixers (built-in and plug-in) with their metadata."""
    from harness.registry import VARIANTS

    rows = [cls.metadata() for _, cls in VARIANTS.items()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    print_table("Registered variants", ("name", "display_name", "generation", "state_kind", "gating",
                                        "delta_rule", "flops_coeff"), rows)


@app.command()
@guarded
@quiet_broken_pipe
def suites(as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
           debug: bool = typer.Option(False, "--debug", help=_DEBUG_HELP)) -> None:
    """List the suites `harness sweep NAME` finds: yours in ./suites first, then those shipped."""
    from harness.sweep import SuiteError, expand_cells, load_suite
    from harness.sweep.reading import list_suites

    rows = []
    for name, path, shipped in list_suites():
        try:
            suite = load_suite(path)
            cells, description = str(len(expand_cells(suite, []))), " ".join(suite.description.split())
        except SuiteError as exc:  # e.g. checkpoints not in the offline cache: say the first reason
            lines = [ln.strip() for ln in str(exc).splitlines()]
            reasons = [ln for ln, raw in zip(lines, str(exc).splitlines()) if raw.startswith("      ")] or lines[1:2]
            cells, description = "not ready", " ".join(reasons[:1]) or lines[0]
        rows.append({"name": name, "cells": cells, "where": "shipped" if shipped else str(path.parent),
                     "description": description, "path": str(path)})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    print_table("Suites (harness sweep NAME)", ("name", "cells", "where", "description"), rows)


@app.command()
@guarded
@quiet_broken_pipe
def sweep(
    suite: str | None = typer.Argument(
        None, help="Suite file, or a suite name (`harness suites` lists them). Default: quickstart."
    ),
    out: str | None = typer.Option(None, "--out", help="Results directory. Default: results/<suite-name>."),
    sets: list[str] | None = typer.Option(
        None, "--set", metavar="KEY=VALUE",
        help="Override a suite setting (repeatable; YAML value; part of the cells' identity), e.g. "
             "--set model.d_model=128, --set params.steps=100, --set axes.seq_len=[512,1024]."),
    device: str | None = typer.Option(None, "--device", help="Run every cell on this device (cpu, cuda, cuda:1, "
                                                                 "mps); as --set axes.device=DEVICE."),
    dtype: str | None = typer.Option(None, "--dtype", help="float32, bfloat16, float16 or float64; as --set "
                                                               "axes.dtype=DTYPE."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the suite and list its cells; run nothing."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Worker processes (pool) or local Ray CPUs. >1 implies --executor pool."
    ),
    executor: str | None = typer.Option(
        None, "--executor", help="serial | pool | ray. Default: serial; pool when --workers > 1; ray with --address."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster address (e.g. ray://head:10001 or auto); default: a local Ray instance."
    ),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Also re-run cells stored as failed/oom/diverged."),
    shard: str | None = typer.Option(
        None, "--shard", metavar="I/N", help="Run only share I (0-based) of N of the suite's cells, e.g. one per "
                                             "machine on a shared file system (each cell runs once: claims)."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not build the report after the sweep."),
    debug: bool = typer.Option(False, "--debug", help=_DEBUG_HELP),
) -> None:
    """Run a suite's cells (skipping finished ones) into a results table, then build its report
    beside the table (<results>/report/report.md)."""
    err = err_console()
    out_dir = path_option(out, "--out", "results/<suite-name>")
    executor = _choose_executor(executor, workers, address)
    shard_of = _parse_shard(shard)
    spec, cells, said = _suite_cells(suite or DEFAULT_SUITE, sets or (), device, dtype, err)
    results_dir = out_dir or Path("results") / spec.name
    if results_dir.exists() and not results_dir.is_dir():
        fail(f"--out {results_dir} is a file, not a directory; choose a directory (it is created if missing)")
    if dry_run and spec.placement_search is not None:  # the rounds the stored results allow
        cells = _search_cells(spec, results_dir, err) or cells
    unavailable = _unavailable_devices(cells) if not address else []  # a cluster's devices are not ours
    if dry_run:
        print_cells(spec.name, cells, results_dir)
        for problem in unavailable:
            err.print(f"warning: {problem} (a run would be refused)", highlight=False)
        return
    if unavailable:
        fail("; ".join(unavailable) + ". Nothing was run")
    summary = _run_suite(spec, cells, results_dir, err, said, executor=executor, workers=workers, address=address,
                         retry_failed=retry_failed, shard=shard_of)
    if summary.interrupted or summary.error:
        raise typer.Exit(summary.exit_code)
    if not no_report:  # a report that cannot be built is said, but the exit code is the cells'
        _build_report(results_dir, None, err, after_sweep=True)
    raise typer.Exit(summary.exit_code)


def _choose_executor(executor: str | None, workers: int | None, address: str | None) -> str:
    """--executor, or what --workers / --address imply; refuses an unknown one or a mismatch."""
    from harness.sweep.executors import EXECUTORS

    if executor is None:
        executor = "ray" if address else "pool" if (workers or 1) > 1 else "serial"
    if executor not in EXECUTORS:
        fail(f"unknown --executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if address and executor != "ray":
        fail("--address is for --executor ray")
    return executor


def _run_cells(name: str, cells, results_dir: Path, err: Any, **options: Any):
    """Run the cells (harness.sweep.driver.run_sweep) and print the sweep's summary. A results
    directory that cannot be used, or an executor that cannot start (Ray missing or unreachable),
    exits 2 with nothing run."""
    from harness.sweep.driver import run_sweep
    from harness.sweep.progress import print_summary
    from harness.sweep.store import ResultsError

    try:
        summary = run_sweep(name, cells, results_dir, console=err, **options)
    except (ResultsError, RuntimeError) as exc:
        fail(str(exc))
    print_summary(summary, err)
    return summary


def _suite_cells(suite: str, sets: Sequence[str], device: str | None, dtype: str | None, err: Any):
    """(the validated suite, its cells, its notes), the notes printed; every problem of the suite, exit 2."""
    from harness.sweep import SuiteError, expand_cells, find_suite, load_suite

    notes: list[str] = []
    try:
        spec = load_suite(find_suite(suite), sets, device, dtype)
        cells = expand_cells(spec, notes)
    except SuiteError as exc:
        err.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(2) from None
    for note in notes:
        err.print(note, markup=False, highlight=False)
    return spec, cells, notes


def _run_suite(spec, cells, results_dir: Path, err: Any, said: Sequence[str] = (), **options: Any):
    """Run the suite's cells; a placement search runs round by round, each round built from the
    stored results of the one before (harness.sweep.search_run)."""
    if spec.placement_search is None:
        return _run_cells(spec.name, cells, results_dir, err, **options)
    from harness.sweep.search_run import run_search

    return run_search(spec, results_dir, lambda todo: _run_cells(spec.name, todo, results_dir, err, **options),
                      lambda note: err.print(note, markup=False, highlight=False), said)


def _search_cells(spec, results_dir: Path, err: Any) -> list:
    """A placement search's cells given what `results_dir` stores, its notes printed ([] when it
    stores nothing: round 1 and the policies, already listed)."""
    from harness.sweep.search_run import stored_cells

    notes: list[str] = []
    cells = stored_cells(spec, results_dir, notes)
    for note in notes:
        err.print(note, markup=False, highlight=False)
    return cells


@app.command()
@guarded
@quiet_broken_pipe
def report(
    results: str = typer.Argument(..., help="A results directory (results/<suite>) or a results .parquet file."),
    out: str | None = typer.Option(None, "--out", help="Report directory. Default: beside the table, "
                                                          "<results directory>/report."),
    debug: bool = typer.Option(False, "--debug", help=_DEBUG_HELP),
) -> None:
    """Build the Markdown report from a stored results table (re-runs nothing, changes no result)."""
    err = err_console()
    results_path = path_option(results, "the results path")
    out_dir = path_option(out, "--out", "<results directory>/report")
    assert results_path is not None
    if not results_path.exists() and (Path("results") / results_path.name).exists():
        results_path = Path("results") / results_path.name  # `harness report quickstart`
    if not results_path.exists():
        fail(f"no results at {results_path}")
    code = _build_report(results_path, out_dir, err, debug=debug)
    if code:
        raise typer.Exit(code)


@app.command()
@guarded
@quiet_broken_pipe
def recommend(
    results: str = typer.Argument(..., help="A results directory (results/<suite>) or a results .parquet file."),
    seq_len: int = typer.Option(..., "--seq-len", help="The context length the model must serve."),
    max_cache_bytes: float | None = typer.Option(None, "--max-cache-bytes", help="Budget: inference cache "
                                                    "(state + KV) at --seq-len, in bytes."),
    max_decode_ms: float | None = typer.Option(None, "--max-decode-ms", help="Budget: measured decode step "
                                                  "at a context of --seq-len tokens, in milliseconds."),
    min_score: float | None = typer.Option(None, "--min-score", help="Accuracy floor: a minimum recall / "
                                              "lm-eval accuracy, or a maximum loss when the table's score is a loss."),
    objective: str = typer.Option("accuracy", "--objective", help="accuracy (the most accurate that fits), "
                                  "cache or latency (the cheapest that meets the floor)."),
    accuracy_len: str | None = typer.Option(None, "--accuracy-len", help="Rank by accuracy measured at this "
                                               "length instead of --seq-len, or 'all' (every length, averaged)."),
    debug: bool = typer.Option(False, "--debug", help=_DEBUG_HELP),
) -> None:
    """Which hybrid to use: the best (variant, layout, placement) of a results table under a budget
    and an accuracy floor, with the rows behind the answer; exit 1 when the table cannot answer."""
    from harness.report.recommend import Constraints
    from harness.report.recommend import recommend as ask
    from harness.sweep.store import ResultsError, load_results

    results_path = path_option(results, "the results path")
    assert results_path is not None
    if accuracy_len not in (None, "all") and not str(accuracy_len).isdigit():
        fail(f"--accuracy-len {accuracy_len!r}: expected a length (e.g. 256) or 'all'")
    try:
        c = Constraints(seq_len=seq_len, max_cache_bytes=max_cache_bytes,
                        max_decode_s=None if max_decode_ms is None else max_decode_ms / 1e3, min_score=min_score,
                        objective=objective,  # type: ignore[arg-type]
                        accuracy_len=int(accuracy_len) if accuracy_len not in (None, "all") else accuracy_len)
    except ValueError as exc:
        fail(str(exc))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            df = load_results(results_path)
    except (FileNotFoundError, ResultsError, ValueError) as exc:
        fail(f"cannot read the results at {results_path}: {exc}")
    try:
        answer = ask(df, c)
    except ValueError as exc:  # a floor the table's score cannot reach (--min-score 2 for a recall)
        fail(str(exc))
    # rows that could not be read (a damaged cell file without a copy) may change the answer:
    # the answer says so, as the report does
    answer.warnings[:0] = [f"{w.message} (the answer is from the rows that could be read)" for w in caught]
    typer.echo(answer.markdown())
    if not answer.answered:
        raise typer.Exit(1)


@cache_app.command("info")
@guarded
@quiet_broken_pipe
def cache_info(debug: bool = typer.Option(False, "--debug", help=_DEBUG_HELP)) -> None:
    """Where the generated-data cache is ($HARNESS_CACHE_DIR), its files and size."""
    from harness.data.cache import ENV_VAR
    from harness.data.cache import cache_info as info

    where, n, size = info()
    typer.echo(f"{where}: {n} file(s), {size / 2**20:.1f} MiB (set {ENV_VAR} to move it; `harness cache clear` "
               f"empties it)")


@cache_app.command("clear")
@guarded
@quiet_broken_pipe
def cache_clear(debug: bool = typer.Option(False, "--debug", help=_DEBUG_HELP)) -> None:
    """Delete the cached generated data (only the cache's own files); it is regenerated when needed."""
    from harness.data.cache import cache_dir, clear_cache

    n, size = clear_cache()
    typer.echo(f"removed {n} file(s), {size / 2**20:.1f} MiB from {cache_dir()}")


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        fail(f"--shard {text!r}: expected I/N, e.g. --shard 0/4")
    if count < 1 or not 0 <= index < count:
        fail(f"--shard {text!r}: I must be in 0..N-1 (e.g. 0/4 to 3/4)")
    return index, count


def _unavailable_devices(cells) -> list[str]:
    from harness.runtime.devices import device_problem

    return [p for p in (device_problem(d) for d in sorted({c.device for c in cells})) if p]


def _build_report(results: Path, out: Path | None, console, after_sweep: bool = False,
                  debug: bool = False) -> int:
    """Build the report; 0, or 2 with a message when it cannot be built (no usable table at
    `results`, a report folder that cannot be written, a failure of the report itself). After a
    sweep (`after_sweep`) the message is a warning and the caller keeps the cells' exit code: the
    tables are the product, the report a view. A missing report package is not a failure."""
    from harness.sweep.store import ResultsError, load_results, os_error_text

    try:
        from harness.report import build_report
    except ImportError as exc:
        console.print(f"report not available ({exc}); the results table is written", highlight=False)
        return 0
    label = "[yellow]warning[/]" if after_sweep else "[red]error[/]"
    try:
        with warnings.catch_warnings():  # build_report reads it again and warns then
            warnings.simplefilter("ignore")
            n_rows = len(load_results(results))
    except (FileNotFoundError, ResultsError, ValueError) as exc:
        console.print(f"{label}: no report: {exc}", highlight=False)
        return 2
    if n_rows == 0:
        console.print(f"{label}: no report: the table at {results} has no rows (no cell has run)", highlight=False)
        return 2
    skip = "; or pass --no-report to skip it" if after_sweep else ""
    try:
        path = build_report(results, out)
    except OSError as exc:  # where the report goes cannot be written: retrying there fails again
        where = out or _default_report_dir(results)
        console.print(f"{label}: cannot write the report in {where}: {os_error_text(exc)}"
                      + (f" ({exc.filename})" if exc.filename and str(exc.filename) != str(where) else "")
                      + f". The results are saved; build the report somewhere writable: harness report {results} "
                        f"--out DIR{skip}", highlight=False)
        return 2
    except Exception as exc:  # the results are safe; say what broke
        if debug or _debug_env():
            traceback.print_exc()
        console.print(f"{label}: the report failed: {type(exc).__name__}: {exc}. The results are saved; "
                      f"`harness report {results} --debug` shows the traceback{skip}", highlight=False)
        return 2
    console.print(f"report: {path}", highlight=False)
    return 0


def _default_report_dir(results: Path) -> Path:
    try:
        from harness.report import default_report_dir

        return Path(default_report_dir(results))
    except Exception:  # only for a message
        return results / "report"


if __name__ == "__main__":
    app()
