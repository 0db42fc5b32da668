"""What every reader of a clerk's file shares: limits, errors, bounded reading and sniffing.

A clerk's file is told apart by its content, never by its extension (:func:`sniff_format`):

- ``xlsx``: a zip (``PK``), read by ``tasks.file_excel.read_xlsx`` (defused XML, cell by cell);
- ``xls``: an OLE2 compound file, a real Excel 97-2003 (BIFF8) workbook, read by
  ``tasks.file_excel.read_xls`` (``python-calamine``);
- ``html``: an HTML page with a table (what many provincial systems save under ``.xls``), read
  by ``tasks.file_text.read_html``;
- ``csv``: any other text, in UTF-8 (with or without BOM), UTF-16 (BOM) or a detected legacy code
  page such as Windows-1258, read by ``tasks.file_text.read_csv``.

An Excel 2003 XML spreadsheet, any other XML, and binary content are refused with a reason.
Every refusal is a :class:`FileFormatError` naming the file. :class:`FileLimits` bounds what one
file may hold, whatever its format; ``tasks.file_guard`` also parses it in a child process with
a memory and a time limit.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.file_columns import HEADER_SCAN_ROWS, Header, Row

#: Byte-order marks, longest first: the text's encoding is then certain.
BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
_OLE2 = b"\xd0\xcf\x11\xe0"
_HTML_STARTS = ("<!doctype html", "<html", "<table", "<meta", "<head", "<body", "<style", "<!--")


@dataclass(frozen=True)
class FileLimits:
    """What one clerk's file may hold; past a limit the file is refused with a reason naming the
    setting. Defaults: the ``DVC_FILE_*`` settings' defaults (``tasks/settings.py``)."""

    max_bytes: int = 100 * 2**20
    max_unpacked_bytes: int = 512 * 2**20
    max_rows: int = 100_000
    max_columns: int = 256
    max_cell_chars: int = 32_767

    @classmethod
    def from_settings(cls, settings: Any) -> FileLimits:
        return cls(
            max_bytes=settings.file_max_bytes, max_unpacked_bytes=settings.file_max_unpacked_bytes,
            max_rows=settings.file_max_rows, max_columns=settings.file_max_columns,
            max_cell_chars=settings.file_max_cell_chars,
        )


def quote_name(name: str | Path) -> str:
    """A file name as logs and alerts show it: unchanged when every character is printable, else
    quoted with its newlines, control and invisible characters escaped (``'a\\nb.csv'``), so a
    name cannot forge a log line or an alert line."""
    text = str(name)
    return text if text.isprintable() else repr(text)


