"""The other scheduled flows: monthly report, reference sync, inbox processing, backfill, and the
weekly per-unit quarantine lists.

Thin wiring over ``tasks.pipeline`` / ``tasks.inbox`` / ``tasks.quarantine``, in the lifecycle
every writing flow shares (``flows.lifecycle``); see ``prefect.yaml`` for their schedules. Runs
that need a look end in a named state (``flows.lifecycle.named_state``): the inbox ``Skipped``
(warehouse busy) or ``FilesRejected`` (files moved to ``failed/``), a monthly report of the other
period cut ``Skipped``.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows import CURRENT_RUN_ID, current_progress
from flows.lifecycle import (
    FILES_REJECTED,
    SKIPPED,
    alert_on_failure,
    lock_holder,
    named_state,
    run_settings,
    run_writer_lock,
    send_alerts,
    tracked_run,
)
from flows.steps import publish_task
from tasks import pipeline
from tasks.clock import check_cut, closed_month, months, now_local, resolve_period
from tasks.runs import RunResult, backfill_id, done_partitions
from tasks.settings import Settings
from tasks.warehouse import WarehouseBusy, dialect_name, open_warehouse, upgrade


@flow(name="dvc-monthly-report", on_failure=[alert_on_failure], on_crashed=[alert_on_failure])
def monthly_report(
    month: str | None = None, settings_overrides: dict[str, Any] | None = None, only_for_cut: str | None = None,
) -> dict[str, Any]:
    """Publish the month just closed under ``DVC_PERIOD_CUT`` (``tasks.clock.closed_month``: the
    previous calendar month, or under ``decree-09`` the month whose 14th has passed), or ``month``
    (``2024-06``, or any period form of ``dvc-etl report --period``) resolved under it, with its
    workbook; the publication is named by the period's label and cut.

    ``only_for_cut`` is the cut a deployment's schedule serves (prefect.yaml: ``monthly-report`` on
    the 1st for ``calendar``, ``monthly-report-decree-09`` on the 15th for ``decree-09``): when
    ``DVC_PERIOD_CUT`` is another cut the run publishes nothing and says so."""
    settings = run_settings(settings_overrides)
    cut = settings.period_cut
    if only_for_cut is not None and check_cut(only_for_cut) != cut:
        message = (f"DVC_PERIOD_CUT is {cut}; this schedule serves {only_for_cut}: nothing published "
                   f"(the {cut} schedule publishes)")
        get_run_logger().info(message)
        return named_state(SKIPPED, message, {"skipped": True, "period_cut": cut, "message": message})
    period = resolve_period(month, cut) if month else closed_month(now_local(), cut)
    with tracked_run(settings, "monthly-report", "monthly") as run:
        out = publish_task(settings, run.run_id, period.dates, period.cut, period.label)
        run.published = True
    return out


@flow(name="dvc-reference-sync", on_failure=[alert_on_failure], on_crashed=[alert_on_failure])
def reference_sync(settings_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Weekly: the unit and procedure catalogues and the working-day calendar."""
    from tasks.calendar import calendar_span, load_calendar
    from tasks.source_api import SourceClient

    settings = run_settings(settings_overrides)
    with tracked_run(settings, "reference-sync", "reference") as run:
        days = load_calendar(run.engine, *calendar_span(), settings.reference_dir)
        with SourceClient.from_settings(settings) as client:
            res = pipeline.sync_catalogues(run.engine, client, settings, run.run_id)
    return {"calendar_days": days, **{k: asdict(v) for k, v in res.items()}}


@flow(name="dvc-inbox", on_failure=[alert_on_failure], on_crashed=[alert_on_failure])
def inbox(settings_overrides: dict[str, Any] | None = None, wait_if_busy: bool = False) -> list[dict[str, Any]]:
    """Load every Excel/CSV export waiting in DVC_INBOX_DIR (processed/ and failed/ afterwards).

    When another run holds the warehouse's writer lock (a long backfill, the nightly), the run
    does not wait: it logs one line naming that run, leaves every file where it is and ends
    ``Skipped``; the next scheduled run (30 minutes later) takes them. ``wait_if_busy`` (a manual
    run): wait up to DVC_LOCK_WAIT_SECONDS like the other flows instead. A run that moved files
    to ``failed/`` ends ``FilesRejected`` (the alert names them)."""
    from dataclasses import replace

    from tasks.inbox import inbox_files, process_inbox
    from tasks.source_files import quote_name

    settings = run_settings(settings_overrides)
    logger = get_run_logger()
    try:
        with tracked_run(settings, "inbox", "inbox", logger, wait_for_lock=wait_if_busy) as run:
            run_id = run.run_id
            outcomes = process_inbox(run.engine, settings, run_id)
            # names with newlines or control characters are quoted in the run's message and the alert
            failed = [replace(o, path=quote_name(o.path)) for o in outcomes if o.status == "failed"]
            if failed:
                run.status, run.message = "failed", "; ".join(f"{o.path}: {o.message}" for o in failed)
    except WarehouseBusy:
        if wait_if_busy:
            raise
        engine = open_warehouse(settings)
        try:
            holder = lock_holder(engine)
        finally:
            engine.dispose()
        waiting = len(inbox_files(Path(settings.inbox_dir)))
        message = (f"warehouse busy with {f'run {holder}' if holder else 'another run'}; files stay in the inbox "
                   f"for the next run ({waiting} waiting)")
        logger.info(message)
        return named_state(SKIPPED, message, [])
    send_alerts(RunResult(run_id, settings.source_name, failed_files=[(o.path, o.message) for o in failed]), settings)
    out = [asdict(o) for o in outcomes]
    if failed:
        names = ", ".join(quote_name(Path(o.path).name) for o in outcomes if o.status == "failed")
        return named_state(FILES_REJECTED, f"run {run_id}: {len(failed)} of {len(outcomes)} files moved to failed/: "
                           f"{names}", out)
    return out


