"""The analysts' DuckDB: a read-only copy of ``mart`` and the non-personal ``core`` relations.

Plain functions, no Prefect. DuckDB admits one writing process per file, so analysts never open
the warehouse itself: after each publication the run writes :func:`publish_analyst_copy`, a
separate file (``<warehouse file stem>-analyst.duckdb`` beside the warehouse, or
``DVC_ANALYST_DUCKDB``) that analysts open read-only (``duckdb -readonly data/dvc-analyst.duckdb``,
``duckdb.connect(path, read_only=True)``, DBeaver's read-only flag).

- Atomic: the copy is built in a temporary file beside the target (same folder, same file
  system), checkpointed, fsynced, then ``os.replace``-d over the target. A reader sees the old
  copy or the new one, never a half-written file.
- Never blocking: analysts never hold the writer's lock (they open another file), and a run never
  waits for an analyst's open connection: the rename leaves a reader on the old file (its snapshot
  stays readable until it closes), the next connection opens the new one.
- Content: every ``mart`` table; from ``core``, what the analyst role of a PostgreSQL warehouse
  reads with ``SELECT *``: every relation without a restricted column (:data:`tasks.grants.CORE_RESTRICTED`)
  and the ``*_public`` views (``core.dossiers_public``), stored as tables; a view that reads only
  tables the copy holds (``core.dossier_status_history``) stays a view over them. Never ``raw`` or
  ``dq`` and never the applicant key. Table and column comments (the data dictionary) come along.
- Mode 0400: read-only, owner-only like every file the pipeline writes (the warehouse's folder is
  private); to share it with other accounts, point ``DVC_ANALYST_DUCKDB`` at a shared folder and
  hand the file over (a copy, a file share) from there.

On a PostgreSQL warehouse there is no file to copy: analysts use the role of
``dvc-etl db grant-analyst`` and the ``core.*_public`` views (:mod:`tasks.grants`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tasks.analyst_catalog import (
    ALIAS,
    comment_statements,
    copied_relations,
    grows_by_publication,
    kept_views,
    table_columns,
)
from tasks.settings import Settings
from tasks.sql_text import literal, quote
from tasks.warehouse import WarehouseError, dialect_name

log = logging.getLogger(__name__)

#: The schemas of the copy.
SCHEMAS = ("mart", "core")
#: Mode of the published copy: read-only for its owner.
COPY_MODE = 0o400
#: A previous copy whose free blocks exceed this share of its used ones is not started from: the
#: copy is written from scratch, compact again. Each night frees the blocks of the tables written
#: again and reuses them; what is left over (partly filled blocks) stays a few percent of a large
#: copy, more of a small one (``bench/analyst_copy.py`` prints the blocks night by night).
REWRITE_FREE_SHARE = 0.25


class AnalystCopyError(WarehouseError):
    """The analyst copy could not be written (the publication itself is committed and unaffected)."""


class _Abandoned(Exception):  # noqa: N818 - not an error: the caller failed, its copy is dropped
    """The caller of :class:`AnalystCopyAlongside` failed: the copy is rolled back, unpublished."""


def default_analyst_path(warehouse_file: Path | str) -> Path:
    """``<stem>-analyst.duckdb`` beside the warehouse file: ``data/dvc.duckdb`` -> ``data/dvc-analyst.duckdb``."""
    db = Path(warehouse_file)
    return db.with_name(f"{db.stem}-analyst.duckdb")


def analyst_copy_path(settings: Settings) -> Path | None:
    """Where the analyst copy of a DuckDB warehouse goes: ``DVC_ANALYST_DUCKDB`` if set, else beside
    the warehouse file. None for a PostgreSQL or in-memory warehouse (no copy is made)."""
    import sqlalchemy as sa

    url = sa.engine.make_url(settings.warehouse_url)
    if url.get_backend_name() != "duckdb" or not url.database or url.database == ":memory:":
        return None
    if settings.analyst_duckdb:
        return Path(settings.analyst_duckdb).expanduser()
    return default_analyst_path(Path(url.database).expanduser())


def _remove_stale_temps(target: Path) -> None:
    """Temporary copies left by a process that died while writing one (a crash, a kill)."""
    for leftover in target.parent.glob(f".{target.name}.*.tmp*"):
        pid = leftover.name[len(target.name) + 2:].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                continue  # its writer is alive
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        leftover.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reuse_basis(conn: Connection, relations: list[tuple[str, str]],
                 views: dict[tuple[str, str], str]) -> list[tuple[str, str]]:
    """On a copy that starts as the previous one (attached as the alias): keep the rows of its
    publication history tables that the warehouse still has (every table
    :func:`~tasks.analyst_catalog.grows_by_publication` names whose columns are the warehouse's,
    each publication's rows kept only if ``mart.publications`` describes it alike in both), drop
    everything else, commit and checkpoint (freeing the dropped tables' blocks for what is written
    next). Returns the tables kept."""
    warehouse = conn.exec_driver_sql("SELECT current_database()").scalar_one()
    held = {(s, n): k for s, n, k in conn.exec_driver_sql(
        "SELECT schema_name, table_name, 'TABLE' FROM duckdb_tables() WHERE database_name = ? UNION ALL "
        "SELECT schema_name, view_name, 'VIEW' FROM duckdb_views() WHERE database_name = ? AND NOT internal",
        (ALIAS, ALIAS)).fetchall()}
    wanted = {r for r in relations if r not in views}
    kept = [(s, n) for (s, n), kind in held.items() if kind == "TABLE" and (s, n) in wanted
            and grows_by_publication(s, n, cols := table_columns(conn, warehouse, s, n))
            and table_columns(conn, ALIAS, s, n) == cols]
    pubs = [c for c, _ in table_columns(conn, warehouse, "mart", "publications")
            if c not in ("workbook_path", "is_current")]
    if kept and ("mart", "publications") in held and "publication_id" in pubs and set(pubs) <= {
            c for c, _ in table_columns(conn, ALIAS, "mart", "publications")}:
        same = ", ".join(quote(c) for c in pubs)
        alike = (f"SELECT publication_id FROM (SELECT {same} FROM {ALIAS}.mart.publications "  # noqa: S608
                 f"INTERSECT SELECT {same} FROM mart.publications)")  # names from the catalog, quoted
    else:
        alike = "SELECT NULL::VARCHAR WHERE false"
    for schema, name in kept:  # before the previous copy's mart.publications is dropped
        conn.exec_driver_sql(f"DELETE FROM {ALIAS}.{quote(schema)}.{quote(name)} "  # noqa: S608 - catalog names
                             f"WHERE publication_id NOT IN ({alike})")
    for (schema, name), kind in held.items():
        if kind == "VIEW":
            conn.exec_driver_sql(f"DROP VIEW {ALIAS}.{quote(schema)}.{quote(name)}")
    for (schema, name), kind in held.items():
        if kind == "TABLE" and (schema, name) not in kept:
            conn.exec_driver_sql(f"DROP TABLE {ALIAS}.{quote(schema)}.{quote(name)}")
    conn.commit()
    conn.exec_driver_sql(f"CHECKPOINT {ALIAS}")
    conn.commit()
    return kept


#: The (used, free) blocks of an attached database (its name the parameter).
_BLOCKS = "SELECT used_blocks, free_blocks FROM pragma_database_size() WHERE database_name = ?"


def copy_blocks(path: Path | str) -> tuple[int, int]:
    """The (used, free) blocks of an analysts' copy file: what a copy started from the previous one
    carries over (:data:`REWRITE_FREE_SHARE`). Opened read-only, beside any reader."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute(f"ATTACH {literal(str(path))} AS c (READ_ONLY)")
        used, free = con.execute(_BLOCKS, ["c"]).fetchone()
        return int(used), int(free)
    finally:
        con.close()


def _detach(conn: Connection) -> None:
    """Roll the copy's transaction back and detach it (DuckDB detaches a database on the rollback
    of the transaction that attached it; one attached earlier stays until told)."""
    conn.rollback()
    conn.exec_driver_sql(f"DETACH DATABASE IF EXISTS {ALIAS}")
    conn.commit()


def _start_from_previous(conn: Connection, target: Path, tmp: Path, relations: list[tuple[str, str]],
                         views: dict[tuple[str, str], str]) -> list[tuple[str, str]] | None:
    """``tmp`` as a file copy of the previous copy ``target``, attached and prepared by
    :func:`_reuse_basis` (the history tables it keeps are returned); None, with ``tmp`` removed,
    when there is no previous copy, it cannot be used (a warning) or it holds more free blocks
    than :data:`REWRITE_FREE_SHARE` of its used ones."""
    if not target.is_file():
        return None
    try:
        shutil.copyfile(target, tmp)
        tmp.chmod(0o600)
        conn.exec_driver_sql(f"ATTACH {literal(str(tmp))} AS {ALIAS}")
        used, free = conn.exec_driver_sql(_BLOCKS, (ALIAS,)).one()
        if free <= REWRITE_FREE_SHARE * used:
            return _reuse_basis(conn, relations, views)
        log.info("analyst copy: the previous copy has %d free blocks for %d used; written afresh", free, used)
    except Exception as exc:  # noqa: BLE001 - whatever the old copy is, a new one is written
        log.warning("analyst copy: the previous copy %s cannot be reused (%s); writing it afresh", target, exc)
    try:
        _detach(conn)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return None


def _write_tables(conn: Connection, relations: list[tuple[str, str]], views: dict[tuple[str, str], str],
                  kept: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], int]:
    """Write every table of the copy (the relations but the views it keeps): a history table
    ``kept`` from the previous copy gains the publications it lacks, and is written whole when its
    rows then differ in number from the warehouse's; every other is written whole. Returns the
    tables kept after all, and the rows appended to them."""
    appended, still = 0, []
    for schema, name in relations:
        if (schema, name) in views:
            continue
        table = f"{quote(schema)}.{quote(name)}"  # catalog names, quoted
        copied = f"{ALIAS}.{table}"
        if (schema, name) in kept:
            added = conn.exec_driver_sql(
                f"INSERT INTO {copied} SELECT * FROM {table} WHERE publication_id NOT IN "  # noqa: S608
                f"(SELECT DISTINCT publication_id FROM {copied})").scalar_one()
            count = f"SELECT (SELECT count(*) FROM {copied}) = (SELECT count(*) FROM {table})"  # noqa: S608
            if conn.exec_driver_sql(count).scalar_one():
                appended += added
                still.append((schema, name))
                continue
            log.warning("analyst copy: %s.%s differs from the previous copy's; written again", schema, name)
            conn.exec_driver_sql(f"DROP TABLE {copied}")
        conn.exec_driver_sql(f"CREATE TABLE {copied} AS SELECT * FROM {table}")  # noqa: S608
    return still, appended


