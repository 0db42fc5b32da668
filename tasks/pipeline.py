"""The units of work of a run, as plain functions (the Prefect flows in ``flows/`` wire them).

A run: sync the catalogues (units, procedures), extract dossiers and payments incrementally in
bounded chunks (normalise -> check -> load, one transaction per chunk with the watermark), then
decide whether the run may publish (critical failures within the threshold), publish the report
periods and write the workbooks.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import os
import queue
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tasks.faults import crash_point
from tasks.load import LoadResult, get_watermark, load_batch
from tasks.normalize import normalize, now_local
from tasks.settings import Settings
from tasks.warehouse import local_write_lock, make_private, private_dir

log = logging.getLogger(__name__)

CATALOGUES = ("units", "procedures")
INCREMENTAL = ("dossiers", "payments")
_GX_LOCK = threading.Lock()

T = TypeVar("T")
ProgressFn = Callable[[str, int, int | None], None]  # (label, done so far, total or None); see extract_entity
LOAD_LABEL = " loaded"  # progress label suffix of the loading steps: "dossiers loaded"


def new_run_id(flow: str) -> str:
    return f"{flow}-{now_local():%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"


@dataclass
class EntityResult:
    entity: str
    rows_received: int = 0
    rows_duplicate: int = 0
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    warnings: int = 0
    chunks: int = 0
    watermark: datetime | None = None
    window: tuple[datetime | None, datetime | None] = (None, None)
    batches: list[tuple[datetime | None, datetime | None]] = field(default_factory=list)  # sub-windows read
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)  # rule -> counts
    data_docs: str | None = None  # GX data docs index of this run (first chunk validated)
    gx_success: bool | None = None

    def add(self, r: LoadResult) -> None:
        self.rows_received += r.rows_received
        self.rows_duplicate += r.rows_duplicate
        self.rows_read += r.rows_read
        self.rows_loaded += r.rows_loaded
        self.rows_quarantined += r.rows_quarantined
        self.warnings += r.warnings
        self.chunks += 1

    @property
    def reconciled(self) -> bool:
        return self.rows_read == self.rows_loaded + self.rows_quarantined


# ----------------------------------------------------------------------------------------------
# run bookkeeping
# ----------------------------------------------------------------------------------------------
def start_run(engine: Engine, run_id: str, flow: str, source: str) -> None:
    """Record a run as started. Called while holding the warehouse's writer lock, so a run still
    marked 'running' belongs to a process that died (SIGKILL, power loss): it is closed as
    'crashed', naming the run that noticed."""
    now = now_local()
    with engine.begin() as c:
        c.execute(
            sa.text(
                "UPDATE dq.runs SET status = 'crashed', finished_at = :t, published = false, "
                "message = :m WHERE status = 'running'"
            ),
            {"t": now, "m": f"the process ended without finishing; found by run {run_id}"},
        )
        c.execute(
            sa.text(
                "INSERT INTO dq.runs (run_id, flow, source, started_at, status) VALUES (:r, :f, :s, :t, 'running')"
            ),
            {"r": run_id, "f": flow, "s": source, "t": now},
        )


def finish_run(engine: Engine, run_id: str, status: str, published: bool | None, message: str = "") -> None:
    with engine.begin() as c:
        c.execute(
            sa.text(
                "UPDATE dq.runs SET finished_at = :t, status = :st, published = :p, message = :m WHERE run_id = :r"
            ),
            {"t": now_local(), "st": status, "p": published, "m": message[:4000], "r": run_id},
        )


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
# checks
# ----------------------------------------------------------------------------------------------
def check_context(engine: Engine, source: str, entity: str, settings: Settings, now: datetime) -> Any:
    """What the checks need from the warehouse: catalogues, calendar, recent volumes, freshness."""
    from tasks.quality import CheckContext

    with engine.connect() as c:
        procs = pd.read_sql(sa.text("SELECT * FROM core.procedures WHERE source = :s"), c, params={"s": source})
        units = pd.read_sql(sa.text("SELECT * FROM core.units WHERE source = :s"), c, params={"s": source})
        cal = pd.read_sql(sa.text("SELECT day, is_working_day FROM core.calendar"), c)
        vols = [
            int(v)
            for (v,) in c.execute(
                sa.text(
                    "SELECT rows_read FROM dq.run_summary WHERE source = :s AND entity = :e "
                    "ORDER BY recorded_at DESC LIMIT 14"
                ),
                {"s": source, "e": entity},
            )
        ]
        last = c.execute(
            sa.text("SELECT max(_loaded_at) FROM core.dossiers WHERE source = :s"), {"s": source}
        ).scalar()
    if len(cal):
        cal["day"] = pd.to_datetime(cal["day"]).astype("datetime64[us]")
        cal["is_working_day"] = cal["is_working_day"].astype(bool)
    return CheckContext(
        known_procedures=procs if len(procs) else None,
        known_units=units if len(units) else None,
        known_dossier_keys=None,
        calendar=cal if len(cal) else None,
        recent_volumes=vols,
        last_arrival=last,
        now=now,
        freshness_days=settings.freshness_days,
    )


def known_dossiers(engine: Engine, source: str, keys: pd.Series) -> set[str]:
    """Which of ``keys`` (a payment batch's dossier keys) the warehouse already holds."""
    from tasks.load import stage

    wanted = pd.DataFrame({"ma_ho_so": keys.dropna().astype("string").unique()})
    if wanted.empty:
        return set()
    with engine.begin() as c:
        stage(c, "stg_pkeys", wanted, "(SELECT ma_ho_so FROM core.dossiers) AS d")
        rows = c.execute(
            sa.text("SELECT s.ma_ho_so FROM stg_pkeys s JOIN core.dossiers d ON d.ma_ho_so = s.ma_ho_so "
                    "AND d.source = :src"),
            {"src": source},
        )
        return {r[0] for r in rows}


def _record_checks(engine: Engine, run_id: str, source: str, entity: str, res: EntityResult) -> None:
    now = now_local()
    with engine.begin() as c:
        c.execute(
            sa.text("DELETE FROM dq.check_results WHERE run_id = :r AND source = :s AND entity = :e"),
            {"r": run_id, "s": source, "e": entity},
        )
        for rule, v in res.checks.items():
            c.execute(
                sa.text(
                    "INSERT INTO dq.check_results (run_id, source, entity, rule, severity, success, element_count, "
                    "unexpected_count, detail, recorded_at) VALUES (:r, :s, :e, :rule, :sev, :ok, :n, :u, :d, :t)"
                ),
                {
                    "r": run_id, "s": source, "e": entity, "rule": rule, "sev": v["severity"],
                    "ok": v["unexpected_count"] == 0, "n": v["element_count"], "u": v["unexpected_count"],
                    "d": v.get("detail"), "t": now,
                },
            )


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
    context: Any,
    origin: str = "api",
    move_watermark: bool = True,
    defer_gx: bool = False,
) -> LoadResult:
    """Normalise, check and load one chunk of records (one transaction). The first chunk of
    ``result`` with rows is validated by Great Expectations; with ``defer_gx`` in a background
    thread, so the caller must :func:`wait_gx` before it reads ``result.data_docs``."""
    from tasks.quality import check

    use_system_arrow_pool()
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
    for r in outcome.results:
        agg = result.checks.setdefault(
            r.rule, {"severity": r.severity, "element_count": 0, "unexpected_count": 0, "detail": r.detail}
        )
        agg["element_count"] += int(r.element_count or 0)
        agg["unexpected_count"] += int(r.unexpected_count or 0)
        if r.unexpected_count:
            agg["detail"] = r.detail
    for rule, n in norm.issues["rule"].value_counts().items() if len(norm.issues) else []:
        agg = result.checks.setdefault(
            str(rule), {"severity": "critical", "element_count": 0, "unexpected_count": 0, "detail": None}
        )
        agg["element_count"] += norm.rows_read
        agg["unexpected_count"] += int(n)
    if result.data_docs is None and len(norm.core) and getattr(result, "_gx_future", None) is None:
        if defer_gx:  # an attribute, not a field: asdict(result) leaves it out
            future = _gx_pool().submit(_validate_with_gx, entity, norm.core, run_id, settings, result)
            result._gx_future = future
            with _GX_PENDING_LOCK:
                _GX_PENDING.setdefault(run_id, []).append((result, future))
        else:
            _validate_with_gx(entity, norm.core, run_id, settings, result)
    wm = None
    if move_watermark and "ngay_cap_nhat" in norm.core and norm.core["ngay_cap_nhat"].notna().any():
        wm = norm.core["ngay_cap_nhat"].max().to_pydatetime()
    with local_write_lock(engine):
        loaded = load_batch(engine, norm, issues, source=settings.source_name, run_id=run_id, origin=origin,
                            watermark=wm)
    crash_point("load.after_commit")
    result.add(loaded)
    if wm is not None:
        result.watermark = max(wm, result.watermark) if result.watermark else wm
    if len(records) >= 1000:
        del norm, issues, outcome, check_issues
        release_memory()
    return loaded


