"""Parser for the Excel/CSV exports a clerk drops in the inbox (source-contract.md, section 2).

The files are the lists officials see in the web UI, not a machine format: title rows above
the header, a header that may span two rows with merged group cells, section rows
(``I. Cấp huyện``) and a ``Tổng cộng`` row inside the data, labels instead of codes, day-first
text dates, ``1.234.000`` amounts, stray and non-breaking spaces. :func:`parse_file` turns one
such file into records in the **API conventions** (API field names, ``yyyyMMddHHmmss``
timestamps, status/channel codes, 1/0 flags), so the rest of the pipeline treats both ways in
alike.

Rules:

- Columns are found by label (case-, spacing- and NFC/NFD-insensitive), never by position;
  unknown columns are reported and ignored; fields the file does not carry are absent.
- A value that cannot be converted is kept as the original string, for the normaliser to
  quarantine the row with a reason: a data row is never dropped and a value never guessed.
- Only blank rows, section rows, total rows, repeated header rows and one-cell note rows
  (signature lines under the table) are skipped; they are counted by reason, and note rows
  are also named in a warning.
- File-level problems raise :class:`FileFormatError` naming the file.
- Hostile files (issue 14) are refused, never expanded: :class:`FileLimits` bounds the file's
  size, its unpacked size, rows, columns and cell length; every XML part of an .xlsx is checked
  with ``defusedxml`` (no DTD, no entities) and its zip CRC before openpyxl reads it; sheets are
  read cell by cell from their XML, so a cell at column XFD or a ``<dimension ref="A1:XFD1048576">``
  costs nothing (openpyxl's own row reader would pad every row to 16,384 cells). Any error while
  reading is a :class:`FileFormatError`. ``tasks.file_guard`` runs this parser in a child process
  with a memory and a time limit.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import os
import re
import stat
import unicodedata
import warnings
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import openpyxl

HEADER_SCAN_ROWS = 30
"""The header is looked for in the first rows of a sheet (after 1..5 title rows and blanks)."""

CSV_DELIMITERS = (",", ";", "\t")
TIMESTAMP_FORMAT = "%Y%m%d%H%M%S"
MAX_ZIP_ENTRIES = 10_000
"""An .xlsx with more parts than this is refused (a real export has a few dozen)."""

Row = Sequence[Any]


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
    missing, hostile (over a limit, a DTD, a damaged zip)."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        self.message = message
        super().__init__(f"{quote_name(self.path)}: {message}")


@dataclass
class ParsedFile:
    """One parsed export.

    ``records`` are dicts in the API conventions plus ``_row_number`` (the spreadsheet row, or
    the CSV record number, 1-based). ``header_row`` is the 1-based row where the header starts
    and ``header_rows`` how many rows it spans (1 or 2). ``columns`` maps each field read to the
    label it was read from. ``skipped`` counts the skipped rows by reason
    (blank/section/total/header/note); ``rows_skipped`` is their sum.
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

    @property
    def rows_skipped(self) -> int:
        """Rows that are not data (blank, section, total, repeated header, note), counted."""
        return sum(self.skipped.values())


# --- labels -----------------------------------------------------------------------------------

_PARENTHESIS = re.compile(r"\s*\([^)]*\)\s*$")


def _squeeze(text: str) -> str:
    """NFC, every run of (non-breaking, zero-width) spaces -> one space, trimmed. Fast path in C."""
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if "\u200b" in text or "\ufeff" in text:
        text = text.replace("\u200b", " ").replace("\ufeff", " ")
    return " ".join(text.split())


@lru_cache(maxsize=8192)
def _normalize_text(text: str) -> str:
    return _squeeze(text).casefold().rstrip(":*").rstrip()


def normalize_label(value: Any) -> str:
    """Compare-form of a label or label-like value: NFC, casefolded, one plain space between
    words, no trailing ``:``/``*``."""
    return _normalize_text(value if isinstance(value, str) else str(value))


@dataclass(frozen=True)
class Column:
    """A field of the API and the labels a file may carry it under (the first one is shown)."""

    field: str
    labels: tuple[str, ...]
    kind: str  # text, code, label, ts, status, channel, yesno, amount, method


