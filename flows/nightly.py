"""Prefect flows: thin wiring over ``tasks.pipeline``.

- ``dvc-nightly``: catalogues -> incremental dossiers and payments -> checks -> load ->
  publish the current and previous month (or the given periods) -> workbooks -> summary.
- ``dvc-report``: publish the report tables and workbook for one period (named by
  ``tasks.clock.resolve_period`` or a --from/--to range).

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
from tasks.alerts import scrub_for
from tasks.clock import CALENDAR, check_cut
from tasks.faults import crash_point
from tasks.settings import SAFE_OVERRIDES, Settings, get_settings, require_run_settings
from tasks.warehouse import WarehouseBusy, open_warehouse, upgrade, writer_lock

log = logging.getLogger(__name__)


class UnsafeOverride(ValueError):
    """A ``settings_overrides`` parameter tried to set a setting outside ``SAFE_OVERRIDES``."""


def check_overrides(overrides: Any) -> None:
    """Refuse ``settings_overrides`` that are not a mapping of :data:`tasks.settings.SAFE_OVERRIDES`
    (sizes, thresholds, windows, the source name, the period cut). Anyone who can reach the
    Prefect API can set a flow run's parameters; a ``source_url`` there would send the worker's
    bearer token to any host, a ``warehouse_url``, ``smtp_host`` or ``inbox_dir`` would redirect
    data. The message names the settings, never their values."""
    if overrides is None:
        return
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise UnsafeOverride("settings_overrides must map setting names to values")
    unknown = sorted(set(overrides) - set(Settings.model_fields))
    if unknown:
        raise UnsafeOverride(f"unknown settings in settings_overrides: {', '.join(unknown)}")
    refused = sorted(set(overrides) - SAFE_OVERRIDES)
    if refused:
        names = ", ".join(f"{k} (DVC_{k.upper()})" for k in refused)
        raise UnsafeOverride(
            f"settings_overrides may not set {names}: connection targets, folders and secrets must come from "
            f"the worker's environment (or its .env) or a Prefect Secret block, never from flow-run parameters; "
            f"allowed overrides: {', '.join(sorted(SAFE_OVERRIDES))}")


def _settings(overrides: dict[str, Any] | None = None) -> Settings:
    """The settings of the environment with a deployment's ``settings_overrides`` applied. Only
    :data:`tasks.settings.SAFE_OVERRIDES` may be overridden (:func:`check_overrides`, before
    anything else runs); values are validated like the environment's, so a typo or a bad value
    fails the run at once. Connection targets and secrets (source URL and token, warehouse URL,
    SMTP, webhook, folders, hash key) come only from the worker's environment or a Prefect Secret
    block, never from parameters, which anyone with API access can set and the server shows."""
    check_overrides(overrides)
    base = require_run_settings(get_settings())  # DVC_HASH_KEY fit for real data; logs scrubbed
    if not overrides:
        return base
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
            message = scrub_for(settings, f"{type(exc).__name__}: {exc}")  # no DSN password in dq.runs
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
def publish_task(
    settings: Settings, run_id: str, period: tuple[date, date], period_cut: str | None = None,
    period_label: str | None = None,
) -> dict[str, Any]:
    """Publish one period and write its workbook. ``period_cut`` / ``period_label`` (a period of
    ``tasks.clock.resolve_period``: ``calendar`` / ``2024-H1``) are recorded on the publication and
    named in the workbook; both None (the nightly's months, a --from/--to range): the publication's
    defaults."""
    engine = open_warehouse(settings)
    named = {} if period_cut is None and period_label is None else {
        "period_cut": period_cut or CALENDAR, "period_label": period_label}
    out = pipeline.publish_period(engine, settings, period, run_id, **named)
    pub = out["publication"]
    _publish_headline_artifact(engine, pub)
    return {"period": [str(period[0]), str(period[1])], "publication_id": pub.publication_id,
            "as_of": str(pub.as_of), "workbook": str(out.get("workbook")),
            "period_cut": getattr(pub, "period_cut", named.get("period_cut")),
            "period_label": getattr(pub, "period_label", named.get("period_label"))}


#: The nine indicators of Decision 766/QĐ-TTg a publication reports, in the workbook's order:
#: (code, number in Decision 766 or "", label). The labels name the rows of the headline artifact
#: and of the CLI summary whatever label ``reports.headline`` gives (a stable interface).
INDICATORS_766: tuple[tuple[str, str, str], ...] = (  # as sql/reports/rpt_service_indicators.sql names them
    ("on_time", "2.1", "Tỷ lệ hồ sơ xử lý trước hạn, đúng hạn"),
    ("online_submission", "3.3", "Tỷ lệ hồ sơ nộp trực tuyến"),
    ("online_payment", "3.6", "Tỷ lệ hồ sơ thanh toán trực tuyến"),
    ("e_result", "4.1", "Tỷ lệ hồ sơ có cấp kết quả giải quyết điện tử"),
    ("digitised", "4.2", "Tỷ lệ hồ sơ thực hiện số hóa hồ sơ"),
    ("reuse", "4.3", "Tỷ lệ hồ sơ khai thác, sử dụng lại thông tin, dữ liệu số hóa"),
    ("from_national_store", "4.4", "Tỷ lệ hồ sơ số hóa có kết nối, chia sẻ dữ liệu phục vụ tái sử dụng"),
    ("online_service_uptake", "3.2", "Tỷ lệ dịch vụ công trực tuyến có phát sinh hồ sơ"),
    ("online_payment_uptake", "", "Tỷ lệ TTHC cung cấp thanh toán trực tuyến có phát sinh giao dịch"),
)


def headline_indicators(head: dict[str, Any]) -> list[dict[str, Any]]:
    """The 766 rates of a headline (``reports.headline``), one dict per indicator: ``code``,
    ``code_766``, ``label``, ``system``, ``paid_only`` (fractions or None).

    Reads ``head["indicators"]`` (code -> {"rate_system", "rate_paid_only", "label"}) when it is
    there: the indicators of :data:`INDICATORS_766` it has, in that order and with those labels,
    then any other code with its own label. Otherwise the flat keys ``<code>_rate_system`` and
    ``<code>_rate_paid_only`` (``on_time_rate_system``...): the indicators of
    :data:`INDICATORS_766` they cover."""
    known = {code: (number, label) for code, number, label in INDICATORS_766}
    given = head.get("indicators")
    if isinstance(given, dict) and given:
        codes = [c for c, _, _ in INDICATORS_766 if c in given] + [c for c in given if c not in known]
        out = []
        for c in codes:
            v = given[c] or {}
            number, label = known.get(c, (v.get("code_766") or "", v.get("label") or c))
            out.append({"code": c, "code_766": number, "label": label, "system": v.get("rate_system"),
                        "paid_only": v.get("rate_paid_only")})
        return out
    return [{"code": code, "code_766": number, "label": label, "system": head.get(f"{code}_rate_system"),
             "paid_only": head.get(f"{code}_rate_paid_only")}
            for code, number, label in INDICATORS_766
            if f"{code}_rate_system" in head or f"{code}_rate_paid_only" in head]


def headline_rows(head: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline figures of a publication as table rows: system and paid-only side by side."""
    return [
        *({"indicator": i["label"], "system": i["system"], "paid_only": i["paid_only"]}
          for i in headline_indicators(head)),
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
            description=f"{head.get('sentence', '')} ({_period_text(pub)}, as of {pub.as_of})",
        )
    except Exception:  # noqa: BLE001 - an artifact must not fail the publication
        log.exception("could not publish the headline artifact")


def _period_text(pub: Any) -> str:
    """``2024-01-01 .. 2024-06-30`` and, for a named period, `` (2024-H1, calendar)``."""
    text = f"{pub.period_start} .. {pub.period_end}"
    label = getattr(pub, "period_label", None)
    return f"{text} ({label}, {getattr(pub, 'period_cut', None) or CALENDAR})" if label else text


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
    period_cut: str | None = None,
    period_labels: list[str | None] | None = None,
) -> dict[str, Any]:
    """The nightly ETL. ``since``/``until`` bound the extraction window (else: watermark minus the
    overlap .. now); ``periods`` to publish (default: the data cut's month and the month before).
    ``period_labels`` (one per period) and ``period_cut`` name given periods on their publications
    (``dvc-etl demo``: ``2024-H1``, ``calendar``); the default periods are published unnamed, as
    before."""
    if period_labels is not None and (periods is None or len(period_labels) != len(periods)):
        raise ValueError("period_labels needs one label per period of periods")
    if period_cut is not None:
        check_cut(period_cut)
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
            todo = periods if periods is not None else pipeline.default_periods(as_of)
            labels = period_labels if period_labels is not None else [None] * len(todo)
            for period, label in zip(todo, labels, strict=True):
                summary["published"].append(publish_task(settings, run_id, tuple(period), period_cut, label))
        summary["blocked"] = blocked
        summary["purged"] = pipeline.purge_personal_data(engine, settings)  # retention, Decree 13/2023
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
def report(
    period_start: date, period_end: date, settings_overrides: dict[str, Any] | None = None,
    period_cut: str | None = None, period_label: str | None = None,
) -> dict[str, Any]:
    """Publish the report tables and workbook of one period (``dvc-etl report --period`` or
    ``--from --to``). ``period_cut`` / ``period_label``: the named period resolved by
    ``tasks.clock.resolve_period`` (None for a --from/--to range)."""
    if period_end < period_start:
        raise ValueError(f"period end {period_end} is before its start {period_start}")
    if period_cut is not None:
        check_cut(period_cut)
    settings = _settings(settings_overrides)
    with tracked_run(settings, "report", "report") as run:
        out = publish_task(settings, run.run_id, (period_start, period_end), period_cut, period_label)
        run.published = True
    return out