@functools.cache
def use_system_arrow_pool() -> None:
    """Arrow's buffers (the normaliser's string columns, the frames staged into the warehouse)
    from the C library's allocator instead of pyarrow's bundled mimalloc, which keeps ~80 MB of a
    20k-record chunk's freed buffers cached; :func:`release_memory`'s ``malloc_trim`` then hands
    them back. An explicit ``ARROW_DEFAULT_MEMORY_POOL`` wins."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


def release_memory() -> None:
    """Hand the memory a chunk freed back to the OS (glibc keeps freed arenas otherwise, so the
    resident size would ratchet up chunk after chunk), as Dask's workers do. No gc.collect():
    the chunk's frames die by reference count, and a full collection costs ~0.3 s once Great
    Expectations is imported."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _gx_pool() -> ThreadPoolExecutor:
    # one thread: GX's file-backed context is not thread-safe, and one validation at a time
    # overlaps well enough with the next pages' fetch and the chunk's load (which release the GIL)
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="gx-record")


#: deferred validations not waited for yet, by run id: what :func:`settle_gx` waits for
_GX_PENDING: dict[str, list[tuple[EntityResult, Future]]] = {}
_GX_PENDING_LOCK = threading.Lock()


def wait_gx(result: EntityResult) -> None:
    """Wait for ``result``'s deferred GX validation (if any): afterwards ``data_docs`` and
    ``gx_success`` are set."""
    future: Future | None = getattr(result, "_gx_future", None)
    if future is not None:
        future.result()
        result._gx_future = None
        with _GX_PENDING_LOCK:
            for pending in _GX_PENDING.values():
                pending[:] = [(r, f) for r, f in pending if f is not future]