DOSSIER_COLUMNS: tuple[Column, ...] = (
    Column("MaHoSo", ("Mã hồ sơ",), "code"),
    Column("MaTTHC", ("Mã TTHC", "Mã thủ tục"), "code"),
    Column("TenTTHC", ("Tên TTHC", "Tên thủ tục"), "text"),
    Column("TenLinhVuc", ("Lĩnh vực",), "text"),
    Column("MaDonVi", ("Mã đơn vị",), "code"),
    Column("TenDonVi", ("Đơn vị xử lý",), "text"),
    Column("KenhThucHien", ("Kênh nộp",), "channel"),
    Column("ChuHoSo", ("Chủ hồ sơ",), "text"),
    Column("SoGiayToChuHoSo", ("Số giấy tờ",), "code"),
    Column("SoDienThoai", ("Số điện thoại",), "code"),
    Column("NgayNopHoSo", ("Ngày nộp",), "ts"),
    Column("NgayTiepNhan", ("Ngày tiếp nhận",), "ts"),
    Column("NgayHenTra", ("Ngày hẹn trả",), "ts"),
    Column("NgayKetThucXuLy", ("Ngày kết thúc xử lý", "Ngày có kết quả"), "ts"),
    Column("NgayTra", ("Ngày trả kết quả",), "ts"),
    Column("TrangThaiHoSo", ("Trạng thái",), "status"),
    Column("CanBoXuLy", ("Cán bộ xử lý",), "text"),
    Column("MaCanBoXuLy", ("Mã cán bộ",), "code"),
    Column("DuocThanhToanTrucTuyen", ("Thanh toán trực tuyến",), "yesno"),
    Column("_CoKetQuaDienTu", ("Có kết quả điện tử",), "yesno"),
    Column("_TaiSuDungDuLieu", ("Tái sử dụng dữ liệu",), "yesno"),
    Column("NgayCapNhat", ("Ngày cập nhật",), "ts"),
)

PAYMENT_COLUMNS: tuple[Column, ...] = (
    Column("Ma", ("Mã thanh toán",), "code"),
    Column("MaHoSo", ("Mã hồ sơ",), "code"),
    Column("SoTien", ("Số tiền",), "amount"),
    Column("Phi", ("Phí",), "amount"),
    Column("LePhi", ("Lệ phí",), "amount"),
    Column("TrangThai", ("Trạng thái",), "label"),
    Column("HinhThucThanhToan", ("Hình thức thanh toán",), "method"),
    Column("HinhThucThu", ("Hình thức thu",), "label"),
    Column("NgayYeuCau", ("Ngày yêu cầu",), "ts"),
    Column("NgayThuPhi", ("Ngày thu phí", "Ngày thanh toán"), "ts"),
    Column("MaGiaoDich", ("Mã giao dịch",), "code"),
    Column("NgayCapNhat", ("Ngày cập nhật",), "ts"),
)

ENTITY_COLUMNS: dict[str, tuple[Column, ...]] = {"dossiers": DOSSIER_COLUMNS, "payments": PAYMENT_COLUMNS}
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {"dossiers": ("MaHoSo",), "payments": ("Ma", "MaHoSo")}
KEY_FIELD: dict[str, str] = {"dossiers": "MaHoSo", "payments": "Ma"}
IGNORED_LABELS = frozenset({"stt", "tt", "số tt", "số thứ tự"})

STATUS_LABELS: dict[str, int] = {
    "Mới đăng ký": 1,
    "Được tiếp nhận": 2,
    "Không được tiếp nhận": 3,
    "Đang xử lý": 4,
    "Yêu cầu bổ sung giấy tờ": 5,
    "Yêu cầu thực hiện nghĩa vụ tài chính": 6,
    "Công dân yêu cầu rút hồ sơ": 7,
    "Dừng xử lý": 8,
    "Đã xử lý xong": 9,
    "Đã trả kết quả": 10,
}
CHANNEL_LABELS: dict[str, int] = {"Trực tiếp": 1, "Trực tuyến": 2, "Bưu chính công ích": 3}
YESNO_LABELS: dict[str, int] = {"Có": 1, "Không": 0}
METHOD_LABELS: dict[str, str] = {
    "Trực tuyến": "truc-tuyen",
    "Tiền mặt": "tien-mat",
    "Chuyển khoản": "chuyen-khoan",
    "truc-tuyen": "truc-tuyen",
    "tien-mat": "tien-mat",
    "chuyen-khoan": "chuyen-khoan",
}


def _by_norm(table: dict[str, Any]) -> dict[str, Any]:
    return {normalize_label(k): v for k, v in table.items()}


