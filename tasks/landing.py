"""The raw layer of a DuckDB warehouse as landed files: each load batch's raw frame is one
zstd-compressed Parquet file, and ``raw.<entity>`` is a view over the committed files.

Why: inserting every raw version as JSON text into ``raw.<entity>`` tables was about half of a
DuckDB load (committing and checkpointing the JSON); a Parquet file is written outside the
database, with the GIL released, before the load's transaction.

- **Where**: the landing folder of the warehouse: ``DVC_LANDING_DIR``, or by default
  ``<duckdb file stem>-landing/`` beside the DuckDB file (``data/dvc.duckdb`` ->
  ``data/dvc-landing/``); an in-memory DuckDB gets a private temporary folder. The loader finds it
  from the engine: :func:`tasks.warehouse.connect` records it on the engine (:func:`configure`,
  ``open_warehouse`` passes the setting), and :func:`landing_dir` reads it back, from an engine or
  a connection. An engine made without it (``connect(url)`` in a test or a tool) uses the
  default folder. Files: ``<landing>/<entity>/<run id>/<stamp>-<uuid>.parquet``, written to a
  temporary name, fsynced and renamed; files 0600 and folders 0700 (personal data at rest).
- **Manifest**: ``dq.landed_files`` (migration 0008): one row per committed file (path relative
  to the landing folder, source, entity, run id, rows, bytes, landed_at). The loader inserts the
  row in the load's transaction, with the core upsert and the watermark (:func:`record`). A file
  without a committed row (a crash, a rollback) is invisible and deleted by :func:`sweep`, which
  ``run_nightly`` calls first, under the run's writer lock.
- **The view**: ``raw.<entity>`` = the manifest's files (``read_parquet`` of absolute paths), one
  row per ``(source, record_key, record_hash)``: the first landed (``_loaded_at``, then file
  name), as ``ON CONFLICT DO NOTHING`` kept it in the old table; the same columns and types.
  Rebuilt in the load's transaction after the manifest row (DuckDB's DDL is transactional) and by
  :func:`refresh_views` whenever the warehouse is upgraded (a moved folder is repaired on the next
  run). Reloading a batch lands another file; the view is unchanged, and the retention purge
  drops such extra copies once they are older than ``DVC_RAW_RETENTION_DAYS``.
- **Retention**: :func:`drop_rows` rewrites each file that holds doomed rows without them (new
  file, manifest rows swapped, view rebuilt, in the purge's transaction); the old files are
  unlinked after the commit (:func:`unlink`).
- **Older warehouses**: :func:`convert_raw_tables` (run by ``upgrade`` on DuckDB) exports each
  ``raw.<entity>`` table to one landed file, records it, drops the table and creates the view in
  one transaction; a crash before the commit leaves an orphan file (swept) and the table, so the
  rerun redoes it.
- **PostgreSQL** keeps ``raw.<entity>`` as tables loaded by ``COPY`` (it cannot read Parquet
  without an extension); ``dq.landed_files`` exists there and stays empty. Every function here is
  a no-op on PostgreSQL.

Backups copy the DuckDB file and its landing folder together (``docs/operations.md``).
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tasks.clock import now_local
from tasks.entities import ENTITIES
from tasks.sql_text import literal, text_literal

log = logging.getLogger(__name__)

#: ``raw.<entity>``'s columns, in order, with their types (tasks.load.RAW_COLUMNS).
SCHEMA = pa.schema([
    ("source", pa.string()), ("record_key", pa.string()), ("record_hash", pa.string()),
    ("ngay_cap_nhat", pa.string()), ("record", pa.string()), ("_source", pa.string()),
    ("_run_id", pa.string()), ("_loaded_at", pa.timestamp("us")),
])
_SQL_TYPES = {"_loaded_at": "TIMESTAMP"}
COLUMNS = SCHEMA.names
#: Parquet options: zstd level 1 (cheap to write); dictionaries and statistics only where they pay.
ZSTD_LEVEL = 1
_DICTIONARY = ["source", "_source", "_run_id", "ngay_cap_nhat"]
_STATISTICS = ["source", "record_key", "record_hash", "_loaded_at"]
_ATTR = "_dvc_landing_dir"
#: The run id of the files :func:`convert_raw_tables` lands.
MIGRATION_RUN = "migration-0008"
_TMP_PREFIX = ".landing-"


def _dialect(engine_or_conn: Engine | Connection) -> str:
    return engine_or_conn.dialect.name


def default_landing_dir(database: str | Path) -> Path:
    """``<stem>-landing`` beside the DuckDB file: ``data/dvc.duckdb`` -> ``data/dvc-landing``."""
    db = Path(database).expanduser()
    return db.with_name(f"{db.stem}-landing")


def configure(engine: Engine, landing: str | Path | None) -> None:
    """Record the landing folder of a DuckDB engine (``DVC_LANDING_DIR``; empty: the default)."""
    if _dialect(engine) != "duckdb":
        return
    database = engine.url.database
    if landing:
        root = Path(landing).expanduser()
    elif database and database != ":memory:":
        root = default_landing_dir(database)
    else:  # in memory: a temporary folder, made when first needed (landing_dir)
        return
    setattr(engine, _ATTR, root.absolute())


def landing_dir(engine_or_conn: Engine | Connection) -> Path | None:
    """The landing folder of a DuckDB warehouse (None for PostgreSQL)."""
    engine = engine_or_conn.engine if isinstance(engine_or_conn, Connection) else engine_or_conn
    if _dialect(engine) != "duckdb":
        return None
    if getattr(engine, _ATTR, None) is None:
        configure(engine, None)
    if getattr(engine, _ATTR, None) is None:  # an in-memory warehouse lives as long as the process
        setattr(engine, _ATTR, Path(tempfile.mkdtemp(prefix="dvc-landing-")))
    return getattr(engine, _ATTR)


def _private_dirs(root: Path, folder: Path) -> None:
    """``folder`` (under ``root``) and its missing parents, created 0700."""
    root.parent.mkdir(parents=True, exist_ok=True)
    for p in reversed([folder, *folder.parents]):
        if p != root and root not in p.parents:
            continue
        if not p.exists():
            p.mkdir(mode=0o700, exist_ok=True)
            os.chmod(p, 0o700)


def _fsync(path: Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, dest: Path) -> int:
    """fsync, 0600, rename ``tmp`` to ``dest``, fsync the folder; returns the file's size."""
    os.chmod(tmp, 0o600)
    _fsync(tmp)
    os.replace(tmp, dest)
    _fsync(dest.parent)
    return dest.stat().st_size