def _write_copy(conn: Connection, target: Path, tmp: Path,
                before_commit: Callable[[Connection, str], None] | None,
                ) -> tuple[list[tuple[str, str]], list[tuple[str, str]], int]:
    """Write the copy into ``tmp`` (from the previous copy ``target`` where it can) and detach it;
    returns the relations copied, the history tables kept and the rows appended to them."""
    relations = copied_relations(conn)
    views = kept_views(conn, relations)
    kept = _start_from_previous(conn, target, tmp, relations, views)
    if kept is None:
        conn.exec_driver_sql(f"ATTACH {literal(str(tmp))} AS {ALIAS}")
    try:
        for schema in SCHEMAS:
            conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {ALIAS}.{quote(schema)}")
        # one transaction: every table from the same snapshot
        kept, appended = _write_tables(conn, relations, views, kept or [])
        for (schema, name), query in views.items():  # their names resolve in the copy
            conn.exec_driver_sql(f"CREATE VIEW {ALIAS}.{quote(schema)}.{quote(name)} AS {query}")
        comments = comment_statements(conn, relations, set(views), kept)
        if comments:  # one round trip: a few hundred of them (every mart column has one)
            conn.exec_driver_sql(";\n".join(comments))
        if before_commit is not None:
            before_commit(conn, ALIAS)
        conn.commit()
        conn.exec_driver_sql(f"CHECKPOINT {ALIAS}")
        conn.commit()
    except BaseException:
        _detach(conn)
        raise
    conn.exec_driver_sql(f"DETACH {ALIAS}")
    conn.commit()
    return relations, kept, appended


