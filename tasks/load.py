"""Transactional, idempotent loads into the warehouse (DuckDB or PostgreSQL).

One call of :func:`load_batch` is one transaction that:

1. records the batch's raw versions: on DuckDB the Parquet file landed just before the
   transaction (:mod:`tasks.landing`: its ``dq.landed_files`` row, and the ``raw.<entity>`` view
   rebuilt over it); on PostgreSQL appends the distinct versions to the ``raw.<entity>`` table
   (conflict = already there);
2. upserts the good rows into ``core.<entity>``: an older version never overwrites a newer one,
   an identical row is not rewritten (``IS DISTINCT FROM``);
3. records dossier versions (status history) and the supplement rounds of the dossiers' current
   versions (``core.dossier_supplements``: inserted, then the superseded versions' rows deleted);
4. writes quarantine rows (critical) and warning rows; marks quarantine rows resolved when a
   corrected version of the key loads;
5. moves the watermark (never backwards) and adds the batch's counts to ``dq.run_summary``.

Either all of it commits or none of it does, so a crash at any point loses nothing and
duplicates nothing on the rerun (a landed file whose row never committed is invisible, and
swept by the next nightly run).

Bulk paths (:mod:`tasks.bulk`): DuckDB registers the DataFrame, stages it by ``INSERT ... SELECT``
(never executemany), then updates the keys its core tables hold and inserts the others by an anti-join
(no key indexes there: migration 0009, :func:`_upsert`); PostgreSQL ``COPY``s into a temporary
table, then ``INSERT ... ON CONFLICT DO UPDATE``, except the raw versions: those not yet there are
``COPY``'d straight into ``raw.<entity>``, in COPY's binary format (:func:`_append_raw`). An extraction's tracker of a
table's keys (:mod:`tasks.known_keys`) spares most rows that way: rows whose key the table
certainly lacks are appended (DuckDB from the registered frame, PostgreSQL by ``COPY`` into the
table), and rows the table holds already as read (a page boundary's re-reads) are skipped, each
with its versions and supplement rounds.
Identifiers in the generated SQL come from this module's constants and the entity registry
(:mod:`tasks.entities`) only; values are always bound.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tasks import bulk, known_keys, landing
from tasks.clock import now_local
from tasks.entities import REGISTRY, VERSIONED
from tasks.faults import crash_point
from tasks.field_types import DOSSIER_DERIVED, FIELDS, PROCEDURE_DERIVED, SUPPLEMENT_COLUMNS
from tasks.known_keys import NEW, REST, SAME, KnownKeys
from tasks.normalize import Normalized, RecordTexts
from tasks.warehouse import WarehouseError, dialect_name

log = logging.getLogger(__name__)

LINEAGE = ["_source", "_run_id", "_loaded_at"]


def core_columns(entity: str) -> list[str]:
    """Columns of core.<entity> in load order (the DDL's columns)."""
    cols = ["source"] + [c for c, _, _ in FIELDS[entity]]
    if entity == "dossiers":
        cols += DOSSIER_DERIVED
    elif entity == "procedures":
        cols += PROCEDURE_DERIVED
    return cols + LINEAGE


#: DuckDB's WAL size that triggers a checkpoint, for the loader's connections (default 16MB).
#: Rows not checkpointed yet stay in memory, so this stays well under DVC_DUCKDB_MEMORY_LIMIT.
DUCKDB_CHECKPOINT_THRESHOLD = "128MB"

RAW_COLUMNS = ["source", "record_key", "record_hash", "ngay_cap_nhat", "record", *LINEAGE]


@dataclass
class LoadResult:
    entity: str
    rows_received: int
    rows_duplicate: int
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    warnings: int
    #: Raw versions written by the batch. DuckDB: the rows of the landed file (the batch's distinct
    #: versions, whether or not an earlier load had them: the view keeps the first). PostgreSQL:
    #: the versions new to ``raw.<entity>``. Only this module's callers' totals read it.
    raw_new: int

    @property
    def reconciled(self) -> bool:
        return self.rows_read == self.rows_loaded + self.rows_quarantined


# ----------------------------------------------------------------------------------------------
# the batch load
# ----------------------------------------------------------------------------------------------
def _upsert(conn: Connection, table: str, staged: str, keys: list[str], cols: list[str],
            update: tuple[list[str], Callable[[str], str]] | None = None) -> None:
    """Insert the staged rows (distinct keys) whose key ``table`` lacks; with ``update = (columns,
    when)``, set those columns of the rows whose key it has, where ``when(new)`` holds (``t`` is the
    table's row, ``new`` the staged one's alias).

    PostgreSQL: ``INSERT .. ON CONFLICT`` on the table's key. DuckDB's core tables have no key
    (migration 0009: its key indexes are held in memory, and at 5M dossiers left no room in the
    default limit): ``UPDATE .. FROM`` the staged rows, then an anti-join ``INSERT`` of the new
    keys. Uniqueness holds because loads run one at a time: one process writes a DuckDB file (its
    lock, and the runs' writer lock), and its loads take turns (``pipeline.process_records`` holds
    ``warehouse.local_write_lock`` around :func:`load_batch`)."""
    col_list = ", ".join(cols)
    if dialect_name(conn) == "postgresql":
        action = "DO NOTHING"
        if update:
            columns, when = update
            action = f"DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in columns)} WHERE {when('excluded')}"
        conn.execute(sa.text(f"INSERT INTO {table} AS t ({col_list}) SELECT {col_list} FROM {staged} "
                             f"ON CONFLICT ({', '.join(keys)}) {action}"))
        return
    match = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    if update:
        columns, when = update
        conn.execute(sa.text(f"UPDATE {table} AS t SET {', '.join(f'{c} = s.{c}' for c in columns)} "
                             f"FROM {staged} AS s WHERE {match} AND {when('s')}"))
    conn.execute(sa.text(f"INSERT INTO {table} ({col_list}) SELECT {col_list} FROM {staged} AS s "
                         f"WHERE NOT EXISTS (SELECT 1 FROM {table} AS t WHERE {match})"))


def _distinct(cols: list[str], new: str) -> str:
    """The table's row ``t`` differs from the staged row ``new`` in ``cols``."""
    return f"({', '.join('t.' + c for c in cols)}) IS DISTINCT FROM ({', '.join(f'{new}.{c}' for c in cols)})"


def _upsert_core(conn: Connection, entity: str, cols: list[str]) -> None:
    keys = ["source", *REGISTRY[entity].core_key]
    updatable = [c for c in cols if c not in keys]
    data_cols = [c for c in updatable if c not in LINEAGE]

    def when(new: str) -> str:
        # a newer version wins; the same version read again replaces the row, except that a clerk's
        # file never replaces the API's copy of the same version (no nested lists, coarser dates: poorer)
        newer = (
            f"({new}.ngay_cap_nhat > t.ngay_cap_nhat OR ({new}.ngay_cap_nhat = t.ngay_cap_nhat AND "
            f"(substr({new}._source, 1, 5) <> 'file:' OR substr(t._source, 1, 5) = 'file:'))) AND "
        ) if entity in VERSIONED else ""
        return newer + _distinct(data_cols, new)

    _upsert(conn, f"core.{entity}", "stg_core", keys, cols, (updatable, when))


def load_batch(
    engine_or_conn: Engine | Connection,
    norm: Normalized,
    issues: pd.DataFrame,
    *,
    source: str,
    run_id: str,
    origin: str = "api",
    watermark: datetime | None = None,
    known: KnownKeys | None = None,
) -> LoadResult:
    """Load one normalised batch in one transaction. ``issues`` = parse issues + check issues
    (record_key, rule, severity, detail); keys with a critical issue are quarantined.

    On DuckDB the raw frame is landed as a Parquet file first, outside the transaction (with a
    connection: before any of its statements; :mod:`tasks.landing`). ``known``: the extraction's
    tracker of the table's keys (:mod:`tasks.known_keys`; used with an engine only, whose
    transaction is the load's own, so that it learns what committed)."""
    now = now_local()
    raw = norm.raw.assign(source=source, _source=origin, _run_id=run_id, _loaded_at=now)[RAW_COLUMNS]
    if isinstance(engine_or_conn, Connection):
        known = None
    known_keys.note_load(engine_or_conn, source, norm.entity, known)  # other trackers of the table are off
    landed = landing.land(engine_or_conn, norm.entity, source, run_id, raw, now)
    if isinstance(engine_or_conn, Connection):
        return _load(engine_or_conn, norm, issues, source, run_id, origin, watermark, now, raw, landed)
    try:
        with engine_or_conn.begin() as conn:
            loaded = _load(conn, norm, issues, source, run_id, origin, watermark, now, raw, landed, known)
    except sa.exc.DBAPIError as exc:
        if known is not None:
            known.rolled_back()
        if _out_of_memory(exc):
            raise WarehouseOutOfMemory(_out_of_memory_message(engine_or_conn, norm)) from exc
        raise
    except BaseException:
        if known is not None:
            known.rolled_back()
        raise
    if known is not None:
        known.committed()
    return loaded


class WarehouseOutOfMemory(WarehouseError):
    """DuckDB's memory limit was too small for a chunk's load (the chunk was rolled back)."""


def _out_of_memory(exc: sa.exc.DBAPIError) -> bool:
    import duckdb

    return isinstance(getattr(exc, "orig", None), duckdb.OutOfMemoryException)


def _out_of_memory_message(engine: Engine, norm: Normalized) -> str:
    """What to do when a chunk's load ran out of DuckDB's memory, with the limit and the size of
    the table it was loading (the update and the anti-join read its keys beside the chunk)."""
    limit, rows = "?", None
    try:
        with engine.connect() as conn:
            limit = conn.execute(sa.text("SELECT current_setting('memory_limit')")).scalar() or "?"
            rows = conn.execute(sa.text(f"SELECT count(*) FROM core.{norm.entity}")).scalar()  # noqa: S608 - registry name
    except Exception:  # noqa: BLE001 - the advice goes out without the figures
        log.debug("could not read DuckDB's memory limit after running out of memory", exc_info=True)
    held = f", core.{norm.entity} holds {rows:,} rows" if rows is not None else ""
    return (f"DuckDB ran out of memory loading a chunk of {norm.rows_received:,} records of {norm.entity} (its memory "
            f"limit {limit}, DVC_DUCKDB_MEMORY_LIMIT{held}): a chunk's staged rows, its joins against the core "
            "tables and the changes not yet checkpointed must fit in the limit. Raise DVC_DUCKDB_MEMORY_LIMIT or "
            "lower DVC_CHUNK_RECORDS (bench/README.md measures both), then run again: this chunk's transaction was "
            "rolled back, and the run goes on from the last watermark committed.")


def _load(
    conn: Connection,
    norm: Normalized,
    issues: pd.DataFrame,
    source: str,
    run_id: str,
    origin: str,
    watermark: datetime | None,
    now: datetime,
    raw: pd.DataFrame,
    landed: landing.LandedFile | None,
    known: KnownKeys | None = None,
) -> LoadResult:
    entity = norm.entity
    duck = dialect_name(conn) == "duckdb"
    if duck:
        # a chunk's WAL (core, versions, supplements) can be over DuckDB's default 16 MB threshold,
        # so every commit would also checkpoint; checkpointing every few chunks commits faster (bench/README.md)
        conn.execute(sa.text(f"SET checkpoint_threshold = '{DUCKDB_CHECKPOINT_THRESHOLD}'"))
    critical = issues[issues["severity"] == "critical"] if len(issues) else issues
    warn = issues[issues["severity"] == "warning"] if len(issues) else issues
    bad_keys = set(critical["record_key"]) if len(critical) else set()

    # 1. raw: DuckDB, the landed file's manifest row and view; PostgreSQL, the table (it reports
    # the rows an INSERT .. ON CONFLICT DO NOTHING wrote)
    if duck:
        if landed is not None:
            landing.record(conn, landed)
        raw_new = landed.rows if landed is not None else 0
    else:
        raw_new = _append_raw(conn, entity, raw, known)
    crash_point("load.after_raw")

    # 2. core (with a tracker of the table's keys: the rows certainly new are inserted, the exact
    # re-reads skipped, and only the rest staged for the update and the anti-join)
    keep = ~norm.core["record_key"].isin(bad_keys).to_numpy()
    good = norm.core[keep] if not keep.all() else norm.core
    cols = core_columns(entity)
    frame = good.assign(source=source, _source=origin, _run_id=run_id, _loaded_at=now)[cols]
    split = None
    if known is not None and len(good):
        hashes = (norm.raw_by_key.hashes(good["record_key"], np.flatnonzero(keep))
                  if isinstance(norm.raw_by_key, RecordTexts) else None)
        split = known.split(conn, good, hashes)
    index = pd.Index(good["record_key"]) if split is not None else None
    rest = frame if split is None else bulk.where(frame, split.way == REST)  # the long way
    if split is not None:
        bulk.insert(conn, f"core.{entity}", bulk.where(frame, split.way == NEW))
    if len(rest):
        bulk.stage(conn, "stg_core", rest, f"core.{entity}")
    if entity == "dossiers" and norm.versions is not None:
        versions = norm.versions[~norm.versions["ma_ho_so"].isin(bad_keys)].assign(source=source, _run_id=run_id)
        versions = versions[_V_COLS]
        if split is not None:
            at = index.get_indexer(versions["ma_ho_so"])
            way = split.at(at)
            # an exact re-read's version is the table's already (an older version read with it is not)
            current = (way == SAME) & (versions["ngay_cap_nhat"].to_numpy()
                                       == good["ngay_cap_nhat"].to_numpy()[np.maximum(at, 0)])
            bulk.insert(conn, "core.dossier_versions", bulk.where(versions, way == NEW))
            versions = bulk.where(versions, (way != NEW) & ~current)
        if len(versions):
            bulk.stage(conn, "stg_versions", versions, "core.dossier_versions")
            _upsert(conn, "core.dossier_versions", "stg_versions", ["source", "ma_ho_so", "ngay_cap_nhat"], _V_COLS)
    supplements = norm.supplements if entity == "dossiers" else None
    if supplements is not None:
        sup = supplements[~supplements["ma_ho_so"].isin(bad_keys)].assign(source=source, _run_id=run_id)[_S_COLS]
        if split is not None:
            # a new key's rounds are its version's only; an exact re-read's are the table's already
            way = split.at(index.get_indexer(sup["ma_ho_so"]))
            bulk.insert(conn, "core.dossier_supplements", bulk.where(sup, way == NEW))
            sup = bulk.where(sup, way == REST)
        if len(sup):
            bulk.stage(conn, "stg_supplements", sup, "core.dossier_supplements")
            # the same version sent again with other rounds replaces them, as it replaces the row
            dates = ["ngay_bo_sung", "ngay_tiep_nhan_bo_sung", "ngay_hen_tra_truoc", "ngay_hen_tra_moi"]
            _upsert(conn, "core.dossier_supplements", "stg_supplements",
                    ["source", "ma_ho_so", "ngay_cap_nhat", "lan"], _S_COLS,
                    ([*dates, "_run_id"], lambda new: _distinct(dates, new)))
    if len(rest):
        _upsert_core(conn, entity, cols)
    if supplements is not None and len(rest):
        # the rounds of a dossier are those of its current version: drop the superseded versions'
        # rows of this batch's keys (also the rows just inserted for an older version read late),
        # and the rounds past the current version's count (the same version sent again, shorter)
        # (joins on the keys only: a correlated subquery, or a constant filter on either table, lets
        # PostgreSQL's planner run a per-row subplan or a nested loop over the whole table)
        conn.execute(
            sa.text(
                "DELETE FROM core.dossier_supplements AS s USING stg_core AS k, core.dossiers AS d "
                "WHERE k.source = s.source AND k.ma_ho_so = s.ma_ho_so "
                "AND d.source = k.source AND d.ma_ho_so = k.ma_ho_so AND (s.ngay_cap_nhat < d.ngay_cap_nhat "
                "OR (s.ngay_cap_nhat = d.ngay_cap_nhat AND s.lan > d.n_bo_sung))"
            )
        )
    crash_point("load.after_core")

    # 3. quarantine and warnings
    _record_issues(conn, norm, critical, warn, source, entity, run_id, now)
    loaded_keys = pd.DataFrame({"record_key": good["record_key"].astype("string")})
    if len(loaded_keys):
        bulk.stage_keys(conn, loaded_keys)
        conn.execute(
            sa.text(
                "UPDATE dq.quarantine SET resolved_at = :now, resolved_run_id = :run "
                "WHERE source = :source AND entity = :entity AND resolved_at IS NULL "
                "AND record_key IN (SELECT record_key FROM stg_keys)"
            ),
            {"now": now, "run": run_id, "source": source, "entity": entity},
        )

    # 4. watermark (never backwards) and run summary
    if watermark is not None:
        set_watermark(conn, source, entity, watermark, run_id)
    result = LoadResult(
        entity=entity,
        rows_received=norm.rows_received,
        rows_duplicate=norm.rows_duplicate,
        rows_read=norm.rows_read,
        rows_loaded=len(good),
        rows_quarantined=len(norm.core) - len(good),
        warnings=len(warn),
        raw_new=int(raw_new),
    )
    add_run_summary(conn, run_id, source, result, now)
    crash_point("load.before_commit")
    return result


def _append_raw(conn: Connection, entity: str, raw: pd.DataFrame, known: KnownKeys | None = None) -> int:
    """PostgreSQL: append the batch's versions new to ``raw.<entity>`` (the batch's are distinct);
    returns how many. The versions already there (an overlap read again) are found by their key
    and hash, staged alone, and the rest is ``COPY``'d straight into the table: the records' text,
    most of a load's bytes, is written once instead of into a staging table and again by an
    ``INSERT ... ON CONFLICT DO NOTHING``. Runs hold the warehouse's writer lock, so nothing else
    adds a version between the lookup and the copy (a conflict would still fail the transaction,
    never duplicate a row). With the extraction's tracker (``known``), only the versions whose key
    the raw table held before are looked up."""
    if raw.empty:
        return 0
    ids = ["source", "record_key", "record_hash"]
    fresh = known.raw_split(conn, raw) if known is not None else None
    maybe = raw if fresh is None else raw[~fresh]
    have = []
    if len(maybe):
        bulk.stage(conn, "stg_raw_ids", maybe[ids], f"raw.{entity}")
        have = conn.execute(
            sa.text(f"SELECT s.record_key, s.record_hash FROM stg_raw_ids AS s JOIN raw.{entity} AS r "
                    "ON r.source = s.source AND r.record_key = s.record_key AND r.record_hash = s.record_hash")
        ).all()
    keep = None
    if have:  # a few versions read again: dropped as the CSV is written (the texts are not copied)
        there = pd.MultiIndex.from_tuples([tuple(r) for r in have])
        at = np.arange(len(raw)) if fresh is None else np.flatnonzero(~fresh)
        ids_at = raw[["record_key", "record_hash"]].iloc[at]
        keep = np.ones(len(raw), dtype=bool)
        keep[at[pd.MultiIndex.from_frame(ids_at).isin(there)]] = False
    new = len(raw) if keep is None else int(keep.sum())
    if new:
        bulk.copy_frame(conn, f"raw.{entity}", raw[RAW_COLUMNS], keep, binary=True)  # text and a timestamp
    return new


_V_COLS = ["source", "ma_ho_so", "ngay_cap_nhat", "trang_thai", "_run_id"]
_S_COLS = ["source", *SUPPLEMENT_COLUMNS, "_run_id"]
_Q_COLS = ["source", "entity", "record_key", "rule", "severity", "detail", "raw_record", "run_id",
           "first_seen_at", "last_seen_at"]
_W_COLS = ["source", "entity", "record_key", "rule", "detail", "run_id", "first_seen_at", "last_seen_at"]


def _record_issues(
    conn: Connection,
    norm: Normalized,
    critical: pd.DataFrame,
    warn: pd.DataFrame,
    source: str,
    entity: str,
    run_id: str,
    now: datetime,
) -> None:
    """Upsert critical issues into dq.quarantine and warnings into dq.warnings (staged, bulk)."""
    common = {"source": source, "entity": entity, "run_id": run_id, "first_seen_at": now, "last_seen_at": now}
    if len(critical):
        q = critical.drop_duplicates(["record_key", "rule"]).assign(**common)
        by_key = norm.raw_by_key
        q["raw_record"] = [by_key.get(k) for k in q["record_key"]]
        bulk.stage(conn, "stg_q", q[_Q_COLS].astype({"detail": "string", "raw_record": "string"}), "dq.quarantine")
        conn.execute(
            sa.text(
                f"INSERT INTO dq.quarantine ({', '.join(_Q_COLS)}) SELECT {', '.join(_Q_COLS)} FROM stg_q "
                "ON CONFLICT (source, entity, record_key, rule) DO UPDATE "
                "SET detail = excluded.detail, raw_record = excluded.raw_record, run_id = excluded.run_id, "
                "last_seen_at = excluded.last_seen_at, resolved_at = NULL, resolved_run_id = NULL"
            )
        )
    if len(warn):
        w = warn.drop_duplicates(["record_key", "rule"]).assign(**common)
        bulk.stage(conn, "stg_w", w[_W_COLS].astype({"detail": "string"}), "dq.warnings")
        conn.execute(
            sa.text(
                f"INSERT INTO dq.warnings ({', '.join(_W_COLS)}) SELECT {', '.join(_W_COLS)} FROM stg_w "
                "ON CONFLICT (source, entity, record_key, rule) DO UPDATE SET detail = excluded.detail, "
                "run_id = excluded.run_id, last_seen_at = excluded.last_seen_at"
            )
        )


#: The tables a load of each entity writes, whose statistics :func:`refresh_statistics` renews.
GROWN_TABLES = {"dossiers": ("core.dossiers", "core.dossier_versions", "core.dossier_supplements", "raw.dossiers"),
                "payments": ("core.payments", "raw.payments")}


def refresh_statistics(engine: Engine, entity: str, rows_loaded: int) -> list[str]:
    """PostgreSQL: ``ANALYZE`` the tables an extraction of ``entity`` grew by more than a tenth
    (autovacuum's default rule, done now instead of up to a minute later); returns their names.

    The planner sizes its plans by the statistics: from before a first load (an empty table), it
    took ``core.dossiers`` for a few thousand rows, and the payments' reference lookup that
    follows the dossiers hashed all of a million dossiers for each chunk instead of probing its
    key (``bench/README.md``). DuckDB keeps its statistics as it writes."""
    if rows_loaded <= 0 or dialect_name(engine) != "postgresql" or entity not in GROWN_TABLES:
        return []
    done = []
    with engine.connect() as conn:
        for table in GROWN_TABLES[entity]:
            tuples = conn.execute(sa.text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)"),
                                  {"t": table}).scalar()
            if tuples is not None and (tuples < 0 or rows_loaded > 0.1 * tuples + 50):  # -1: never analysed
                conn.execute(sa.text(f"ANALYZE {table}"))  # a registry table's name
                done.append(table)
        conn.commit()
    if done:
        log.info("%s: %d rows loaded, statistics renewed: %s", entity, rows_loaded, ", ".join(done))
    return done


