"""The columns of a clerk's export: Vietnamese labels, the header row, and value conversions.

The source contract (section 2) lists the labels under which a dossier list and a payment list
carry each API field. This module knows those labels (:data:`DOSSIER_COLUMNS`,
:data:`PAYMENT_COLUMNS`), finds the header row among a sheet's first rows
(:func:`find_header`), tells the two lists apart (:func:`detect_entity`), and converts a cell to
the API's conventions (:data:`CONVERTERS`: ``yyyyMMddHHmmss`` timestamps, status/channel codes,
1/0 flags, amounts in VND). Pure functions over values: the file readers live in
``tasks.file_formats``, ``tasks.file_excel`` and ``tasks.file_text``.

Labels are compared case-, spacing- and NFC/NFD-insensitively (:func:`normalize_label`). A value
that cannot be converted is :data:`UNCONVERTED`; the caller keeps the original text for the
quality checks, never a guess.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from tasks.entities import FILE_ENTITIES, entity

HEADER_SCAN_ROWS = 30
"""The header is looked for in the first rows of a sheet (after 1..5 title rows and blanks)."""

TIMESTAMP_FORMAT = "%Y%m%d%H%M%S"

Row = Sequence[Any]

# --- labels -----------------------------------------------------------------------------------

_PARENTHESIS = re.compile(r"\s*\([^)]*\)\s*$")


def squeeze(text: str) -> str:
    """NFC, every run of (non-breaking, zero-width) spaces -> one space, trimmed. Fast path in C."""
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if "\u200b" in text or "\ufeff" in text:
        text = text.replace("\u200b", " ").replace("\ufeff", " ")
    return " ".join(text.split())


@lru_cache(maxsize=8192)
def _normalize_text(text: str) -> str:
    return squeeze(text).casefold().rstrip(":*").rstrip()


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

#: The columns of each list a file can be, keyed like the entity registry (``FILE_ENTITIES``).
ENTITY_COLUMNS: dict[str, tuple[Column, ...]] = {"dossiers": DOSSIER_COLUMNS, "payments": PAYMENT_COLUMNS}
assert tuple(ENTITY_COLUMNS) == FILE_ENTITIES, "ENTITY_COLUMNS out of step with the entity registry"

#: What each list is called in messages.
LIST_NAMES: dict[str, str] = {"dossiers": "dossier list", "payments": "payment list"}


def key_field(name: str) -> str:
    """The one key field of a file entity (the registry's key: ``MaHoSo``, ``Ma``)."""
    (key,) = entity(name).key
    return key


#: Besides its key, the field a list cannot be loaded without: a payment list without
#: ``Mã hồ sơ`` cannot be linked to its dossiers (the source contract, section 2).
_FILE_LINK_FIELDS: dict[str, tuple[str, ...]] = {"payments": ("MaHoSo",)}
#: Fields a file must carry a column for, else it is refused: the entity's key (from the registry)
#: and its link. Narrower than the API's required fields (``entity(name).required``): a file
#: without ``Trạng thái`` still loads, and the checks quarantine each of its rows with the reason.
FILE_REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    name: (key_field(name), *_FILE_LINK_FIELDS.get(name, ())) for name in FILE_ENTITIES
}

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


#: entity -> normalised label -> column
LABEL_INDEX: dict[str, dict[str, Column]] = {name: _label_index(cols) for name, cols in ENTITY_COLUMNS.items()}
_KNOWN = frozenset(itertools.chain(IGNORED_LABELS, *(LABEL_INDEX[e].keys() for e in LABEL_INDEX)))
#: entity -> the labels only its list has
_SPECIFIC: dict[str, frozenset[str]] = {
    name: frozenset(index).difference(*(other for o, other in LABEL_INDEX.items() if o != name))
    for name, index in LABEL_INDEX.items()
}
#: entity -> the normalised labels of its key column (``mã hồ sơ``, ``mã thanh toán``)
_KEY_LABELS: dict[str, frozenset[str]] = {
    name: frozenset(norm for norm, col in LABEL_INDEX[name].items() if col.field == key_field(name))
    for name in FILE_ENTITIES
}
_ANY_KEY_LABEL = frozenset().union(*_KEY_LABELS.values())


def known_form(label: str) -> str | None:
    """The normalised label if it is known, also after dropping a trailing ``(unit)``."""
    norm = normalize_label(label)
    if norm in _KNOWN:
        return norm
    bare = _PARENTHESIS.sub("", norm)
    return bare if bare in _KNOWN else None


# --- header detection -------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    index: int  # 0-based index of the first header row
    height: int  # 1 or 2
    labels: dict[int, str]  # column index -> label as shown (group / sub for unknown pairs)
    known: dict[int, str]  # column index -> normalised known label
    score: int


def is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip().strip("\u200b\ufeff").strip())


def display(value: Any) -> str:
    return squeeze(str(value))


def _single_row_header(rows: Sequence[Row], i: int) -> Header:
    labels: dict[int, str] = {}
    known: dict[int, str] = {}
    for c, value in enumerate(rows[i]):
        if is_blank(value) or not isinstance(value, str):
            continue
        labels[c] = display(value)
        norm = known_form(value)
        if norm:
            known[c] = norm
    return Header(i, 1, labels, known, len(known))


