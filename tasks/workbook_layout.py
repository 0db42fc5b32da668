"""A workbook laid out from what was read of a publication: :class:`Layout` and :func:`lay_out`.

:mod:`tasks.workbook` reads a publication into a :class:`Layout` (from the warehouse) and writes,
renames and records the file; this module only lays one out into an ``.xlsx`` (the sheets of
:mod:`tasks.workbook_sheets`). It imports nothing of the warehouse (no SQLAlchemy, no pandas), so
the nightly's workbook worker (:mod:`tasks.workbook_worker`), which writes the workbook of a
layout the run sends it, starts in a fraction of the time and memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from xlsxwriter.format import Format

from tasks import workbook_sheets as sheets
from tasks.resources import gc_paused
from tasks.workbook_cells import Doc, Sheet, vn_date
from tasks.workbook_xlsx import ReportWorkbook

#: A table's rows of a publication: dicts by column (PostgreSQL), or an Arrow table (DuckDB: read
#: in the engine and sent to a worker without pickling its rows; :meth:`Layout.data` makes dicts).
TableRows = list[dict[str, Any]] | pa.Table


def _dicts(rows: TableRows) -> list[dict[str, Any]]:
    return rows if isinstance(rows, list) else rows.to_pylist()


WORKBOOK_OPTIONS = {
    "strings_to_formulas": False,  # belt and braces: Sheet.put writes text as text anyway
    "strings_to_numbers": False,
    "strings_to_urls": False,
    "nan_inf_to_errors": True,
    "remove_timezone": True,
}


@dataclass
class Layout:
    """What a workbook shows, read from the warehouse: enough to write it without the warehouse
    (:func:`lay_out`), in this process or in a worker's (:mod:`tasks.workbook_worker`)."""

    doc: Doc
    tables: dict[str, TableRows]  # each mart.rpt_* table: the publication's rows
    headline: dict[str, Any]  # tasks.reports.headline of the publication

    def data(self) -> Mapping[str, list[dict[str, Any]]]:
        """Each table's rows as dicts by column, as the sheets read them: made from Arrow when a
        sheet reads its table, and not kept (a province's work lists as dicts are ~100 MB beside
        XlsxWriter's cells; each table is read by one sheet)."""
        return _DictRows(self.tables)


class _DictRows(Mapping[str, list[dict[str, Any]]]):
    def __init__(self, tables: Mapping[str, TableRows]) -> None:
        self._tables = tables

    def __getitem__(self, name: str) -> list[dict[str, Any]]:
        return _dicts(self._tables[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)


def lay_out(layout: Layout, path: Path) -> None:
    """Write the workbook of ``layout`` to ``path`` (no rename, no record)."""
    pub, data = layout.doc.pub, layout.data()
    book = ReportWorkbook(str(path), WORKBOOK_OPTIONS)
    formats: dict[tuple, Format] = {}
    with gc_paused():  # its cells are many small acyclic records: no collections scanning the heap
        try:
            for name, write in sheets.SHEETS:
                write(Sheet(book, formats, name), layout.doc, data, lambda: layout.headline)
            book.set_properties({"title": f"Báo cáo TTHC {vn_date(pub.period_start)} - {vn_date(pub.period_end)}",
                                 "author": "dvc-etl", "comments": f"publication {pub.publication_id}"})
        finally:
            book.close()
