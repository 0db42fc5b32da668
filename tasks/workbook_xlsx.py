"""What the workbook does to XlsxWriter itself: :class:`ReportWorkbook` (its parts deflated at
:data:`ZIP_LEVEL`) and :class:`FastWorksheet` (a shorter inner loop for the report tables' cells,
and whole rows made beforehand, :meth:`FastWorksheet.add_rows`). Both write what XlsxWriter
writes, byte for byte (``tests/test_nightly_cost.py``); XlsxWriter is pinned
(``requirements.lock``) and its modules stay as they are. The report's cells, styles and tables
are :mod:`tasks.workbook_cells`'; :meth:`tasks.workbook_cells.Sheet.write_rows` makes the rows.
"""

from __future__ import annotations

import types
import zipfile
from typing import Any

from xlsxwriter.format import Format
from xlsxwriter.utility import xl_rowcol_to_cell_fast
from xlsxwriter.workbook import Workbook
from xlsxwriter.worksheet import Worksheet

_FAST_CELLS = frozenset({"String", "Number", "Datetime", "Blank"})  # XlsxWriter's cell records, by name


#: zlib's level for the workbook's parts. XlsxWriter deflates them at zlib's default, 6; at 4 a
#: province's workbook (40 MB of sheet XML) compresses in under half the time for a file ~5%
#: larger (``bench/README.md``). Excel and LibreOffice read any level.
ZIP_LEVEL = 4


class _LeveledZip(zipfile.ZipFile):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("compresslevel", ZIP_LEVEL)
        super().__init__(*args, **kwargs)


def _zipping_with(method: Any, zip_class: type[zipfile.ZipFile]) -> Any:
    """``method`` (a function of XlsxWriter's module) with its ``ZipFile`` name bound to
    ``zip_class``: its module stays as it is for every other use."""
    scope = dict(method.__globals__, ZipFile=zip_class)
    return types.FunctionType(method.__code__, scope, method.__name__, method.__defaults__, method.__closure__)


class ReportWorkbook(Workbook):
    """XlsxWriter's workbook, its parts deflated at :data:`ZIP_LEVEL`."""

    _store_workbook = _zipping_with(Workbook._store_workbook, _LeveledZip)


class _Block:
    """Rows written at once by :meth:`Sheet.write_rows`. Each row's ``<c>`` elements are made when
    the rows are written, with a placeholder (:data:`_SLOT` + the style's number in ``formats``)
    for each cell's style: XlsxWriter numbers a style (its xf index) when its first cell goes into
    the sheet's XML, so the block's styles are numbered when its first row does, in ``order``:
    the order of their first cells, row by row (as XlsxWriter's cell-by-cell path numbers them)."""

    __slots__ = ("formats", "order", "_xf")

    def __init__(self, formats: list[Format], order: list[int]) -> None:
        self.formats, self.order = formats, order
        self._xf: list[tuple[str, str]] | None = None

    def xml(self, cells: str) -> str:
        if self._xf is None:
            xf = {i: str(self.formats[i]._get_xf_index()) for i in self.order}
            self._xf = [(chr(_SLOT + i), xf[i]) for i in range(len(self.formats))]
        for placeholder, xf_index in self._xf:
            cells = cells.replace(placeholder, xf_index)
        return cells


class _BlockRow(frozenset):
    """A row of a :class:`_Block` in XlsxWriter's cell table: it holds its first and last column
    (all XlsxWriter asks of a row while writing the sheet: its cells' span, its cells by column),
    and stands for the cell of both; its first column writes the whole row."""

    __slots__ = ("block", "cells", "first")

    def __getitem__(self, col: int) -> _BlockRow:
        if col not in self:
            raise KeyError(col)
        return self


_SLOT = 0xE000  # a private-use character: never in a reference or a number, the only text of a row's cells


