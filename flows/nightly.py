"""The nightly and report flows: Prefect wiring over ``tasks.pipeline``.

``dvc-nightly`` is ``tasks.pipeline.run_nightly`` inside the run's lifecycle::

    settings (worker's environment + safe overrides)
      -> tracked run: writer lock, migrations, dq.runs 'running'
        -> run_nightly: calendar -> catalogues -> increments (extract, normalise, check, load)
                        -> gate -> publish periods + workbooks -> retention purge -> settle GX
        -> dvc-checks artifact -> alerts
      -> dq.runs 'success' or 'blocked' (gate closed); 'failed' + failure alert when it raises

A run whose gate closed ends in the Prefect state ``Blocked`` (a named ``Completed``,
``flows.lifecycle.named_state``): not a plain green run in the UI, and no second alert besides its
data-quality alert.

Each unit of work is a Prefect task run (``flows.steps.PrefectSteps``); the lifecycle is
``flows.lifecycle``'s, shared with the other flows (``flows.ops``).

``dvc-report`` publishes the report tables and workbook of one period (named by
``tasks.clock.resolve_period`` or a --from/--to range).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from prefect import flow, get_run_logger

from flows import current_progress
from flows.lifecycle import BLOCKED, alert_on_failure, named_state, run_settings, send_alerts, tracked_run
from flows.steps import PrefectSteps, publish_checks_artifact, publish_task
from tasks import pipeline
from tasks.clock import check_cut
from tasks.faults import crash_point


@flow(name="dvc-nightly", on_failure=[alert_on_failure], on_crashed=[alert_on_failure])
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
    (``dvc-etl demo``: ``2024-H1``, ``calendar``); the default periods are published unnamed."""
    if period_labels is not None and (periods is None or len(period_labels) != len(periods)):
        raise ValueError("period_labels needs one label per period of periods")
    if period_cut is not None:
        check_cut(period_cut)
    settings = run_settings(settings_overrides)
    logger = get_run_logger()
    with tracked_run(settings, "nightly", "nightly", logger) as run:
        logger.info("run %s: source %s, warehouse %s", run.run_id, settings.source_name,
                    run.engine.url.render_as_string(hide_password=True))
        result = pipeline.run_nightly(
            run.engine, settings, run.run_id, full_refresh=full_refresh, since=since, until=until, publish=publish,
            periods=periods, period_cut=period_cut, period_labels=period_labels, progress=current_progress(),
            steps=PrefectSteps(), logger=logger,
        )
        publish_checks_artifact(result)
        send_alerts(result, settings, run.engine)
        crash_point("run.before_finish")
        run.status, run.published = ("blocked" if result.blocked else "success"), bool(result.published)
    if result.blocked:
        return named_state(BLOCKED, f"run {run.run_id}: data-quality gate closed, {result.rows_quarantined} rows failed "
                           f"critical checks (DVC_CRITICAL_THRESHOLD={settings.critical_threshold}); reports not "
                           "published, the previous publication stays", result.as_summary())
    return result.as_summary()


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
    settings = run_settings(settings_overrides)
    with tracked_run(settings, "report", "report") as run:
        out = publish_task(settings, run.run_id, (period_start, period_end), period_cut, period_label)
        run.published = True
    return out
