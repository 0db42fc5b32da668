"""The units of work of a run, as plain functions, and the nightly run that strings them together.

:func:`run_nightly` is the nightly, in its one order: calendar, catalogues (units, procedures),
increments (dossiers, payments, in bounded chunks: normalise -> check -> load, one transaction per
chunk with the watermark), the gate (critical failures within the threshold?), publication of the
report periods with their workbooks, the retention purge, and Great Expectations settling. The
Prefect flow (``flows/nightly.py``) wraps it, the bench (``bench/run.py``) times it. Other flows
call the units directly: :func:`sync_catalogues`, :func:`extract_entity`, :func:`ingest_records`,
:func:`backfill_partition`; :func:`tasks.publishing.publish_period` publishes one period.

A run's record (``dq.*`` rows, :class:`tasks.runs.RunResult`) lives in ``tasks.runs``; memory and
thread helpers in ``tasks.resources``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd
from sqlalchemy.engine import Engine

from tasks.clock import data_cut, nightly_periods, now_local
from tasks.entities import CATALOGUES, INCREMENTAL
from tasks.faults import crash_point
from tasks.gx import close_gx, gx_chunk, settle_gx_beside, wait_gx
from tasks.known_keys import KnownKeys, tracking
from tasks.landing import sweep
from tasks.load import LoadResult, get_watermark, load_batch, refresh_statistics
from tasks.normalize import Normalized, normalize
from tasks.normalize_pool import ChunkNormalizer, Part
from tasks.publishing import publish_period
from tasks.quality import check_context, known_dossiers
from tasks.resources import ChunkLoader, read_ahead, release_memory, use_system_arrow_pool
from tasks.runs import EntityResult, RunResult, mark_partition, record_checks
from tasks.settings import Settings
from tasks.warehouse import local_write_lock

if TYPE_CHECKING:
    from tasks.quality_rules import CheckContext
    from tasks.reports import Publication
    from tasks.source_api import SourceClient

log = logging.getLogger(__name__)


T = TypeVar("T")
ProgressFn = Callable[[str, int, int | None], None]  # (label, done so far, total or None); see extract_entity
LOAD_LABEL = " loaded"  # progress label suffix of the loading steps: "dossiers loaded"


def new_run_id(flow: str) -> str:
    return f"{flow}-{now_local():%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"


# ----------------------------------------------------------------------------------------------
# the nightly
# ----------------------------------------------------------------------------------------------
class NightlySteps:
    """How :func:`run_nightly` runs its units of work: plain calls by default. The Prefect flow
    runs each as a task and adds an artifact per publication (``flows.steps.PrefectSteps``), the
    bench times them; the order stays :func:`run_nightly`'s."""

    def run(self, name: str, unit: Callable[..., T], /, **params: Any) -> T:
        """Run one unit of work. ``name``: ``sync-catalogues``, ``extract-load``, ``publish-period``."""
        return unit(**params)

    def published(self, engine: Engine, publication: Publication) -> None:
        """Called after each publication, once committed and its workbook written."""