def _new_path(root: Path, entity: str, run_id: str, when: datetime) -> Path:
    safe_run = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in run_id) or "run"
    return root / entity / safe_run / f"{when:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:12]}.parquet"


@dataclass(frozen=True)
class LandedFile:
    """One landed file, as its manifest row says."""

    path: str  # relative to the landing folder, POSIX
    source: str
    entity: str
    run_id: str
    rows: int
    bytes: int
    landed_at: datetime
    folder: str | None = None  # the landing folder it was landed in (absolute)


def land(engine_or_conn: Engine | Connection, entity: str, source: str, run_id: str, frame: pd.DataFrame,
         landed_at: datetime) -> LandedFile | None:
    """Write a load batch's raw frame (:data:`COLUMNS`) as a Parquet file, durably, before the
    load's transaction. None when the frame is empty (nothing to land) or on PostgreSQL."""
    root = landing_dir(engine_or_conn)
    if root is None or frame.empty:
        return None
    table = pa.Table.from_pandas(frame[COLUMNS], schema=SCHEMA, preserve_index=False)
    dest = _new_path(root, entity, run_id, landed_at)
    _private_dirs(root, dest.parent)
    tmp = dest.with_name(_TMP_PREFIX + dest.name)
    try:
        pq.write_table(table, tmp, compression="zstd", compression_level=ZSTD_LEVEL,
                       use_dictionary=_DICTIONARY, write_statistics=_STATISTICS)
        size = _publish(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return LandedFile(dest.relative_to(root).as_posix(), source, entity, run_id, table.num_rows, size, landed_at,
                      str(root))


def _insert_manifest(conn: Connection, f: LandedFile) -> None:
    conn.execute(sa.text(
        "INSERT INTO dq.landed_files (path, source, entity, run_id, rows, bytes, landed_at, folder) "
        "VALUES (:path, :source, :entity, :run_id, :rows, :bytes, :landed_at, :folder)"),
        {**f.__dict__, "folder": f.folder or str(landing_dir(conn))})


def record(conn: Connection, landed: LandedFile) -> None:
    """In the load's transaction: the file's manifest row, then ``raw.<entity>`` rebuilt over it."""
    _insert_manifest(conn, landed)
    rebuild_view(conn, landed.entity)


def manifest_paths(conn: Connection, entity: str | None = None) -> list[str]:
    """Relative paths of the committed files (of one entity), in landing order."""
    where, params = ("WHERE entity = :e", {"e": entity}) if entity else ("", {})
    return [r[0] for r in conn.execute(sa.text(
        f"SELECT path FROM dq.landed_files {where} ORDER BY landed_at, path"), params)]  # noqa: S608


def located(conn: Connection, entity: str | None = None) -> dict[str, Path | None]:
    """Each committed file's relative path -> where it is: in this warehouse's landing folder, or
    else in the folder it was landed in (a copy of the ``.duckdb`` file made without its folder
    reads the original's files; it never deletes them: :func:`sweep` and :func:`unlink` act in
    its own folder only); None when neither holds it."""
    root = landing_dir(conn)
    where, params = ("WHERE entity = :e", {"e": entity}) if entity else ("", {})
    out: dict[str, Path | None] = {}
    for rel, folder in conn.execute(sa.text(
            f"SELECT path, folder FROM dq.landed_files {where} ORDER BY landed_at, path"), params):  # noqa: S608
        here = root / rel
        there = Path(folder) / rel if folder else None
        out[rel] = here if here.is_file() else there if there is not None and there.is_file() else None
    return out


def view_sql(entity: str, files: list[Path]) -> str:
    """The ``CREATE OR REPLACE VIEW raw.<entity>`` statement over ``files`` (absolute paths)."""
    cols = ", ".join(f"CAST({c} AS {_SQL_TYPES.get(c, 'VARCHAR')}) AS {c}" for c in COLUMNS)
    if not files:
        body = f"SELECT {cols} FROM (SELECT {', '.join(f'NULL AS {c}' for c in COLUMNS)}) WHERE false"  # noqa: S608
    else:
        listed = ", ".join(literal(str(f)) for f in files)
        body = (f"SELECT {cols} FROM read_parquet([{listed}], filename = true) QUALIFY row_number() OVER "  # noqa: S608
                "(PARTITION BY source, record_key, record_hash ORDER BY _loaded_at, filename) = 1")
    return f"CREATE OR REPLACE VIEW raw.{entity} AS {body}"  # entity from the registry, paths quoted


def rebuild_view(conn: Connection, entity: str) -> None:
    """``raw.<entity>`` over the manifest's files; a clear error when the landing folder lacks
    one (a ``.duckdb`` file copied or moved without its landing folder)."""
    root = landing_dir(conn)
    where = located(conn, entity)
    missing = [rel for rel, path in where.items() if path is None]
    if missing:
        raise RuntimeError(
            f"the landing folder {root} lacks {len(missing)} of the {len(where)} raw files of raw.{entity} that "
            f"dq.landed_files lists (first: {missing[0]}): a DuckDB warehouse is its .duckdb file and its landing "
            "folder; copy or move them together, or set DVC_LANDING_DIR to the folder they were landed in "
            "(docs/operations.md)")
    conn.exec_driver_sql(view_sql(entity, [p for p in where.values() if p is not None]))


def refresh_views(engine_or_conn: Engine | Connection) -> None:
    """Rebuild every ``raw.<entity>`` view over the landing folder of this engine (a folder moved
    with its warehouse, or a copy, is repaired). Left alone, with a warning, when the folder lacks
    manifest files (an engine opened without its ``DVC_LANDING_DIR``)."""
    if _dialect(engine_or_conn) != "duckdb":
        return
    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.begin() as conn:
            refresh_views(conn)
        return
    conn, root = engine_or_conn, landing_dir(engine_or_conn)
    missing = [rel for rel, path in located(conn).items() if path is None]
    if missing:
        log.warning("the landing folder %s lacks %d of the warehouse's raw files (first: %s): raw views "
                    "left as they are; is DVC_LANDING_DIR set as when they were landed?", root, len(missing), missing[0])
        return
    for entity in ENTITIES:
        rebuild_view(conn, entity)


def sweep(engine: Engine) -> int:
    """Delete the files under the landing folder that no committed manifest row names (a crashed
    or rolled-back load's, a temporary file) and empty run folders; returns the files deleted.
    The caller holds the writer lock (no load in flight). No-op on PostgreSQL."""
    root = landing_dir(engine)
    if root is None or not root.is_dir():
        return 0
    with engine.connect() as conn:
        kept = set(manifest_paths(conn))
        conn.rollback()
    removed = 0
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        folder = Path(dirpath)
        for name in files:
            path = folder / name
            if path.relative_to(root).as_posix() not in kept:
                path.unlink(missing_ok=True)
                removed += 1
        if folder != root and not any(folder.iterdir()):
            folder.rmdir()
    if removed:
        log.info("landing sweep: %d uncommitted file(s) deleted under %s", removed, root)
    return removed


def unlink(engine_or_conn: Engine | Connection, paths: list[str]) -> None:
    """After a commit: delete files the manifest no longer names (a crash first: the sweep does)."""
    root = landing_dir(engine_or_conn)
    for p in paths:
        (root / p).unlink(missing_ok=True)


def _copy_to_file(conn: Connection, select: str, root: Path, entity: str, run_id: str,
                  when: datetime) -> tuple[str, int]:
    """``COPY (select) TO`` a new landed file (zstd Parquet, durable, 0600); (relative path, bytes)."""
    dest = _new_path(root, entity, run_id, when)
    _private_dirs(root, dest.parent)
    tmp = dest.with_name(_TMP_PREFIX + dest.name)
    try:
        conn.execute(sa.text(f"COPY ({select}) TO {text_literal(str(tmp))} "
                             f"(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL {ZSTD_LEVEL})"))
        size = _publish(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest.relative_to(root).as_posix(), size


def loaded_before(conn: Connection, entity: str, cutoff: datetime) -> bool:
    """Whether any landed row of ``entity`` was loaded before ``cutoff``: the retention's cheap
    first look (:func:`drop_rows` and the superseded versions only take rows loaded before it).
    It reads the files' ``_loaded_at`` column, their row-group statistics skipping every group
    loaded since; True when a manifest file is missing (the caller takes its full path, and fails
    as it would)."""
    where = located(conn, entity)
    if not where:
        return False
    if any(path is None for path in where.values()):
        return True
    listed = ", ".join(text_literal(str(path)) for path in where.values())
    return bool(conn.execute(sa.text(
        f"SELECT EXISTS (SELECT 1 FROM read_parquet([{listed}]) WHERE CAST(_loaded_at AS TIMESTAMP) < :cut)"),  # noqa: S608
        {"cut": cutoff}).scalar_one())


def drop_rows(conn: Connection, entity: str, doomed_versions: str, params: dict, cutoff: datetime) -> list[str]:
    """Retention on DuckDB, in the purge's transaction: rewrite each landed file of ``entity``
    without its doomed rows: every copy of the versions ``doomed_versions`` selects (source,
    record_key, record_hash) and the extra copies (not the first landed) loaded before ``cutoff``.
    Manifest rows swapped and the view rebuilt here; returns the replaced files' paths, to
    :func:`unlink` after the commit."""
    root = landing_dir(conn)
    where = located(conn, entity)
    if not where:
        return []
    by_abs = {str(path): rel for rel, path in where.items() if path is not None}
    listed = ", ".join(text_literal(a) for a in by_abs)
    conn.execute(sa.text("DROP TABLE IF EXISTS landing_doomed"))
    conn.execute(sa.text(
        f"CREATE TEMP TABLE landing_doomed AS WITH copies AS (SELECT filename AS file, source, record_key, "  # noqa: S608
        "record_hash, _loaded_at, row_number() OVER (PARTITION BY source, record_key, record_hash "
        f"ORDER BY _loaded_at, filename) AS copy_no FROM read_parquet([{listed}], filename = true)) "
        "SELECT c.file, c.source, c.record_key, c.record_hash FROM copies c "
        f"LEFT JOIN ({doomed_versions}) d ON d.source = c.source AND d.record_key = c.record_key "
        "AND d.record_hash = c.record_hash WHERE d.record_key IS NOT NULL OR (c.copy_no > 1 AND c._loaded_at < :cut)"),
        {**params, "cut": cutoff})
    hit = conn.execute(sa.text("SELECT file, count(*) FROM landing_doomed GROUP BY file ORDER BY file")).fetchall()
    replaced = []
    for file, n in hit:
        old = conn.execute(sa.text("SELECT source, run_id, rows, landed_at FROM dq.landed_files WHERE path = :p"),
                           {"p": by_abs[file]}).one()
        conn.execute(sa.text("DELETE FROM dq.landed_files WHERE path = :p"), {"p": by_abs[file]})
        replaced.append(by_abs[file])
        if old.rows - n <= 0:
            continue
        keep = (f"SELECT {', '.join(COLUMNS)} FROM read_parquet({text_literal(file)}) r WHERE NOT EXISTS (SELECT 1 FROM "  # noqa: S608
                f"landing_doomed d WHERE d.file = {text_literal(file)} AND d.source = r.source AND d.record_key = r.record_key "
                "AND d.record_hash = r.record_hash) ORDER BY _loaded_at, record_key")
        path, size = _copy_to_file(conn, keep, root, entity, old.run_id, now_local())
        _insert_manifest(conn, LandedFile(path, old.source, entity, old.run_id, old.rows - n, size, old.landed_at))
    conn.execute(sa.text("DROP TABLE IF EXISTS landing_doomed"))
    if replaced:
        rebuild_view(conn, entity)
    return replaced


def convert_raw_tables(engine: Engine, *, landed_at: datetime) -> list[str]:
    """DuckDB, after migration 0008: each ``raw.<entity>`` still a table becomes one landed file
    (when it has rows), its manifest row, and the view, in one transaction per entity. Returns the
    entities converted (none once done: cheap to call on every upgrade)."""
    if _dialect(engine) != "duckdb":
        return []
    root = landing_dir(engine)
    done = []
    for entity in ENTITIES:
        with engine.begin() as conn:
            is_table = conn.execute(sa.text(
                "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                "AND schema_name = 'raw' AND table_name = :t"), {"t": entity}).scalar_one()
            if not is_table:
                continue
            rows = 0
            for source, n in conn.execute(sa.text(
                    f"SELECT source, count(*) FROM raw.{entity} GROUP BY source ORDER BY source")).fetchall():  # noqa: S608
                select = (f"SELECT {', '.join(COLUMNS)} FROM raw.{entity} WHERE source = {text_literal(source)} "  # noqa: S608
                          "ORDER BY _loaded_at, record_key")
                path, size = _copy_to_file(conn, select, root, entity, MIGRATION_RUN, landed_at)
                _insert_manifest(conn, LandedFile(path, source, entity, MIGRATION_RUN, n, size, landed_at))
                rows += n
            conn.execute(sa.text(f"DROP TABLE raw.{entity}"))
            rebuild_view(conn, entity)
        done.append(entity)
        log.info("raw.%s: %d rows moved to the landing folder %s", entity, rows, root)
    return done