_STATUS = _by_norm(STATUS_LABELS)
_CHANNEL = _by_norm(CHANNEL_LABELS)
_YESNO = _by_norm(YESNO_LABELS)
_METHOD = _by_norm(METHOD_LABELS)


def _label_index(columns: Sequence[Column]) -> dict[str, Column]:
    return {normalize_label(label): col for col in columns for label in col.labels}


_INDEX: dict[str, dict[str, Column]] = {entity: _label_index(cols) for entity, cols in ENTITY_COLUMNS.items()}
_KNOWN = frozenset(itertools.chain(IGNORED_LABELS, *(_INDEX[e].keys() for e in _INDEX)))
_SPECIFIC: dict[str, frozenset[str]] = {
    "dossiers": frozenset(_INDEX["dossiers"]) - frozenset(_INDEX["payments"]),
    "payments": frozenset(_INDEX["payments"]) - frozenset(_INDEX["dossiers"]),
}


def _known_form(label: str) -> str | None:
    """The normalised label if it is known, also after dropping a trailing ``(unit)``."""
    norm = normalize_label(label)
    if norm in _KNOWN:
        return norm
    bare = _PARENTHESIS.sub("", norm)
    return bare if bare in _KNOWN else None


# --- header detection -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    index: int  # 0-based index of the first header row
    height: int  # 1 or 2
    labels: dict[int, str]  # column index -> label as shown (group / sub for unknown pairs)
    known: dict[int, str]  # column index -> normalised known label
    score: int


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip().strip("\u200b\ufeff").strip())


def _display(value: Any) -> str:
    return _squeeze(str(value))


def _single_row_header(rows: Sequence[Row], i: int) -> _Header:
    labels: dict[int, str] = {}
    known: dict[int, str] = {}
    for c, value in enumerate(rows[i]):
        if _is_blank(value) or not isinstance(value, str):
            continue
        labels[c] = _display(value)
        norm = _known_form(value)
        if norm:
            known[c] = norm
    return _Header(i, 1, labels, known, len(known))


def _two_row_header(rows: Sequence[Row], i: int) -> _Header:
    """Rows i and i+1 as one header: sub-labels under (merged, so filled-forward) group labels,
    and labels merged vertically over both rows (value in the top row only)."""
    top, sub = rows[i], rows[i + 1]
    labels: dict[int, str] = {}
    known: dict[int, str] = {}
    group = ""
    for c in range(max(len(top), len(sub))):
        t = top[c] if c < len(top) else None
        s = sub[c] if c < len(sub) else None
        if not _is_blank(t):
            group = _display(t)
        if not _is_blank(s) and isinstance(s, str):
            norm = _known_form(s) or (_known_form(f"{group} {s}") if group else None)
            labels[c] = _display(s) if _known_form(s) or not group else (
                f"{group} {_display(s)}" if norm else f"{group} / {_display(s)}"
            )
        elif not _is_blank(t) and isinstance(t, str):
            norm = _known_form(t)
            labels[c] = _display(t)
        else:
            continue
        if norm:
            known[c] = norm
    return _Header(i, 2, labels, known, len(known))


def find_header(rows: Sequence[Row]) -> _Header | None:
    """The header among the first :data:`HEADER_SCAN_ROWS` rows: the row (or pair of rows) with
    the most known labels; at least two, or one if it is a key label."""
    best: _Header | None = None
    limit = min(len(rows), HEADER_SCAN_ROWS)
    singles = [_single_row_header(rows, i) for i in range(limit)]
    for i in range(limit):
        candidate = singles[i]
        if i + 1 < len(rows):
            pair = _two_row_header(rows, i)
            below = singles[i + 1].score if i + 1 < limit else 0
            if pair.score > max(candidate.score, below):
                candidate = pair
        if best is None or candidate.score > best.score:
            best = candidate
    if best is None:
        return None
    keys = {"mã hồ sơ", "mã thanh toán"}
    if best.score >= 2 or (best.score == 1 and set(best.known.values()) & keys):
        return best
    return None


def detect_entity(header: _Header) -> str | None:
    """``dossiers`` or ``payments`` from the labels only one of the two lists has; None if unclear."""
    found = set(header.known.values())
    scores = {entity: len(found & specific) for entity, specific in _SPECIFIC.items()}
    if scores["dossiers"] == scores["payments"]:
        return "dossiers" if scores["dossiers"] == 0 and "mã hồ sơ" in found else None
    return max(scores, key=lambda e: scores[e])


