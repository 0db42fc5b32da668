"""Text exports from a clerk: CSV, and HTML tables saved under ``.xls``.

**Encodings.** A byte-order mark decides (UTF-8 or UTF-16, as Excel's "Unicode Text" writes it).
Without one, the text is read as UTF-8 when it is valid UTF-8; otherwise the encodings
``charset-normalizer`` detects (and, for an HTML page, the charset it declares), then
Windows-1258 (what older Vietnamese office software writes) are tried in turn, and the first one
under which the file has a header row of known labels wins: the Vietnamese labels tell a right
decoding from a wrong one. Decoded text is normalised to NFC: Windows-1258 writes tone marks as
combining characters (``ê`` + U+0301), which NFC composes into the letters UTF-8 files carry
(``ế``). A file no encoding reads is refused with the encodings tried.

**CSV**: comma, semicolon or tab separated (the one giving the best header wins).

**HTML**: the first ``<table>`` (innermost first, in document order) with a header row. Cells
spanning rows or columns (``rowspan``, ``colspan``) hold their text in their first cell, as merged
cells of a workbook do; ``<br>`` is a line break; nested tables, scripts and styles are not cell
text. The page is parsed as a stream (lxml's HTML pull parser, no network access, entities left
unexpanded), rows are freed once read, and reading stops at the table found.

The row, column and cell limits of :class:`~tasks.file_formats.FileLimits` apply to both.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.file_columns import HEADER_SCAN_ROWS, Row, find_header, is_blank
from tasks.file_formats import (
    FileFormatError,
    FileLimits,
    Table,
    bom_encoding,
    long_cell,
    no_header,
    too_many_rows,
    too_wide,
    why,
)

CSV_DELIMITERS = (",", ";", "\t")
LEGACY_ENCODINGS = ("cp1258",)
"""Tried after the detected encodings: Windows-1258, the Vietnamese Windows code page."""
_DETECT_BYTES = 1 << 20
_MAX_DETECTED = 3
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)"""
                      rb"""|<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_CHUNK_CHARS = 1 << 20
_BLOCKS = frozenset({"p", "div", "li"})
_NOT_TEXT = frozenset({"table", "script", "style"})

Reader = Callable[[str], Table | None]


def read_csv(path: Path, data: bytes, limits: FileLimits) -> Table:
    """The CSV text's rows from the header's separator on."""
    def read(text: str) -> Table | None:
        return _csv_table(path, text, limits)

    table = _decoded(path, data, read, "CSV", "the CSV text (separators , ; tab tried)")
    table.format = "csv"
    return table


def read_html(path: Path, data: bytes, limits: FileLimits) -> Table:
    """The first HTML table with a header (an HTML page saved as .xls)."""
    declared = _CHARSET.search(data[:4096])
    charset = (declared[1] or declared[2]).decode("ascii") if declared else None

    def read(text: str) -> Table | None:
        return _html_table(path, text, limits)

    table = _decoded(path, data, read, "HTML page", "the HTML table(s)", declared=charset)
    table.format = "html"
    return table


# --- encodings ----------------------------------------------------------------------------------


def _decoded(path: Path, data: bytes, read: Reader, kind: str, where: str, declared: str | None = None) -> Table:
    """``read`` over the text of ``data`` in the first encoding that gives a header (see the module)."""
    bom = bom_encoding(data)
    if bom is not None:
        encoding = "utf-8" if bom == "utf-8-sig" else bom
        table = read(_nfc(_decode_strict(path, data, bom)))
        if table is None:
            raise no_header(path, where if encoding == "utf-8" else f"{where}, read as {encoding}")
        return _with_encoding(table, encoding)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.start
    else:
        table = read(_nfc(text))
        if table is None:
            raise no_header(path, where)
        return _with_encoding(table, "utf-8")
    no_header_in: list[str] = []
    undecodable: list[str] = []
    for encoding in _candidates(data, declared):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            undecodable.append(f"{encoding} (byte {exc.start:,})")
            continue
        table = _with_encoding(read(_nfc(text)), encoding)
        if table is not None:
            return table
        no_header_in.append(encoding)
    tried = [f"read as {_either(no_header_in)} it has no header row"] if no_header_in else []
    tried += [f"nor is it {_either(undecodable)} text"] if undecodable else []
    raise FileFormatError(path, f"not UTF-8 text (byte {bad:,}); {'; '.join(tried)}: save the {kind} as UTF-8 "
                                "(or UTF-16, Windows-1258)")


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _with_encoding(table: Table | None, encoding: str) -> Table | None:
    if table is not None:
        table.encoding = encoding
    return table


def _decode_strict(path: Path, data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        name = "UTF-8" if encoding == "utf-8-sig" else encoding.upper()
        raise FileFormatError(path, f"not valid {name} text (it starts with a {name} byte-order mark; "
                                    f"byte {exc.start:,}: {exc.reason})") from None


def _candidates(data: bytes, declared: str | None) -> list[str]:
    """Encodings to try on text that is not UTF-8, most likely first, each once."""
    from charset_normalizer import from_bytes

    head = data[:_DETECT_BYTES]
    if len(data) > _DETECT_BYTES and b"\n" in head:
        head = head[: head.rindex(b"\n") + 1]
    detected = [match.encoding for match in itertools.islice(from_bytes(head), _MAX_DETECTED)]
    names: list[str] = []
    for name in (declared, *detected, *LEGACY_ENCODINGS):
        try:
            canonical = codecs.lookup(name).name if name else None
        except LookupError:
            continue
        if canonical and canonical not in names and not canonical.startswith("utf-8"):
            names.append(canonical)
    return names


def _nfc(text: str) -> str:
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


# --- CSV ----------------------------------------------------------------------------------------


def _csv_table(path: Path, text: str, limits: FileLimits) -> Table | None:
    if not text.strip():
        raise FileFormatError(path, "empty file (no text)")
    best: Table | None = None
    for delimiter in CSV_DELIMITERS:
        head = _csv_rows(path, text, delimiter, HEADER_SCAN_ROWS + 1, limits)
        header = find_header(head)
        if header is not None and (best is None or header.score > best.header.score):
            best = Table(None, head, header, delimiter)
    if best is not None:
        best.rows = _csv_rows(path, text, best.delimiter or ",", None, limits)
    return best


def _csv_rows(path: Path, text: str, delimiter: str, limit: int | None, limits: FileLimits) -> list[Row]:
    """The CSV records (at most ``limit``), each without its trailing empty fields; refused past
    the row, column and cell limits."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[Row] = []
    try:
        for number, record in enumerate(itertools.islice(reader, limit), 1):
            if number > limits.max_rows:
                raise FileFormatError(path, f"more than the limit of {limits.max_rows:,} rows (DVC_FILE_MAX_ROWS)")
            end = len(record)
            while end and not record[end - 1]:
                end -= 1
            if end > limits.max_columns:
                raise too_wide(path, f"record {number}", f"{end:,}", limits)
            for column, value in enumerate(record[:end], 1):
                if len(value) > limits.max_cell_chars:
                    raise long_cell(path, f"record {number}, column {column}", len(value), limits)
            rows.append(tuple(record[:end]))
    except csv.Error as exc:
        raise FileFormatError(path, f"unreadable CSV ({exc})") from None
    return rows


