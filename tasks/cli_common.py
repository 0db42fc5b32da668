"""What every ``dvc-etl`` command module shares: the exit codes, the consoles, settings loaded
with one line per bad setting, errors as one scrubbed line, dates of options, progress bars.

``tasks.cli`` holds the typer app and the pipeline's commands; other command modules
(``tasks.cli_admin``...) build on this module and are registered on that app.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import typer
from rich.console import Console

EXIT_FAILED, EXIT_USAGE, EXIT_BLOCKED, EXIT_BUSY = 1, 2, 3, 4

console = Console(stderr=False, width=None if sys.stdout.isatty() else 120)
# errors are never hard-wrapped: one line per message, whole in logs and greppable (a wrapped path
# once split "being written" across two lines)
err = Console(stderr=True, soft_wrap=True)

#: Settings whose values never appear in an error message.
SECRET_SETTINGS = frozenset({"source_token", "smtp_password", "hash_key", "analyst_password"})


def quiet_env(quiet: bool) -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    if quiet:
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
        logging.getLogger().setLevel(logging.WARNING)


def show_progress(quiet: bool) -> bool:
    """Progress bars only for a person watching: not in --quiet mode, not when stdout is a file,
    a pipe or cron's mail."""
    return not quiet and console.is_terminal


@contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """While a flow runs in this block, show one bar per extraction (records read / the source's
    total) and per load (records loaded or quarantined / read), when ``enabled``."""
    from flows import reporting_progress

    if not enabled:
        yield
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)
    ids: dict[str, Any] = {}
    lock = threading.Lock()

    def update(label: str, done: int, total: int | None) -> None:
        with lock:
            if label not in ids:
                ids[label] = bars.add_task(label, total=total)
            bars.update(ids[label], completed=done, total=total)

    with bars, reporting_progress(update):
        yield


def fail(message: str, code: int = EXIT_FAILED) -> None:
    from rich.markup import escape

    from tasks.scrub import scrub_text

    message = scrub_text(message)  # a DSN's password (scheme://user:password@) never reaches the terminal
    err.print(f"[bold red]error:[/] {escape(message)}")  # a bad value may hold [brackets]
    raise typer.Exit(code)


def require_hash_key(settings: Any) -> None:
    """Exit 2, one line naming DVC_HASH_KEY, when the key is the development default, empty or
    shorter than 32 bytes (commands that write applicants' data: run, backfill, ingest-files, report)."""
    from tasks.settings import hash_key_problem

    problem = hash_key_problem(settings)
    if problem:
        fail(problem, EXIT_USAGE)


def settings_error_lines(exc: Exception) -> list[str]:
    """A settings validation error as one line per bad setting, named as the environment names
    it: ``DVC_PERIOD_CUT: Input should be 'calendar' or 'decree-09' (got 'monthly')``. Values of
    secret settings are never shown."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return [str(exc)]
    lines = []
    for e in exc.errors():
        loc = [str(x) for x in e.get("loc", ())]
        msg = str(e.get("msg", "invalid value")).removeprefix("Value error, ")
        if not loc:
            lines.append(msg)
            continue
        name = loc[0]
        shown = "" if name in SECRET_SETTINGS or "input" not in e else f" (got {e['input']!r})"
        lines.append(f"DVC_{name.upper()}: {msg}{shown}")
    return lines or [str(exc)]


def load_settings() -> Any:
    """The settings, or exit 2 with one line per bad setting (the settings error path)."""
    from tasks.settings import get_settings

    try:
        return get_settings()
    except ValueError as exc:  # pydantic's ValidationError, or a Prefect Secret block that cannot be read
        fail("bad settings: " + "; ".join(settings_error_lines(exc)), EXIT_USAGE)
    return None


def parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"{option} must be a date YYYY-MM-DD, got {value!r}", EXIT_USAGE)
    return None


def parse_range(from_: str, to: str) -> tuple[date, date]:
    """--from/--to as dates, the end not before the start (else exit 2 with a message)."""
    a, b = parse_day(from_, "--from"), parse_day(to, "--to")
    assert a and b
    if b < a:
        fail(f"--to {b} is before --from {a}", EXIT_USAGE)
    return a, b


def start_orchestrator() -> threading.Thread | None:
    """Start Prefect's temporary API server now, in a thread, when the flow would start one (no
    ``PREFECT_API_URL``, the ephemeral server allowed); returns the thread (None: nothing to
    start). Its process starts on the other core while this one imports what the run needs; the
    caller joins the thread before calling the flow. Prefect would otherwise start it only when
    the flow is called, and wait for it there. A server that fails to start here is left to
    Prefect, which tries again when the flow is called and reports the error."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    from prefect.server.api.server import SubprocessASGIServer

    def start() -> None:
        try:
            SubprocessASGIServer().start()
        except Exception:  # noqa: BLE001 - Prefect starts it again in the flow, and says why it fails
            logging.getLogger(__name__).debug("Prefect's temporary server did not start early", exc_info=True)

    thread = threading.Thread(target=start, name="prefect-server-start", daemon=True)
    thread.start()
    return thread


def run_guarded(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a flow and turn known failures into clear messages and exit codes."""
    from sqlalchemy.exc import SQLAlchemyError

    from tasks.source_api import SourceError
    from tasks.warehouse import WarehouseBusy, WarehouseError

    try:
        return fn(*args, **kwargs)
    except WarehouseBusy as exc:
        fail(str(exc), EXIT_BUSY)
    except (WarehouseError, SourceError) as exc:
        fail(str(exc), EXIT_FAILED)
    except SQLAlchemyError as exc:  # the warehouse unreachable, a missing database: one line, no traceback
        orig = getattr(exc, "orig", None) or exc
        fail(f"warehouse error: {type(orig).__name__}: {(str(orig).strip().splitlines() or [''])[0]}",
              EXIT_FAILED)
    return None
