"""Prefect flows: thin wiring over ``tasks.pipeline``.

- ``dvc-nightly``: catalogues -> incremental dossiers and payments -> checks -> load ->
  publish the current and previous month (or the given periods) -> workbooks -> summary.
- ``dvc-report``: publish the report tables and workbook for one period.

Retries live in the HTTP client (bounded, jittered, with a run-wide budget), not in Prefect task
retries: a retried chunk would be idempotent anyway, but the client already knows which errors
are worth retrying. Engines are created inside tasks (never passed in) and tasks use
``NO_CACHE``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows import CURRENT_RUN_ID, current_progress
from tasks import pipeline
from tasks.faults import crash_point
from tasks.settings import Settings, get_settings
from tasks.warehouse import WarehouseBusy, open_warehouse, upgrade, writer_lock

log = logging.getLogger(__name__)


def _settings(overrides: dict[str, Any] | None = None) -> Settings:
    """The settings of the environment with a deployment's ``settings_overrides`` applied
    (validated like the environment's: a typo or a bad value fails the run at once). Secrets such
    as the token belong in the worker's environment or the deployment's ``job_variables.env``,
    not in parameters, which the Prefect server stores and shows."""
    base = get_settings()
    if not overrides:
        return base
    unknown = set(overrides) - set(Settings.model_fields)
    if unknown:
        raise ValueError(f"unknown settings in settings_overrides: {', '.join(sorted(unknown))}")
    return Settings(**{**{k: getattr(base, k) for k in Settings.model_fields}, **overrides})


@contextmanager
def run_writer_lock(engine: Any, settings: Settings, run_id: str, logger: Any = None) -> Iterator[None]:
    """Hold the warehouse's writer lock for a run. When another run holds it (another source's
    nightly on the shared PostgreSQL, a backfill), wait up to ``DVC_LOCK_WAIT_SECONDS``, saying so
    in the log; past it raise :class:`WarehouseBusy` naming the setting."""
    logger = logger or log
    stack = ExitStack()
    try:
        stack.enter_context(writer_lock(engine, wait_seconds=0, holder=run_id))
    except WarehouseBusy as busy:
        wait = settings.lock_wait_seconds
        if wait <= 0:
            raise WarehouseBusy(f"{busy} (DVC_LOCK_WAIT_SECONDS=0: not waiting)") from None
        logger.warning("%s; run %s waits up to %.0f s for it (DVC_LOCK_WAIT_SECONDS)", busy, run_id, wait)
        t0 = time.monotonic()
        try:
            stack.enter_context(writer_lock(engine, wait_seconds=wait, holder=run_id))
        except WarehouseBusy as exc:
            raise WarehouseBusy(
                f"{exc}; gave up after waiting {wait:.0f} s (raise DVC_LOCK_WAIT_SECONDS to wait longer)"
            ) from None
        logger.info("run %s got the writer lock after waiting %.1f s", run_id, time.monotonic() - t0)
    with stack:
        yield


@dataclass
class TrackedRun:
    """A warehouse-writing run in progress; the body sets how it ends (default: success)."""

    engine: Any
    run_id: str
    status: str = "success"
    published: bool | None = None
    message: str = ""


@contextmanager
def tracked_run(settings: Settings, flow_name: str, prefix: str, logger: Any = None) -> Iterator[TrackedRun]:
    """One warehouse-writing run: a run id (also on every log line), the writer lock (waiting up
    to DVC_LOCK_WAIT_SECONDS), pending migrations, and its dq.runs row: 'running' at the start,
    then the status the body set, or 'failed' with the error when the body raises."""
    engine = open_warehouse(settings)
    run = TrackedRun(engine, pipeline.new_run_id(prefix))
    CURRENT_RUN_ID.set(run.run_id)
    with run_writer_lock(engine, settings, run.run_id, logger):
        upgrade(engine)
        pipeline.start_run(engine, run.run_id, flow_name, settings.source_name)
        try:
            yield run
        except BaseException as exc:
            pipeline.settle_gx(run.run_id)  # a failed run's deferred validations still finish their record
            message = f"{type(exc).__name__}: {exc}"
            if "Out of Memory Error" in message:  # DuckDB's; say which setting to change
                hint = (f"the DuckDB warehouse ran out of its memory limit (DVC_DUCKDB_MEMORY_LIMIT="
                        f"{settings.duckdb_memory_limit or 'DuckDB default'}): raise it")
                (logger or log).error("run %s: %s", run.run_id, hint)
                message = f"{hint}. {message}"
            pipeline.finish_run(engine, run.run_id, "failed", False, message)
            raise
        pipeline.finish_run(engine, run.run_id, run.status, run.published, run.message)


@task(name="sync-catalogues", cache_policy=NO_CACHE)
def sync_catalogues_task(settings: Settings, run_id: str, defer_gx: bool = False) -> dict[str, Any]:
    from tasks.source_api import SourceClient

    engine = open_warehouse(settings)
    with SourceClient.from_settings(settings) as client:
        res = pipeline.sync_catalogues(engine, client, settings, run_id, defer_gx=defer_gx)
    return {k: asdict(v) for k, v in res.items()}


@task(name="extract-load", cache_policy=NO_CACHE)
def extract_load_task(
    settings: Settings, run_id: str, entity: str, full_refresh: bool, since: datetime | None,
    until: datetime | None, progress: Any = None, defer_gx: bool = False,
) -> dict[str, Any]:
    from tasks.source_api import SourceClient

    engine = open_warehouse(settings)
    window = pipeline.extraction_window(engine, settings, entity, full_refresh=full_refresh, since=since, until=until)
    batches = pipeline.batch_windows(window, settings.batch_days)
    get_run_logger().info("run %s, %s: extracting window %s .. %s%s", run_id, entity, window[0] or "the beginning",
                          window[1] or "now", f" in {len(batches)} batches of at most {settings.batch_days} days"
                          if len(batches) > 1 else "")
    with SourceClient.from_settings(settings) as client:
        res = pipeline.extract_entity(engine, client, entity, settings=settings, run_id=run_id, window=window,
                                      progress=progress, defer_gx=defer_gx)
        out = asdict(res)
        out["http"] = client.stats.as_dict()
    return out


@task(name="publish-period", cache_policy=NO_CACHE)
def publish_task(settings: Settings, run_id: str, period: tuple[date, date]) -> dict[str, Any]:
    engine = open_warehouse(settings)
    out = pipeline.publish_period(engine, settings, period, run_id)
    pub = out["publication"]
    _publish_headline_artifact(engine, pub)
    return {"period": [str(period[0]), str(period[1])], "publication_id": pub.publication_id,
            "as_of": str(pub.as_of), "workbook": str(out.get("workbook"))}


def headline_rows(head: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline figures of a publication as table rows: system and paid-only side by side."""
    return [
        {"indicator": "Tỷ lệ hồ sơ giải quyết đúng hạn", "system": head.get("on_time_rate_system"),
         "paid_only": head.get("on_time_rate_paid_only")},
        {"indicator": "Tỷ lệ hồ sơ thanh toán trực tuyến", "system": head.get("online_payment_rate_system"),
         "paid_only": head.get("online_payment_rate_paid_only")},
        {"indicator": "Hồ sơ tiếp nhận", "system": head.get("received"), "paid_only": None},
        {"indicator": "Hồ sơ đã giải quyết", "system": head.get("resolved"), "paid_only": None},
        {"indicator": "Hồ sơ trễ hạn", "system": head.get("late"), "paid_only": None},
    ]


