"""Publishing one period: its report tables, its workbook, the analysts' copy.

:func:`publish_period` is the unit the nightly (:func:`tasks.pipeline.run_nightly`, once per report
period) and the publish flow (``flows/steps.py``) call: the report tables committed at once
(:func:`tasks.reports.publish`), then the workbook written here or handed to the nightly's workbook
worker (:mod:`tasks.workbook_worker`), while the analysts' copy is written beside it
(:class:`tasks.analyst.AnalystCopyAlongside`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from tasks.analyst import AnalystCopyAlongside
from tasks.clock import CALENDAR
from tasks.faults import crash_point
from tasks.settings import Settings
from tasks.warehouse import make_private, private_dir

if TYPE_CHECKING:
    from tasks.reports import Publication
    from tasks.workbook_worker import WorkbookWorker


def publish_period(
    engine: Engine, settings: Settings, period: tuple[date, date], run_id: str, *, workbook: bool = True,
    period_cut: str | None = None, period_label: str | None = None,
    on_publication: Callable[[Engine, Publication], None] | None = None, analyst_copy: bool = True,
    workbook_worker: WorkbookWorker | None = None, in_background: bool = False,
) -> dict[str, Any]:
    """Publish the report tables of one period atomically and write its workbook. Returns the
    publication's record: period, publication id, data cut, workbook, cut and label.

    ``period_cut`` ('calendar', the default, or 'decree-09') and ``period_label`` ('2024-H1'; None
    for a free range) are recorded in mart.publications and named on the workbook.
    ``on_publication(engine, publication)`` is called once both are done. With ``analyst_copy``,
    the analysts' DuckDB copy (``tasks.analyst``) is refreshed last.

    ``workbook_worker`` (:mod:`tasks.workbook_worker`; the nightly's several periods): with
    ``in_background`` the period's workbook is handed to it and written while the caller goes on;
    it is recorded (and ``on_publication`` called) by the next ``publish_period`` given the same
    worker, once that one has written its own workbook here and before it records it, or when
    the worker's context is left."""
    from tasks.reports import publish

    if engine.dialect.name == "duckdb":
        # the loads' rows still in the WAL are held in memory, unevictable; once checkpointed,
        # DuckDB can evict them while the report queries need its memory (DVC_DUCKDB_MEMORY_LIMIT)
        with engine.begin() as conn:
            conn.exec_driver_sql("CHECKPOINT")
    pub = publish(
        engine, period[0], period[1], run_id=run_id, reference_dir=Path(settings.reference_dir),
        unpaid_threshold_days=settings.unpaid_threshold_days, period_cut=period_cut or CALENDAR,
        period_label=period_label,
    )
    crash_point("publish.after_commit")
    written = None
    deferred = False
    # the analysts' copy is written (DuckDB, its own threads) while the workbook is laid out (Python)
    with AnalystCopyAlongside(engine, settings, enabled=analyst_copy) as copy:
        if workbook:
            path = Path(settings.reports_dir) / f"bao-cao-{period[0]:%Y%m%d}-{period[1]:%Y%m%d}.xlsx"
            make_private(private_dir(path.parent), recursive=True)  # reports/: 0700 folders, 0600 files
            if workbook_worker is not None and in_background:
                _hand_over_workbook(engine, settings, pub, path, workbook_worker, on_publication)
                written, deferred = path, True
            else:
                from tasks.workbook import write_workbook

                earlier = None if workbook_worker is None else lambda: _record_earlier(workbook_worker, copy)
                written = write_workbook(engine, pub.publication_id, path, **_workbook_settings(settings),
                                         before_record=earlier)  # the period before's, if any, first
                copy.workbook_recorded(pub.publication_id, written)
                crash_point("workbook.after_write")  # write_workbook has recorded mart.publications.workbook_path
        if on_publication is not None and not deferred:
            on_publication(engine, pub)
    return {"period": [str(period[0]), str(period[1])], "publication_id": pub.publication_id,
            "as_of": str(pub.as_of), "workbook": str(written), "period_cut": pub.period_cut,
            "period_label": pub.period_label}


def _workbook_settings(settings: Settings) -> dict[str, Any]:
    return {"unit_name": settings.office_name, "report_number": settings.report_number,
            "place": settings.report_place}


def _hand_over_workbook(engine: Engine, settings: Settings, pub: Publication, path: Path, worker: WorkbookWorker,
                        on_publication: Callable[[Engine, Publication], None] | None) -> None:
    from tasks.workbook import partial_path, read_layout, record_workbook

    partial = partial_path(path)

    def recorded() -> tuple[str, Path]:
        record_workbook(engine, pub, partial, path)
        crash_point("workbook.after_write")  # mart.publications.workbook_path recorded
        if on_publication is not None:
            on_publication(engine, pub)
        return pub.publication_id, path

    worker.hand_over(read_layout(engine, pub.publication_id, **_workbook_settings(settings)), partial, recorded)


def _record_earlier(worker: WorkbookWorker, copy: AnalystCopyAlongside) -> None:
    """The workbook handed to ``worker`` before (if any), recorded; the analysts' copy records it too."""
    earlier = worker.finish()
    if earlier is not None:
        copy.workbook_recorded(*earlier)
