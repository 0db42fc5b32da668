"""The cell toolkit of the official workbook: number formats, styles, the :class:`Sheet` writer,
the heading and signature every sheet carries, and the table layout (merged multi-row header,
sections, total row). :mod:`tasks.workbook_sheets` lays the sheets out with it and
:mod:`tasks.workbook` assembles them; see :mod:`tasks.workbook` for how the figures display.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from operator import methodcaller
from typing import Any

from xlsxwriter.format import Format
from xlsxwriter.utility import xl_col_to_name, xl_rowcol_to_cell
from xlsxwriter.workbook import Workbook
from xlsxwriter.worksheet import Worksheet

from tasks.publication import Publication
from tasks.workbook_xlsx import BlockStyles, FastWorksheet

# Counts: '.' between groups of three digits as literal characters, one section per magnitude
# (Excel allows two conditions); a cell of a billion or more gets BIG_COUNT_FORMAT instead.
COUNT_FORMAT = r"[>=1000000]#\.###\.##0;[>=1000]#\.##0;0"
BIG_COUNT_FORMAT = r"[>=1000000000]#\.###\.###\.##0;[>=1000000]#\.###\.##0;#\.##0"
BIG_COUNT = 1_000_000_000
# Rates and hours: Vietnamese locale (LCID 0x042A) decimal comma; honoured by LibreOffice and by
# an Excel set to Vietnamese, an English-language Excel shows a decimal point (module docstring).
RATE_FORMAT = "[$-42A]0.00%"
HOURS_FORMAT = "[$-42A]#,##0.00"
NUMBER_FORMAT = "[$-42A]General"
DATE_FORMAT = "dd/mm/yyyy"
DATETIME_FORMAT = "dd/mm/yyyy hh:mm"
NOT_AVAILABLE = "N/A"  # a rate without a denominator

FORMULA_PREFIXES = ("=", "+", "-", "@")

NATION = "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM"
MOTTO = "Độc lập - Tự do - Hạnh phúc"
PERIOD_CUTS = {"calendar": "chốt số liệu theo kỳ dương lịch",
               "decree-09": "chốt số liệu theo Nghị định 09/2019/NĐ-CP"}
LEVEL_LABELS = {1: "Cấp tỉnh", 2: "Cấp huyện", 3: "Cấp xã"}

# cell styles, as XlsxWriter format properties (combined with ``|``)
FONT = {"font_name": "Times New Roman"}
BOLD = {"bold": True}
ITALIC = {"italic": True}
ITALIC_SMALL = {"italic": True, "font_size": 10}
BORDER = {"border": 1, "border_color": "#000000"}
HEADER_FILL = {"pattern": 1, "bg_color": "#DDEBF7"}
SECTION_FILL = {"pattern": 1, "bg_color": "#F2F2F2"}
CENTER = {"align": "center", "valign": "vcenter", "text_wrap": True}
WRAP = {"valign": "vcenter", "text_wrap": True}

_FORMATS = {"count": COUNT_FORMAT, "rate": RATE_FORMAT, "threshold": RATE_FORMAT, "hours": HOURS_FORMAT,
            "date": DATE_FORMAT, "datetime": DATETIME_FORMAT, "number": NUMBER_FORMAT}


def number_format(kind: str) -> dict[str, Any]:
    """The style of a kind of value: ``count``, ``rate`` (null: N/A), ``threshold`` (a rate, null:
    blank), ``hours``, ``date``, ``datetime``, ``number``; ``text``: none."""
    return {"num_format": _FORMATS[kind]} if kind in _FORMATS else {}


def empty_of(kind: str) -> str | None:
    return NOT_AVAILABLE if kind == "rate" else None


def _num(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


def roman(n: int) -> str:
    out = ""
    for value, numeral in ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
                           (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        count, n = divmod(n, value)
        out += numeral * count
    return out


def vn_date(d: date | datetime) -> str:
    return f"{d:%d/%m/%Y}"


def ratio(num: float, den: float) -> float | None:
    return None if not den else num / den


# ----------------------------------------------------------------------------------------------
# cells
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Styles:
    """The formats of one style: ordinary values, formula-like text (quote prefix), counts of a
    billion or more; and what a null shows (``N/A`` for a rate, else a blank cell)."""

    plain: Format
    quoted: Format
    big: Format
    empty: str | None


#: The kinds of value :meth:`Sheet.write_rows` makes rows of at once.
_BLOCK_KINDS = frozenset({str, type(None), int, float, date, datetime})
#: A column of :meth:`Sheet.write_rows`: its value's getter (None: the row's number), its column, its formats.
Cells = tuple[Callable[[dict[str, Any]], Any] | None, int, Styles]


_FORMULA_LIKE = methodcaller("startswith", FORMULA_PREFIXES)
_SLICE = 2048  # rows of a block made at a time (Sheet.write_rows)
_EXACT_INT = 2**53  # below it, an integer's digits are what XlsxWriter writes (its float, to 16 digits)


def _column_cells(letter: str, col: int, row0: int, refs: list[str], values: list[Any], sst: list[int] | None,
                  formats: Styles, mark: BlockStyles, convert: Callable[[Any], float]) -> list[str]:
    """The ``<c>`` elements of one column of a block's slice of rows (the block's ``row0``-th on):
    each value as :meth:`Sheet.write` writes it (``sst``: the shared-string index of each text;
    ``convert``: a date to Excel's number). A column of one kind of value, in one style, is made
    in one pass."""
    kinds = set(map(type, values))
    plain = formats.plain
    if kinds == {str} and not any(map(_FORMULA_LIKE, values)):
        p = mark(plain, row0, col)
        return [f'<c r="{letter}{r}" s="{p}" t="s"><v>{k}</v></c>' for r, k in zip(refs, sst, strict=True)]  # type: ignore[arg-type]
    if kinds == {int} and -_EXACT_INT < min(values) and max(values) < BIG_COUNT:
        p = mark(plain, row0, col)
        return [f'<c r="{letter}{r}" s="{p}"><v>{v}</v></c>' for r, v in zip(refs, values, strict=True)]
    if kinds == {date} or kinds == {datetime}:
        p, known = mark(plain, row0, col), {}
        numbers = [known[v] if v in known else known.setdefault(v, convert(v)) for v in values]
        return [f'<c r="{letter}{r}" s="{p}"><v>{v:.16G}</v></c>' for r, v in zip(refs, numbers, strict=True)]
    out: list[str] = []
    append = out.append
    placeholders: dict[int, str] = {}  # id(format) -> its placeholder
    for i, v in enumerate(values):
        t = type(v)
        if t is str:
            fmt = formats.quoted if v.startswith(FORMULA_PREFIXES) else plain
            body = f'" t="s"><v>{sst[i]}</v></c>'  # type: ignore[index]
        elif v is None:
            fmt, body = plain, '"/>'
        elif t is int or t is float:
            fmt = formats.big if v >= BIG_COUNT else plain
            body = f'"><v>{v:.16G}</v></c>'
        else:  # date, datetime
            fmt, body = plain, f'"><v>{convert(v):.16G}</v></c>'
        p = placeholders.get(id(fmt))
        if p is None:
            p = placeholders[id(fmt)] = mark(fmt, row0 + i, col)
        append(f'<c r="{letter}{refs[i]}" s="{p}{body}')
    return out


class Sheet:
    """One worksheet, addressed 1-based like the report's tables, with the workbook's formats
    cached by their properties (XlsxWriter needs one Format object per distinct style)."""

    #: Which of XlsxWriter's cell writers :meth:`write` calls: the methods its ``write_*`` forward
    #: to (``_write_*``), without the decorator that only translates "A1" references (ours are
    #: numbers): a quarter of the cells' time in a province's work lists. XlsxWriter is pinned
    #: (``requirements.lock``); ``tests/test_nightly_cost.py`` sets ``"write_"`` (the public ones)
    #: and compares the files byte for byte.
    WRITERS = "_write_"

    def __init__(self, book: Workbook, formats: dict[tuple, Format], name: str) -> None:
        self.book, self.name, self._formats = book, name, formats
        self.ws: Worksheet = book.add_worksheet(name, worksheet_class=FastWorksheet)
        self._string, self._blank, self._boolean, self._number, self._datetime = (
            getattr(self.ws, self.WRITERS + kind) for kind in ("string", "blank", "boolean", "number", "datetime"))

    def fmt(self, style: dict[str, Any]) -> Format:
        key = tuple(sorted(style.items()))
        found = self._formats.get(key)
        if found is None:
            found = self._formats[key] = self.book.add_format({**FONT, **style})
        return found

    def style(self, style: dict[str, Any] | None = None, empty: str | None = None) -> Styles:
        style = style or {}
        plain = self.fmt(style)
        big = self.fmt(style | {"num_format": BIG_COUNT_FORMAT}) if style.get("num_format") == COUNT_FORMAT else plain
        return Styles(plain, self.fmt(style | {"quote_prefix": True}), big, empty)

    def put(self, row: int, col: int, value: Any, style: dict[str, Any] | None = None,
            empty: str | None = None) -> None:
        """Write one cell. Text that looks like a formula stays text (string cell, quote prefix)."""
        self.write(row, col, value, self.style(style, empty))

    def write(self, row: int, col: int, value: Any, formats: Styles) -> None:
        """:meth:`put` with the formats resolved (:meth:`style`): the per-cell path of big tables
        (through the writers :data:`WRITERS` names)."""
        r, c = row - 1, col - 1
        if value is None:
            value = formats.empty
        if isinstance(value, str):
            self._string(r, c, value, formats.quoted if value.startswith(FORMULA_PREFIXES) else formats.plain)
        elif value is None:
            self._blank(r, c, None, formats.plain)
        elif isinstance(value, bool):
            self._boolean(r, c, value, formats.plain)
        elif isinstance(value, (int, float, Decimal)):
            value = _num(value)
            self._number(r, c, value, formats.big if value >= BIG_COUNT else formats.plain)
        elif isinstance(value, (date, datetime)):
            self._datetime(r, c, value, formats.plain)
        else:
            self._string(r, c, str(value), formats.plain)

    #: Whether :meth:`write_rows` makes its rows at once (False: cell by cell, through
    #: :meth:`write`; ``tests/test_nightly_cost.py`` compares the two byte for byte).
    BLOCKS = True

    def write_rows(self, row: int, records: Sequence[dict[str, Any]], cells: Sequence[Cells]) -> int:
        """One row per record from ``row`` on, with a cell for each of ``cells`` (its value's
        getter, None for the record's number from 1; its column; its formats) as :meth:`write`
        writes it. Returns the row after them.

        A province's work lists are most of the workbook's cells: their rows are made at once
        (:meth:`tasks.workbook_xlsx.FastWorksheet.add_rows`) when every value is of a kind made here exactly as
        XlsxWriter makes it (text, a blank, a finite number, a date); else cell by cell."""
        if not records or self._rows_at_once(row - 1, records, cells):
            return row + len(records)
        write = self.write
        for stt, record in enumerate(records, start=1):
            for get, col, formats in cells:
                write(row, col, stt if get is None else get(record), formats)
            row += 1
        return row

    def _rows_at_once(self, first: int, records: Sequence[dict[str, Any]], cells: Sequence[Cells]) -> bool:
        ws, n = self.ws, len(records)
        cols = [col - 1 for _, col, _ in cells]
        if (not self.BLOCKS or self.WRITERS != "_write_" or not isinstance(ws, FastWorksheet) or ws.constant_memory
                or not cols or cols != list(range(cols[0], cols[0] + len(cols))) or cols[0] < 0 or first < 0
                or first + n > ws.xls_rowmax or cols[-1] >= ws.xls_colmax
                or any(r in ws.table for r in range(first, first + n))):
            return False
        columns = []
        for get, _, formats in cells:
            values = list(range(1, n + 1)) if get is None else list(map(get, records))
            kinds = set(map(type, values))
            if formats.empty is not None and type(None) in kinds:
                values = [formats.empty if v is None else v for v in values]
                kinds = set(map(type, values))
            if Decimal in kinds:
                values = [float(v) if type(v) is Decimal else v for v in values]
                kinds = set(map(type, values))
            if (not kinds <= _BLOCK_KINDS
                    or float in kinds and not all(math.isfinite(v) for v in values if type(v) is float)
                    or str in kinds and max(len(v) for v in values if type(v) is str) > ws.xls_strmax // 2):
                return False  # a boolean, NaN, a text XlsxWriter would cut...: cell by cell
            columns.append((values, formats, str in kinds))
        # made a slice of rows at a time: a cell's text lives until its row is joined (a province's
        # work list at once would hold a million of them)
        index, convert = ws.str_table._get_shared_string_index, ws._convert_date_time
        texts = [j for j, (_, _, has_text) in enumerate(columns) if has_text]
        letters, marks, rows = [xl_col_to_name(c) for c in cols], BlockStyles(), []
        for a in range(0, n, _SLICE):
            part = [values[a:a + _SLICE] for values, _, _ in columns]
            # the shared strings, numbered in the order XlsxWriter's cell-by-cell writes would number them
            flat = [index(v) if type(v) is str else None
                    for row in zip(*(part[j] for j in texts), strict=True) for v in row] if texts else []
            strings = {j: flat[i::len(texts)] for i, j in enumerate(texts)}
            refs = list(map(str, range(first + 1 + a, first + 1 + a + len(part[0]))))
            made = [_column_cells(letters[j], j, a, refs, part[j], strings.get(j), formats, marks, convert)
                    for j, (_, formats, _) in enumerate(columns)]
            rows += map("".join, zip(*made, strict=True))
        ws.add_rows(first, cols[0], cols[-1], rows, marks.block())
        return True

    def formula(self, row: int, col: int, formula: str, value: Any, style: dict[str, Any],
                empty: str | None = None) -> None:
        """A formula of ours (a total), with its value cached for readers that do not compute."""
        formats = self.style(style, empty)
        value = formats.empty if value is None else _num(value)
        fmt = formats.big if isinstance(value, (int, float)) and value >= BIG_COUNT else formats.plain
        self.ws.write_formula(row - 1, col - 1, formula, fmt, "" if value is None else value)

    def merge(self, row: int, col: int, last_row: int, last_col: int, value: Any,
              style: dict[str, Any] | None = None) -> None:
        """Merge a range (every cell gets ``style``: borders and fills) and write ``value`` in its
        first cell; a one-cell range is just the cell."""
        if (last_row, last_col) != (row, col):
            self.ws.merge_range(row - 1, col - 1, last_row - 1, last_col - 1, "", self.fmt(style or {}))
        self.put(row, col, value, style)

    def freeze(self, row: int, col: int) -> None:
        """Freeze the rows above ``row`` and the columns left of ``col``."""
        self.ws.freeze_panes(row - 1, col - 1)


def cell(row: int, col: int) -> str:
    """'C12' of a 1-based (row, col)."""
    return xl_rowcol_to_cell(row - 1, col - 1)


# ----------------------------------------------------------------------------------------------
# what every sheet says: issuing body, national heading, period, report number, signature
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Doc:
    """The publication and the issuer's settings every sheet repeats."""

    pub: Publication
    office_name: str
    report_number: str | None = None  # DVC_REPORT_NUMBER: the text after "Kèm theo Báo cáo số "
    place: str | None = None  # DVC_REPORT_PLACE: the place of the signature's date line


def period_label_text(label: str | None) -> str | None:
    """'2024-H1' -> '6 tháng đầu năm 2024'; '2024-Q2' -> 'quý II năm 2024'; '2024-06' -> 'tháng 6
    năm 2024'; '2024' -> 'năm 2024'; anything else as it is."""
    if not label:
        return None
    m = re.fullmatch(r"(\d{4})(?:-(?:(\d{2})|Q([1-4])|H([12])))?", label)
    if m is None:
        return label
    year, month, quarter, half = m.groups()
    if month:
        return f"tháng {int(month)} năm {year}"
    if quarter:
        return f"quý {roman(int(quarter))} năm {year}"
    if half:
        return f"6 tháng {'đầu' if half == '1' else 'cuối'} năm {year}"
    return f"năm {year}"


def period_line(pub: Publication) -> str:
    """'Kỳ báo cáo: từ ngày 15/12/2023 đến ngày 14/06/2024 (6 tháng đầu năm 2024, chốt số liệu theo
    Nghị định 09/2019/NĐ-CP)'."""
    text = f"Kỳ báo cáo: từ ngày {vn_date(pub.period_start)} đến ngày {vn_date(pub.period_end)}"
    cut = pub.period_cut
    notes = [t for t in (period_label_text(pub.period_label), PERIOD_CUTS.get(cut or "", cut)) if t]
    return f"{text} ({', '.join(notes)})" if notes else text


def signature_date(doc: Doc) -> str:
    """'<place>, ngày dd tháng mm năm yyyy' of the data cut's date."""
    d = doc.pub.as_of
    when = f"ngày {d:%d} tháng {d:%m} năm {d:%Y}"
    return f"{doc.place}, {when}" if doc.place else when[0].upper() + when[1:]


def _halves(ncols: int) -> tuple[int, int]:
    """The last column of the left block and the first of the right block."""
    left = max(2, round(ncols * 0.4))
    return left, min(left + 1, ncols)


def write_heading(ws: Sheet, ncols: int, doc: Doc, title: str, *, form_code: str | None = None,
                  unit_line: str | None = None) -> int:
    """Issuing body | national heading, title, period, report number, data cut; returns the next
    free row."""
    ncols = max(ncols, 3)
    left, right = _halves(ncols)
    row = 1
    if form_code:
        ws.merge(row, 1, row, ncols, form_code, BOLD | {"align": "left"})
        row += 1
    ws.merge(row, 1, row, left, doc.office_name.upper(), BOLD | CENTER)
    ws.merge(row, right, row, ncols, NATION, BOLD | CENTER)
    ws.merge(row + 1, right, row + 1, ncols, MOTTO, BOLD | CENTER | {"underline": 1})
    row += 3
    lines = [(title, BOLD | {"font_size": 14}), (period_line(doc.pub), ITALIC)]
    if doc.report_number:
        lines.append((f"Kèm theo Báo cáo số {doc.report_number}", ITALIC))
    lines.append((f"Số liệu tính đến {doc.pub.as_of:%d/%m/%Y %H:%M} (mã công bố {doc.pub.publication_id})",
                  ITALIC_SMALL))
    for text, font in lines:
        ws.merge(row, 1, row, ncols, text, font | CENTER)
        row += 1
    if unit_line:
        ws.merge(row, right, row, ncols, unit_line, ITALIC | {"align": "right"})
        row += 1
    return row + 1


def write_signature(ws: Sheet, row: int, ncols: int, doc: Doc) -> int:
    """The signature block from ``row``: the date line above the head of the unit; returns the
    row after it."""
    ncols = max(ncols, 3)
    left, right = _halves(ncols)
    ws.merge(row, right, row, ncols, signature_date(doc), ITALIC | CENTER)
    for r, (l_text, r_text, font) in enumerate([("Người lập biểu", "Thủ trưởng đơn vị", BOLD | CENTER),
                                                 ("(Ký, ghi rõ họ tên)", "(Ký tên, đóng dấu)", ITALIC | CENTER)],
                                                start=row + 1):
        ws.merge(r, 1, r, left, l_text, font)
        ws.merge(r, right, r, ncols, r_text, font)
    return row + 3


# ----------------------------------------------------------------------------------------------
# a table laid out like the report's: heading, merged multi-row header, sections, total row
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ratio:
    """A total rate: =IF(SUM(den)=0, "N/A", (SUM(num1) + ...) / SUM(den)), over the columns whose
    values are these row keys."""

    num: tuple[str, ...]
    den: str


@dataclass(frozen=True)
class CountIf:
    """A total that counts the rows showing ``text`` (=COUNTIF)."""

    text: str


# 'sum' (=SUM), Ratio, CountIf, a function of the rows (a fixed figure) or None
Total = str | Ratio | CountIf | Callable[[list[dict[str, Any]]], Any] | None


@dataclass(frozen=True)
class Column:
    """One column: ``path`` = its header labels from the top group to the leaf."""

    path: tuple[str, ...]
    value: str | Callable[[dict[str, Any]], Any] | None  # row key, function, or None (STT)
    kind: str = "text"  # text | count | rate | threshold | hours | date | datetime | number
    width: float = 12
    total: Total = None

    def get(self, row: dict[str, Any]) -> Any:
        if self.value is None:
            return None
        return self.value(row) if callable(self.value) else row.get(self.value)

    def getter(self) -> Callable[[dict[str, Any]], Any] | None:
        """:meth:`get` resolved once, for the per-cell loop: None for the row number (STT)."""
        if self.value is None or callable(self.value):
            return self.value
        key = self.value
        return lambda row: row.get(key)


@dataclass(frozen=True)
class Section:
    label: str  # e.g. 'I. Cấp huyện'; '' for no section row
    rows: list[dict[str, Any]]


def write_header(ws: Sheet, top: int, columns: Sequence[Column]) -> int:
    """The multi-row header: a label spanning consecutive columns with the same path prefix is
    merged across them; a path shorter than the header depth is merged down. Returns its depth."""
    depth = max(len(c.path) for c in columns)
    style = BOLD | CENTER | BORDER | HEADER_FILL
    for level in range(depth):
        col = 0
        while col < len(columns):
            path = columns[col].path
            if level >= len(path):
                col += 1
                continue
            # extend across the following columns that share this label and its ancestors
            end = col
            while (end + 1 < len(columns) and len(columns[end + 1].path) > level
                   and columns[end + 1].path[: level + 1] == path[: level + 1]
                   and len(path) > level + 1):
                end += 1
            last_level = level if level < len(path) - 1 else depth - 1
            ws.merge(top + level, col + 1, top + last_level, end + 1, path[level], style)
            col = end + 1
    for i, c in enumerate(columns):
        ws.ws.set_column(i, i, c.width)
    for r in range(top, top + depth):  # room for labels that wrap onto two lines
        ws.ws.set_row(r - 1, 30)
    return depth


def print_setup(ws: Sheet, header_top: int, header_bottom: int) -> None:
    """A4 landscape, one page wide, centred, the header rows repeated on every page."""
    page = ws.ws
    page.set_landscape()
    page.set_paper(9)  # A4
    page.fit_to_pages(1, 0)
    page.center_horizontally()
    page.set_margins(left=0.4, right=0.4, top=0.5, bottom=0.5)
    page.repeat_rows(header_top - 1, header_bottom - 1)