def set_watermark(conn: Connection, source: str, entity: str, watermark: datetime, run_id: str) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO dq.watermarks AS w (source, entity, watermark, run_id, updated_at) "
            "VALUES (:source, :entity, :wm, :run, :now) ON CONFLICT (source, entity) DO UPDATE "
            "SET watermark = excluded.watermark, run_id = excluded.run_id, updated_at = excluded.updated_at "
            "WHERE excluded.watermark > w.watermark"
        ),
        {"source": source, "entity": entity, "wm": watermark, "run": run_id, "now": now_local()},
    )


def get_watermark(conn: Engine | Connection, source: str, entity: str) -> datetime | None:
    sql = sa.text("SELECT watermark FROM dq.watermarks WHERE source = :s AND entity = :e")
    if isinstance(conn, Engine):
        with conn.connect() as c:
            return c.execute(sql, {"s": source, "e": entity}).scalar_one_or_none()
    return conn.execute(sql, {"s": source, "e": entity}).scalar_one_or_none()


def add_run_summary(conn: Connection, run_id: str, source: str, r: LoadResult, now: datetime) -> None:
    """Add a batch's counts to the run's row for the entity (a run loads several batches)."""
    params = {
        "run": run_id, "source": source, "entity": r.entity, "rec": r.rows_received, "dup": r.rows_duplicate,
        "read": r.rows_read, "loaded": r.rows_loaded, "q": r.rows_quarantined, "w": r.warnings,
        "ok": r.reconciled, "now": now,
    }
    conn.execute(
        sa.text(
            "INSERT INTO dq.run_summary AS s (run_id, source, entity, rows_received, rows_duplicate, rows_read, "
            "rows_loaded, rows_quarantined, warnings, reconciled, recorded_at) VALUES (:run, :source, :entity, "
            ":rec, :dup, :read, :loaded, :q, :w, :ok, :now) ON CONFLICT (run_id, source, entity) DO UPDATE SET "
            "rows_received = s.rows_received + excluded.rows_received, "
            "rows_duplicate = s.rows_duplicate + excluded.rows_duplicate, "
            "rows_read = s.rows_read + excluded.rows_read, rows_loaded = s.rows_loaded + excluded.rows_loaded, "
            "rows_quarantined = s.rows_quarantined + excluded.rows_quarantined, "
            "warnings = s.warnings + excluded.warnings, "
            "reconciled = s.reconciled AND excluded.reconciled, recorded_at = excluded.recorded_at"
        ),
        params,
    )