# --- HTML ---------------------------------------------------------------------------------------


@dataclass
class _Grid:
    """One HTML table's rows as read so far, with the cells that span down into the next rows."""

    number: int
    rows: list[Row] = field(default_factory=list)
    below: dict[int, int] = field(default_factory=dict)  # column -> rows still covered from above

    def add(self, path: Path, tr: Any, limits: FileLimits) -> None:
        where = f"HTML table {self.number}"
        if len(self.rows) >= limits.max_rows:
            raise too_many_rows(path, where, len(self.rows) + 1, limits)
        covered = {c for c, n in self.below.items() if n > 0}
        values: dict[int, str] = {}
        spans: dict[int, int] = {}
        column = 0
        for cell in tr:
            if cell.tag not in ("td", "th"):
                continue
            while column in covered:
                column += 1
            text = _cell_text(cell)
            width = _span(cell.get("colspan"), limits.max_columns)
            height = _span(cell.get("rowspan"), limits.max_rows)
            if not is_blank(text):
                if column >= limits.max_columns:
                    raise too_wide(path, where, f"{column + 1:,} (row {len(self.rows) + 1})", limits)
                if len(text) > limits.max_cell_chars:
                    raise long_cell(path, f"{where}, row {len(self.rows) + 1}, column {column + 1}", len(text), limits)
                values[column] = text
            if height > 1:
                spans.update(dict.fromkeys(range(column, min(column + width, limits.max_columns)), height - 1))
            column = min(column + width, limits.max_columns + 1)
        self.below = {c: n - 1 for c, n in self.below.items() if n > 1} | spans
        row: list[Any] = [None] * (max(values) + 1 if values else 0)
        for c, text in values.items():
            row[c] = text
        self.rows.append(tuple(row))


def _span(value: str | None, cap: int) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        return 1
    return min(max(n, 1), cap)


def _cell_text(cell: Any) -> str:
    """A cell's text: ``<br>`` and block elements start a new line; nested tables, scripts and
    styles are left out."""
    parts: list[str] = []

    def walk(element: Any) -> None:
        if element.text:
            parts.append(element.text)
        for child in element:
            tag = child.tag if isinstance(child.tag, str) else ""
            if tag == "br":
                parts.append("\n")
            elif tag and tag not in _NOT_TEXT:
                if tag in _BLOCKS:
                    parts.append("\n")
                walk(child)
            if child.tail:
                parts.append(child.tail)

    walk(cell)
    return "".join(parts)


def _html_table(path: Path, text: str, limits: FileLimits) -> Table | None:
    from lxml import etree

    parser = etree.HTMLPullParser(events=("start", "end"), tag=("table", "tr"), encoding="utf-8",
                                  no_network=True, remove_comments=True, remove_pis=True, huge_tree=False)
    open_tables: list[_Grid] = []
    count = 0
    def fed() -> Iterator[None]:  # the page in pieces; closing it ends the elements still open
        for start in range(0, len(text), _CHUNK_CHARS):
            parser.feed(text[start:start + _CHUNK_CHARS].encode("utf-8"))
            yield
        parser.close()
        yield

    try:
        for _ in fed():
            for event, element in parser.read_events():
                if element.tag == "table" and event == "start":
                    count += 1
                    open_tables.append(_Grid(count))
                elif element.tag == "table" and open_tables:
                    grid = open_tables.pop()
                    element.clear()
                    header = find_header(grid.rows)
                    if header is not None:
                        return Table(None, grid.rows, header)
                elif element.tag == "tr" and event == "end":
                    if open_tables:
                        open_tables[-1].add(path, element, limits)
                    element.clear()
                    parent = element.getparent()
                    while parent is not None and element.getprevious() is not None:
                        del parent[0]
    except (FileFormatError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the HTML parser raises, the page is unreadable
        raise FileFormatError(path, f"not a readable HTML page ({why(exc)})") from None
    if count == 0:
        raise FileFormatError(path, "an HTML page without a table: export the list again as .xlsx, .xls or CSV")
    return None