# --- value conversion -------------------------------------------------------------------------

_DATE_DMY = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
_DATE_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2}))?)?$")
_TS14 = re.compile(r"^\d{14}$")
_AMOUNT_DOTTED = re.compile(r"^-?\d{1,3}(?:\.\d{3})+$")
_AMOUNT_PLAIN = re.compile(r"^-?\d+$")
_CURRENCY = re.compile(r"(?:vnđ|vnd|đồng|đ)$")
_UNCONVERTED = object()


def clean_text(value: Any) -> str | None:
    """Text as the API would carry it: NFC, non-breaking/stray spaces collapsed, trimmed; empty -> None.
    Integral numbers (a code typed into a number cell) lose their ``.0``."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, datetime | date):
        return value.isoformat(sep=" ")
    text = _squeeze(value if isinstance(value, str) else str(value))
    return text or None


def _clean_code(value: Any) -> str | None:
    text = clean_text(value)
    if text and text.startswith("'"):  # Excel's "keep as text" prefix
        text = text[1:].strip() or None
    return text


def _parse_timestamp(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime(TIMESTAMP_FORMAT)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day).strftime(TIMESTAMP_FORMAT)
    text = clean_text(value)
    if text is None:
        return None
    if _TS14.match(text):
        return text if _valid_ts14(text) else _UNCONVERTED
    m = _DATE_DMY.match(text)
    if m:
        day, month, year = int(m[1]), int(m[2]), int(m[3])
    else:
        m = _DATE_ISO.match(text)
        if not m:
            return _UNCONVERTED
        year, month, day = int(m[1]), int(m[2]), int(m[3])
    hour, minute, second = int(m[4] or 0), int(m[5] or 0), int(m[6] or 0)
    try:
        datetime(year, month, day, hour, minute, second)  # validates 31/02, 25:00...
    except ValueError:
        return _UNCONVERTED
    return f"{year:04d}{month:02d}{day:02d}{hour:02d}{minute:02d}{second:02d}"


def _valid_ts14(text: str) -> bool:
    try:
        datetime.strptime(text, TIMESTAMP_FORMAT)
    except ValueError:
        return False
    return True


def _parse_amount(value: Any) -> Any:
    if isinstance(value, bool):
        return _UNCONVERTED
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else _UNCONVERTED
    text = clean_text(value)
    if text is None:
        return None
    compact = _CURRENCY.sub("", text.replace(" ", "").casefold())
    if _AMOUNT_DOTTED.match(compact):
        return int(compact.replace(".", ""))
    if _AMOUNT_PLAIN.match(compact):
        return int(compact)
    return _UNCONVERTED


def _lookup(table: dict[str, Any]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, bool) and table is _YESNO:
            return int(value)
        text = clean_text(value)
        if text is None:
            return None
        return table.get(normalize_label(text), _UNCONVERTED)

    return convert


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "text": clean_text,
    "label": clean_text,
    "code": _clean_code,
    "ts": _parse_timestamp,
    "status": _lookup(_STATUS),
    "channel": _lookup(_CHANNEL),
    "yesno": _lookup(_YESNO),
    "method": _lookup(_METHOD),
    "amount": _parse_amount,
}

_KIND_WORDS = {
    "ts": "a date (dd/MM/yyyy[ HH:mm[:ss]])",
    "status": "a status label of table 1.5",
    "channel": "a channel label (Trực tiếp, Trực tuyến, Bưu chính công ích)",
    "yesno": "Có/Không",
    "method": "a payment method (Trực tuyến, Tiền mặt, Chuyển khoản)",
    "amount": "an amount in VND (1.234.000)",
}


def _original(value: Any) -> str:
    """The cell as a string, for a value that could not be converted."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(value)


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
    filled = [(c, v) for c, v in enumerate(row) if not _is_blank(v)]
    if not filled:
        return "blank"
    first = filled[0][1]
    if isinstance(first, str):
        norm = normalize_label(first)
        if norm.rstrip(": ") in _TOTAL_WORDS or norm.startswith("tổng cộng"):
            return "total"
    if len(filled) <= 2 and all(isinstance(v, str) for _, v in filled):
        if _SECTION.match(" ".join(_display(v) for _, v in filled)):
            return "section"
    key = row[rules.key_index] if rules.key_index < len(row) else None
    if isinstance(key, str) and normalize_label(key) == rules.key_label:
        texts = [normalize_label(v) for _, v in filled if isinstance(v, str)]
        if sum(1 for t in texts if (_known_form(t) or "") in rules.header_norms) * 2 >= len(filled):
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
    return _CONVERTERS[column.kind](value) is _UNCONVERTED


