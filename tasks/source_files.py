"""Parser for the exports a clerk drops in the inbox (the source contract, section 2).

The files are the lists officials see in the web UI, not a machine format: title rows above
the header, a header that may span two rows with merged group cells, section rows
(``I. Cấp huyện``) and a ``Tổng cộng`` row inside the data, labels instead of codes, day-first
text dates, ``1.234.000`` amounts, stray and non-breaking spaces. :func:`parse_file` turns one
such file into records in the **API conventions** (API field names, ``yyyyMMddHHmmss``
timestamps, status/channel codes, 1/0 flags), so the rest of the pipeline treats both ways in
alike.

Formats, told apart by content (``tasks.file_formats.sniff_format``): .xlsx and Excel 97-2003
.xls workbooks (``tasks.file_excel``), HTML tables saved as .xls and CSV text in UTF-8, UTF-16
or a detected code page such as Windows-1258 (``tasks.file_text``). The column labels and value
conversions are ``tasks.file_columns``; the entities a file can carry, their keys, the registry's
(``tasks.entities.FILE_ENTITIES``).

Rules:

- Columns are found by label (case-, spacing- and NFC/NFD-insensitive), never by position;
  unknown columns are reported and ignored; fields the file does not carry are absent.
- A value that cannot be converted is kept as the original string, for the normaliser to
  quarantine the row with a reason: a data row is never dropped and a value never guessed.
- Only blank rows, section rows, total rows, repeated header rows and one-cell note rows
  (signature lines under the table) are skipped; they are counted by reason, and note rows
  are also named in a warning.
- File-level problems raise :class:`FileFormatError` naming the file: unreadable, empty, an
  unknown format or encoding, no header, a required column missing.
- Hostile files (issue 14) are refused, never expanded: :class:`FileLimits` bounds the file's
  size, its unpacked size, rows, columns and cell length, whatever its format; the readers never
  expand entities or follow links. Any error while reading is a :class:`FileFormatError`.
  ``tasks.file_guard`` runs this parser in a child process with a memory and a time limit.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.file_columns import (
    CHANNEL_LABELS,
    CONVERTERS,
    DOSSIER_COLUMNS,
    ENTITY_COLUMNS,
    FILE_REQUIRED_FIELDS,
    IGNORED_LABELS,
    KIND_WORDS,
    LABEL_INDEX,
    LIST_NAMES,
    PAYMENT_COLUMNS,
    STATUS_LABELS,
    UNCONVERTED,
    Column,
    Header,
    Row,
    clean_text,
    detect_entity,
    display,
    find_header,
    is_blank,
    key_field,
    known_form,
    normalize_label,
    original,
)
from tasks.file_excel import read_xls, read_xlsx
from tasks.file_formats import (
    FileFormatError,
    FileLimits,
    Table,
    content_hash,
    quote_name,
    read_limited,
    sniff_format,
)
from tasks.file_text import read_csv, read_html

# Also importable from here (the parser's public names, ``__all__``): the column tables and label
# conversions of tasks.file_columns, and the errors, limits and reading of tasks.file_formats.
_read_xlsx = read_xlsx  # the name tests/test_source_files.py reads a sheet through
_READERS = {"xlsx": read_xlsx, "xls": read_xls, "html": read_html, "csv": read_csv}


@dataclass
class ParsedFile:
    """One parsed export.

    ``records`` are dicts in the API conventions plus ``_row_number`` (the spreadsheet row, or
    the CSV record number, or the HTML table's row, 1-based). ``header_row`` is the 1-based row
    where the header starts and ``header_rows`` how many rows it spans (1 or 2). ``columns`` maps
    each field read to the label it was read from. ``skipped`` counts the skipped rows by reason
    (blank/section/total/header/note); ``rows_skipped`` is their sum. ``format`` is what the
    content was (xlsx, xls, html, csv) and ``encoding`` the text encoding of an html or csv file.
    """

    path: Path
    entity: str
    records: list[dict[str, Any]]
    sheet: str | None
    header_row: int
    header_rows: int = 1
    columns: dict[str, str] = field(default_factory=dict)
    unknown_columns: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    delimiter: str | None = None
    format: str = ""
    encoding: str | None = None

    @property
    def rows_skipped(self) -> int:
        """Rows that are not data (blank, section, total, repeated header, note), counted."""
        return sum(self.skipped.values())


def parse_file(path: str | Path, limits: FileLimits | None = None) -> ParsedFile:
    """Parse one clerk export (.xlsx, .xls, an HTML table or CSV, told apart by content) into
    API-shaped records.

    Raises :class:`FileFormatError` when the file is unreadable, empty, of no known format or
    encoding, has no header row, lacks a required column (``Mã hồ sơ``; for payments also
    ``Mã thanh toán``) or is hostile (over a limit of ``limits``, a DTD in an XML part, a damaged
    zip). In this process: the inbox and ``dvc-etl ingest-files`` call it through
    ``tasks.file_guard`` (a child with a memory limit).
    """
    limits = limits or FileLimits()
    return parse_bytes(Path(path), read_limited(path, limits), limits)


def parse_bytes(path: Path, data: bytes, limits: FileLimits | None = None) -> ParsedFile:
    """:func:`parse_file` over bytes already read; ``path`` names the file in messages."""
    limits = limits or FileLimits()
    table = _READERS[sniff_format(path, data)](path, data, limits)
    return _parse_table(path, table)


def _parse_table(path: Path, table: Table) -> ParsedFile:
    header = table.header
    entity = detect_entity(header)
    if entity is None:
        raise FileFormatError(
            path, f"cannot tell a dossier list from a payment list by the labels {sorted(header.labels.values())}"
        )
    mapped, unknown, notes = _map_columns(path, entity, header)
    parsed = ParsedFile(
        path=path, entity=entity, records=[], sheet=table.sheet, header_row=header.index + 1,
        header_rows=header.height, columns={m.column.field: m.label for m in mapped},
        unknown_columns=unknown, warnings=notes, delimiter=table.delimiter, format=table.format,
        encoding=table.encoding,
    )
    _read_data_rows(parsed, table.rows[header.index + header.height :], header, mapped)
    return parsed


def _map_columns(path: Path, entity: str, header: Header) -> tuple[list[_Mapped], list[str], list[str]]:
    index = LABEL_INDEX[entity]
    mapped: list[_Mapped] = []
    unknown: list[str] = []
    notes: list[str] = []
    taken: dict[str, str] = {}
    for c in sorted(header.labels):
        label, norm = header.labels[c], header.known.get(c)
        if norm in IGNORED_LABELS:
            continue
        column = index.get(norm) if norm else None
        if column is None:
            unknown.append(label)
        elif column.field in taken:
            notes.append(f"column {label!r} repeats {taken[column.field]!r} ({column.field}); the first one is read")
        else:
            taken[column.field] = label
            mapped.append(_Mapped(c, column, label))
    missing = [col.labels[0] for col in ENTITY_COLUMNS[entity] if col.field in FILE_REQUIRED_FIELDS[entity]
               and col.field not in taken]
    if missing:
        raise FileFormatError(
            path, f"missing required column {', '.join(repr(m) for m in missing)} ({LIST_NAMES[entity]}; header "
            f"row {header.index + 1} has {[header.labels[c] for c in sorted(header.labels)]})"
        )
    if unknown:
        notes.append(f"unknown columns ignored: {', '.join(repr(u) for u in unknown)}")
    return mapped, unknown, notes


# --- rows -------------------------------------------------------------------------------------

_SECTION = re.compile(r"^[IVXLCDM]+[.)]?\s+\S|^[A-Z][.)]\s*\S|^\d{1,2}[.)]\s*[^\d\s]")
_HAS_DIGIT = re.compile(r"\d")
_TOTAL_WORDS = ("tổng cộng", "tổng số", "tổng", "cộng")


@dataclass(frozen=True)
class _Mapped:
    index: int
    column: Column
    label: str


@dataclass(frozen=True)
class _RowRules:
    """What :func:`_row_kind` needs to know about the table."""

    key_index: int
    key_label: str  # normalised label of the key column
    header_norms: frozenset[str]
    by_index: dict[int, Column]


def _row_kind(row: Row, rules: _RowRules) -> str | None:
    """Why a row is not data (blank/section/total/header/note), or None for a data row.

    - total: the first filled cell reads ``Tổng cộng`` (or ``Tổng``, ``Cộng``, ``Tổng số``);
    - section: at most two filled text cells reading like ``I. Cấp huyện``, ``II Cấp xã``, ``A. ...``;
    - header: the header repeated under a page break (the key column holds the key's label and
      half or more of the filled cells are header labels);
    - note: a single text cell that is no value of its column (an unlabelled or unknown column,
      a value its column cannot convert, or a code without a digit): signature lines such as
      ``Người lập biểu`` under the table.
    """
    filled = [(c, v) for c, v in enumerate(row) if not is_blank(v)]
    if not filled:
        return "blank"
    first = filled[0][1]
    if isinstance(first, str):
        norm = normalize_label(first)
        if norm.rstrip(": ") in _TOTAL_WORDS or norm.startswith("tổng cộng"):
            return "total"
    if len(filled) <= 2 and all(isinstance(v, str) for _, v in filled):
        if _SECTION.match(" ".join(display(v) for _, v in filled)):
            return "section"
    key = row[rules.key_index] if rules.key_index < len(row) else None
    if isinstance(key, str) and normalize_label(key) == rules.key_label:
        texts = [normalize_label(v) for _, v in filled if isinstance(v, str)]
        if sum(1 for t in texts if (known_form(t) or "") in rules.header_norms) * 2 >= len(filled):
            return "header"
    if len(filled) == 1 and isinstance(first, str) and _is_note(filled[0][0], first, rules):
        return "note"
    return None


def _is_note(index: int, value: str, rules: _RowRules) -> bool:
    column = rules.by_index.get(index)
    if column is None:
        return True
    if column.kind == "code":
        return not _HAS_DIGIT.search(value)
    return CONVERTERS[column.kind](value) is UNCONVERTED


def _convert_row(
    row: Row, mapped: Sequence[_Mapped], row_number: int, failures: dict[str, list[int]]
) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for m in mapped:
        raw = row[m.index] if m.index < len(row) else None
        value = CONVERTERS[m.column.kind](raw)
        if value is UNCONVERTED:
            value = original(raw)
            failures[m.label].append(row_number)
        record[m.column.field] = value
    record["_row_number"] = row_number
    return record


def _read_data_rows(parsed: ParsedFile, rows: Sequence[Row], header: Header, mapped: Sequence[_Mapped]) -> None:
    key = next(m for m in mapped if m.column.field == key_field(parsed.entity))
    rules = _RowRules(
        key_index=key.index,
        key_label=header.known[key.index],
        header_norms=frozenset(header.known.values()),
        by_index={m.index: m.column for m in mapped},
    )
    first_row_number = header.index + header.height + 1
    failures: dict[str, list[int]] = defaultdict(list)
    skipped: Counter[str] = Counter()
    numeric_codes: dict[str, list[int]] = defaultdict(list)
    end = len(rows)
    while end and all(is_blank(v) for v in rows[end - 1]):  # formatted-but-empty rows under the table
        end -= 1
    for offset, row in enumerate(rows[:end]):
        row_number = first_row_number + offset
        kind = _row_kind(row, rules)
        if kind is not None:
            skipped[kind] += 1
            if kind == "note":
                text = next(display(v) for v in row if not is_blank(v))
                parsed.warnings.append(f"row {row_number}: note row skipped: {text[:80]!r}")
            continue
        parsed.records.append(_convert_row(row, mapped, row_number, failures))
        _track_numeric_codes(row, mapped, row_number, numeric_codes)
    parsed.skipped = dict(skipped)
    parsed.warnings.extend(_failure_warnings(failures, mapped))
    parsed.warnings.extend(
        f"column {label!r} holds numbers instead of text (rows {_rows(rs)}): leading zeros may have been lost"
        for label, rs in numeric_codes.items()
    )
    if not parsed.records:
        parsed.warnings.append("no data rows under the header")


def _track_numeric_codes(row: Row, mapped: Sequence[_Mapped], row_number: int, out: dict[str, list[int]]) -> None:
    for m in mapped:
        if m.column.field in ("SoGiayToChuHoSo", "SoDienThoai") and m.index < len(row):
            value = row[m.index]
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[m.label].append(row_number)


def _failure_warnings(failures: dict[str, list[int]], mapped: Sequence[_Mapped]) -> list[str]:
    kinds = {m.label: m.column.kind for m in mapped}
    return [
        f"{len(rows)} value(s) in column {label!r} are not {KIND_WORDS.get(kinds[label], 'readable')} "
        f"(rows {_rows(rows)}); kept as text for the quality checks"
        for label, rows in failures.items()
    ]


def _rows(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:10])
    return shown + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")


__all__ = [
    "CHANNEL_LABELS",
    "DOSSIER_COLUMNS",
    "PAYMENT_COLUMNS",
    "STATUS_LABELS",
    "Column",
    "FileFormatError",
    "FileLimits",
    "ParsedFile",
    "clean_text",
    "content_hash",
    "detect_entity",
    "find_header",
    "normalize_label",
    "parse_bytes",
    "parse_file",
    "quote_name",
    "read_limited",
]