def settle_gx(run_id: str) -> dict[str, dict[str, Any]]:
    """Wait for every validation of ``run_id`` still running in the background (the entities
    read with ``defer_gx=True``) and return their record, ``{entity: {"data_docs": ...,
    "gx_success": ...}}``. A run that defers its validations calls this once, after the loads
    and the publication they overlapped with, before it reports."""
    with _GX_PENDING_LOCK:
        pending = _GX_PENDING.pop(run_id, [])
    out: dict[str, dict[str, Any]] = {}
    for result, future in pending:
        future.result()
        result._gx_future = None
        out[result.entity] = {"data_docs": result.data_docs, "gx_success": result.gx_success}
    return out


def _validate_with_gx(entity: str, frame: pd.DataFrame, run_id: str, settings: Settings, result: EntityResult) -> None:
    """Great Expectations validates the run's first chunk of each entity (a deterministic sample
    beyond 200k rows) and writes the data docs: the record of the checks. The quarantine masks,
    not GX, decide which rows load. A GX failure to run is logged, never fatal."""
    from tasks.quality import validate_with_gx

    try:
        with _GX_LOCK:  # GX's file-backed context is not thread-safe (backfill partitions run in threads)
            rec = validate_with_gx(entity, frame, run_id, Path(settings.reports_dir) / "data-docs")
    except Exception:  # noqa: BLE001 - the record must not break the load
        log.exception("%s: Great Expectations validation could not run", entity)
        result.data_docs = ""
        return
    result.data_docs = str(rec.docs_index) if rec.docs_index else ""
    result.gx_success = rec.success


def sync_catalogues(engine: Engine, client: Any, settings: Settings, run_id: str, *,
                    defer_gx: bool = False) -> dict[str, EntityResult]:
    """Full read of the unit and procedure catalogues (they carry no NgayCapNhat). With
    ``defer_gx`` their GX validation may still run when this returns (:func:`settle_gx`)."""
    out: dict[str, EntityResult] = {}
    now = now_local()
    for entity in CATALOGUES:
        res = EntityResult(entity)
        records = list(client.iter_records(entity))
        ctx = check_context(engine, settings.source_name, entity, settings, now)
        process_records(engine, entity, records, settings=settings, run_id=run_id, result=res, context=ctx,
                        move_watermark=False, defer_gx=True)
        _record_checks(engine, run_id, settings.source_name, entity, res)
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


