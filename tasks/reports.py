"""Report tables (``mart.rpt_*``), the paid-only adjustment and atomic publication.

Plain functions, no Prefect: flows call them, tests call them directly.

- :func:`publish` builds the report tables of ``shared/spec/reports.md`` for one period and
  publishes them in ONE transaction: each ``mart.rpt_X_history`` gets the new publication's rows,
  each ``mart.rpt_X`` has the period's rows replaced by them, and ``mart.publications`` records the
  publication as current (the previous one of the same period stops being current). Readers see the
  previous publication or the new one, never a mix.
- The definitions of reports.md section 1 live once, in ``sql/reports/_dossier_facts.sql`` (a temp
  table, one row per dossier); every ``sql/reports/rpt_*.sql`` reads it.
- The 766 indicators, form 06 and the work lists follow ``docs/official-figures.md``.
- :func:`headline` gives the figures of the 2024 report's section II.2 for a publication.
- :func:`monthly_periods` splits a date range into calendar months.
"""

from __future__ import annotations

import csv
import io
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tasks.faults import crash_point
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

#: The indicator codes of ``mart.rpt_service_indicators`` (docs/official-figures.md section 2), in
#: display order.
INDICATORS: tuple[str, ...] = (
    "on_time",
    "online_submission",
    "online_payment",
    "e_result",
    "digitised",
    "reuse",
    "from_national_store",
    "online_service_uptake",
    "online_payment_uptake",
)

#: The period cuts a publication may name (``DVC_PERIOD_CUT``; tasks/clock.py resolves them).
PERIOD_CUTS: tuple[str, ...] = ("calendar", "decree-09")

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


class ReportError(RuntimeError):
    """A problem the operator must fix before reports can be published (e.g. a bad reference file)."""


@dataclass(frozen=True)
class Publication:
    """One publication of the report tables for one period."""

    publication_id: str
    period_start: date
    period_end: date
    as_of: datetime
    published_at: datetime
    run_id: str
    is_current: bool = True
    workbook_path: str | None = None
    row_counts: Mapping[str, int] = field(default_factory=dict)
    period_cut: str = "calendar"
    period_label: str | None = None


# ----------------------------------------------------------------------------------------------
# Reference files
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReferenceData:
    """The district office's registries, validated (one dict per CSV row, typed values).

    Every file is optional: a file missing from the reference folder (or holding only its header)
    is an empty list. Nothing is ever read from another folder."""

    simplifications: list[dict[str, Any]]
    delegations: list[dict[str, Any]]
    unpaid_thresholds: list[dict[str, Any]]
    targets: list[dict[str, Any]] = field(default_factory=list)
    unit_procedures: list[dict[str, Any]] = field(default_factory=list)
    reuse_exclusions: list[dict[str, Any]] = field(default_factory=list)
    collection_windows: list[dict[str, Any]] = field(default_factory=list)


