"""Excel workbooks from a clerk: .xlsx (Office Open XML) and .xls (Excel 97-2003, BIFF8).

- :func:`read_xlsx`: the zip is checked before openpyxl sees it (every XML part parsed with
  ``defusedxml``: no DTD, no entities; every CRC; the unpacked size), then each sheet is read cell
  by cell from its XML, so a cell at column XFD or a ``<dimension ref="A1:XFD1048576">`` costs
  nothing (openpyxl's own row reader would pad every row to 16,384 cells).
- :func:`read_xls`: a real BIFF8 workbook read with ``python-calamine`` (Rust; no macros run, no
  formulas evaluated: the values Excel last saved). BIFF8 itself bounds a sheet to 65,536 rows and
  256 columns; the row, column and cell limits apply to the values read.

Both return the first worksheet (in workbook order) whose first rows hold a header, as
:class:`~tasks.file_formats.Table`; any error while reading is a
:class:`~tasks.file_formats.FileFormatError` with its reason.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import openpyxl

from tasks.file_columns import Row, find_header, is_blank
from tasks.file_formats import (
    FileFormatError,
    FileLimits,
    Table,
    long_cell,
    no_header,
    too_many_rows,
    too_wide,
    why,
)

MAX_ZIP_ENTRIES = 10_000
"""An .xlsx with more parts than this is refused (a real export has a few dozen)."""


def read_xlsx(path: Path, data: bytes, limits: FileLimits) -> Table:
    if not getattr(openpyxl, "DEFUSEDXML", False):
        raise FileFormatError(path, "refused: openpyxl would read the workbook's XML without defusedxml "
                                    "(install defusedxml; OPENPYXL_DEFUSEDXML must not be False)")
    archive = _check_zip(path, data, limits)
    archive.close()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a hostile workbook raises, the file is unreadable
        raise FileFormatError(path, f"not a readable .xlsx workbook ({why(exc)})") from None
    try:
        sheets = ((s.title, lambda s=s: _sheet_rows(path, workbook, s, limits))
                  for s in workbook.worksheets if hasattr(s, "_get_source"))  # not a chart sheet
        table = _first_table(path, sheets)
        table.format = "xlsx"
        return table
    finally:
        workbook.close()


class _NoCallbacks:
    """An XML parser target without element callbacks: expat checks well-formedness at C speed."""

    def close(self) -> None:
        return None


def _check_zip(path: Path, data: bytes, limits: FileLimits) -> zipfile.ZipFile:
    """The .xlsx as a zip, refused before openpyxl sees it when it is damaged (bad CRC, bad
    deflate stream), unpacks past ``max_unpacked_bytes``, or any XML part is malformed, has an
    unknown encoding or a DTD (entity expansion, external entities: checked with defusedxml)."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import DefusedXMLParser

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except Exception as exc:  # noqa: BLE001
        raise FileFormatError(path, f"not a readable .xlsx workbook ({why(exc)})") from None
    if len(infos) > MAX_ZIP_ENTRIES:
        raise FileFormatError(path, f"not a readable .xlsx workbook: {len(infos):,} parts (more than "
                                    f"{MAX_ZIP_ENTRIES:,})")
    unpacked = sum(i.file_size for i in infos)
    if unpacked > limits.max_unpacked_bytes:
        raise FileFormatError(path, f"unpacks to {unpacked:,} bytes, more than the limit of "
                                    f"{limits.max_unpacked_bytes:,} (DVC_FILE_MAX_UNPACKED_BYTES)")
    for info in infos:
        xml = info.filename.lower().endswith((".xml", ".rels"))
        parser = None
        if xml:
            parser = DefusedXMLParser(target=_NoCallbacks(), forbid_dtd=True)
            parser.parser.DefaultHandlerExpand = None  # no Python call per text run; the DTD/entity guards stay
        try:
            with archive.open(info) as part:  # reading to the end checks the CRC
                for block in iter(lambda p=part: p.read(1 << 20), b""):
                    if parser is not None:
                        parser.feed(block)
            if parser is not None:
                parser.close()
        except DefusedXmlException as exc:
            raise FileFormatError(path, f"refused: part {info.filename!r} declares a DTD or entities "
                                        f"({type(exc).__name__}); an export never does") from None
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - bad CRC, bad deflate data, malformed XML, unknown encoding
            raise FileFormatError(path, f"not a readable .xlsx workbook: part {info.filename!r} ({why(exc)})") from None
    return archive


def _first_table(path: Path, sheets: Iterable[tuple[str, Any]]) -> Table:
    """The first of ``sheets`` (title, a function reading its rows) whose first rows hold a header."""
    scanned: list[str] = []
    any_cells = False
    for title, read_rows in sheets:
        rows = read_rows()
        scanned.append(title)
        any_cells = any_cells or any(not is_blank(v) for r in rows for v in r)
        header = find_header(rows)
        if header is not None:
            return Table(title, rows, header)
    if not any_cells:
        raise FileFormatError(path, "empty workbook: no sheet has any cell")
    raise no_header(path, f"sheet(s) {', '.join(repr(s) for s in scanned)}")