def run_nightly(
    engine: Engine, settings: Settings, run_id: str, *, full_refresh: bool = False, since: datetime | None = None,
    until: datetime | None = None, publish: bool = True, periods: Sequence[tuple[date, date]] | None = None,
    period_cut: str | None = None, period_labels: Sequence[str | None] | None = None, workbook: bool = True,
    progress: ProgressFn | None = None, steps: NightlySteps | None = None,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> RunResult:
    """The nightly run, in order:

    1. the working-day calendar (``core.calendar``), which the checks read;
    2. the catalogues (units, procedures), read in full;
    3. the increments (dossiers, payments) changed since the watermark (or ``since`` .. ``until``;
       everything with ``full_refresh``), chunk by chunk;
    4. the gate: critical failures above ``DVC_CRITICAL_THRESHOLD`` close it and nothing is
       published (the previous publication stays); otherwise, with ``publish``, the ``periods``
       (default: the data cut's month to date and the month before) with their workbooks;
    5. the retention purge of personal data kept as read;
    6. Great Expectations settles: its validations ran in the background since step 2, and it
       settles beside steps 4 and 5 (its worker process stops once it has).

    ``period_cut`` and ``period_labels`` (one per period) name given periods on their
    publications. The run's lifecycle (writer lock, migrations, its ``dq.runs`` row) is the
    caller's: ``flows.lifecycle.tracked_run`` in the flows."""
    from tasks.calendar import calendar_span, load_calendar
    from tasks.source_api import SourceClient

    steps, logger = steps or NightlySteps(), logger or log
    sweep(engine)  # the landed raw files of loads that never committed (tasks.landing)
    result = RunResult(run_id, settings.source_name)
    load_calendar(engine, *calendar_span(), settings.reference_dir)
    with SourceClient.from_settings(settings) as client:
        result.entities.update(steps.run("sync-catalogues", sync_catalogues, engine=engine, client=client,
                                         settings=settings, run_id=run_id, defer_gx=True))
    for entity in INCREMENTAL:
        window = extraction_window(engine, settings, entity, full_refresh=full_refresh, since=since, until=until)
        batches = len(batch_windows(window, settings.batch_days))
        logger.info("run %s, %s: extracting window %s .. %s%s", run_id, entity, window[0] or "the beginning",
                    window[1] or "now", f" in {batches} batches of at most {settings.batch_days} days"
                    if batches > 1 else "")
        with SourceClient.from_settings(settings) as client:
            result.entities[entity] = steps.run("extract-load", extract_entity, engine=engine, client=client,
                                                entity=entity, settings=settings, run_id=run_id, window=window,
                                                progress=progress, defer_gx=True)
            result.http[entity] = client.stats.as_dict()
    result.blocked = result.rows_quarantined > settings.critical_threshold
    # GX has every batch: it settles (and its host goes) while the reports are published
    settling = settle_gx_beside(run_id)
    try:
        _report(engine, settings, run_id, result, logger, steps, publish=publish, periods=periods,
                period_cut=period_cut, period_labels=period_labels, workbook=workbook)
    finally:
        settling.exception()  # waits, the reports failed or not: GX's record and docs are whole
    for entity, record in settling.result().items():  # GX validated in the background since step 2
        for key, value in record.items():  # data_docs, gx_success, gx
            setattr(result.entities[entity], key, value)
    return result


def _report(engine: Engine, settings: Settings, run_id: str, result: RunResult,
            logger: logging.Logger | logging.LoggerAdapter, steps: NightlySteps, *, publish: bool,
            periods: Sequence[tuple[date, date]] | None, period_cut: str | None,
            period_labels: Sequence[str | None] | None, workbook: bool) -> None:
    """Steps 4 and 5 of :func:`run_nightly`: the gate, the publications, the retention purge."""
    if result.blocked:
        logger.error("%d rows failed critical checks (threshold %d): reports NOT published; the previous "
                     "publication stays", result.rows_quarantined, settings.critical_threshold)
    elif publish:
        todo = list(periods) if periods is not None else nightly_periods(data_cut(engine))
        labels = list(period_labels) if period_labels is not None else [None] * len(todo)
        from tasks.workbook_worker import WorkbookWorker

        # every period's workbook but the last's is written by a worker while the next one publishes
        with WorkbookWorker() if workbook and len(todo) > 1 else nullcontext() as worker:
            for i, (period, label) in enumerate(zip(todo, labels, strict=True)):
                last = i == len(todo) - 1
                result.published.append(steps.run(  # one analyst copy, with the last: of every publication
                    "publish-period", publish_period, engine=engine, settings=settings, period=tuple(period),
                    run_id=run_id, workbook=workbook, period_cut=period_cut, period_label=label,
                    on_publication=steps.published, analyst_copy=last, workbook_worker=worker,
                    in_background=not last))
    result.purged = purge_personal_data(engine, settings)  # retention, Decree 13/2023


def purge_personal_data(engine: Engine, settings: Settings) -> dict[str, Any]:
    """The retention of personal data kept as read (``tasks.retention``: quarantined rows' raw
    records, superseded raw versions), at the end of a nightly run, under its writer lock. A
    failure is logged and returned, never raised: the loads and publication stand, and the next
    run purges again."""
    from tasks.retention import purge_for_settings

    try:
        return purge_for_settings(engine, settings).as_dict()
    except Exception as exc:  # noqa: BLE001 - retention must not undo a run's loads
        log.exception("the retention purge failed; the next run retries it")
        return {"error": f"{type(exc).__name__}: {exc}"}


# ----------------------------------------------------------------------------------------------
# extract -> normalise -> check -> load
# ----------------------------------------------------------------------------------------------
def process_records(
    engine: Engine,
    entity: str,
    records: list[dict],
    *,
    settings: Settings,
    run_id: str,
    result: EntityResult,
    context: CheckContext,
    origin: str = "api",
    move_watermark: bool = True,
    defer_gx: bool = False,
    loader: ChunkLoader | None = None,
    after_load: Callable[[], None] | None = None,
    norm: Normalized | None = None,
    known: KnownKeys | None = None,
) -> LoadResult | None:
    """Normalise, check and load one chunk of records (one transaction). Great Expectations
    validates the chunk too (``tasks.gx.gx_chunk``); with ``defer_gx`` in its background thread, so the
    caller must :func:`wait_gx` or :func:`tasks.gx.settle_gx` before it reads ``result.data_docs``.

    With a ``loader`` the load is handed to its thread and this returns None at once (the caller
    prepares the next chunk meanwhile; ``loader.wait()`` gives the result); ``after_load`` runs
    once the chunk is committed and counted in ``result``. ``norm``: the chunk already normalised
    (:mod:`tasks.normalize_pool`; ``records`` is then unused). ``known``: the extraction's tracker
    of the table's keys (:mod:`tasks.known_keys`)."""
    from tasks.quality import check, rule_severity

    use_system_arrow_pool()
    if norm is None:
        norm = normalize(entity, records, hash_key=settings.hash_key.get_secret_value().encode())
    if entity == "payments":
        context.known_dossier_keys = known_dossiers(engine, settings.source_name, norm.core["ma_ho_so"])
    outcome = check(entity, norm.core, context)
    check_issues = outcome.issues
    if len(check_issues):
        # the checks key rows their own way; map back to the normaliser's keys by row position
        to_ours = dict(zip(outcome.row_keys, norm.core["record_key"], strict=True))
        check_issues = check_issues.assign(record_key=check_issues["record_key"].map(to_ours))
    issues = pd.concat([norm.issues, check_issues], ignore_index=True) if len(check_issues) else norm.issues
    result.add_checks(outcome.results)
    for rule, n in norm.issues["rule"].value_counts().items() if len(norm.issues) else []:
        # the normaliser's rules (dvc_parse) and their severity are declared in the suite
        severity = rule_severity(entity, str(rule), str(norm.issues.loc[norm.issues["rule"] == rule, "severity"].iat[0]))
        agg = result.checks.setdefault(
            str(rule), {"severity": severity, "element_count": 0, "unexpected_count": 0, "detail": None}
        )
        agg["element_count"] += norm.rows_read
        agg["unexpected_count"] += int(n)
    # GX validates every chunk, in full up to DVC_GX_ROW_BUDGET rows (tasks.gx); a result given
    # data_docs="" before its first chunk opts out
    if len(norm.core) and not (result.data_docs == "" and getattr(result, "_gx", None) is None):
        gx_chunk(entity, norm.core, run_id, settings, result, validate=_validate_with_gx, defer=defer_gx)
    wm = None
    if move_watermark and "ngay_cap_nhat" in norm.core and norm.core["ngay_cap_nhat"].notna().any():
        wm = norm.core["ngay_cap_nhat"].max().to_pydatetime()
    big = norm.rows_received >= 1000
    del outcome, check_issues, records

    def commit() -> LoadResult:
        nonlocal norm, issues
        with local_write_lock(engine):
            loaded = load_batch(engine, norm, issues, source=settings.source_name, run_id=run_id, origin=origin,
                                watermark=wm, known=known)
        crash_point("load.after_commit")
        result.add(loaded)
        if wm is not None:
            result.watermark = max(wm, result.watermark) if result.watermark else wm
        if after_load is not None:
            after_load()
        if big:
            norm = issues = None  # the chunk's frames go before the memory is handed back
            release_memory()
        return loaded

    if loader is not None:
        loader.submit(commit)
        return None
    return commit()


def _validate_with_gx(entity: str, frame: pd.DataFrame, run_id: str, settings: Settings, result: EntityResult) -> None:
    """In the GX thread: Great Expectations validates the rows of one chunk selected for it
    (``tasks.gx``: the record of the checks, never the gate; never raises)."""
    result._gx.validate(frame)


def sync_catalogues(engine: Engine, client: SourceClient, settings: Settings, run_id: str, *,
                    defer_gx: bool = False) -> dict[str, EntityResult]:
    """Full read of the unit and procedure catalogues (they carry no NgayCapNhat). With
    ``defer_gx`` their GX validation may still run when this returns (:func:`tasks.gx.settle_gx`)."""
    out: dict[str, EntityResult] = {}
    now = now_local()
    for entity in CATALOGUES:
        res = EntityResult(entity)
        records = list(client.iter_records(entity))
        ctx = check_context(engine, settings.source_name, entity, settings, now)
        process_records(engine, entity, records, settings=settings, run_id=run_id, result=res, context=ctx,
                        move_watermark=False, defer_gx=True)
        record_checks(engine, run_id, settings.source_name, entity, res)
        close_gx(res)  # GX writes the entity's record in its thread while the run goes on
        out[entity] = res
        log.info("%s: %d read, %d loaded, %d quarantined", entity, res.rows_read, res.rows_loaded, res.rows_quarantined)
    if not defer_gx:
        for res in out.values():  # the units' validation ran while the procedures were read
            wait_gx(res)
    return out


def extraction_window(
    engine: Engine, settings: Settings, entity: str, *, full_refresh: bool, since: datetime | None,
    until: datetime | None,
) -> tuple[datetime | None, datetime | None]:
    from tasks.source_api import window_for

    if since is not None:
        return since, until
    if full_refresh:
        return None, until
    wm = get_watermark(engine, settings.source_name, entity)
    return window_for(wm, settings.overlap_minutes, until)


def batch_windows(
    window: tuple[datetime | None, datetime | None], batch_days: int, now: datetime | None = None,
) -> list[tuple[datetime | None, datetime | None]]:
    """Split the extraction window ``[start, end)`` into consecutive sub-windows of at most
    ``batch_days`` days (catch-up after downtime reads, loads and commits its watermark batch by
    batch). An open end (``None``: up to now) is split up to ``now`` and the last batch stays
    open; a window without a start (first run, full refresh) is one batch."""
    start, end = window
    if start is None or batch_days <= 0:
        return [window]
    limit = end if end is not None else (now or now_local())
    step = timedelta(days=batch_days)
    out: list[tuple[datetime | None, datetime | None]] = []
    cur = start
    while cur + step < limit:
        out.append((cur, cur + step))
        cur += step
    out.append((cur, end))
    return out


def extract_entity(
    engine: Engine,
    client: SourceClient,
    entity: str,
    *,
    settings: Settings,
    run_id: str,
    window: tuple[datetime | None, datetime | None],
    chunk_records: int | None = None,
    progress: ProgressFn | None = None,
    defer_gx: bool = False,
) -> EntityResult:
    """Read ``entity`` changed in ``window`` page by page, in sub-windows of at most
    ``settings.batch_days`` days (:func:`batch_windows`); every ``chunk_records`` records, and at
    the end of every sub-window, are normalised, checked and loaded in one transaction that also
    moves the watermark. Memory stays bounded by the chunk size, whatever the window, and a
    catch-up that stops half-way keeps the batches already committed.

    ``progress(label, done, total)`` is called after every page with ``label=entity`` (records
    read so far, estimated records in the window from the page's ``total``) and after every load
    with ``label=f"{entity}{LOAD_LABEL}"`` (records loaded or quarantined so far, records read).

    Great Expectations validates every chunk in a background thread (in full up to
    DVC_GX_ROW_BUDGET rows, a deterministic sample beyond); with ``defer_gx`` this returns without
    waiting for it and the caller collects it with :func:`tasks.gx.settle_gx`."""
    res = EntityResult(entity, window=window)
    chunk_records = chunk_records or settings.chunk_records  # DVC_CHUNK_RECORDS
    ctx = check_context(engine, settings.source_name, entity, settings, now_local())
    batches = batch_windows(window, settings.batch_days)
    # the pages of the next chunk are read while this one is processed (half a chunk ahead: the
    # source renders them meanwhile; a whole chunk ahead would hold one more chunk in memory)
    ahead = max(2, -(-chunk_records // (2 * settings.page_size)))

    normalizer = ChunkNormalizer(entity, settings.hash_key.get_secret_value().encode(),
                                 workers=settings.normalize_workers)
    pending: list[tuple[Any, int]] = []  # chunks handed to the normaliser, not yet checked and loaded

    def finish(loader: ChunkLoader, keep: int = 0) -> None:
        while len(pending) > keep:
            future, read = pending.pop(0)
            done = (lambda read=read: progress(f"{entity}{LOAD_LABEL}", res.rows_received, read)) if progress else None
            process_records(engine, entity, [], settings=settings, run_id=run_id, result=res, context=ctx,
                            defer_gx=True, loader=loader, after_load=done, norm=normalizer.result(future),
                            known=known)

    def flush(parts: list[Part], read: int, in_worker: bool, loader: ChunkLoader) -> None:
        future = normalizer.submit(parts, in_worker=in_worker)
        # the previous chunks are checked and loaded while the workers normalise the next ones
        finish(loader, keep=normalizer.in_flight - 1)
        pending.append((future, read))
        if not in_worker:
            finish(loader)

    # chunk N loads while chunk N+1 is read and normalised (in the worker process, if several chunks)
    # (the tracker outlives the loader: the loader's exit waits for the last loads, which use it)
    with tracking(engine, settings.source_name, entity) as known, ChunkLoader(f"load-{entity}") as loader, \
            normalizer:
        _read_batches(client, entity, batches, res, lambda parts, read, w: flush(parts, read, w, loader),
                      lambda: (finish(loader), loader.wait()), chunk_records, ahead, progress,
                      lambda expected: normalizer.started or normalizer.wants_worker(expected, chunk_records))
        finish(loader)
    if res.chunks == 0:
        process_records(engine, entity, [], settings=settings, run_id=run_id, result=res, context=ctx)
    refresh_statistics(engine, entity, res.rows_loaded)  # PostgreSQL: the plans of what reads these tables next
    close_gx(res)  # GX writes the entity's record in its thread while the run goes on
    if not defer_gx:  # else the caller settles the run's validations (tasks.gx.settle_gx) when it reports
        wait_gx(res)  # validated in the background while the later chunks were read and loaded
    record_checks(engine, run_id, settings.source_name, entity, res)
    crash_point("extract.after_entity")
    log.info(
        "%s: %d received, %d read, %d loaded, %d quarantined, %d warnings, watermark %s",
        entity, res.rows_received, res.rows_read, res.rows_loaded, res.rows_quarantined, res.warnings, res.watermark,
    )
    return res


def _read_batches(
    client: SourceClient, entity: str, batches: list[tuple[datetime | None, datetime | None]], res: EntityResult,
    flush: Callable[[list[Part], int, bool], None], settle: Callable[[], Any], chunk_records: int, ahead: int,
    progress: ProgressFn | None, in_worker: Callable[[int | None], bool],
) -> None:
    """:func:`extract_entity`'s reading: the pages of each sub-window, ``flush(parts, read so far,
    in_worker)`` every ``chunk_records`` records and at the end of each sub-window, then
    ``settle()`` (its loads committed) before the sub-window is logged. A chunk's parts are its
    pages' bodies when ``in_worker(records expected in the sub-window)`` says, on its first page,
    that a worker process normalises them; else their decoded records."""
    seen = 0
    for n, (lo, hi) in enumerate(batches, 1):
        parts: list[Part] = []
        buffered = 0
        worker: bool | None = None
        received_before = res.rows_received
        seen_before = seen
        for page in read_ahead(client.iter_pages(entity, lo, hi), depth=ahead):
            crash_point("extract.after_page")
            seen += len(page.records)
            # ``total`` counts the records of [cursor, hi) of this request: what was read
            # before this page plus what is left from it estimates the window's size
            remaining = None if page.total is None else page.total - (page.page - 1) * page.page_size
            expected = None if remaining is None else max(seen, seen - len(page.records) + remaining)
            if worker is None:
                worker = in_worker(None if expected is None else expected - seen_before)
            parts.append(page.body if worker and page.body is not None else page.records)
            buffered += len(page.records)
            if progress:
                progress(entity, seen, expected)
            if buffered >= chunk_records:
                flush(parts, seen, bool(worker))
                parts, buffered = [], 0
        if buffered:  # an empty page adds no records: no empty chunk to load
            flush(parts, seen, bool(worker))
        res.batches.append((lo, hi))
        if len(batches) > 1:
            settle()
            log.info("%s: batch %d/%d %s .. %s: %d records, %d loaded, watermark %s", entity, n, len(batches), lo,
                     hi or "now", seen - seen_before, res.rows_received - received_before, res.watermark)


def ingest_records(
    engine: Engine, entity: str, records: list[dict], *, settings: Settings, run_id: str, origin: str,
) -> EntityResult:
    """Load records parsed from a clerk's file (no watermark move: files are not the API's clock)."""
    res = EntityResult(entity)
    ctx = check_context(engine, settings.source_name, entity, settings, now_local())
    size = settings.chunk_records
    for i in range(0, max(len(records), 1), size):
        process_records(engine, entity, records[i : i + size], settings=settings, run_id=run_id,
                        result=res, context=ctx, origin=origin, move_watermark=False)
    record_checks(engine, run_id, settings.source_name, entity, res)
    return res


# ----------------------------------------------------------------------------------------------
# backfill by month partitions
# ----------------------------------------------------------------------------------------------
def backfill_partition(
    engine: Engine, client: SourceClient, settings: Settings, run_id: str, bid: str, part: tuple[date, date],
    progress: ProgressFn | None = None,
) -> list[EntityResult]:
    """Extract and load every dossier and payment changed in one month partition (``progress``
    labels are prefixed with the partition's month: ``2024-03 dossiers``)."""
    window = (datetime.combine(part[0], datetime.min.time()),
              datetime.combine(part[1] + timedelta(days=1), datetime.min.time()))
    labelled = None
    if progress is not None:
        def labelled(label: str, done: int, total: int | None) -> None:
            progress(f"{part[0]:%Y-%m} {label}", done, total)
    mark_partition(engine, bid, part, "running", run_id)
    try:
        results = [
            extract_entity(engine, client, entity, settings=settings, run_id=run_id, window=window, progress=labelled)
            for entity in INCREMENTAL
        ]
    except Exception as exc:
        mark_partition(engine, bid, part, "failed", run_id, message=f"{type(exc).__name__}: {exc}")
        raise
    mark_partition(engine, bid, part, "done", run_id, results)
    return results
