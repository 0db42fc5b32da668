"""``dvc-etl``: the command line the ops team uses.

Exit codes: 0 success; 1 the run failed; 2 bad usage or settings; 3 data-quality gate closed
(data loaded, reports not published); 4 the warehouse is busy (another writer).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tasks.clock import resolve_period

EXIT_FAILED, EXIT_USAGE, EXIT_BLOCKED, EXIT_BUSY = 1, 2, 3, 4

app = typer.Typer(
    help="dvc-etl: provincial one-stop exports -> checks -> warehouse -> report tables and workbook.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Warehouse administration.", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console(stderr=False, width=None if sys.stdout.isatty() else 120)
# errors are never hard-wrapped: one line per message, whole in logs and greppable (a wrapped path
# once split "being written" across two lines)
err = Console(stderr=True, soft_wrap=True)

#: The demo period: the first half of 2024, as in the 2024 report, under the calendar cut.
DEMO_PERIOD, DEMO_CUT = "2024-H1", "calendar"
DEMO_START, DEMO_END = resolve_period(DEMO_PERIOD, DEMO_CUT)  # 2024-01-01 .. 2024-06-30
#: Where `dvc-etl demo` (`make run`) writes unless told otherwise: never the configured warehouse
#: or reports folder (DVC_WAREHOUSE_URL, DVC_REPORTS_DIR).
DEMO_WAREHOUSE_URL, DEMO_REPORTS_DIR = "duckdb:///demo/dvc.duckdb", Path("demo/reports")
#: The alert channels the demo switches off (an empty value disables each one).
DEMO_QUIET_CHANNELS = {"DVC_ALERT_WEBHOOK_URL": "", "DVC_SMTP_HOST": "", "DVC_ALERT_EMAIL_TO": ""}
#: Settings whose values never appear in an error message.
_SECRET_SETTINGS = frozenset({"source_token", "smtp_password", "hash_key", "analyst_password"})


def _quiet_env(quiet: bool) -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    if quiet:
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
        logging.getLogger().setLevel(logging.WARNING)


def _show_progress(quiet: bool) -> bool:
    """Progress bars only for a person watching: not in --quiet mode, not when stdout is a file,
    a pipe or cron's mail."""
    return not quiet and console.is_terminal


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
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


def _fail(message: str, code: int = EXIT_FAILED) -> None:
    from rich.markup import escape

    from tasks.alerts import scrub_text

    message = scrub_text(message)  # a DSN's password (scheme://user:password@) never reaches the terminal
    err.print(f"[bold red]error:[/] {escape(message)}")  # a bad value may hold [brackets]
    raise typer.Exit(code)


def _require_hash_key(settings: Any) -> None:
    """Exit 2, one line naming DVC_HASH_KEY, when the key is the development default, empty or
    shorter than 32 bytes (commands that write applicants' data: run, backfill, ingest-files, report)."""
    from tasks.settings import hash_key_problem

    problem = hash_key_problem(settings)
    if problem:
        _fail(problem, EXIT_USAGE)


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
        shown = "" if name in _SECRET_SETTINGS or "input" not in e else f" (got {e['input']!r})"
        lines.append(f"DVC_{name.upper()}: {msg}{shown}")
    return lines or [str(exc)]


def _load_settings() -> Any:
    """The settings, or exit 2 with one line per bad setting (the settings error path)."""
    from tasks.settings import get_settings

    try:
        return get_settings()
    except ValueError as exc:  # pydantic's ValidationError, or a Prefect Secret block that cannot be read
        _fail("bad settings: " + "; ".join(settings_error_lines(exc)), EXIT_USAGE)
    return None


def _parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        _fail(f"{option} must be a date YYYY-MM-DD, got {value!r}", EXIT_USAGE)
    return None


def _parse_range(from_: str, to: str) -> tuple[date, date]:
    """--from/--to as dates, the end not before the start (else exit 2 with a message)."""
    a, b = _parse_day(from_, "--from"), _parse_day(to, "--to")
    assert a and b
    if b < a:
        _fail(f"--to {b} is before --from {a}", EXIT_USAGE)
    return a, b


