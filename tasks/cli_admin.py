"""``dvc-etl status`` and ``dvc-etl db ...``: the warehouse's state and its administration
(migrations, the personal-data retention, the analyst role). Registered on the app by
``tasks.cli``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from tasks.cli_common import EXIT_BUSY, EXIT_FAILED, EXIT_USAGE, console, fail, load_settings

db_app = typer.Typer(help="Warehouse administration.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``status`` and the ``db`` group to the ``dvc-etl`` app."""
    app.command()(status)
    app.add_typer(db_app, name="db")


def status() -> None:
    """Last runs, watermarks, open quarantine counts and the last publication per period."""
    import pandas as pd
    import sqlalchemy as sa

    from tasks.warehouse import WarehouseError, open_warehouse, upgrade

    settings = load_settings()
    try:
        engine = open_warehouse(settings)
        upgrade(engine)
    except WarehouseError as exc:
        fail(str(exc))
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


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending schema migrations (never drops data)."""
    from tasks.warehouse import WarehouseError, open_warehouse, upgrade

    settings = load_settings()
    try:
        done = upgrade(open_warehouse(settings))
    except WarehouseError as exc:
        fail(str(exc))
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

    settings = load_settings()
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
        fail(str(exc), EXIT_BUSY)
    except WarehouseError as exc:
        fail(str(exc))
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

    from tasks.grants import GrantRefused, grant_analyst
    from tasks.warehouse import WarehouseError, open_warehouse

    if password is not None:  # never echo it back
        fail("--password is no longer accepted (a password on the command line is visible in `ps` and shell "
              "history): use the prompt, --password-stdin or DVC_ANALYST_PASSWORD", EXIT_USAGE)
    settings = load_settings()
    from_env = settings.analyst_password.get_secret_value() if settings.analyst_password is not None else None
    given = [name for name, on in (("--password-stdin", password_stdin), ("--no-password", no_password),
                                   ("DVC_ANALYST_PASSWORD", from_env is not None)) if on]
    if len(given) > 1:
        fail(f"give one source of the password, not {' and '.join(given)}", EXIT_USAGE)
    secret: str | None
    if password_stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
        if not secret:
            fail("--password-stdin: the first line of standard input is empty", EXIT_USAGE)
    elif from_env is not None:
        secret = from_env
        if not secret:
            fail("DVC_ANALYST_PASSWORD is set but empty", EXIT_USAGE)
    elif no_password:
        secret = None
    elif sys.stdin.isatty():
        secret = typer.prompt(f"Password for role {role!r}", hide_input=True, confirmation_prompt=True)
    else:
        fail("no password for the role: run at a terminal to be prompted, or give --password-stdin, "
              "DVC_ANALYST_PASSWORD or --no-password", EXIT_USAGE)
    engine = None
    try:
        engine = open_warehouse(settings)
        grant_analyst(engine, role, password=secret)
    except GrantRefused as exc:
        fail(str(exc), EXIT_USAGE)
    except WarehouseError as exc:
        fail(str(exc), EXIT_FAILED)
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback quoting a statement or the password
        line = (str(exc).strip().splitlines() or [""])[0]
        if secret:
            line = line.replace(secret, "***")
        fail(f"grant-analyst {role!r} failed: {type(exc).__name__}: {line}", EXIT_FAILED)
    finally:
        if engine is not None:
            engine.dispose()
    console.print(f"role {escape(repr(role))} can read mart.* and core (without applicant keys); "
                  "raw and dq stay closed")
