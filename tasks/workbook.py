"""The official workbook of a publication (the reports specification, section 6).

:func:`write_workbook` reads one publication from the ``mart.rpt_*_history`` tables (so any past
publication can be written again, exactly) and writes an ``.xlsx`` an official can attach to a
report and send upward as it is. Every sheet (laid out in :mod:`tasks.workbook_sheets` with the cell toolkit of
:mod:`tasks.workbook_cells`) starts
with the issuing body at the left and the national heading at the right, the title, the period
with its label and cut ("Kỳ báo cáo: từ ngày … đến ngày …"), "Kèm theo Báo cáo số …" when a report
number is given and the data cut; then a table laid out like the 2024 report's (Vietnamese
multi-row merged headers, ``STT``, units grouped into ``I. Cấp huyện`` / ``II. Cấp xã``
sections, a ``Tổng cộng`` row whose figures are formulas over the rows above); and ends with the
signature block ("Người lập biểu" / "Thủ trưởng đơn vị", place and date).

Display, the same in LibreOffice and Excel whatever the computer's language:

- counts as ``14.122``: the format's ``.`` are literal characters (``#\\.##0`` in conditional
  sections by magnitude), not the locale's thousands separator, which Excel takes from the
  computer's settings whatever the format says (:data:`COUNT_FORMAT`);
- rates as ``99,93%`` (:data:`RATE_FORMAT`): a fraction's decimals need the decimal separator,
  which no number format can fix in Excel: the ``[$-42A]`` (Vietnamese) tag gives ``99,93%`` in
  LibreOffice on any computer and in Excel set to Vietnamese; an English-language Excel shows
  ``99.93%``. Cells stay numbers. A rate without a denominator is ``N/A``;
- text that starts with ``=``, ``+``, ``-`` or ``@`` is stored as text (a string cell with Excel's
  quote prefix), never as a formula; the only formulas are the totals written here.

Written with XlsxWriter, which streams each sheet's XML from compact cell records (a province's
unpaid list is tens of thousands of rows, and the nightly run writes two workbooks). The file is written next to its target and renamed over it,
so a reader never sees half a workbook.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tasks.reports import Publication, headline, resolve_publication
from tasks.warehouse import private_dir, raw_driver_connection
from tasks.workbook_cells import (  # noqa: F401 - the formats are part of this module's interface
    BIG_COUNT_FORMAT,
    COUNT_FORMAT,
    DATE_FORMAT,
    DATETIME_FORMAT,
    HOURS_FORMAT,
    NOT_AVAILABLE,
    RATE_FORMAT,
    Doc,
    Sheet,
    vn_date,
)
from tasks.workbook_layout import (  # noqa: F401 - part of this module's interface
    WORKBOOK_OPTIONS,
    Layout,
    TableRows,
    _dicts,
    lay_out,
)
from tasks.workbook_xlsx import ReportWorkbook  # noqa: F401 - part of this module's interface

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------
# reading a publication
# ----------------------------------------------------------------------------------------------
TABLES = {  # the history tables a workbook reads, and their order
    "rpt_progress": "cap_don_vi, ma_don_vi",
    "rpt_form06": "cap_don_vi, stt",
    "rpt_online_payment": "cap_don_vi, ma_don_vi, ma_tthc",
    "rpt_service_indicators": "cap_don_vi, ma_don_vi, indicator_order",
    "rpt_simplified_procedures": "stt",
    "rpt_delegated_procedures": "stt",
    "rpt_late_by_official": "month, cap_don_vi, ma_don_vi, ma_can_bo",
    "rpt_unpaid_results": "cap_don_vi, ma_don_vi, ma_ho_so, source",
    "rpt_uncollected_results": "cap_don_vi, ma_don_vi, ma_ho_so, source",
    "rpt_late_acceptance": "cap_don_vi, ma_don_vi, ngay_nop_ho_so, ma_ho_so, source",
}


def _history(conn: sa.Connection, table: str, publication_id: str, order_by: str) -> TableRows:
    if conn.dialect.name == "duckdb":
        return raw_driver_connection(conn).sql(
            f"SELECT * FROM mart.{table}_history WHERE publication_id = ? ORDER BY {order_by}",  # noqa: S608 - TABLES
            params=[publication_id]).to_arrow_table()
    history = sa.table(f"{table}_history", sa.column("publication_id"), schema="mart")
    stmt = (sa.select(sa.text("*")).select_from(history)
            .where(history.c.publication_id == publication_id).order_by(sa.text(order_by)))
    result = conn.execute(stmt)
    keys = list(result.keys())
    return [dict(zip(keys, r, strict=True)) for r in result.fetchall()]


def _load(engine: Engine, pub: Publication) -> dict[str, TableRows]:
    with engine.connect() as conn:
        return {t: _history(conn, t, pub.publication_id, o) for t, o in TABLES.items()}


def _default_office_name(progress: list[dict[str, Any]]) -> str:
    """The highest-level unit of the publication (the reporting authority), by dossiers handled."""
    if not progress:
        return "Đơn vị báo cáo"
    best = min(progress, key=lambda r: (r["cap_don_vi"] or 9, -(r["to_handle_total"] or 0), r["ma_don_vi"] or ""))
    return best["ten_don_vi"] or best["ma_don_vi"] or "Đơn vị báo cáo"


# ----------------------------------------------------------------------------------------------
# the workbook
# ----------------------------------------------------------------------------------------------
def read_layout(engine: Engine, publication: Publication | str | tuple[date, date], *, unit_name: str | None = None,
                report_number: str | None = None, place: str | None = None) -> Layout:
    """Read what the workbook of a publication shows (see :func:`write_workbook` for the settings)."""
    pub = resolve_publication(engine, publication)
    tables = _load(engine, pub)
    office = unit_name or _default_office_name(_dicts(tables["rpt_progress"]))
    return Layout(Doc(pub, office, report_number or None, place or None), tables, headline(engine, pub))


def build_workbook(engine: Engine, publication: Publication | str | tuple[date, date], path: Path, *,
                   unit_name: str | None = None, report_number: str | None = None,
                   place: str | None = None) -> Publication:
    """Write the workbook of a publication to ``path`` (no rename, no record: see
    :func:`write_workbook`) and return the publication."""
    layout = read_layout(engine, publication, unit_name=unit_name, report_number=report_number, place=place)
    lay_out(layout, path)
    return layout.doc.pub


def partial_path(path: Path) -> Path:
    """Where the workbook for ``path`` is written before it is renamed over it: beside it, hidden,
    a name of its own (two workbooks of one path, handed over and written here, never share one)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")