def _read_csv(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """The rows of a reference file as ``(line number, row)`` (the header is line 1; blank rows
    skipped). A missing file is no rows."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as exc:
        raise ReportError(f"{path.name}: not UTF-8 text ({exc})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        return []  # an empty file: no rows
    missing = [c for c in required if c not in header]
    if missing:
        raise ReportError(f"{path.name} line 1: lacks column(s) {', '.join(missing)} (has {header})")
    rows: list[tuple[int, dict[str, str]]] = []
    for raw in reader:
        row = {k.strip(): v.strip() if isinstance(v, str) else "" for k, v in raw.items() if k is not None}
        if any(row.values()):
            rows.append((reader.line_num, row))  # the row's (last) line
    return rows


def _parse_date(value: str, where: str, column: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ReportError(f"{where}: {column} {value!r} is not a date yyyy-mm-dd") from None


def _parse_number(value: str, where: str, column: str) -> float | None:
    if value == "":
        return None
    try:
        return float(value.replace(",", "."))
    except ValueError:
        raise ReportError(f"{where}: {column} {value!r} is not a number") from None


def _parse_days(value: str, where: str, column: str) -> int:
    try:
        days = int(value)
    except ValueError:
        days = -1
    if days < 0:
        raise ReportError(f"{where}: {column} {value!r} is not a whole number of days >= 0")
    return days


def _require(value: str, where: str, column: str) -> str:
    if not value:
        raise ReportError(f"{where}: {column} is empty")
    return value


def _text(value: str | None, where: str, column: str) -> str | None:
    return value or None


_Field = tuple[str, Callable[[Any, str, str], Any]]  # a column, and how its value is read: (value, where, column)

# the reference files of one record per row: each file's columns, in the record's order, and
# whether a record starts with its row's rank ('stt'); every column is required unless listed
# in _OPTIONAL_COLUMNS
_PLAIN_FILES: dict[str, tuple[tuple[_Field, ...], bool]] = {
    "simplifications.csv": ((("ma_tthc", _require), ("quyet_dinh", _text), ("ngay_quyet_dinh", _parse_date),
                             ("so_ngay_cat_giam", _parse_number), ("noi_dung_cat_giam", _text),
                             ("danh_gia", _text)), True),
    "delegations.csv": ((("ma_tthc", _require), ("van_ban", _text), ("ngay_hieu_luc", _parse_date),
                         ("danh_gia", _text)), True),
    "unpaid_thresholds.csv": ((("ma_tthc", _require), ("threshold_days", _parse_days), ("note", _text)), False),
    "reuse_exclusions.csv": ((("ma_tthc", _require), ("ten_tthc", _text)), False),
    "collection_windows.csv": ((("ma_tthc", _require), ("days", _parse_days), ("can_cu", _text)), False),
}
_OPTIONAL_COLUMNS = {"reuse_exclusions.csv": {"ten_tthc"}}


def _rows(reference_dir: Path, name: str, required: Sequence[str]) -> Iterator[tuple[int, str, dict[str, str]]]:
    """``(line, where, row)`` of each row of a reference file, ``where`` naming the file and line for
    an error message."""
    for line, row in _read_csv(reference_dir / name, required):
        yield line, f"{name} line {line}", row


def _read_plain(reference_dir: Path, name: str) -> list[dict[str, Any]]:
    """The records of one of :data:`_PLAIN_FILES`."""
    fields, ranked = _PLAIN_FILES[name]
    optional = _OPTIONAL_COLUMNS.get(name, set())
    out = []
    for stt, (_, where, row) in enumerate(_rows(reference_dir, name, [c for c, _ in fields if c not in optional]), 1):
        record: dict[str, Any] = {"stt": stt} if ranked else {}
        record.update((column, read(row.get(column), where, column)) for column, read in fields)
        out.append(record)
    return out


def _read_targets(reference_dir: Path) -> list[dict[str, Any]]:
    out = []
    seen: dict[tuple[str, str, int], int] = {}
    for line, where, row in _rows(reference_dir, "targets.csv", ("ma_don_vi", "indicator", "year", "target")):
        unit = _require(row["ma_don_vi"], where, "ma_don_vi")
        indicator = row["indicator"]
        if indicator not in INDICATORS:
            raise ReportError(f"{where}: indicator {indicator!r} is not one of {', '.join(INDICATORS)}")
        try:
            year = int(row["year"])
        except ValueError:
            year = 0
        if not 2000 <= year <= 2100:
            raise ReportError(f"{where}: year {row['year']!r} is not a year such as 2024")
        try:
            target = float(row["target"].replace(",", "."))
        except ValueError:
            target = float("nan")
        if not 0 <= target <= 1:  # also refuses nan
            raise ReportError(f"{where}: target {row['target']!r} is not a fraction between 0 and 1")
        key = (unit, indicator, year)
        if key in seen:
            raise ReportError(f"{where}: {unit} {indicator} {year} already has a target on line {seen[key]}")
        seen[key] = line
        out.append({"ma_don_vi": unit, "indicator": indicator, "year": year, "target": target})
    return out


def _read_unit_procedures(reference_dir: Path) -> list[dict[str, Any]]:
    out = []
    seen: set[tuple[str, str]] = set()
    for _, where, row in _rows(reference_dir, "unit_procedures.csv", ("ma_don_vi", "ma_tthc")):
        unit = _require(row["ma_don_vi"], where, "ma_don_vi")
        if unit == "*":
            raise ReportError(f"{where}: ma_don_vi '*' is not a unit (list each unit's procedures)")
        pair = (unit, _require(row["ma_tthc"], where, "ma_tthc"))
        if pair not in seen:  # a repeated pair is harmless
            seen.add(pair)
            out.append({"ma_don_vi": pair[0], "ma_tthc": pair[1]})
    return out


def load_reference(reference_dir: Path) -> ReferenceData:
    """Read and validate the reference files of ``reference_dir`` (``DVC_REFERENCE_DIR``):
    ``simplifications.csv``, ``delegations.csv``, ``unpaid_thresholds.csv``, ``targets.csv``,
    ``unit_procedures.csv``, ``reuse_exclusions.csv`` and ``collection_windows.csv``.

    Each is optional (missing or header-only: an empty list). A bad value raises
    :class:`ReportError` naming the file and the line (the header is line 1), e.g.
    ``targets.csv line 3: target '95%' is not a fraction between 0 and 1``.
    """
    reference_dir = Path(reference_dir)
    return ReferenceData(
        simplifications=_read_plain(reference_dir, "simplifications.csv"),
        delegations=_read_plain(reference_dir, "delegations.csv"),
        unpaid_thresholds=_read_plain(reference_dir, "unpaid_thresholds.csv"),
        targets=_read_targets(reference_dir),
        unit_procedures=_read_unit_procedures(reference_dir),
        reuse_exclusions=_read_plain(reference_dir, "reuse_exclusions.csv"),
        collection_windows=_read_plain(reference_dir, "collection_windows.csv"),
    )


# ----------------------------------------------------------------------------------------------
# Periods
# ----------------------------------------------------------------------------------------------
def _month_end(d: date) -> date:
    first_next = (d.replace(day=1) + timedelta(days=32)).replace(day=1)
    return first_next - timedelta(days=1)


def monthly_periods(start: date, end: date, *, clip: bool = False) -> list[tuple[date, date]]:
    """The calendar months that intersect ``[start, end]``, as ``(first day, last day)``.

    With ``clip=True`` the first and last month are cut to ``start`` and ``end``.
    ``monthly_periods(date(2024, 1, 15), date(2024, 3, 2))`` ->
    ``[(2024-01-01, 2024-01-31), (2024-02-01, 2024-02-29), (2024-03-01, 2024-03-31)]``.
    """
    if end < start:
        raise ValueError(f"period end {end} is before its start {start}")
    periods: list[tuple[date, date]] = []
    month = start.replace(day=1)
    while month <= end:
        last = _month_end(month)
        periods.append((max(month, start), min(last, end)) if clip else (month, last))
        month = last + timedelta(days=1)
    return periods


def _months_rows(period_start: date, period_end: date) -> list[dict[str, Any]]:
    return [
        {"month": f"{first:%Y-%m}", "month_start": first, "month_end": last}
        for first, last in monthly_periods(period_start, period_end, clip=True)
    ]


# ----------------------------------------------------------------------------------------------
# Publishing
# ----------------------------------------------------------------------------------------------
def default_as_of(conn: Connection) -> datetime:
    """The data cut: max(NgayCapNhat) over core.dossiers and core.payments (now, if both are empty)."""
    value = conn.execute(sa.text(
        "SELECT max(t.ts) FROM ("
        " SELECT max(ngay_cap_nhat) AS ts FROM core.dossiers"
        " UNION ALL SELECT max(ngay_cap_nhat) AS ts FROM core.payments) AS t"
    )).scalar()
    return value if value is not None else datetime.now().replace(microsecond=0)


def _new_publication_id(period_start: date, period_end: date) -> str:
    return f"{period_start:%Y%m%d}-{period_end:%Y%m%d}-{datetime.now():%Y%m%d%H%M%S}-{uuid.uuid4().hex[:8]}"


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


def _fill_reference_tables(conn: Connection, ref: ReferenceData, months: list[dict[str, Any]]) -> None:
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
         " VALUES (:month, :month_start, :month_end)", months),
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

    ``as_of`` (the data cut, stamped on every row) defaults to max(NgayCapNhat) of core.dossiers and
    core.payments. ``reference_dir`` holds the reference files (see :func:`load_reference`; each
    optional); ``unpaid_threshold_days`` is the default threshold of ``mart.rpt_unpaid_results``.
    ``period_cut`` (``calendar`` or ``decree-09``) and ``period_label`` (``2024-H1``; None for a
    ``--from/--to`` range) are recorded in ``mart.publications``. ``on_step(table)`` is called
    inside the transaction after each table is written (progress logging; raising from it aborts
    the whole publication).
    """
    if period_end < period_start:
        raise ReportError(f"period end {period_end} is before its start {period_start}")
    if period_cut not in PERIOD_CUTS:
        raise ReportError(f"period cut {period_cut!r} is not one of {', '.join(PERIOD_CUTS)}")
    ref = load_reference(reference_dir)  # fail before touching the warehouse
    months = _months_rows(period_start, period_end)
    publication_id = _new_publication_id(period_start, period_end)
    counts: dict[str, int] = {}
    with engine.begin() as conn:
        if dialect_name(conn) == "postgresql":
            # one publisher at a time: two publications of a period must not interleave
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_PUBLISH})
        cut = as_of if as_of is not None else default_as_of(conn)
        published_at = datetime.now().replace(microsecond=0)
        params: dict[str, Any] = {
            "period_start": period_start,
            "period_end": period_end,
            "as_of": cut,
            "publication_id": publication_id,
            "default_threshold_days": int(unpaid_threshold_days),
        }
        _fill_reference_tables(conn, ref, months)
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
    log.info("published %s for %s..%s (as of %s)", publication_id, period_start, period_end, cut)
    return Publication(
        publication_id=publication_id,
        period_start=period_start,
        period_end=period_end,
        as_of=cut,
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
