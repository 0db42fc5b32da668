"""Report tables (``mart.rpt_*``), the paid-only adjustment and atomic publication.

Plain functions, no Prefect: flows call them, tests call them directly.

- :func:`publish` builds the report tables of the reports spec for one period and publishes them
  in ONE transaction: each ``mart.rpt_X_history`` gets the new publication's rows, each
  ``mart.rpt_X`` has the period's rows replaced by them, and ``mart.publications`` records the
  publication as current (the previous one of the same period stops being current). Readers see the
  previous publication or the new one, never a mix.
- The definitions of the spec's section 1 live once, in ``sql/reports/_dossier_facts.sql`` (a temp
  table, one row per dossier); every ``sql/reports/rpt_*.sql`` reads it. The reference files
  (``tasks.reference``) become temp tables beside it.
- The 766 indicators, form 06 and the work lists follow ``docs/official-figures.md``.
- :func:`headline` gives the figures of the 2024 report's section II.2 for a publication.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tasks.clock import CUTS, data_cut, months, now_local
from tasks.faults import crash_point
from tasks.publication import Publication
from tasks.reference import INDICATORS, ReferenceData, ReportError, load_reference
from tasks.warehouse import PG_LOCK_PUBLISH, dialect_name, run_sql_file

log = logging.getLogger(__name__)

#: The report tables, in the order a publication writes them.
REPORT_TABLES: tuple[str, ...] = (
    "rpt_progress",
    "rpt_form06",
    "rpt_online_payment",
    "rpt_service_indicators",
    "rpt_simplified_procedures",
    "rpt_delegated_procedures",
    "rpt_late_by_official",
    "rpt_late_acceptance",
    "rpt_unpaid_results",
    "rpt_uncollected_results",
)
#: Tables without period columns: a publication replaces all their current rows.
UNPERIODED_TABLES: frozenset[str] = frozenset({"rpt_unpaid_results", "rpt_uncollected_results"})

_TEMP_TABLES = (
    "tmp_dossier_facts",
    "tmp_registry_outcomes",
    "tmp_simplifications",
    "tmp_delegations",
    "tmp_unpaid_thresholds",
    "tmp_report_months",
    "tmp_targets",
    "tmp_unit_procedures",
    "tmp_reuse_exclusions",
    "tmp_collection_windows",
)


# ----------------------------------------------------------------------------------------------
# Publishing
# ----------------------------------------------------------------------------------------------
def _months_rows(period_start: date, period_end: date) -> list[dict[str, Any]]:
    """The calendar months of the period, cut to it: the rows of ``tmp_report_months``."""
    return [
        {"month": f"{first:%Y-%m}", "month_start": first, "month_end": last}
        for first, last in months(period_start, period_end, clip=True)
    ]


def _new_publication_id(period_start: date, period_end: date) -> str:
    return f"{period_start:%Y%m%d}-{period_end:%Y%m%d}-{now_local():%Y%m%d%H%M%S}-{uuid.uuid4().hex[:8]}"


def _mart_table(conn: Connection, name: str) -> sa.TableClause:
    """``mart.<name>`` as a lightweight table clause, columns read from information_schema
    (portable: SQLAlchemy reflection does not work on DuckDB)."""
    columns = conn.execute(sa.text(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = 'mart' AND table_name = :t ORDER BY ordinal_position"
    ), {"t": name}).scalars().all()
    if not columns:
        raise ReportError(f"mart.{name} does not exist: run the migrations (tasks.warehouse.upgrade)")
    return sa.table(name, *[sa.column(c) for c in columns], schema="mart")


def _replace_current(conn: Connection, table: str, params: Mapping[str, Any]) -> int:
    """Replace the period's rows of ``mart.<table>`` by the publication's history rows; returns
    how many rows the publication has. Columns are matched by name."""
    current = _mart_table(conn, table)
    history = _mart_table(conn, f"{table}_history")
    if table in UNPERIODED_TABLES:
        conn.execute(sa.delete(current))
    else:
        conn.execute(sa.delete(current).where(
            current.c.period_start == params["period_start"],
            current.c.period_end == params["period_end"],
        ))
    columns = [c.name for c in current.columns]
    conn.execute(sa.insert(current).from_select(
        columns,
        sa.select(*[history.c[c] for c in columns]).where(history.c.publication_id == params["publication_id"]),
    ))
    return int(conn.execute(
        sa.select(sa.func.count()).select_from(history).where(history.c.publication_id == params["publication_id"])
    ).scalar_one())


def _fill_reference_tables(conn: Connection, ref: ReferenceData, month_rows: list[dict[str, Any]]) -> None:
    run_sql_file(conn, "reports/_reference_tables.sql")
    inserts = [
        ("INSERT INTO tmp_simplifications (stt, ma_tthc, quyet_dinh, ngay_quyet_dinh, so_ngay_cat_giam,"
         " noi_dung_cat_giam, danh_gia) VALUES (:stt, :ma_tthc, :quyet_dinh, :ngay_quyet_dinh,"
         " :so_ngay_cat_giam, :noi_dung_cat_giam, :danh_gia)", ref.simplifications),
        ("INSERT INTO tmp_delegations (stt, ma_tthc, van_ban, ngay_hieu_luc, danh_gia)"
         " VALUES (:stt, :ma_tthc, :van_ban, :ngay_hieu_luc, :danh_gia)", ref.delegations),
        ("INSERT INTO tmp_unpaid_thresholds (ma_tthc, threshold_days, note)"
         " VALUES (:ma_tthc, :threshold_days, :note)", ref.unpaid_thresholds),
        ("INSERT INTO tmp_report_months (month, month_start, month_end)"
         " VALUES (:month, :month_start, :month_end)", month_rows),
        ("INSERT INTO tmp_targets (ma_don_vi, indicator, year, target)"
         " VALUES (:ma_don_vi, :indicator, :year, :target)", ref.targets),
        ("INSERT INTO tmp_unit_procedures (ma_don_vi, ma_tthc) VALUES (:ma_don_vi, :ma_tthc)",
         ref.unit_procedures),
        ("INSERT INTO tmp_reuse_exclusions (ma_tthc, ten_tthc) VALUES (:ma_tthc, :ten_tthc)",
         ref.reuse_exclusions),
        ("INSERT INTO tmp_collection_windows (ma_tthc, days, can_cu) VALUES (:ma_tthc, :days, :can_cu)",
         ref.collection_windows),
    ]
    for statement, rows in inserts:
        if rows:
            conn.execute(sa.text(statement), rows)


def publish(
    engine: Engine,
    period_start: date,
    period_end: date,
    *,
    run_id: str,
    as_of: datetime | None = None,
    reference_dir: Path,
    unpaid_threshold_days: int = 30,
    on_step: Callable[[str], None] | None = None,
    period_cut: str = "calendar",
    period_label: str | None = None,
) -> Publication:
    """Build the report tables (:data:`REPORT_TABLES`) for ``[period_start, period_end]`` and
    publish them atomically.

    ``as_of`` (the data cut, stamped on every row) defaults to :func:`tasks.clock.data_cut` (now, on
    an empty warehouse). ``reference_dir`` holds the reference files (see
    :func:`tasks.reference.load_reference`; each optional); ``unpaid_threshold_days`` is the default threshold of ``mart.rpt_unpaid_results``.
    ``period_cut`` (``calendar`` or ``decree-09``) and ``period_label`` (``2024-H1``; None for a
    ``--from/--to`` range) are recorded in ``mart.publications``. ``on_step(table)`` is called
    inside the transaction after each table is written (progress logging; raising from it aborts
    the whole publication).
    """
    if period_end < period_start:
        raise ReportError(f"period end {period_end} is before its start {period_start}")
    if period_cut not in CUTS:
        raise ReportError(f"period cut {period_cut!r} is not one of {', '.join(CUTS)}")
    ref = load_reference(reference_dir)  # fail before touching the warehouse
    month_rows = _months_rows(period_start, period_end)
    publication_id = _new_publication_id(period_start, period_end)
    counts: dict[str, int] = {}
    with engine.begin() as conn:
        if dialect_name(conn) == "postgresql":
            # one publisher at a time: two publications of a period must not interleave
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_PUBLISH})
            # the report queries run once per publication: JIT compiling them costs more than it
            # saves (bench/README.md, "Figures behind the code's choices")
            conn.execute(sa.text("SET LOCAL jit = off"))
        published_at = now_local()
        as_of = as_of or data_cut(conn) or published_at  # an empty warehouse: as of now
        params: dict[str, Any] = {
            "period_start": period_start,
            "period_end": period_end,
            "as_of": as_of,
            "publication_id": publication_id,
            "default_threshold_days": int(unpaid_threshold_days),
        }
        _fill_reference_tables(conn, ref, month_rows)
        run_sql_file(conn, "reports/_dossier_facts.sql", params)
        run_sql_file(conn, "reports/_registry_outcomes.sql", params)
        for table in REPORT_TABLES:
            run_sql_file(conn, f"reports/{table}.sql", params)
            counts[table] = _replace_current(conn, table, params)
            log.info("publication %s: %s has %d rows", publication_id, table, counts[table])
            if on_step is not None:
                on_step(table)
            crash_point("publish.table")
        conn.execute(sa.text(
            "UPDATE mart.publications SET is_current = false"
            " WHERE period_start = :period_start AND period_end = :period_end AND is_current"
        ), params)
        conn.execute(sa.text(
            "INSERT INTO mart.publications (publication_id, period_start, period_end, as_of, published_at,"
            " run_id, workbook_path, is_current, period_cut, period_label)"
            " VALUES (:publication_id, :period_start, :period_end, :as_of, :published_at, :run_id, NULL, true,"
            " :period_cut, :period_label)"
        ), {**params, "published_at": published_at, "run_id": run_id, "period_cut": period_cut,
            "period_label": period_label})
        crash_point("publish.before_commit")
        for temp in _TEMP_TABLES:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {temp}"))  # fixed names, no values
    log.info("published %s for %s..%s (as of %s)", publication_id, period_start, period_end, as_of)
    return Publication(
        publication_id=publication_id,
        period_start=period_start,
        period_end=period_end,
        as_of=as_of,
        published_at=published_at,
        run_id=run_id,
        row_counts=counts,
        period_cut=period_cut,
        period_label=period_label,
    )


# ----------------------------------------------------------------------------------------------
# Reading publications
# ----------------------------------------------------------------------------------------------
def _publication_from_row(row: Mapping[str, Any]) -> Publication:
    def as_date(v: Any) -> date:
        return v.date() if isinstance(v, datetime) else v

    return Publication(
        publication_id=row["publication_id"],
        period_start=as_date(row["period_start"]),
        period_end=as_date(row["period_end"]),
        as_of=row["as_of"],
        published_at=row["published_at"],
        run_id=row["run_id"],
        is_current=bool(row["is_current"]),
        workbook_path=row["workbook_path"],
        period_cut=row.get("period_cut") or "calendar",
        period_label=row.get("period_label"),
    )


def get_publication(engine: Engine, publication_id: str) -> Publication:
    """The publication with this id (current or not)."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT * FROM mart.publications WHERE publication_id = :p"), {"p": publication_id}
        ).mappings().first()
    if row is None:
        raise ReportError(f"no publication {publication_id!r}")
    return _publication_from_row(row)