def _publish_headline_artifact(engine: Any, pub: Any) -> None:
    """A Prefect table artifact of the publication's headline figures (never fails the run)."""
    try:
        from prefect.artifacts import create_table_artifact

        from tasks.reports import headline

        head = headline(engine, pub)
        create_table_artifact(
            key="dvc-headline", table=headline_rows(head),
            description=f"{head.get('sentence', '')} ({pub.period_start} .. {pub.period_end}, as of {pub.as_of})",
        )
    except Exception:  # noqa: BLE001 - an artifact must not fail the publication
        log.exception("could not publish the headline artifact")


def _alert_on_failure(flow_obj: Any, flow_run: Any, state: Any) -> None:
    """Prefect state hook: a failed or crashed run alerts the ops team (never raises)."""
    try:
        from tasks.alerts import Alert, send_alert

        settings = get_settings()
        send_alert(
            Alert(
                title=f"dvc-etl run {flow_run.name} {state.name}",
                severity="failure",
                run_id=CURRENT_RUN_ID.get() or str(flow_run.id),  # dq.runs.run_id once the flow has set it
                source=settings.source_name,
                lines=[str(state.message or "")[:500], f"Prefect flow run {flow_run.id}"],
                counts={},
                docs_path=None,
            ),
            settings,
        )
    except Exception:  # noqa: BLE001 - an alert must never mask the failure
        log.exception("could not send the failure alert")