def read_ahead(pages: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``pages`` in a background thread, at most ``depth`` items ahead of the consumer, so
    the next HTTP request is on the wire while a chunk is normalised and loaded. Errors of the
    reader are raised in the consumer; a consumer that stops early stops the reader."""
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for page in pages:
                if not put(("page", page)):
                    return
            put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(("error", exc))
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()

    reader = threading.Thread(target=work, name="extract-read-ahead", daemon=True)
    reader.start()
    with gc_paused():
        try:
            n = 0
            while True:
                kind, value = q.get()
                if kind == "page":
                    n += 1
                    if n % 50 == 0:
                        gc.collect(1)
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            stop.set()
            reader.join(timeout=5)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while pages are read and chunks processed: parsed pages
    are millions of small dicts and lists (no cycles) that it would otherwise traverse again and
    again (2-3x the cost of the JSON parse); reference counting frees them. ``read_ahead`` pauses
    it for its lifetime and collects the young generations every 50 pages."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def extract_entity(
    engine: Engine,
    client: Any,
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

    Great Expectations validates the first chunk in a background thread; with ``defer_gx`` this
    returns without waiting for it and the caller collects it with :func:`settle_gx`."""
    res = EntityResult(entity, window=window)
    chunk_records = chunk_records or settings.chunk_records  # DVC_CHUNK_RECORDS
    ctx = check_context(engine, settings.source_name, entity, settings, now_local())
    batches = batch_windows(window, settings.batch_days)
    seen = 0

    def flush(buffer: list[dict]) -> None:
        process_records(engine, entity, buffer, settings=settings, run_id=run_id, result=res, context=ctx,
                        defer_gx=True)
        if progress:
            progress(f"{entity}{LOAD_LABEL}", res.rows_received, seen)

    for n, (lo, hi) in enumerate(batches, 1):
        buffer: list[dict] = []
        received_before = res.rows_received
        seen_before = seen
        for page in read_ahead(client.iter_pages(entity, lo, hi)):
            buffer.extend(page.records)
            crash_point("extract.after_page")
            seen += len(page.records)
            if progress:
                # ``total`` counts the records of [cursor, hi) of this request: what was read
                # before this page plus what is left from it estimates the window's size
                remaining = None if page.total is None else page.total - (page.page - 1) * page.page_size
                progress(entity, seen, None if remaining is None else max(seen, seen - len(page.records) + remaining))
            if len(buffer) >= chunk_records:
                flush(buffer)
                buffer = []
        if buffer:
            flush(buffer)
        res.batches.append((lo, hi))
        if len(batches) > 1:
            log.info("%s: batch %d/%d %s .. %s: %d records, %d loaded, watermark %s", entity, n, len(batches), lo,
                     hi or "now", seen - seen_before, res.rows_received - received_before, res.watermark)
    if res.chunks == 0:
        process_records(engine, entity, [], settings=settings, run_id=run_id, result=res, context=ctx)
    if not defer_gx:  # else the caller settles the run's validations (settle_gx) when it reports
        wait_gx(res)  # validated in the background while the later chunks were read and loaded
    _record_checks(engine, run_id, settings.source_name, entity, res)
    crash_point("extract.after_entity")
    log.info(
        "%s: %d received, %d read, %d loaded, %d quarantined, %d warnings, watermark %s",
        entity, res.rows_received, res.rows_read, res.rows_loaded, res.rows_quarantined, res.warnings, res.watermark,
    )
    return res


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
    _record_checks(engine, run_id, settings.source_name, entity, res)
    return res


# ----------------------------------------------------------------------------------------------
# publishing
# ----------------------------------------------------------------------------------------------
def critical_failures(results: Iterable[EntityResult]) -> int:
    return sum(r.rows_quarantined for r in results)


def data_cut(engine: Engine) -> datetime | None:
    with engine.connect() as c:
        return c.execute(
            sa.text(
                "SELECT max(m) FROM (SELECT max(ngay_cap_nhat) AS m FROM core.dossiers "
                "UNION ALL SELECT max(ngay_cap_nhat) FROM core.payments) x"
            )
        ).scalar()


def default_periods(as_of: datetime | None) -> list[tuple[date, date]]:
    """The nightly run republishes the month of the data cut (to date) and the month before
    (late payments restate it)."""
    if as_of is None:
        return []
    first = as_of.date().replace(day=1)
    prev_end = first - timedelta(days=1)
    return [(prev_end.replace(day=1), prev_end), (first, as_of.date())]


def publish_period(
    engine: Engine, settings: Settings, period: tuple[date, date], run_id: str, *, workbook: bool = True,
    period_cut: str = "calendar", period_label: str | None = None,
) -> dict[str, Any]:
    """Publish the report tables of one period atomically and write its workbook.

    ``period_cut`` ('calendar' or 'decree-09') and ``period_label`` ('2024-H1'; None for a free
    range) are recorded in mart.publications and named on the workbook."""
    from tasks.reports import publish

    if engine.dialect.name == "duckdb":
        # the loads' rows still in the WAL are held in memory, unevictable; once checkpointed,
        # DuckDB can evict them while the report queries need its memory (DVC_DUCKDB_MEMORY_LIMIT)
        with engine.begin() as conn:
            conn.exec_driver_sql("CHECKPOINT")
    pub = publish(
        engine, period[0], period[1], run_id=run_id, reference_dir=Path(settings.reference_dir),
        unpaid_threshold_days=settings.unpaid_threshold_days, period_cut=period_cut, period_label=period_label,
    )
    crash_point("publish.after_commit")
    out: dict[str, Any] = {"period": period, "publication": pub}
    if workbook:
        from tasks.workbook import write_workbook

        path = Path(settings.reports_dir) / f"bao-cao-{period[0]:%Y%m%d}-{period[1]:%Y%m%d}.xlsx"
        make_private(private_dir(path.parent), recursive=True)  # reports/: 0700 folders, 0600 files
        out["workbook"] = write_workbook(engine, pub.publication_id, path, unit_name=settings.office_name,
                                         report_number=settings.report_number, place=settings.report_place)
        crash_point("workbook.after_write")  # write_workbook has recorded mart.publications.workbook_path
    return out


# ----------------------------------------------------------------------------------------------
# backfill by month partitions
# ----------------------------------------------------------------------------------------------
def month_partitions(start: date, end: date) -> list[tuple[date, date]]:
    """Calendar months covering [start, end], clipped to it: [(first, last), ...]."""
    if end < start:
        raise ValueError(f"backfill end {end} is before its start {start}")
    out = []
    cur = start
    while cur <= end:
        nxt = (cur.replace(day=1) + timedelta(days=32)).replace(day=1)
        out.append((cur, min(end, nxt - timedelta(days=1))))
        cur = nxt
    return out


def backfill_id(source: str, start: date, end: date) -> str:
    return f"{source}:{start}:{end}"


def done_partitions(engine: Engine, bid: str) -> set[date]:
    with engine.connect() as c:
        rows = c.execute(
            sa.text("SELECT partition_start FROM dq.backfill_partitions WHERE backfill_id = :b AND status = 'done'"),
            {"b": bid},
        )
        return {r[0] if isinstance(r[0], date) else r[0].date() for r in rows}


def mark_partition(
    engine: Engine, bid: str, part: tuple[date, date], status: str, run_id: str,
    results: list[EntityResult] | None = None, message: str = "",
) -> None:
    now = now_local()
    read = sum(r.rows_read for r in results or [])
    loaded = sum(r.rows_loaded for r in results or [])
    q = sum(r.rows_quarantined for r in results or [])
    with engine.begin() as c:
        c.execute(
            sa.text(
                "INSERT INTO dq.backfill_partitions AS p (backfill_id, partition_start, partition_end, status, run_id, "
                "started_at, finished_at, rows_read, rows_loaded, rows_quarantined, message) VALUES (:b, :s, :e, :st, "
                ":r, :t, :f, :rd, :ld, :q, :m) ON CONFLICT (backfill_id, partition_start) DO UPDATE SET "
                "status = excluded.status, run_id = excluded.run_id, finished_at = excluded.finished_at, "
                "rows_read = excluded.rows_read, rows_loaded = excluded.rows_loaded, "
                "rows_quarantined = excluded.rows_quarantined, message = excluded.message"
            ),
            {"b": bid, "s": part[0], "e": part[1], "st": status, "r": run_id, "t": now,
             "f": None if status == "running" else now, "rd": read, "ld": loaded, "q": q, "m": message[:2000]},
        )


def backfill_partition(
    engine: Engine, client: Any, settings: Settings, run_id: str, bid: str, part: tuple[date, date],
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
