"""``dvc-etl``: the command line the ops team uses.

Exit codes: 0 success; 1 the run failed; 2 bad usage or settings; 3 data-quality gate closed
(data loaded, reports not published); 4 the warehouse is busy (another writer).

This module holds the typer app and the pipeline's commands (run, report, demo, ingest-files,
backfill); ``tasks.cli_admin`` adds ``status`` and ``db``; what they share is in
``tasks.cli_common``. The simulator (top-level package ``simulator``) is a tool, not the
product: ``dvc-etl simulate`` is loaded from ``simulator.cli`` only when asked for, and
``dvc-etl demo`` runs it as a child process.
"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from typer.core import TyperGroup

from tasks import cli_admin
from tasks.cli_common import (
    EXIT_BLOCKED,
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_USAGE,
    console,
    err,
    fail,
    load_settings,
    parse_day,
    parse_range,
    progress_bars,
    quiet_env,
    require_hash_key,
    run_guarded,
    show_progress,
    start_orchestrator,
)
from tasks.cli_common import settings_error_lines as settings_error_lines  # re-exported
from tasks.cli_quarantine import quarantine_app
from tasks.clock import resolve_period

__all__ = ["EXIT_BLOCKED", "EXIT_BUSY", "EXIT_FAILED", "EXIT_USAGE", "app", "headline_lines", "main",
           "settings_error_lines"]

#: Command groups of tools outside the product, imported only when used: name -> (module, typer
#: app, help).
LAZY_GROUPS = {
    "simulate": ("simulator.cli", "simulate_app", "The built-in simulator of the provincial system."),
}


class _Commands(TyperGroup):
    """The top-level group: the product's commands, then the :data:`LAZY_GROUPS`, listed in
    ``--help`` and imported only when run or asked for help."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in LAZY_GROUPS if n not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in LAZY_GROUPS and cmd_name not in self.commands:
            module, attr, help_text = LAZY_GROUPS[cmd_name]
            try:
                sub_app = getattr(importlib.import_module(module), attr)
            except ImportError:  # pragma: no cover - the simulator ships in the same wheel
                return None
            group = typer.main.get_group(sub_app)
            group.name, group.help = cmd_name, help_text
            self.commands[cmd_name] = group
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    cls=_Commands,
    help="dvc-etl: provincial one-stop exports -> checks -> warehouse -> report tables and workbook.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            console.print(f"dvc-etl {version('dvc-etl')}", highlight=False)
        except PackageNotFoundError:  # a source tree never installed
            console.print("dvc-etl (not installed)", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the installed version and exit.")] = False,
) -> None:
    """Options of ``dvc-etl`` itself (the app's help is its description)."""


#: The demo period: the first half of 2024, as in the 2024 report, under the calendar cut.
DEMO_PERIOD, DEMO_CUT = "2024-H1", "calendar"
DEMO_START, DEMO_END = resolve_period(DEMO_PERIOD, DEMO_CUT)  # 2024-01-01 .. 2024-06-30
#: Where `dvc-etl demo` (`make run`) writes unless told otherwise: never the configured warehouse
#: or reports folder (DVC_WAREHOUSE_URL, DVC_REPORTS_DIR).
DEMO_WAREHOUSE_URL, DEMO_REPORTS_DIR = "duckdb:///demo/dvc.duckdb", Path("demo/reports")
#: The alert channels the demo switches off (an empty value disables each one).
DEMO_QUIET_CHANNELS = {"DVC_ALERT_WEBHOOK_URL": "", "DVC_SMTP_HOST": "", "DVC_ALERT_EMAIL_TO": ""}


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
    quiet_env(quiet)
    settings = load_settings()
    if not settings.source_url:
        fail("DVC_SOURCE_URL is not set: point it at the provincial API (or run `dvc-etl demo`)", EXIT_USAGE)
    require_hash_key(settings)
    s, u = parse_day(since, "--since"), parse_day(until, "--until")
    server = start_orchestrator()  # its process starts while this one imports the run's modules
    from tasks.gx_host import start as start_gx_host

    start_gx_host()  # GX is imported in its worker process while this one imports the flow's modules
    from flows.nightly import nightly

    if server is not None:
        server.join()
    with progress_bars(show_progress(quiet)):
        summary = run_guarded(
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
    quiet_env(quiet)
    period_cut = period_label = None
    if period is not None:
        if from_ is not None or to is not None:
            fail("--period and --from/--to exclude each other: give one or the other", EXIT_USAGE)
        settings = load_settings()
        from tasks.clock import PeriodError

        try:
            p = resolve_period(period, settings.period_cut)
        except PeriodError as exc:
            fail(f"--period: {exc}", EXIT_USAGE)
        a, b, period_cut, period_label = p.start, p.end, p.cut, p.label
    elif from_ is None or to is None:
        fail("give --period P (2024-06, 2024-Q2, 2024-H1, 2024) or both --from and --to (YYYY-MM-DD)", EXIT_USAGE)
    else:
        a, b = parse_range(from_, to)
        load_settings()
    require_hash_key(load_settings())
    from flows.nightly import report as report_flow

    out = run_guarded(report_flow, a, b, period_cut=period_cut, period_label=period_label)
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
    quiet_env(quiet)
    load_settings()  # a bad setting stops here, before the simulator starts
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
        load_settings()
        console.print(f"[bold]Simulator[/] of the provincial system at {url} ({dossiers} dossiers, seed {seed})")
        from flows.nightly import nightly

        with progress_bars(show_progress(quiet)), demo_hash_key_allowed():
            summary = run_guarded(nightly, full_refresh=True, periods=[demo_period.dates],
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
    from flows.steps import headline_indicators

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
    quiet_env(quiet)
    from rich.markup import escape

    from tasks import pipeline, runs
    from tasks.inbox import ingest_file
    from tasks.source_files import quote_name
    from tasks.warehouse import WarehouseBusy, open_warehouse, upgrade, writer_lock

    settings = load_settings()
    require_hash_key(settings)
    engine = open_warehouse(settings)
    upgrade(engine)
    run_id = pipeline.new_run_id("files")
    failed = 0
    try:
        with writer_lock(engine, holder=run_id):
            runs.start_run(engine, run_id, "ingest-files", settings.source_name)
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
            runs.finish_run(engine, run_id, "failed" if failed else "success", None)
    except WarehouseBusy as exc:
        fail(str(exc), EXIT_BUSY)
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
    quiet_env(quiet)
    a, b = parse_range(from_, to)
    require_hash_key(load_settings())
    from flows.ops import backfill as backfill_flow

    with progress_bars(show_progress(quiet)):
        out = run_guarded(backfill_flow, a, b, concurrency=concurrency, publish=publish)
    console.print(f"backfill {out['backfill_id']}: {len(out['ran'])} partition(s) run, "
                  f"{len(out['skipped'])} skipped (already done), {len(out['published'])} period(s) published")


# commands of other modules, after the pipeline's (in this order in --help); such a module builds on
# tasks.cli_common, never on this module (no import cycle)
cli_admin.register(app)  # status, db ...
app.add_typer(quarantine_app, name="quarantine")


def main() -> None:
    from flows import RunIdFilter
    from tasks.scrub import install_log_scrubber

    install_log_scrubber()  # no log line shows a URL's password (scheme://user:password@)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(run_id)s] %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RunIdFilter())
    for noisy in ("httpx", "urllib3", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    app()


if __name__ == "__main__":
    main()