def publish_analyst_copy(engine: Engine, target: Path | str | None = None, *,
                         before_commit: Callable[[Connection, str], None] | None = None) -> Path | None:
    """Write the analyst copy of a DuckDB warehouse atomically; returns its path.

    ``target`` defaults to :func:`default_analyst_path` of the warehouse file. Call it after a
    publication has committed, in the process that holds the warehouse (the run), with the run's
    engine: DuckDB lets one process open the file, so the copy is read through the same engine.
    Returns None, doing nothing, on a PostgreSQL or in-memory warehouse. Raises
    :class:`AnalystCopyError` when the copy cannot be written; the previous copy then stays.
    ``before_commit(conn, alias)`` runs once the copy's tables are written, before they commit (the
    copy is attached as ``alias``): :class:`AnalystCopyAlongside` records a workbook there; what it
    raises abandons the copy and is raised as it is.

    The publication history grows by every publication and never changes (``mart.rpt_*_history``),
    so when a previous copy is there, the new one starts as a file copy of it and keeps its history
    rows, appending the publications it lacks; every other relation is written again. A table whose
    rows then differ in number from the warehouse's is written again too, and a previous copy that
    cannot be used (unreadable, another layout) or has grown loose (:data:`REWRITE_FREE_SHARE`) is
    set aside: the copy is then written from scratch.
    """
    if dialect_name(engine) != "duckdb":
        log.debug("analyst copy: a PostgreSQL warehouse has none (analysts use the views)")
        return None
    database = engine.url.database
    if not database or database == ":memory:":
        return None
    source = Path(database).expanduser().resolve()
    target = Path(target).expanduser() if target is not None else default_analyst_path(source)
    target = target.absolute()
    if target.resolve() == source:
        raise AnalystCopyError(f"the analyst copy {target} cannot be the warehouse file itself")
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(target)
        with engine.connect() as conn:
            # the copy's rows need not keep the warehouse's order, and without it DuckDB writes a
            # table with every thread (bench/README.md); this connection only, until it goes back
            conn.exec_driver_sql("SET SESSION preserve_insertion_order = false")
            try:
                relations, kept, appended = _write_copy(conn, target, tmp, before_commit)
            finally:
                try:
                    conn.exec_driver_sql("RESET SESSION preserve_insertion_order")
                    conn.commit()
                except Exception:
                    conn.invalidate()  # never back to the pool with the copy's setting
                    raise
        wal = tmp.with_name(tmp.name + ".wal")
        if wal.exists():  # checkpointed: nothing left in it
            wal.unlink()
        tmp.chmod(COPY_MODE)
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync(target.parent)
    except Exception as exc:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            with contextlib.suppress(OSError):
                leftover.unlink()
        if isinstance(exc, (AnalystCopyError, _Abandoned)):
            raise
        raise AnalystCopyError(f"cannot write the analyst copy {target}: {exc}") from exc
    log.info("analyst copy %s: %d tables of mart and core (%d publication history tables kept from the previous "
             "copy, %d rows appended to them)", target, len(relations), len(kept), appended)
    return target