class FileFormatError(Exception):
    """The file cannot be read as an export: unreadable, empty, no header, a required column
    missing, a format or encoding not recognised, hostile (over a limit, a DTD, a damaged zip)."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        self.message = message
        super().__init__(f"{quote_name(self.path)}: {message}")


@dataclass
class Table:
    """The rows of the sheet (or CSV text, or HTML table) that holds the header, as read."""

    sheet: str | None
    rows: list[Row]
    header: Header
    delimiter: str | None = None
    format: str = ""  # xlsx, xls, html, csv
    encoding: str | None = None  # of a text format (csv, html)


def why(exc: BaseException) -> str:
    """An exception as one short line for a reason: ``Type: message``."""
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def long_cell(path: Path, where: str, length: int, limits: FileLimits) -> FileFormatError:
    return FileFormatError(path, f"{where} holds {length:,} characters, more than the limit of "
                                 f"{limits.max_cell_chars:,} (DVC_FILE_MAX_CELL_CHARS)")


def too_many_rows(path: Path, where: str, row: int, limits: FileLimits) -> FileFormatError:
    return FileFormatError(path, f"{where} has a row {row:,}, more than the limit of "
                                 f"{limits.max_rows:,} rows (DVC_FILE_MAX_ROWS)")


def too_wide(path: Path, where: str, column: str, limits: FileLimits) -> FileFormatError:
    return FileFormatError(path, f"{where} has a value in column {column}, beyond the limit of "
                                 f"{limits.max_columns:,} columns (DVC_FILE_MAX_COLUMNS)")


def no_header(path: Path, where: str) -> FileFormatError:
    return FileFormatError(
        path,
        f"no header row found in the first {HEADER_SCAN_ROWS} rows of {where}: expected labels such as "
        "'Mã hồ sơ', 'Ngày tiếp nhận' (dossier list) or 'Mã thanh toán', 'Số tiền' (payment list)",
    )


# --- reading the bytes ----------------------------------------------------------------------------


def content_hash(path: str | Path) -> str:
    """sha256 (hex) of the file's bytes: a file already loaded is not loaded twice."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_limited(path: str | Path, limits: FileLimits | None = None, *, follow_symlinks: bool = True) -> bytes:
    """The file's bytes, refused (:class:`FileFormatError`) when it is not a regular file, is a
    symbolic link and ``follow_symlinks`` is false, or is larger than ``max_bytes``. Opened once,
    non-blocking (a FIFO never hangs the run)."""
    path = Path(path)
    limits = limits or FileLimits()
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if not follow_symlinks and path.is_symlink():
            raise FileFormatError(path, "refused: a symbolic link, not a file (links are never followed)") from None
        raise FileFormatError(path, f"cannot read the file ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as handle:
        return read_fd(path, handle, limits)


def read_fd(path: Path, handle: Any, limits: FileLimits) -> bytes:
    """The bytes of an open file, with the checks of :func:`read_limited`."""
    try:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise FileFormatError(path, "refused: not a regular file")
        if info.st_size > limits.max_bytes:
            raise _too_big(path, info.st_size, limits)
        data = handle.read(limits.max_bytes + 1)
    except OSError as exc:
        raise FileFormatError(path, f"cannot read the file ({exc.strerror or exc})") from None
    if len(data) > limits.max_bytes:  # grew while read
        raise _too_big(path, len(data), limits)
    return data


def _too_big(path: Path, size: int, limits: FileLimits) -> FileFormatError:
    return FileFormatError(path, f"{size:,} bytes, more than the limit of {limits.max_bytes:,} (DVC_FILE_MAX_BYTES)")


# --- sniffing -----------------------------------------------------------------------------------


def bom_encoding(data: bytes) -> str | None:
    """The encoding a byte-order mark at the start of ``data`` declares, if any."""
    return next((encoding for bom, encoding in BOMS if data.startswith(bom)), None)


def sniff_format(path: Path, data: bytes) -> str:
    """``xlsx``, ``xls``, ``html`` or ``csv``, from the first bytes; a :class:`FileFormatError`
    for an empty file, an XML file (an Excel 2003 XML spreadsheet among them) or binary content."""
    head = data[:1024]
    if not head:
        raise FileFormatError(path, "empty file (0 bytes)")
    if head.startswith(b"PK\x03\x04"):
        return "xlsx"
    if head.startswith(_OLE2):
        return "xls"
    bom = bom_encoding(head)
    lowered = head.decode(bom or "latin-1", "replace").lstrip("\ufeff \t\r\n").lower()
    if lowered.startswith(_HTML_STARTS):
        return "html"
    if lowered.startswith("<?xml"):
        if "<html" in lowered or "<table" in lowered:
            return "html"
        if "urn:schemas-microsoft-com:office:spreadsheet" in lowered or "<workbook" in lowered:
            raise FileFormatError(path, "an Excel 2003 XML spreadsheet, which is not read: open it in Excel and "
                                        "save it as .xlsx (Excel Workbook)")
        raise FileFormatError(path, "an XML file, not a spreadsheet: export the list again as .xlsx, .xls or CSV")
    if bom is None and b"\x00" in head:
        raise FileFormatError(path, "a binary file, not a spreadsheet (.xlsx, .xls), an HTML table or CSV text")
    return "csv"