def _run_guarded(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a flow and turn known failures into clear messages and exit codes."""
    from sqlalchemy.exc import SQLAlchemyError

    from tasks.source_api import SourceError
    from tasks.warehouse import WarehouseBusy, WarehouseError

    try:
        return fn(*args, **kwargs)
    except WarehouseBusy as exc:
        _fail(str(exc), EXIT_BUSY)
    except (WarehouseError, SourceError) as exc:
        _fail(str(exc), EXIT_FAILED)
    except SQLAlchemyError as exc:  # the warehouse unreachable, a missing database: one line, no traceback
        orig = getattr(exc, "orig", None) or exc
        _fail(f"warehouse error: {type(orig).__name__}: {(str(orig).strip().splitlines() or [''])[0]}",
              EXIT_FAILED)
    return None


# ----------------------------------------------------------------------------------------------
# run / report / demo
# ----------------------------------------------------------------------------------------------
@app.command()
def run(
    full_refresh: Annotated[bool, typer.Option("--full-refresh", help="Re-extract everything, ignoring the watermark.")] = False,
    since: Annotated[str | None, typer.Option(help="Extract records changed on or after this date (YYYY-MM-DD).")] = None,
    until: Annotated[str | None, typer.Option(help="Extract records changed before this date (YYYY-MM-DD).")] = None,
    publish: Annotated[bool, typer.Option(help="Publish the report tables after loading.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and the final line (for cron).")] = False,
) -> None:
    """Run the nightly flow against the source in DVC_SOURCE_URL."""
    _quiet_env(quiet)
    settings = _load_settings()
    if not settings.source_url:
        _fail("DVC_SOURCE_URL is not set: point it at the provincial API (or run `dvc-etl demo`)", EXIT_USAGE)
    _require_hash_key(settings)
    s, u = _parse_day(since, "--since"), _parse_day(until, "--until")
    from flows.nightly import nightly

    with _progress_bars(_show_progress(quiet)):
        summary = _run_guarded(
            nightly,
            full_refresh=full_refresh,
            since=datetime.combine(s, datetime.min.time()) if s else None,
            until=datetime.combine(u, datetime.min.time()) if u else None,
            publish=publish,
        )
    _print_summary(summary, quiet=quiet)
    if summary.get("blocked"):
        raise typer.Exit(EXIT_BLOCKED)


@app.command()
def report(
    period: Annotated[str | None, typer.Option(
        "--period", help="The period: 2024-06 (month), 2024-Q2 (quarter), 2024-H1 or 2024-H2 (half), 2024 (year), "
        "cut as DVC_PERIOD_CUT says (calendar, or decree-09: 15th..14th).")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="First day of a period (YYYY-MM-DD), with --to.")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Last day of a period (YYYY-MM-DD), with --from.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Publish the report tables (mart.rpt_*) and the workbook for a period: --period P, or any
    range --from D --to D."""
    _quiet_env(quiet)
    period_cut = period_label = None
    if period is not None:
        if from_ is not None or to is not None:
            _fail("--period and --from/--to exclude each other: give one or the other", EXIT_USAGE)
        settings = _load_settings()
        from tasks.clock import PeriodError

        try:
            p = resolve_period(period, settings.period_cut)
        except PeriodError as exc:
            _fail(f"--period: {exc}", EXIT_USAGE)
        a, b, period_cut, period_label = p.start, p.end, p.cut, p.label
    elif from_ is None or to is None:
        _fail("give --period P (2024-06, 2024-Q2, 2024-H1, 2024) or both --from and --to (YYYY-MM-DD)", EXIT_USAGE)
    else:
        a, b = _parse_range(from_, to)
        _load_settings()
    _require_hash_key(_load_settings())
    from flows.nightly import report as report_flow

    out = _run_guarded(report_flow, a, b, period_cut=period_cut, period_label=period_label)
    _print_publication(out)


@app.command()
def demo(
    dossiers: Annotated[int, typer.Option(help="Dossiers the simulator generates.")] = 30000,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 42,
    warehouse_url: Annotated[str, typer.Option(
        "--warehouse-url", help="The demo's own warehouse (never DVC_WAREHOUSE_URL).")] = DEMO_WAREHOUSE_URL,
    reports_dir: Annotated[Path, typer.Option(
        "--reports-dir", help="The demo's own reports folder (never DVC_REPORTS_DIR).")] = DEMO_REPORTS_DIR,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Start the built-in simulator on a free loopback port, run the nightly flow into the demo's
    own warehouse (demo/dvc.duckdb), publish the demo period (2024-H1, calendar cut, as in the
    2024 report) and write the workbook into demo/reports; stop the simulator. The configured
    warehouse, reports folder and alert channels (DVC_WAREHOUSE_URL, DVC_REPORTS_DIR, webhook,
    e-mail) are never used: only --warehouse-url / --reports-dir point the demo elsewhere."""
    _quiet_env(quiet)
    _load_settings()  # a bad setting stops here, before the simulator starts
    demo_period = resolve_period(DEMO_PERIOD, DEMO_CUT)
    token = "sim-token"
    # the demo's own places, and no alert channel: set in the environment, which wins over .env
    os.environ.update(DEMO_QUIET_CHANNELS)
    os.environ["DVC_WAREHOUSE_URL"] = warehouse_url
    os.environ["DVC_REPORTS_DIR"] = str(reports_dir)
    proc, url = start_simulator_process(seed=seed, dossiers=dossiers, token=token,
                                        start=DEMO_START, end=date(2024, 12, 31))
    try:
        os.environ["DVC_SOURCE_URL"] = url
        os.environ["DVC_SOURCE_TOKEN"] = token
        os.environ.setdefault("DVC_OFFICE_NAME", "UBND huyện Tuy Phước")  # the 2024 report's office
        from tasks.settings import DEMO_HASH_KEY, demo_hash_key_allowed, get_settings

        os.environ["DVC_HASH_KEY"] = DEMO_HASH_KEY  # simulated applicants: the demo's own (public) key
        get_settings.cache_clear()
        _load_settings()
        console.print(f"[bold]Simulator[/] of the provincial system at {url} ({dossiers} dossiers, seed {seed})")
        from flows.nightly import nightly

        with _progress_bars(_show_progress(quiet)), demo_hash_key_allowed():
            summary = _run_guarded(nightly, full_refresh=True, periods=[demo_period.dates],
                                   period_cut=demo_period.cut, period_labels=[demo_period.label])
        _print_summary(summary, quiet=quiet)
        if summary.get("blocked"):
            raise typer.Exit(EXIT_BLOCKED)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        console.print("Simulator stopped.")


def start_simulator_process(
    *, seed: int, dossiers: int, token: str, start: date, end: date, extra: list[str] | None = None,
    timeout: float = 120.0,
) -> tuple[subprocess.Popen, str]:
    """Start ``dvc-etl simulate serve --port 0`` as a child process; returns (process, base URL)."""
    cmd = [sys.executable, "-m", "tasks.cli", "simulate", "serve", "--port", "0", "--seed", str(seed),
           "--dossiers", str(dossiers), "--token", token, "--start", str(start), "--end", str(end), *(extra or [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"the simulator exited: {proc.stderr.read() if proc.stderr else ''}")
            continue
        if "listening on" in line:
            return proc, line.strip().rsplit(" ", 1)[-1]
    proc.kill()
    raise RuntimeError("the simulator did not start in time")


def _print_summary(summary: dict[str, Any] | None, *, quiet: bool = False) -> None:
    if not summary:
        return
    ents = summary.get("entities", {})
    if not quiet:
        t = Table(title=f"Run {summary.get('run_id')} (source {summary.get('source')})")
        for col in ("entity", "read", "loaded", "quarantined", "warnings", "duplicates", "watermark"):
            t.add_column(col, justify="right" if col not in ("entity", "watermark") else "left")
        for name, e in ents.items():
            t.add_row(name, f"{e['rows_read']:,}", f"{e['rows_loaded']:,}", f"{e['rows_quarantined']:,}",
                      f"{e['warnings']:,}", f"{e['rows_duplicate']:,}", str(e.get("watermark") or ""))
        console.print(t)
        for pub in summary.get("published", []):
            _print_publication(pub)
    read = sum(e["rows_read"] for e in ents.values())
    loaded = sum(e["rows_loaded"] for e in ents.values())
    q = sum(e["rows_quarantined"] for e in ents.values())
    state = "NOT published (critical checks failed)" if summary.get("blocked") else (
        f"{len(summary.get('published', []))} period(s) published")
    console.print(f"rows read {read:,} = loaded {loaded:,} + quarantined {q:,}; {state}")


def _pct(v: float | None) -> str:
    """A rate as the workbook shows it, two decimals: 99,93%; None (zero denominator) as N/A."""
    return "N/A" if v is None else f"{v * 100:.2f}%".replace(".", ",")


def headline_lines(h: dict[str, Any]) -> list[str]:
    """The summary lines of a publication's headline: the sentence, one line per 766 indicator with
    its system and paid-only rate, received and resolved."""
    from flows.nightly import headline_indicators

    lines = [h.get("sentence", "")]
    indicators = headline_indicators(h)
    names = [f"{i['code_766']} {i['label']}".strip() for i in indicators]
    width = max(map(len, names), default=0)
    lines += [f"{name:<{width}}  system {_pct(i['system']):>7}, paid-only {_pct(i['paid_only']):>7}"
              for name, i in zip(names, indicators, strict=True)]
    lines.append(f"received {h.get('received', 0):,}, resolved {h.get('resolved', 0):,}")
    return lines


def _print_publication(pub: dict[str, Any] | None) -> None:
    if not pub:
        return
    from tasks.reports import headline
    from tasks.settings import get_settings
    from tasks.warehouse import open_warehouse

    named = f" {pub['period_label']} ({pub.get('period_cut') or 'calendar'} cut)" if pub.get("period_label") else ""
    console.print(f"[bold]Published[/]{named} {pub['period'][0]} .. {pub['period'][1]} (as of {pub['as_of']}): "
                  f"workbook {pub['workbook']}")
    try:
        h = headline(open_warehouse(get_settings()), pub["publication_id"])
        for line in headline_lines(h):
            console.print("  " + line, markup=False, highlight=False)
    except Exception as exc:  # noqa: BLE001 - the summary must not fail the run
        console.print(f"  (headline unavailable: {exc})")


@app.command("ingest-files")
def ingest_files(
    paths: Annotated[list[Path], typer.Argument(help="Excel (.xlsx) or CSV exports to load.", exists=True)],
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Parse, check and load the clerk's Excel/CSV exports (files stay where they are).

    Each file is parsed in a child process under the DVC_FILE_* limits; a file that cannot be read
    is reported with its reason and the others still load. Exit code 1 when any file failed."""
    _quiet_env(quiet)
    from rich.markup import escape

    from tasks import pipeline
    from tasks.inbox import ingest_file
    from tasks.source_files import quote_name
    from tasks.warehouse import WarehouseBusy, open_warehouse, upgrade, writer_lock

    settings = _load_settings()
    _require_hash_key(settings)
    engine = open_warehouse(settings)
    upgrade(engine)
    run_id = pipeline.new_run_id("files")
    failed = 0
    try:
        with writer_lock(engine, holder=run_id):
            pipeline.start_run(engine, run_id, "ingest-files", settings.source_name)
            for path in paths:
                o = ingest_file(engine, path, settings=settings, run_id=run_id)
                if o.status == "failed":
                    failed += 1
                    err.print(f"[red]{escape(o.message)}[/]")  # the message names the file, quoted
                else:
                    console.print(f"{escape(quote_name(path))}: {o.status} {o.entity or ''} read {o.rows_read:,} = loaded "
                                  f"{o.rows_loaded:,} + quarantined {o.rows_quarantined:,}"
                                  + (f"; unknown columns: {', '.join(o.unknown_columns)}" if o.unknown_columns else ""),
                                  soft_wrap=True)  # one line per file, however long its path (logs, grep)
            pipeline.finish_run(engine, run_id, "failed" if failed else "success", None)
    except WarehouseBusy as exc:
        _fail(str(exc), EXIT_BUSY)
    if failed:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def backfill(
    from_: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD).")],
    to: Annotated[str, typer.Option("--to", help="Last day (YYYY-MM-DD).")],
    concurrency: Annotated[int, typer.Option(min=1, max=8, help="Month partitions extracted at once.")] = 2,
    publish: Annotated[bool, typer.Option(help="Publish each month's reports afterwards.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Extract and load the days --from..--to by month partitions; a rerun skips completed ones."""
    _quiet_env(quiet)
    a, b = _parse_range(from_, to)
    _require_hash_key(_load_settings())
    from flows.ops import backfill as backfill_flow

    with _progress_bars(_show_progress(quiet)):
        out = _run_guarded(backfill_flow, a, b, concurrency=concurrency, publish=publish)
    console.print(f"backfill {out['backfill_id']}: {len(out['ran'])} partition(s) run, "
                  f"{len(out['skipped'])} skipped (already done), {len(out['published'])} period(s) published")


@app.command()
def status() -> None:
    """Last runs, watermarks, open quarantine counts and the last publication per period."""
    import pandas as pd
    import sqlalchemy as sa

    from tasks.warehouse import WarehouseError, open_warehouse, upgrade

    settings = _load_settings()
    try:
        engine = open_warehouse(settings)
        upgrade(engine)
    except WarehouseError as exc:
        _fail(str(exc))
    queries = {
        "Last runs": "SELECT run_id, flow, source, status, started_at, finished_at, published FROM dq.runs "
                     "ORDER BY started_at DESC LIMIT 10",
        "Watermarks": "SELECT source, entity, watermark, updated_at FROM dq.watermarks ORDER BY source, entity",
        "Open quarantine": "SELECT source, entity, rule, count(*) AS rows FROM dq.quarantine WHERE resolved_at IS NULL "
                           "GROUP BY source, entity, rule ORDER BY rows DESC",
        "Current publications": "SELECT period_label, period_cut, period_start, period_end, as_of, published_at, "
                                "workbook_path FROM mart.publications WHERE is_current "
                                "ORDER BY period_start DESC, period_end DESC LIMIT 24",
    }
    with engine.connect() as c:
        for title, sql in queries.items():
            frame = pd.read_sql(sa.text(sql), c)
            t = Table(title=title)
            for col in frame.columns:
                t.add_column(str(col))
            for row in frame.itertuples(index=False):
                t.add_row(*["" if pd.isna(v) else str(v) for v in row])
            if frame.empty:
                t.add_row(*(["(none)"] + [""] * (len(frame.columns) - 1)))
            console.print(t)


# ----------------------------------------------------------------------------------------------
# db
# ----------------------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending schema migrations (never drops data)."""
    from tasks.warehouse import WarehouseError, open_warehouse, upgrade

    settings = _load_settings()
    try:
        done = upgrade(open_warehouse(settings))
    except WarehouseError as exc:
        _fail(str(exc))
    console.print(f"applied: {', '.join(done)}" if done else "warehouse is up to date")


@db_app.command("purge")
def db_purge(
    raw_days: Annotated[int | None, typer.Option(
        "--raw-days", min=0, help="Override DVC_RAW_RETENTION_DAYS for this purge.")] = None,
    quarantine_days: Annotated[int | None, typer.Option(
        "--quarantine-days", min=0, help="Override DVC_QUARANTINE_RAW_RETENTION_DAYS for this purge.")] = None,
) -> None:
    """Apply the personal-data retention now (the nightly run does it at its end): clear the raw
    record of resolved quarantine rows and of those older than DVC_QUARANTINE_RAW_RETENTION_DAYS;
    delete raw versions older than DVC_RAW_RETENTION_DAYS, except the latest version of each key.
    Report tables are not touched. Waits for the writer lock like a run (exit 4 when busy)."""
    from tasks import pipeline
    from tasks.retention import purge
    from tasks.warehouse import WarehouseBusy, WarehouseError, open_warehouse, upgrade, writer_lock

    settings = _load_settings()
    run_id = pipeline.new_run_id("purge")
    try:
        engine = open_warehouse(settings)
        upgrade(engine)
        with writer_lock(engine, wait_seconds=settings.lock_wait_seconds, holder=run_id):
            res = purge(engine, raw_retention_days=settings.raw_retention_days if raw_days is None else raw_days,
                        quarantine_raw_retention_days=settings.quarantine_raw_retention_days
                        if quarantine_days is None else quarantine_days)
        engine.dispose()
    except WarehouseBusy as exc:
        _fail(str(exc), EXIT_BUSY)
    except WarehouseError as exc:
        _fail(str(exc))
    console.print(res.line(), markup=False, highlight=False)


@db_app.command("grant-analyst")
def db_grant_analyst(
    role: Annotated[str, typer.Argument(help="PostgreSQL role to give read access to mart (created LOGIN if missing).")],
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the role's password from the first line of standard input.")] = False,
    no_password: Annotated[bool, typer.Option(
        "--no-password", help="Set no password (the role logs in by peer, certificate or Kerberos as "
        "pg_hba.conf says); an existing role's password stays as it is.")] = False,
    password: Annotated[str | None, typer.Option("--password", hidden=True, help="Removed.")] = None,
) -> None:
    """PostgreSQL: give ROLE read access to mart and the non-personal columns of core, nothing else.

    The password comes from DVC_ANALYST_PASSWORD, --password-stdin, or a hidden prompt (typed twice)
    when run at a terminal; never from the command line. Run by the database administrator after
    `dvc-etl db upgrade`; refuses the pipeline's own role and any role that owns objects or has
    SUPERUSER, CREATEROLE or CREATEDB (exit code 2)."""
    from rich.markup import escape

    from tasks.warehouse import GrantRefused, WarehouseError, grant_analyst, open_warehouse

    if password is not None:  # never echo it back
        _fail("--password is no longer accepted (a password on the command line is visible in `ps` and shell "
              "history): use the prompt, --password-stdin or DVC_ANALYST_PASSWORD", EXIT_USAGE)
    settings = _load_settings()
    from_env = settings.analyst_password.get_secret_value() if settings.analyst_password is not None else None
    given = [name for name, on in (("--password-stdin", password_stdin), ("--no-password", no_password),
                                   ("DVC_ANALYST_PASSWORD", from_env is not None)) if on]
    if len(given) > 1:
        _fail(f"give one source of the password, not {' and '.join(given)}", EXIT_USAGE)
    secret: str | None
    if password_stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
        if not secret:
            _fail("--password-stdin: the first line of standard input is empty", EXIT_USAGE)
    elif from_env is not None:
        secret = from_env
        if not secret:
            _fail("DVC_ANALYST_PASSWORD is set but empty", EXIT_USAGE)
    elif no_password:
        secret = None
    elif sys.stdin.isatty():
        secret = typer.prompt(f"Password for role {role!r}", hide_input=True, confirmation_prompt=True)
    else:
        _fail("no password for the role: run at a terminal to be prompted, or give --password-stdin, "
              "DVC_ANALYST_PASSWORD or --no-password", EXIT_USAGE)
    engine = None
    try:
        engine = open_warehouse(settings)
        grant_analyst(engine, role, password=secret)
    except GrantRefused as exc:
        _fail(str(exc), EXIT_USAGE)
    except WarehouseError as exc:
        _fail(str(exc), EXIT_FAILED)
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback quoting a statement or the password
        line = (str(exc).strip().splitlines() or [""])[0]
        if secret:
            line = line.replace(secret, "***")
        _fail(f"grant-analyst {role!r} failed: {type(exc).__name__}: {line}", EXIT_FAILED)
    finally:
        if engine is not None:
            engine.dispose()
    console.print(f"role {escape(repr(role))} can read mart.* and core (without applicant keys); "
                  "raw and dq stay closed")


def _mount_simulator() -> None:
    try:
        from tasks.cli_simulate import simulate_app
    except ImportError:  # pragma: no cover - the simulator ships with the package
        return
    app.add_typer(simulate_app, name="simulate", help="The built-in simulator of the provincial system.")


_mount_simulator()


def main() -> None:
    from flows import RunIdFilter
    from tasks.alerts import install_log_scrubber

    install_log_scrubber()  # no log line shows a URL's password (scheme://user:password@)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(run_id)s] %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RunIdFilter())
    for noisy in ("httpx", "urllib3", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    app()


if __name__ == "__main__":
    main()
