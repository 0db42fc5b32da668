"""Retention of the personal data the warehouse keeps as read (Decree 13/2023/NĐ-CP practice:
personal data is kept no longer than its purpose needs).

Two places hold applicant data as the source sent it (names, ID numbers, phone numbers); ``core``
and ``mart`` never do:

- ``dq.quarantine.raw_record``: the record a quarantined row was read as, kept so that the ops
  team can see what was wrong. Cleared (NULL; the key, rule and reason stay) once the row is
  resolved (a corrected version loaded), and in any case ``DVC_QUARANTINE_RAW_RETENTION_DAYS``
  after the record was last read (``last_seen_at``).
- ``raw.<entity>``: every distinct version of every record as extracted. Versions loaded more than
  ``DVC_RAW_RETENTION_DAYS`` ago are deleted, except the latest version of each key: the one with
  the highest ``NgayCapNhat`` (ties: the last loaded) and the last one loaded, when that is another.

Nothing the reports read is touched: they are built from ``core`` (typed, no personal data), so a
purge changes no report figure (``tests/test_data_at_rest.py`` republishes and compares).
:func:`purge` runs at the end of every nightly run (``tasks.pipeline.run_nightly``) and from
``dvc-etl db purge``, under the warehouse's writer lock.

On DuckDB, ``raw.<entity>`` is a view over landed Parquet files (:mod:`tasks.landing`): each file
holding doomed rows is rewritten without them (and without extra copies of a version, landed again
by a later load, once they are older than the cutoff), its manifest row swapped in the purge's
transaction; the old file is deleted after the commit. Every doomed row was loaded before the
cutoff, so an entity none of whose landed rows is that old (:func:`tasks.landing.loaded_before`,
answered from the files' statistics) is left unscanned: most nights, nothing is due.

Deleted rows leave the tables at once; on disk, DuckDB reuses their blocks after the checkpoint
that :func:`purge` runs and PostgreSQL's autovacuum reclaims them (``VACUUM FULL`` rewrites the
files when an erasure must be physical at once).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tasks import landing
from tasks.clock import now_local
from tasks.entities import ENTITIES
from tasks.entities import entity as entity_of
from tasks.settings import Settings
from tasks.warehouse import dialect_name

log = logging.getLogger(__name__)


@dataclass
class PurgeResult:
    """What one purge removed."""

    quarantine_resolved: int = 0  # raw records cleared because their row was resolved
    quarantine_expired: int = 0  # raw records cleared because they were older than the retention
    raw_versions: dict[str, int] = field(default_factory=dict)  # entity -> superseded versions deleted
    raw_cutoff: datetime | None = None
    quarantine_cutoff: datetime | None = None

    @property
    def raw_total(self) -> int:
        return sum(self.raw_versions.values())

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["raw_cutoff"] = str(self.raw_cutoff) if self.raw_cutoff else None
        out["quarantine_cutoff"] = str(self.quarantine_cutoff) if self.quarantine_cutoff else None
        return out

    def line(self) -> str:
        per = ", ".join(f"{e} {n:,}" for e, n in self.raw_versions.items() if n) or "none"
        return (f"purged: {self.quarantine_resolved:,} raw records of resolved quarantine rows, "
                f"{self.quarantine_expired:,} older than {self.quarantine_cutoff}; superseded raw versions "
                f"loaded before {self.raw_cutoff}: {self.raw_total:,} ({per})")


def _count(conn: Connection, sql: str, params: dict[str, Any]) -> int:
    return int(conn.execute(sa.text(sql), params).scalar_one())


#: The versions of a raw table that may go: loaded before ``:cutoff`` and neither the latest by
#: NgayCapNhat nor the last loaded of their key (``TABLE`` is replaced by ``raw.<entity>``).
_SUPERSEDED = """
SELECT source, record_key, record_hash FROM (
    SELECT source, record_key, record_hash, _loaded_at,
           row_number() OVER (PARTITION BY source, record_key
                              ORDER BY ngay_cap_nhat DESC NULLS LAST, _loaded_at DESC, record_hash DESC) AS by_clock,
           row_number() OVER (PARTITION BY source, record_key ORDER BY _loaded_at DESC, record_hash DESC) AS by_load
    FROM TABLE
    WHERE (source, record_key) IN (SELECT source, record_key FROM TABLE WHERE _loaded_at < :cutoff)
) v WHERE by_clock > 1 AND by_load > 1 AND _loaded_at < :cutoff
"""


def _superseded(entity: str) -> str:
    """:data:`_SUPERSEDED` for ``raw.<entity>`` (entities of the registry only)."""
    return _SUPERSEDED.replace("TABLE", entity_of(entity).raw_table)


def purge(engine: Engine, *, raw_retention_days: int, quarantine_raw_retention_days: int,
          now: datetime | None = None) -> PurgeResult:
    """Apply both retentions in one transaction (see the module's docstring). ``0`` days: every
    eligible row goes, whatever its age. The caller holds the writer lock (a nightly run, ``db purge``)."""
    if raw_retention_days < 0 or quarantine_raw_retention_days < 0:
        raise ValueError("retention days must be 0 or more")
    now = now or now_local()
    res = PurgeResult(raw_cutoff=now - timedelta(days=raw_retention_days),
                      quarantine_cutoff=now - timedelta(days=quarantine_raw_retention_days))
    q_cut = {"cutoff": res.quarantine_cutoff}
    duck = dialect_name(engine) == "duckdb"
    replaced: list[str] = []
    with engine.begin() as conn:
        res.quarantine_resolved = _count(
            conn, "SELECT count(*) FROM dq.quarantine WHERE raw_record IS NOT NULL AND resolved_at IS NOT NULL", {})
        res.quarantine_expired = _count(
            conn, "SELECT count(*) FROM dq.quarantine WHERE raw_record IS NOT NULL AND resolved_at IS NULL "
            "AND last_seen_at <= :cutoff", q_cut)
        conn.execute(sa.text(
            "UPDATE dq.quarantine SET raw_record = NULL WHERE raw_record IS NOT NULL "
            "AND (resolved_at IS NOT NULL OR last_seen_at <= :cutoff)"), q_cut)
        for entity in ENTITIES:
            params = {"cutoff": res.raw_cutoff}
            if duck and not landing.loaded_before(conn, entity, res.raw_cutoff):
                res.raw_versions[entity] = 0  # nothing old enough: no need to scan the whole raw layer
                continue
            doomed = _superseded(entity)
            n = _count(conn, f"SELECT count(*) FROM ({doomed}) d", params)  # noqa: S608
            if duck:  # landed files: rewritten without the doomed versions (and old extra copies)
                replaced += landing.drop_rows(conn, entity, doomed, params, res.raw_cutoff)
            elif n:
                match = "r.source = d.source AND r.record_key = d.record_key AND r.record_hash = d.record_hash"
                delete = f"DELETE FROM raw.{entity} AS r USING ({doomed}) AS d WHERE {match}"  # noqa: S608
                conn.execute(sa.text(delete), params)
            res.raw_versions[entity] = n
    landing.unlink(engine, replaced)  # committed: the files the manifest no longer names
    if duck and (res.raw_total or res.quarantine_resolved or res.quarantine_expired):
        with engine.begin() as conn:  # the WAL's copy of the purged rows goes with it
            conn.exec_driver_sql("CHECKPOINT")
    log.info("%s", res.line())
    return res


def purge_for_settings(engine: Engine, settings: Settings, *, now: datetime | None = None) -> PurgeResult:
    """:func:`purge` with ``DVC_RAW_RETENTION_DAYS`` and ``DVC_QUARANTINE_RAW_RETENTION_DAYS``."""
    return purge(engine, raw_retention_days=settings.raw_retention_days,
                 quarantine_raw_retention_days=settings.quarantine_raw_retention_days, now=now)