def _convert_row(
    row: Row, mapped: Sequence[_Mapped], row_number: int, failures: dict[str, list[int]]
) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for m in mapped:
        raw = row[m.index] if m.index < len(row) else None
        value = _CONVERTERS[m.column.kind](raw)
        if value is _UNCONVERTED:
            value = _original(raw)
            failures[m.label].append(row_number)
        record[m.column.field] = value
    record["_row_number"] = row_number
    return record


# --- file readers -----------------------------------------------------------------------------


@dataclass
class _Table:
    sheet: str | None
    rows: list[Row]
    header: _Header
    delimiter: str | None = None


def _sniff_kind(path: Path, head: bytes) -> str:
    if not head:
        raise FileFormatError(path, "empty file (0 bytes)")
    if head.startswith(b"PK\x03\x04"):
        return "xlsx"
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise FileFormatError(
            path, "an old Excel 97-2003 (.xls) or password-protected workbook: save it as .xlsx or CSV (UTF-8)"
        )
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise FileFormatError(path, "UTF-16 text (Excel's 'Unicode Text'): save the CSV as UTF-8")
    lowered = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<table", b"<?xml", b"<meta")):
        raise FileFormatError(path, "an HTML/XML page, not a spreadsheet: export again as .xlsx or CSV")
    if b"\x00" in head:
        raise FileFormatError(path, "a binary file, not a spreadsheet (.xlsx) or CSV text")
    return "csv"


def _read_xlsx(path: Path, data: bytes, limits: FileLimits) -> _Table:
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
        raise FileFormatError(path, f"not a readable .xlsx workbook ({_why(exc)})") from None
    try:
        return _first_table(path, workbook, limits)
    finally:
        workbook.close()


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
        raise FileFormatError(path, f"not a readable .xlsx workbook ({_why(exc)})") from None
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
            raise FileFormatError(path, f"not a readable .xlsx workbook: part {info.filename!r} ({_why(exc)})") from None
    return archive


