"""The `harness` command line: sweep, report, variants.

Every failure ends in a short message that names the problem and what to do, never a raw
traceback (`--debug` or HARNESS_DEBUG=1 shows it). Exit codes (docs/suites.md): 0 all cells ok;
1 some cell not ok; 2 invalid suite, arguments or results directory, or another error that
stopped the command; 128 + signal when interrupted (130 Ctrl-C, 143 SIGTERM).
"""
from __future__ import annotations

import functools
import json
import os
import signal
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, TypeVar

import click
import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Hybrid linear-attention harness.",
                  pretty_exceptions_enable=False)

DEBUG_ENV = "HARNESS_DEBUG"
_DEBUG_HELP = f"Show the full traceback of an unexpected error (also: {DEBUG_ENV}=1)."
F = TypeVar("F", bound=Callable[..., Any])


def _debug_env() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _err_console():
    from rich.console import Console

    return Console(stderr=True)


def _error_text(exc: BaseException) -> str:
    """An exception that escaped a command, as one or two lines saying what to do."""
    from harness.sweep.store import ResultsError, os_error_text

    if isinstance(exc, ResultsError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot use{where}: {os_error_text(exc)}"
    return f"{type(exc).__name__}: {exc}"


def guarded(fn: F) -> F:
    """Run a command so that whatever escapes it ends in a short message and exit code 2
    (the traceback only with --debug / HARNESS_DEBUG=1); Ctrl-C and SIGTERM exit 130 / 143.
    Warnings print as one line each."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(kwargs.get("debug")) or _debug_env()
        with _short_warnings(debug), _sigterm_as_interrupt() as received:
            try:
                return fn(*args, **kwargs)
            except (typer.Exit, typer.Abort, click.exceptions.Exit, click.ClickException):
                raise  # their own message and exit code
            except KeyboardInterrupt:
                code = 128 + (received[0] if received else signal.SIGINT)
                _err_console().print(f"[yellow]interrupted[/] ({signal.Signals(code - 128).name}); nothing more "
                                     f"was done", highlight=False)
                raise typer.Exit(code)
            except Exception as exc:
                from harness.sweep.store import ResultsError

                err = _err_console()
                if debug:
                    traceback.print_exc()
                err.print(f"[red]error[/]: {_error_text(exc)}", markup=True, highlight=False)
                if not debug and not isinstance(exc, ResultsError):
                    err.print(f"(unexpected: rerun with --debug or {DEBUG_ENV}=1 for the traceback)", highlight=False)
                raise typer.Exit(2)

    return wrapper  # type: ignore[return-value]


class _short_warnings:
    """Warnings as `warning: <message>` on stderr (no source line), unless debugging."""

    def __init__(self, debug: bool):
        self.debug = debug

    def __enter__(self) -> None:
        self._old = warnings.showwarning
        if not self.debug:
            def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
                print(f"warning: {message}", file=sys.stderr)

            warnings.showwarning = show

    def __exit__(self, *exc: Any) -> None:
        warnings.showwarning = self._old


class _sigterm_as_interrupt:
    """SIGTERM raises KeyboardInterrupt in the main thread, as Ctrl-C does; the signal received
    is appended to the list `with` returns. (run_sweep installs its own handler while it runs.)"""

    def __enter__(self) -> list[int]:
        self.received: list[int] = []
        self._old = None
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. called from a test's thread)
            pass
        return self.received

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.received:
            self.received.append(signum)
            raise KeyboardInterrupt(f"signal {signum}")

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def _fail(message: str, code: int = 2) -> NoReturn:
    """End the command with `error: <message>` on stderr and exit `code` (2: bad input)."""
    _err_console().print(f"[red]error[/]: {message}", highlight=False)
    raise typer.Exit(code)


def _path_option(value: Optional[str], option: str, default: str = "") -> Optional[Path]:
    """A path option given as text: "" (an unset shell variable) is an error, not the current
    directory, which is what Path("") would silently mean."""
    if value is None:
        return None
    if not value.strip():
        fix = f"; omit it for the default ({default})" if default else ""
        _fail(f"{option} is empty: give a path{fix}")
    return Path(value).expanduser()


@app.command()
@guarded
def variants(as_json: bool = typer.Option(False, "--json", help="Print the registry as JSON."),
             debug: bool = typer.Option(False, "--debug", help=_DEBUG_HELP)) -> None:
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
@guarded
def sweep(
    suite: Optional[str] = typer.Argument(
        None, help="Suite file, or a name in suites/ (e.g. quickstart). Default: suites/quickstart.yaml."
    ),
    out: Optional[str] = typer.Option(None, "--out", help="Results directory. Default: results/<suite-name>."),
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
    debug: bool = typer.Option(False, "--debug", help=_DEBUG_HELP),
) -> None:
    """Run a suite's cells (skipping finished ones) into a results table, then build the report."""
    from harness.sweep import SuiteError, expand_cells, find_suite, load_suite
    from harness.sweep.driver import run_sweep
    from harness.sweep.executors import EXECUTORS
    from harness.sweep.progress import print_summary
    from harness.sweep.store import ResultsError

    err = _err_console()
    out_dir = _path_option(out, "--out", "results/<suite-name>")
    if executor is None:
        executor = "ray" if address else "pool" if (workers or 1) > 1 else "serial"
    if executor not in EXECUTORS:
        _fail(f"unknown --executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if address and executor != "ray":
        _fail("--address is for --executor ray")
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
    results_dir = out_dir or Path("results") / spec.name
    if results_dir.exists() and not results_dir.is_dir():
        _fail(f"--out {results_dir} is a file, not a directory; choose a directory (it is created if missing)")
    if dry_run:
        _print_cells(spec.name, cells, results_dir)
        return
    try:
        summary = run_sweep(spec.name, cells, results_dir, executor=executor, workers=workers, address=address,
                            retry_failed=retry_failed, console=err)
    except (ResultsError, RuntimeError) as exc:  # unusable results directory, or the executor could
        _fail(str(exc))  # not start (Ray missing or unreachable): nothing was run
    print_summary(summary, err)
    if summary.interrupted or summary.error:
        raise typer.Exit(summary.exit_code)
    report_code = 0 if no_report else _build_report(results_dir, None, err)
    raise typer.Exit(summary.exit_code or report_code)


@app.command()
@guarded
def report(
    results: str = typer.Argument(..., help="A results directory (results/<suite>) or a results .parquet file."),
    out: Optional[str] = typer.Option(None, "--out", help="Report directory. Default: reports/<suite-name>."),
    debug: bool = typer.Option(False, "--debug", help=_DEBUG_HELP),
) -> None:
    """Build the Markdown report from a stored results table (re-runs nothing, changes no result)."""
    err = _err_console()
    results_path = _path_option(results, "the results path")
    out_dir = _path_option(out, "--out", "reports/<suite-name>")
    assert results_path is not None
    if not results_path.exists() and (Path("results") / results_path.name).exists():
        results_path = Path("results") / results_path.name  # `harness report quickstart`
    if not results_path.exists():
        _fail(f"no results at {results_path}")
    code = _build_report(results_path, out_dir, err)
    if code:
        raise typer.Exit(code)


def _build_report(results: Path, out: Optional[Path], console) -> int:
    """Build the report; 0, or (with a message) 2 if there is no usable table at `results`, 1 if
    the report failed on one. A missing report package is not a failure of the sweep: the tables
    are the product, the report a view."""
    from harness.sweep.store import ResultsError, load_results

    try:
        from harness.report import build_report
    except ImportError as exc:
        console.print(f"report not available ({exc}); the results table is written", highlight=False)
        return 0
    try:
        with warnings.catch_warnings():  # build_report reads it again and warns then
            warnings.simplefilter("ignore")
            n_rows = len(load_results(results))
    except (FileNotFoundError, ResultsError) as exc:
        console.print(f"[red]error[/]: no report: {exc}", highlight=False)
        return 2
    except ValueError:  # a hand-made table with extra columns: the report reads it as it is
        n_rows = -1
    if n_rows == 0:
        console.print(f"[red]error[/]: no report: the table at {results} has no rows (no cell has run)", highlight=False)
        return 2
    try:
        path = build_report(results, out)
    except Exception as exc:  # the results are safe; say what broke and how to retry
        console.print(f"[red]report failed[/]: {type(exc).__name__}: {exc}\n"
                      f"the results are saved; retry with: harness report {results}", highlight=False)
        return 1
    console.print(f"report: {path}", highlight=False)
    return 0


def _print_cells(name: str, cells, results_dir: Path) -> None:
    """The cells as a table; settings equal in every cell go in one line above it."""
    from rich.console import Console
    from rich.table import Table

    from harness.sweep.cell import canonical_json
    from harness.sweep.store import cell_statuses

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