def _two_row_header(rows: Sequence[Row], i: int) -> Header:
    """Rows i and i+1 as one header: sub-labels under (merged, so filled-forward) group labels,
    and labels merged vertically over both rows (value in the top row only)."""
    top, sub = rows[i], rows[i + 1]
    labels: dict[int, str] = {}
    known: dict[int, str] = {}
    group = ""
    for c in range(max(len(top), len(sub))):
        t = top[c] if c < len(top) else None
        s = sub[c] if c < len(sub) else None
        if not is_blank(t):
            group = display(t)
        if not is_blank(s) and isinstance(s, str):
            norm = known_form(s) or (known_form(f"{group} {s}") if group else None)
            labels[c] = display(s) if known_form(s) or not group else (
                f"{group} {display(s)}" if norm else f"{group} / {display(s)}"
            )
        elif not is_blank(t) and isinstance(t, str):
            norm = known_form(t)
            labels[c] = display(t)
        else:
            continue
        if norm:
            known[c] = norm
    return Header(i, 2, labels, known, len(known))


def find_header(rows: Sequence[Row]) -> Header | None:
    """The header among the first :data:`HEADER_SCAN_ROWS` rows: the row (or pair of rows) with
    the most known labels; at least two, or one if it is a key label."""
    best: Header | None = None
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
    if best.score >= 2 or (best.score == 1 and set(best.known.values()) & _ANY_KEY_LABEL):
        return best
    return None


def detect_entity(header: Header) -> str | None:
    """``dossiers`` or ``payments`` from the labels only one of the two lists has; when neither
    list's own labels are there, the list whose key label is; None if unclear."""
    found = set(header.known.values())
    scores = {name: len(found & specific) for name, specific in _SPECIFIC.items()}
    top = max(scores.values())
    winners = [name for name, score in scores.items() if score == top]
    if len(winners) == 1:
        return winners[0]
    if top == 0:
        keyed = [name for name in winners if found & _KEY_LABELS[name]]
        return keyed[0] if len(keyed) == 1 else None
    return None


# --- value conversion -------------------------------------------------------------------------

_DATE_DMY = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
_DATE_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2}))?)?$")
_TS14 = re.compile(r"^\d{14}$")
_AMOUNT_DOTTED = re.compile(r"^-?\d{1,3}(?:\.\d{3})+$")
_AMOUNT_PLAIN = re.compile(r"^-?\d+$")
_CURRENCY = re.compile(r"(?:vnđ|vnd|đồng|đ)$")
#: What a converter returns for a value it cannot convert.
UNCONVERTED = object()


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
    text = squeeze(value if isinstance(value, str) else str(value))
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
        return text if _valid_ts14(text) else UNCONVERTED
    m = _DATE_DMY.match(text)
    if m:
        day, month, year = int(m[1]), int(m[2]), int(m[3])
    else:
        m = _DATE_ISO.match(text)
        if not m:
            return UNCONVERTED
        year, month, day = int(m[1]), int(m[2]), int(m[3])
    hour, minute, second = int(m[4] or 0), int(m[5] or 0), int(m[6] or 0)
    try:
        datetime(year, month, day, hour, minute, second)  # validates 31/02, 25:00...
    except ValueError:
        return UNCONVERTED
    return f"{year:04d}{month:02d}{day:02d}{hour:02d}{minute:02d}{second:02d}"


def _valid_ts14(text: str) -> bool:
    try:
        datetime.strptime(text, TIMESTAMP_FORMAT)
    except ValueError:
        return False
    return True


def _parse_amount(value: Any) -> Any:
    if isinstance(value, bool):
        return UNCONVERTED
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else UNCONVERTED
    text = clean_text(value)
    if text is None:
        return None
    compact = _CURRENCY.sub("", text.replace(" ", "").casefold())
    if _AMOUNT_DOTTED.match(compact):
        return int(compact.replace(".", ""))
    if _AMOUNT_PLAIN.match(compact):
        return int(compact)
    return UNCONVERTED


def _lookup(table: dict[str, Any]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, bool) and table is _YESNO:
            return int(value)
        text = clean_text(value)
        if text is None:
            return None
        return table.get(normalize_label(text), UNCONVERTED)

    return convert


#: Column kind -> converter of one cell to the API's convention (or :data:`UNCONVERTED`).
CONVERTERS: dict[str, Callable[[Any], Any]] = {
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

#: Column kind -> what a value of it should look like (in warnings).
KIND_WORDS = {
    "ts": "a date (dd/MM/yyyy[ HH:mm[:ss]])",
    "status": "a status label of table 1.5",
    "channel": "a channel label (Trực tiếp, Trực tuyến, Bưu chính công ích)",
    "yesno": "Có/Không",
    "method": "a payment method (Trực tuyến, Tiền mặt, Chuyển khoản)",
    "amount": "an amount in VND (1.234.000)",
}


def original(value: Any) -> str:
    """The cell as a string, for a value that could not be converted."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(value)