def write_workbook(
    engine: Engine,
    publication_id_or_period: Publication | str | tuple[date, date],
    path: Path,
    *,
    unit_name: str | None = None,
    report_number: str | None = None,
    place: str | None = None,
    before_record: Callable[[], Any] | None = None,
) -> Path:
    """Write the workbook of a publication (an id, a Publication, or a period -> its current
    publication) to ``path`` and record the path in ``mart.publications.workbook_path``;
    ``before_record()`` runs once the file is written, before it is renamed and recorded (the
    nightly records there the period before's, written meanwhile by a worker).

    The file is written beside ``path`` and renamed over it: a reader (or a crash) never sees half
    a workbook. ``unit_name`` (DVC_OFFICE_NAME) is the issuing body heading every sheet, by default
    the highest-level unit of the publication; ``report_number`` (DVC_REPORT_NUMBER) adds "Kèm theo
    Báo cáo số <report_number>"; ``place`` (DVC_REPORT_PLACE) starts the signature's date line.
    """
    path = Path(path)
    private_dir(path.parent)  # reports/: owner-only (0700), created so or tightened
    partial = partial_path(path)
    try:
        pub = build_workbook(engine, publication_id_or_period, partial, unit_name=unit_name,
                             report_number=report_number, place=place)
        if before_record is not None:
            before_record()
        return record_workbook(engine, pub, partial, path)
    finally:
        partial.unlink(missing_ok=True)


def record_workbook(engine: Engine, pub: Publication, partial: Path, path: Path) -> Path:
    """Rename the workbook written to ``partial`` over ``path`` and record ``path`` in
    ``mart.publications.workbook_path``."""
    os.chmod(partial, 0o600)  # whatever the umask: the workbook names officials (personal data)
    os.replace(partial, path)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE mart.publications SET workbook_path = :w WHERE publication_id = :p"),
                     {"w": str(path), "p": pub.publication_id})
    log.info("workbook of %s written to %s", pub.publication_id, path)
    return path