def _sheet_rows(path: Path, workbook: Any, sheet: Any, limits: FileLimits) -> list[Row]:
    """The sheet's rows as value tuples, read from its XML cell by cell (openpyxl's streaming cell
    parser, defused): each row only as wide as its last filled cell, whatever the sheet's
    ``<dimension>`` or its empty formatted cells say; refused past the row, column and cell limits."""
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet._reader import WorkSheetParser

    rows: list[Row] = []
    where = f"sheet {sheet.title!r}"
    try:
        with sheet._get_source() as src:
            parser = WorkSheetParser(src, sheet._shared_strings, data_only=True, epoch=workbook.epoch,
                                     date_formats=workbook._date_formats,
                                     timedelta_formats=workbook._timedelta_formats)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for idx, cells in parser.parse():
                    if idx > limits.max_rows:
                        raise too_many_rows(path, where, idx, limits)
                    if idx <= len(rows):
                        raise FileFormatError(path, f"{where}: row {idx} comes after row {len(rows)}")
                    filled: dict[int, Any] = {}
                    for cell in cells:
                        value = cell["value"]
                        if value is None or (isinstance(value, str) and not value):
                            continue
                        column = cell["column"]
                        if column > limits.max_columns:
                            raise too_wide(path, where, f"{get_column_letter(column)} (row {idx})", limits)
                        if isinstance(value, str) and len(value) > limits.max_cell_chars:
                            raise long_cell(path, f"{where}, cell {get_column_letter(column)}{idx}",
                                            len(value), limits)
                        filled[column] = value
                    rows.extend(() for _ in range(len(rows) + 1, idx))  # rows the XML leaves out
                    row: list[Any] = [None] * (max(filled) if filled else 0)
                    for column, value in filled.items():
                        row[column - 1] = value
                    rows.append(tuple(row))
    except (FileFormatError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001
        raise FileFormatError(path, f"not a readable .xlsx workbook: {where} ({why(exc)})") from None
    return rows


# --- .xls (BIFF8) -------------------------------------------------------------------------------

_ENCRYPTED = "EncryptedPackage".encode("utf-16-le")  # the stream of a password-protected .xlsx
_PASSWORD = ("a password-protected workbook: open it in Excel, remove the password "
             "(File > Info > Protect Workbook) and save it again")


def read_xls(path: Path, data: bytes, limits: FileLimits) -> Table:
    """The first worksheet with a header of an Excel 97-2003 workbook (an OLE2 compound file)."""
    from python_calamine import CalamineWorkbook, PasswordError, SheetTypeEnum

    try:
        workbook = CalamineWorkbook.from_filelike(io.BytesIO(data))
    except PasswordError:
        raise FileFormatError(path, _PASSWORD) from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign OLE2 file (a .doc...)
        if _ENCRYPTED in data:  # an .xlsx with a password is an OLE2 file holding the encrypted zip
            raise FileFormatError(path, _PASSWORD) from None
        raise FileFormatError(path, f"not a readable Excel 97-2003 (.xls) workbook ({why(exc)})") from None
    try:
        sheets = ((m.name, lambda name=m.name: _xls_rows(path, workbook, name, limits))
                  for m in workbook.sheets_metadata if m.typ == SheetTypeEnum.WorkSheet)
        table = _first_table(path, sheets)
    finally:
        workbook.close()
    table.format = "xls"
    return table


def _xls_rows(path: Path, workbook: Any, name: str, limits: FileLimits) -> list[Row]:
    """One sheet's rows as value tuples (text, numbers, dates, booleans; an empty cell None), at
    their place in the sheet (calamine's range starts at the first filled cell), each only as wide
    as its last filled cell; refused past the row, column and cell limits."""
    from python_calamine import PasswordError

    where = f"sheet {name!r}"
    try:
        sheet = workbook.get_sheet_by_name(name)
        first_row, first_column = sheet.start or (0, 0)
        rows: list[Row] = [() for _ in range(min(first_row, limits.max_rows))]
        lead: list[Any] = [None] * first_column
        for number, values in enumerate(sheet.iter_rows(), first_row + 1):
            end = len(values)
            while end and (values[end - 1] is None or values[end - 1] == ""):
                end -= 1
            if not end:
                rows.append(())
                continue
            if number > limits.max_rows:
                raise too_many_rows(path, where, number, limits)
            if first_column + end > limits.max_columns:
                raise too_wide(path, where, f"{first_column + end:,} (row {number})", limits)
            row = lead + [None if v == "" else v for v in values[:end]]
            for column, value in enumerate(row, 1):
                if isinstance(value, str) and len(value) > limits.max_cell_chars:
                    raise long_cell(path, f"{where}, row {number}, column {column}", len(value), limits)
            rows.append(tuple(row))
    except (FileFormatError, MemoryError):
        raise
    except PasswordError:
        raise FileFormatError(path, _PASSWORD) from None
    except Exception as exc:  # noqa: BLE001
        raise FileFormatError(path, f"not a readable Excel 97-2003 (.xls) workbook: {where} ({why(exc)})") from None
    return rows