@flow(name="dvc-nightly", on_failure=[_alert_on_failure], on_crashed=[_alert_on_failure])
def nightly(
    full_refresh: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
    periods: list[tuple[date, date]] | None = None,
    publish: bool = True,
    settings_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The nightly ETL. ``since``/``until`` bound the extraction window (else: watermark minus the
    overlap .. now); ``periods`` to publish (default: the data cut's month and the month before)."""
    settings = _settings(settings_overrides)
    logger = get_run_logger()
    progress = current_progress()
    with tracked_run(settings, "nightly", "nightly", logger) as run:
        engine, run_id = run.engine, run.run_id
        logger.info("run %s: source %s, warehouse %s", run_id, settings.source_name,
                    engine.url.render_as_string(hide_password=True))
        summary: dict[str, Any] = {"run_id": run_id, "source": settings.source_name, "entities": {}}
        from tasks.calendar import calendar_span, load_calendar

        load_calendar(engine, *calendar_span(), settings.reference_dir)
        # Great Expectations (the record, not the gate: the quarantine masks decide) validates in a
        # background thread that overlaps the loads and the publication; settled before reporting
        summary["entities"].update(sync_catalogues_task(settings, run_id, defer_gx=True))
        for entity in pipeline.INCREMENTAL:
            summary["entities"][entity] = extract_load_task(settings, run_id, entity, full_refresh, since, until,
                                                            progress=progress, defer_gx=True)
        quarantined = sum(e["rows_quarantined"] for e in summary["entities"].values())
        summary["rows_quarantined"] = quarantined
        blocked = quarantined > settings.critical_threshold
        summary["published"] = []
        if blocked:
            logger.error(
                "%d rows failed critical checks (threshold %d): reports NOT published; the previous "
                "publication stays", quarantined, settings.critical_threshold,
            )
        elif publish:
            as_of = pipeline.data_cut(engine)
            for period in periods if periods is not None else pipeline.default_periods(as_of):
                summary["published"].append(publish_task(settings, run_id, tuple(period)))
        summary["blocked"] = blocked
        for entity, record in pipeline.settle_gx(run_id).items():
            summary["entities"][entity].update(record)
        summary["data_docs"] = next((e["data_docs"] for e in summary["entities"].values() if e.get("data_docs")), None)
        _publish_artifact(run_id, summary)
        _notify_checks(settings, run_id, summary)
        crash_point("run.before_finish")
        run.status, run.published = ("blocked" if blocked else "success"), bool(summary["published"])
    return summary


def checks_markdown(run_id: str, summary: dict[str, Any]) -> str:
    """The run's checks as markdown: counts per entity, then every rule that failed."""
    lines = [f"# dvc-etl run `{run_id}`", "", "| entity | read | loaded | quarantined | warnings | reconciled |",
             "|---|---:|---:|---:|---:|---|"]
    for name, e in summary["entities"].items():
        ok = e["rows_read"] == e["rows_loaded"] + e["rows_quarantined"]
        lines.append(f"| {name} | {e['rows_read']} | {e['rows_loaded']} | {e['rows_quarantined']} | {e['warnings']} | "
                     f"{'yes' if ok else '**NO**'} |")
    lines += ["", "| entity | rule | severity | failed | checked |", "|---|---|---|---:|---:|"]
    for name, e in summary["entities"].items():
        for rule, v in sorted(e.get("checks", {}).items()):
            if v["unexpected_count"]:
                lines.append(f"| {name} | {rule} | {v['severity']} | {v['unexpected_count']} | {v['element_count']} |")
    if summary.get("data_docs"):
        lines += ["", f"Data docs: `{summary['data_docs']}`"]
    if summary.get("blocked"):
        lines += ["", "**Reports not published: critical failures above the threshold.**"]
    return "\n".join(lines)


def _publish_artifact(run_id: str, summary: dict[str, Any]) -> None:
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(key="dvc-checks", markdown=checks_markdown(run_id, summary),
                                 description=f"data-quality checks of run {run_id}")
    except Exception:  # noqa: BLE001 - an artifact must not fail the run
        log.exception("could not publish the checks artifact")


def _notify_checks(settings: Settings, run_id: str, summary: dict[str, Any]) -> None:
    """Alert on critical failures, on warnings above the threshold and on the failure of a batch-level
    rule marked ``meta.alert = "always"`` in the suites (volume, freshness) (never raises)."""
    try:
        from tasks.alerts import Alert, send_alert
        from tasks.quality import load_suite

        q = summary["rows_quarantined"]
        warnings = sum(e["warnings"] for e in summary["entities"].values())
        always = [f"{name}.{r}: {v.get('detail')}" for name, e in summary["entities"].items()
                  for r, v in e.get("checks", {}).items() if v["unexpected_count"]
                  and r in {x.rule for x in load_suite(name).rules if x.meta.get("alert") == "always"}]
        if q == 0 and warnings <= settings.warning_alert_threshold and not always:
            return
        lines = []
        for name, e in summary["entities"].items():
            failing = {r: v["unexpected_count"] for r, v in e.get("checks", {}).items() if v["unexpected_count"]}
            if failing:
                lines.append(f"{name}: " + ", ".join(f"{r}={n}" for r, n in sorted(failing.items())))
        lines += always
        send_alert(
            Alert(
                title=("Critical data-quality failures" if q else "Data-quality warnings")
                + (" - reports not published" if summary.get("blocked") else ""),
                severity="critical" if q else "warning",
                run_id=run_id,
                source=settings.source_name,
                lines=lines,
                counts={"quarantined": q, "warnings": warnings},
                docs_path=summary.get("data_docs"),
            ),
            settings,
        )
    except Exception:  # noqa: BLE001
        log.exception("could not send the data-quality alert")


def _notify_files_failed(settings: Settings, run_id: str, failed: list[Any]) -> None:
    """Alert when inbox files could not be read (never raises)."""
    try:
        from tasks.alerts import Alert, send_alert

        send_alert(
            Alert(title=f"{len(failed)} inbox file(s) could not be read", severity="warning", run_id=run_id,
                  source=settings.source_name, lines=[f"{f.path}: {f.message}" for f in failed],
                  counts={"failed_files": len(failed)}, docs_path=None),
            settings,
        )
    except Exception:  # noqa: BLE001
        log.exception("could not send the inbox alert")


@flow(name="dvc-report")
def report(period_start: date, period_end: date, settings_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Publish the report tables and workbook of one period (``dvc-etl report --from --to``)."""
    if period_end < period_start:
        raise ValueError(f"period end {period_end} is before its start {period_start}")
    settings = _settings(settings_overrides)
    with tracked_run(settings, "report", "report") as run:
        out = publish_task(settings, run.run_id, (period_start, period_end))
        run.published = True
    return out
