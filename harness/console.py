"""How the command line talks to the user: every failure as a short message (the traceback only
with --debug or HARNESS_DEBUG=1), warnings as one line each, SIGTERM handled like Ctrl-C, and the
exit codes of docs/suites.md (0 ok, 1 some cell not ok, 2 invalid input or another error that
stopped the command, 128 + signal when interrupted: 130 Ctrl-C, 143 SIGTERM), and a closed pipe
(`| head -1`) ending a command quietly with 141, as Unix tools do; and the tables it prints
(registries, suites, a dry run's cells)."""
from __future__ import annotations

import functools
import os
import select
import signal
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

#: exceptions that carry their own message and exit code. Only typer's API: typer 0.29 vendors
#: click (typer._click) and no longer installs it, so `import click` fails on a base install.
#: ClickException is the base of typer.BadParameter in every typer (0.29's TyperException).
_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_OWN_EXIT = (typer.Exit, typer.Abort, _CLICK_EXCEPTION)

DEBUG_ENV = "HARNESS_DEBUG"
_DEBUG_HELP = f"Show the full traceback of an unexpected error (also: {DEBUG_ENV}=1)."


def _debug_env() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def err_console():
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
            except _OWN_EXIT:
                raise  # their own message and exit code
            except KeyboardInterrupt:
                code = 128 + (received[0] if received else signal.SIGINT)
                err_console().print(f"[yellow]interrupted[/] ({signal.Signals(code - 128).name}); nothing more "
                                     f"was done", highlight=False)
                raise typer.Exit(code) from None
            except Exception as exc:
                from harness.sweep.store import ResultsError

                err = err_console()
                if debug:
                    traceback.print_exc()
                err.print(f"[red]error[/]: {_error_text(exc)}", markup=True, highlight=False)
                if not debug and not isinstance(exc, ResultsError):
                    err.print(f"(unexpected: rerun with --debug or {DEBUG_ENV}=1 for the traceback)", highlight=False)
                raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


class _short_warnings:
    """Warnings as `warning: <message>` on stderr (no source line), unless debugging."""

    def __init__(self, debug: bool):
        self.debug = debug

    def __enter__(self) -> None:
        self._old = warnings.showwarning
        if not self.debug:
            def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                     line: Any = None) -> None:
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


def fail(message: str, code: int = 2) -> NoReturn:
    """End the command with `error: <message>` on stderr and exit `code` (2: bad input)."""
    err_console().print(f"[red]error[/]: {message}", highlight=False)
    raise typer.Exit(code)


def path_option(value: str | None, option: str, default: str = "") -> Path | None:
    """A path option given as text: "" (an unset shell variable) is an error, not the current
    directory, which is what Path("") would silently mean."""
    if value is None:
        return None
    if not value.strip():
        fix = f"; omit it for the default ({default})" if default else ""
        fail(f"{option} is empty: give a path{fix}")
    return Path(value).expanduser()


#: the exit status of a command whose output was cut off (`harness variants | head -1`), as a
#: Unix tool killed by SIGPIPE returns it: 128 + 13
EXIT_BROKEN_PIPE = 128 + 13


def _pipe_closed(fd: int) -> bool:
    """Whether `fd` is a pipe whose reading end is closed (poll says POLLERR then)."""
    try:
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no poll (Windows), or a closed fd
        return False


def _file_id(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def quiet_broken_pipe(fn: F) -> F:
    """End a command whose standard output was closed by its reader (`| head -1`) quietly with
    EXIT_BROKEN_PIPE, as Unix tools do, instead of an "unexpected" error. Sits inside `guarded`.
    A BrokenPipeError of anything else (a worker's pipe) is not this: it goes on to `guarded`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        stdout_before = _file_id(1)
        try:
            try:
                return fn(*args, **kwargs)
            finally:
                if sys.stdout is not None:  # inside the try: a buffered write fails here, not at exit
                    sys.stdout.flush()
        except BrokenPipeError:
            if not _pipe_closed(1):
                raise
            _silence_stdout()
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        except SystemExit as exc:
            # rich, on a broken pipe, points stdout at os.devnull and raises SystemExit(1)
            if exc.code == 1 and stdout_before != _file_id(1) and _file_id(1) == _devnull_id():
                raise typer.Exit(EXIT_BROKEN_PIPE) from None
            raise

    return wrapper  # type: ignore[return-value]


def _devnull_id() -> tuple[int, int] | None:
    try:
        st = os.stat(os.devnull)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _silence_stdout() -> None:
    """Point stdout at os.devnull, so that Python's flush at exit does not fail again (and print
    'Exception ignored ... BrokenPipeError')."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def print_table(title: str, cols: tuple[str, ...], rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in cols:
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*("-" if r[c] is None else str(r[c]) for c in cols))
    Console().print(table)


def print_cells(name: str, cells, results_dir: Path) -> None:
    """The cells as a table; settings equal in every cell go in one line above it."""
    from rich.console import Console
    from rich.table import Table

    from harness.sweep.cell import canonical_json
    from harness.sweep.store import cell_statuses

    done = cell_statuses(results_dir) if results_dir.is_dir() else {}
    rows = []
    for c in cells:
        m = c.model
        rows.append({"task": c.task, "variant": m["variant"], "layout": m["layout"],
                     "placement": m.get("placement", "interleave"), "block": m.get("block", "standard"),
                     "n_layers": m["n_layers"],
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