def refresh_analyst_copy(engine: Engine, settings: Settings, *,
                         before_commit: Callable[[Connection, str], None] | None = None) -> Path | None:
    """:func:`publish_analyst_copy` to :func:`analyst_copy_path`, for a run after a publication: a
    failure is logged as an error and returns None instead of failing the run (the publication is
    committed; analysts keep the previous copy until the next one). ``before_commit``: as
    :func:`publish_analyst_copy` takes it."""
    target = analyst_copy_path(settings)
    if target is None:
        return None
    try:
        return publish_analyst_copy(engine, target, before_commit=before_commit)
    except AnalystCopyError as exc:
        log.error("%s; analysts keep the previous copy", exc)
        return None


class AnalystCopyAlongside:
    """:func:`refresh_analyst_copy` in a thread while the caller writes the publication's workbook.

    The copy's snapshot is taken when the context is entered (the publication has committed); its
    tables are written while the caller lays the workbook out (DuckDB copies in its own threads, the
    workbook is Python). The workbook's path, recorded in ``mart.publications`` after the snapshot,
    is handed over with :meth:`workbook_recorded` and written into the copy's row before the copy
    commits, so the copy says what the warehouse says. On leaving, the copy is finished and waited
    for; if the caller raised, it is rolled back (the previous copy stays) and the caller's error
    goes on. Does nothing (no thread) when ``enabled`` is false or the warehouse has no copy
    (PostgreSQL, in memory). A failed copy is logged, as by :func:`refresh_analyst_copy`.
    """

    def __init__(self, engine: Engine, settings: Settings, *, enabled: bool = True) -> None:
        self.engine, self.settings, self.enabled = engine, settings, enabled
        self._workbooks: dict[str, str] = {}
        self._release: Future[None] = Future()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> AnalystCopyAlongside:
        if self.enabled and analyst_copy_path(self.settings) is not None:
            self._thread = threading.Thread(target=self._copy, name="analyst-copy", daemon=True)
            self._thread.start()
        return self

    def workbook_recorded(self, publication_id: str, path: Path | str) -> None:
        """The workbook of ``publication_id`` is written and recorded: the copy records it too."""
        self._workbooks[publication_id] = str(path)

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._thread is None:
            return
        if exc is None:
            self._release.set_result(None)
        else:
            self._release.set_exception(_Abandoned(f"the publication's step failed: {exc_type.__name__}"))
        self._thread.join()
        if exc is None and self._error is not None:
            raise self._error

    def _record_workbooks(self, conn: Connection, alias: str) -> None:
        self._release.result()  # the caller is done (or raises _Abandoned: the copy is dropped)
        update = sa.text(f"UPDATE {quote(alias)}.mart.publications SET workbook_path = :w "  # noqa: S608
                         "WHERE publication_id = :p")  # the alias: our constant
        for pid, path in self._workbooks.items():
            conn.execute(update, {"w": path, "p": pid})

    def _copy(self) -> None:
        try:
            refresh_analyst_copy(self.engine, self.settings, before_commit=self._record_workbooks)
        except _Abandoned:
            log.info("analyst copy abandoned: the publication's step failed; analysts keep the previous copy")
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            self._error = exc