class FastWorksheet(Worksheet):
    """XlsxWriter's worksheet with a shorter inner loop for the cells the report tables are made
    of (a shared string, a number or date, a blank, each with its format): the same ``<c>``
    elements, byte for byte, as :meth:`Worksheet._write_cell` writes (it escapes the reference
    and the style index, which never hold a character to escape); any other cell is left to it.
    A province's lists are hundreds of thousands of cells, written twice a night.

    It also takes whole rows made beforehand (:meth:`add_rows`, from :meth:`Sheet.write_rows`)."""

    def add_rows(self, first: int, first_col: int, last_col: int, rows: list[str], block: _Block) -> None:
        """Rows ``first`` .. of cells ``first_col`` .. ``last_col`` (0-based), each given as its
        ``<c>`` elements (styles as the block's placeholders). No cell of theirs may be written
        again (their row in the cell table takes no item)."""
        self._check_dimensions(first, first_col)
        self._check_dimensions(first + len(rows) - 1, last_col)
        table, span = self.table, (first_col, last_col)
        for row, cells in enumerate(rows, start=first):
            entry = _BlockRow(span)
            entry.block, entry.cells, entry.first = block, cells, first_col
            table[row] = entry
        self._has_blocks = True

    def _get_range_data(self, *args: Any) -> Any:  # a chart's cached values: XlsxWriter reads cell by cell
        if getattr(self, "_has_blocks", False):
            raise NotImplementedError(f"sheet {self.name!r}: a chart cannot read rows written by Sheet.write_rows")
        return super()._get_range_data(*args)

    def autofit(self, *args: Any, **kwargs: Any) -> None:  # reads cell by cell too
        if getattr(self, "_has_blocks", False):
            raise NotImplementedError(f"sheet {self.name!r}: autofit cannot read rows written by Sheet.write_rows")
        super().autofit(*args, **kwargs)

    def _write_rows(self) -> None:
        """XlsxWriter's ``Worksheet._write_rows`` (pinned), but a block's row without formatting or
        comments is written whole: its ``<row>`` tag as ``_write_row`` makes it for such a row
        (while the sheet's rows keep their default height, in Excel 2007's XML), then its cells."""
        if not getattr(self, "_has_blocks", False) or self.excel_version == 2010 or (
                self.default_row_height != self.original_row_height):
            return super()._write_rows()
        self._calculate_spans()
        table, row_info, comments, row_spans, write = self.table, self.row_info, self.comments, self.row_spans, self.fh.write
        for row_num in range(self.dim_rowmin, self.dim_rowmax + 1):
            entry = table.get(row_num)
            span = row_spans.get(int(row_num / 16))
            if entry.__class__ is _BlockRow and row_num not in row_info and row_num not in comments:
                tag = f'<row r="{row_num + 1}" spans="{span}">' if span else f'<row r="{row_num + 1}">'
                write(tag + entry.block.xml(entry.cells) + "</row>")
            elif entry:  # as XlsxWriter's loop does, from here on
                self._write_row(row_num, span, row_info.get(row_num))
                for col_num in range(self.dim_colmin, self.dim_colmax + 1):
                    if col_num in entry:
                        self._write_cell(row_num, col_num, entry[col_num])
                self._xml_end_tag("row")
            elif row_num in row_info or row_num in comments:
                self._write_empty_row(row_num, span, row_info.get(row_num))
        return None

    def _write_cell(self, row: int, col: int, cell: Any) -> None:
        if cell.__class__ is _BlockRow:
            if col == cell.first:
                self.fh.write(cell.block.xml(cell.cells))
            return None
        kind = cell.__class__.__name__
        fmt = cell.format if kind in _FAST_CELLS else None
        if fmt is None or self.constant_memory:
            return super()._write_cell(row, col, cell)
        ref, xf = xl_rowcol_to_cell_fast(row, col), fmt._get_xf_index()
        if kind == "String":
            self.fh.write(f'<c r="{ref}" s="{xf}" t="s"><v>{cell.string}</v></c>')
        elif kind == "Blank":
            self.fh.write(f'<c r="{ref}" s="{xf}"/>')
        else:  # Number, Datetime
            self.fh.write(f'<c r="{ref}" s="{xf}"><v>{cell.number:.16G}</v></c>')
        return None


class BlockStyles:
    """The styles of a block's cells (:class:`_Block`), as :meth:`tasks.workbook_cells.Sheet.write_rows`
    makes the cells: a placeholder each, and the (row, column) of the first cell of each."""

    def __init__(self) -> None:
        self._slots: dict[int, int] = {}  # id(format) -> its placeholder's number
        self._formats: list[Format] = []
        self._firsts: dict[int, tuple[int, int]] = {}

    def __call__(self, fmt: Format, row: int, col: int) -> str:
        """The placeholder of ``fmt``, whose first cell in column ``col`` is in row ``row``."""
        slot = self._slots.get(id(fmt))
        if slot is None:
            slot = self._slots[id(fmt)] = len(self._formats)
            self._formats.append(fmt)
        self._firsts[slot] = min(self._firsts.get(slot, (row, col)), (row, col))
        return chr(_SLOT + slot)

    def block(self) -> _Block:
        return _Block(self._formats, sorted(self._firsts, key=self._firsts.__getitem__))
