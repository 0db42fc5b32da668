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
#: Settings whose values never appear in an error message.
_SECRET_SETTINGS = frozenset({"source_token", "smtp_password", "hash_key"})


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

    err.print(f"[bold red]error:[/] {escape(message)}")  # a bad value may hold [brackets]
    raise typer.Exit(code)


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
    from tasks.source_api import SourceError
    from tasks.warehouse import WarehouseBusy, WarehouseError

    try:
        return fn(*args, **kwargs)
    except WarehouseBusy as exc:
        _fail(str(exc), EXIT_BUSY)
    except (WarehouseError, SourceError) as exc:
        _fail(str(exc), EXIT_FAILED)
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
    from flows.nightly import report as report_flow

    out = _run_guarded(report_flow, a, b, period_cut=period_cut, period_label=period_label)
    _print_publication(out)


@app.command()
def demo(
    dossiers: Annotated[int, typer.Option(help="Dossiers the simulator generates.")] = 30000,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 42,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Start the built-in simulator on a free loopback port, run the nightly flow into the
    configured warehouse (embedded DuckDB by default), publish the demo period (2024-H1, calendar
    cut, as in the 2024 report) and write the workbook; stop the simulator."""
    _quiet_env(quiet)
    _load_settings()  # a bad setting stops here, before the simulator starts
    demo_period = resolve_period(DEMO_PERIOD, DEMO_CUT)
    token = "sim-token"
    proc, url = start_simulator_process(seed=seed, dossiers=dossiers, token=token,
                                        start=DEMO_START, end=date(2024, 12, 31))
    try:
        os.environ["DVC_SOURCE_URL"] = url
        os.environ["DVC_SOURCE_TOKEN"] = token
        os.environ.setdefault("DVC_OFFICE_NAME", "UBND huyện Tuy Phước")  # the 2024 report's office
        from tasks.settings import get_settings

        get_settings.cache_clear()
        _load_settings()
        console.print(f"[bold]Simulator[/] of the provincial system at {url} ({dossiers} dossiers, seed {seed})")
        from flows.nightly import nightly

        with _progress_bars(_show_progress(quiet)):
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
    """Parse, check and load the clerk's Excel/CSV exports (files stay where they are)."""
    _quiet_env(quiet)
    from tasks import pipeline
    from tasks.inbox import ingest_file
    from tasks.warehouse import WarehouseBusy, open_warehouse, upgrade, writer_lock

    settings = _load_settings()
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
                    err.print(f"[red]{path}[/]: {o.message}")
                else:
                    console.print(f"{path}: {o.status} {o.entity or ''} read {o.rows_read:,} = loaded "
                                  f"{o.rows_loaded:,} + quarantined {o.rows_quarantined:,}"
                                  + (f"; unknown columns: {', '.join(o.unknown_columns)}" if o.unknown_columns else ""))
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


@db_app.command("grant-analyst")
def db_grant_analyst(
    role: Annotated[str, typer.Argument(help="PostgreSQL role to give read access to mart (created if missing).")],
    password: Annotated[str | None, typer.Option(help="Password when the role is created (LOGIN).")] = None,
) -> None:
    """PostgreSQL: give ROLE read access to mart and the non-personal columns of core, nothing else."""
    from tasks.warehouse import WarehouseError, grant_analyst, open_warehouse, upgrade

    settings = _load_settings()
    try:
        engine = open_warehouse(settings)
        upgrade(engine)
        grant_analyst(engine, role, password=password)
    except WarehouseError as exc:
        _fail(str(exc), EXIT_USAGE)
    console.print(f"role {role} can read mart.* and core (without applicant keys); raw and dq stay closed")


def _mount_simulator() -> None:
    try:
        from tasks.cli_simulate import simulate_app
    except ImportError:  # pragma: no cover - the simulator ships with the package
        return
    app.add_typer(simulate_app, name="simulate", help="The built-in simulator of the provincial system.")


_mount_simulator()


def main() -> None:
    from flows import RunIdFilter

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(run_id)s] %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RunIdFilter())
    for noisy in ("httpx", "urllib3", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    app()


if __name__ == "__main__":
    main()