def current_publication(engine: Engine, period_start: date, period_end: date) -> Publication | None:
    """The current publication of a period, or None if the period was never published."""
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT * FROM mart.publications WHERE period_start = :s AND period_end = :e AND is_current"
        ), {"s": period_start, "e": period_end}).mappings().first()
    return None if row is None else _publication_from_row(row)


def resolve_publication(engine: Engine, publication: Publication | str | tuple[date, date]) -> Publication:
    """A Publication from a Publication, a publication id, or a period (its current publication)."""
    if isinstance(publication, Publication):
        return publication
    if isinstance(publication, str):
        return get_publication(engine, publication)
    start, end = publication
    found = current_publication(engine, start, end)
    if found is None:
        raise ReportError(f"period {start}..{end} has no publication")
    return found


def vn_count(n: int | None) -> str:
    """A count as the 2024 report writes it: '.' thousands separator, 1..9 with a leading zero."""
    if n is None:
        return ""
    if 0 < n < 10:
        return f"{n:02d}"
    return f"{n:,}".replace(",", ".")


def headline(engine: Engine, publication: Publication | str | tuple[date, date]) -> dict[str, Any]:
    """The headline figures of a publication (2024 report, section II.2).

    Keys: ``received``, ``resolved``, ``late``, ``late_district`` (cap_don_vi 2), ``late_commune``
    (cap_don_vi 3), ``<code>_rate_system`` and ``<code>_rate_paid_only`` for each of the nine
    :data:`INDICATORS` at ``ma_don_vi = '*'`` (e.g. ``on_time_rate_system``,
    ``online_payment_rate_paid_only``; fractions or None), ``as_of``, ``period_start``,
    ``period_end``, ``period_cut``, ``period_label``, ``publication_id`` and ``sentence``:
    "x/y hồ sơ trễ hạn, trong đó cấp huyện a, cấp xã b" (y = dossiers resolved in the period).
    """
    pub = resolve_publication(engine, publication)
    with engine.connect() as conn:
        progress = conn.execute(sa.text(
            "SELECT"
            " coalesce(sum(received_total), 0) AS received,"
            " coalesce(sum(resolved_total), 0) AS resolved,"
            " coalesce(sum(resolved_late), 0) AS late,"
            " coalesce(sum(CASE WHEN cap_don_vi = 2 THEN resolved_late ELSE 0 END), 0) AS late_district,"
            " coalesce(sum(CASE WHEN cap_don_vi = 3 THEN resolved_late ELSE 0 END), 0) AS late_commune"
            " FROM mart.rpt_progress_history WHERE publication_id = :p"
        ), {"p": pub.publication_id}).mappings().one()
        rates = {
            r["indicator"]: r
            for r in conn.execute(sa.text(
                "SELECT indicator, rate_system, rate_paid_only FROM mart.rpt_service_indicators_history"
                " WHERE publication_id = :p AND ma_don_vi = '*'"
            ), {"p": pub.publication_id}).mappings()
        }
    out: dict[str, Any] = {k: int(v) for k, v in progress.items()}
    for code in INDICATORS:
        r = rates.get(code)
        out[f"{code}_rate_system"] = None if r is None else r["rate_system"]
        out[f"{code}_rate_paid_only"] = None if r is None else r["rate_paid_only"]
    out.update(
        publication_id=pub.publication_id,
        period_cut=pub.period_cut,
        period_label=pub.period_label,
        period_start=pub.period_start,
        period_end=pub.period_end,
        as_of=pub.as_of,
        sentence=(
            f"{vn_count(out['late'])}/{vn_count(out['resolved'])} hồ sơ trễ hạn, "
            f"trong đó cấp huyện {vn_count(out['late_district'])}, "
            f"cấp xã {vn_count(out['late_commune'])}"
        ),
    )
    return out