@flow(name="dvc-quarantine-export", on_failure=[alert_on_failure], on_crashed=[alert_on_failure])
def quarantine_export(settings_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Weekly: the open quarantine rows of each unit as one ``.xlsx`` for its clerks
    (``tasks.quarantine.export_per_unit``) in ``<DVC_REPORTS_DIR>/quarantine/``: a unit's file is
    replaced, the file of a unit with no open row any more removed.

    It only reads, but on DuckDB the file admits one process: the run takes the writer lock like
    the writers, waiting up to DVC_LOCK_WAIT_SECONDS (the lists need ``dq.quarantine``, which the
    analysts' copy does not have: it holds the applicants' raw records). On PostgreSQL it reads
    beside any run, without the lock."""
    from tasks.quarantine import export_per_unit

    settings = run_settings(settings_overrides)
    logger = get_run_logger()
    run_id = pipeline.new_run_id("quarantine")
    CURRENT_RUN_ID.set(run_id)
    out_dir = Path(settings.reports_dir) / "quarantine"
    engine = open_warehouse(settings)
    lock = run_writer_lock(engine, settings, run_id, logger) if dialect_name(engine) == "duckdb" else nullcontext()
    with lock:
        try:
            upgrade(engine)
            files = export_per_unit(engine, out_dir)
        finally:
            engine.dispose()  # the DuckDB file closed before the lock is released
    logger.info("run %s: %d quarantine lists in %s%s", run_id, len(files), out_dir,
                f": {', '.join(p.name for p in files)}" if files else " (no open quarantine rows)")
    return {"run_id": run_id, "folder": str(out_dir), "files": [str(p) for p in files]}


@task(name="backfill-partition", cache_policy=NO_CACHE)
def backfill_partition_task(
    settings: Settings, run_id: str, bid: str, part: tuple[date, date], progress: pipeline.ProgressFn | None = None,
) -> dict[str, Any]:
    from tasks.source_api import SourceClient

    CURRENT_RUN_ID.set(run_id)
    engine = open_warehouse(settings)
    with SourceClient.from_settings(settings) as client:
        results = pipeline.backfill_partition(engine, client, settings, run_id, bid, part, progress=progress)
    return {"partition": [str(part[0]), str(part[1])], "rows_loaded": sum(r.rows_loaded for r in results),
            "rows_quarantined": sum(r.rows_quarantined for r in results)}


@flow(name="dvc-backfill", task_runner=ThreadPoolTaskRunner(max_workers=4),
      on_failure=[alert_on_failure], on_crashed=[alert_on_failure])
def backfill(
    start: date, end: date, concurrency: int = 2, publish: bool = True,
    settings_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Extract and load [start, end] by calendar-month partitions (windows on NgayCapNhat), at most
    ``concurrency`` partitions at a time; completed partitions are skipped on rerun. Then publish
    each month's reports."""
    logger = get_run_logger()
    settings = run_settings(settings_overrides)
    bid = backfill_id(settings.source_name, start, end)
    parts = months(start, end, clip=True)
    progress = current_progress()
    with tracked_run(settings, "backfill", "backfill", logger) as run:
        run_id = run.run_id
        done = done_partitions(run.engine, bid)  # under the lock: another backfill may just have run
        todo = [p for p in parts if p[0] not in done]
        logger.info("run %s, backfill %s: %d partitions, %d already done, %d to run, %d at a time", run_id, bid,
                    len(parts), len(parts) - len(todo), len(todo), max(1, concurrency))
        results: list[dict[str, Any]] = []
        for i in range(0, len(todo), max(1, concurrency)):
            futures = [backfill_partition_task.submit(settings, run_id, bid, p, progress)
                       for p in todo[i : i + max(1, concurrency)]]
            results += [f.result() for f in futures]
        # one analyst copy, after the last month's publication (not one per month)
        published = [publish_task(settings, run_id, p, analyst_copy=p == parts[-1]) for p in parts] if publish else []
        run.published = bool(published)
    return {"backfill_id": bid, "skipped": [str(p[0]) for p in parts if p[0] in done], "ran": results,
            "published": published}