def _first_table(path: Path, workbook: Any, limits: FileLimits) -> _Table:
    scanned: list[str] = []
    any_cells = False
    for sheet in workbook.worksheets:
        if not hasattr(sheet, "_get_source"):  # a chart sheet
            continue
        rows = _sheet_rows(path, workbook, sheet, limits)
        scanned.append(sheet.title)
        any_cells = any_cells or any(not _is_blank(v) for r in rows for v in r)
        header = find_header(rows)
        if header is not None:
            return _Table(sheet.title, rows, header)
    if not any_cells:
        raise FileFormatError(path, "empty workbook: no sheet has any cell")
    raise _no_header(path, f"sheet(s) {', '.join(repr(s) for s in scanned)}")


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
                        raise FileFormatError(path, f"{where} has a row {idx:,}, more than the limit of "
                                                    f"{limits.max_rows:,} rows (DVC_FILE_MAX_ROWS)")
                    if idx <= len(rows):
                        raise FileFormatError(path, f"{where}: row {idx} comes after row {len(rows)}")
                    filled: dict[int, Any] = {}
                    for cell in cells:
                        value = cell["value"]
                        if value is None or (isinstance(value, str) and not value):
                            continue
                        column = cell["column"]
                        if column > limits.max_columns:
                            raise FileFormatError(
                                path, f"{where} has a value in column {get_column_letter(column)} (row {idx}), "
                                f"beyond the limit of {limits.max_columns:,} columns (DVC_FILE_MAX_COLUMNS)")
                        if isinstance(value, str) and len(value) > limits.max_cell_chars:
                            raise _long_cell(path, f"{where}, cell {get_column_letter(column)}{idx}",
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
        raise FileFormatError(path, f"not a readable .xlsx workbook: {where} ({_why(exc)})") from None
    return rows


def _long_cell(path: Path, where: str, length: int, limits: FileLimits) -> FileFormatError:
    return FileFormatError(path, f"{where} holds {length:,} characters, more than the limit of "
                                 f"{limits.max_cell_chars:,} (DVC_FILE_MAX_CELL_CHARS)")


def _read_csv(path: Path, data: bytes, limits: FileLimits) -> _Table:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileFormatError(
            path, f"not UTF-8 text (byte {exc.start}): CSV exports must be saved as UTF-8"
        ) from None
    if not text.strip():
        raise FileFormatError(path, "empty file (no text)")
    best: _Table | None = None
    for delimiter in CSV_DELIMITERS:
        head = _csv_rows(path, text, delimiter, HEADER_SCAN_ROWS + 1, limits)
        header = find_header(head)
        if header is not None and (best is None or header.score > best.header.score):
            best = _Table(None, head, header, delimiter)
    if best is None:
        raise _no_header(path, "the CSV text (separators , ; tab tried)")
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
                raise FileFormatError(path, f"record {number} has a value in column {end:,}, beyond the limit of "
                                            f"{limits.max_columns:,} columns (DVC_FILE_MAX_COLUMNS)")
            for column, value in enumerate(record[:end], 1):
                if len(value) > limits.max_cell_chars:
                    raise _long_cell(path, f"record {number}, column {column}", len(value), limits)
            rows.append(tuple(record[:end]))
    except csv.Error as exc:
        raise FileFormatError(path, f"unreadable CSV ({exc})") from None
    return rows


def _no_header(path: Path, where: str) -> FileFormatError:
    return FileFormatError(
        path,
        f"no header row found in the first {HEADER_SCAN_ROWS} rows of {where}: expected labels such as "
        "'Mã hồ sơ', 'Ngày tiếp nhận' (dossier list) or 'Mã thanh toán', 'Số tiền' (payment list)",
    )


# --- public API -------------------------------------------------------------------------------


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


def parse_file(path: str | Path, limits: FileLimits | None = None) -> ParsedFile:
    """Parse one clerk export (.xlsx or CSV, told apart by content) into API-shaped records.

    Raises :class:`FileFormatError` when the file is unreadable, empty, has no header row, lacks
    a required column (``Mã hồ sơ``; for payments also ``Mã thanh toán``) or is hostile (over a
    limit of ``limits``, a DTD in an XML part, a damaged zip). In this process: the inbox and
    ``dvc-etl ingest-files`` call it through ``tasks.file_guard`` (a child with a memory limit).
    """
    limits = limits or FileLimits()
    return parse_bytes(Path(path), read_limited(path, limits), limits)


def parse_bytes(path: Path, data: bytes, limits: FileLimits | None = None) -> ParsedFile:
    """:func:`parse_file` over bytes already read; ``path`` names the file in messages."""
    limits = limits or FileLimits()
    if _sniff_kind(path, data[:512]) == "xlsx":
        table = _read_xlsx(path, data, limits)
    else:
        table = _read_csv(path, data, limits)
    return _parse_table(path, table)


def _parse_table(path: Path, table: _Table) -> ParsedFile:
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
        unknown_columns=unknown, warnings=notes, delimiter=table.delimiter,
    )
    _read_data_rows(parsed, table.rows[header.index + header.height :], header, mapped)
    return parsed


def _map_columns(path: Path, entity: str, header: _Header) -> tuple[list[_Mapped], list[str], list[str]]:
    index = _INDEX[entity]
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
    missing = [col.labels[0] for col in ENTITY_COLUMNS[entity] if col.field in REQUIRED_FIELDS[entity]
               and col.field not in taken]
    if missing:
        kind = "dossier list" if entity == "dossiers" else "payment list"
        raise FileFormatError(
            path, f"missing required column {', '.join(repr(m) for m in missing)} ({kind}; header row "
            f"{header.index + 1} has {[header.labels[c] for c in sorted(header.labels)]})"
        )
    if unknown:
        notes.append(f"unknown columns ignored: {', '.join(repr(u) for u in unknown)}")
    return mapped, unknown, notes


def _read_data_rows(parsed: ParsedFile, rows: Sequence[Row], header: _Header, mapped: Sequence[_Mapped]) -> None:
    key = next(m for m in mapped if m.column.field == KEY_FIELD[parsed.entity])
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
    while end and all(_is_blank(v) for v in rows[end - 1]):  # formatted-but-empty rows under the table
        end -= 1
    for offset, row in enumerate(rows[:end]):
        row_number = first_row_number + offset
        kind = _row_kind(row, rules)
        if kind is not None:
            skipped[kind] += 1
            if kind == "note":
                text = next(_display(v) for v in row if not _is_blank(v))
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
        f"{len(rows)} value(s) in column {label!r} are not {_KIND_WORDS.get(kinds[label], 'readable')} "
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
