"""The district office's reference files, read and validated before a publication.

The folder ``DVC_REFERENCE_DIR`` holds the registries the source does not carry: procedure
simplifications and delegations (form 06), unpaid-result thresholds, yearly targets per unit and
indicator, the procedures each unit handles, procedures excluded from data reuse, and result
collection windows (``docs/official-figures.md``). Every file is optional. :func:`load_reference`
reads them all into a :class:`ReferenceData`, or raises :class:`ReportError` naming the file and
the line; ``tasks.reports`` loads them into temp tables that the report SQL joins.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

#: The indicator codes of ``mart.rpt_service_indicators`` (docs/official-figures.md section 2), in
#: display order: a row of ``targets.csv`` names one of them.
INDICATORS: tuple[str, ...] = (
    "on_time",
    "online_submission",
    "online_payment",
    "e_result",
    "digitised",
    "reuse",
    "from_national_store",
    "online_service_uptake",
    "online_payment_uptake",
)


class ReportError(RuntimeError):
    """A problem the operator must fix before reports can be published (e.g. a bad reference file)."""


@dataclass(frozen=True)
class ReferenceData:
    """The district office's registries, validated (one dict per CSV row, typed values).

    Every file is optional: a file missing from the reference folder (or holding only its header)
    is an empty list. Nothing is ever read from another folder."""

    simplifications: list[dict[str, Any]]
    delegations: list[dict[str, Any]]
    unpaid_thresholds: list[dict[str, Any]]
    targets: list[dict[str, Any]] = field(default_factory=list)
    unit_procedures: list[dict[str, Any]] = field(default_factory=list)
    reuse_exclusions: list[dict[str, Any]] = field(default_factory=list)
    collection_windows: list[dict[str, Any]] = field(default_factory=list)


def _read_csv(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """The rows of a reference file as ``(line number, row)`` (the header is line 1; blank rows
    skipped). A missing file is no rows."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as exc:
        raise ReportError(f"{path.name}: not UTF-8 text ({exc})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        return []  # an empty file: no rows
    missing = [c for c in required if c not in header]
    if missing:
        raise ReportError(f"{path.name} line 1: lacks column(s) {', '.join(missing)} (has {header})")
    rows: list[tuple[int, dict[str, str]]] = []
    for raw in reader:
        row = {k.strip(): v.strip() if isinstance(v, str) else "" for k, v in raw.items() if k is not None}
        if any(row.values()):
            rows.append((reader.line_num, row))  # the row's (last) line
    return rows


def _parse_date(value: str, where: str, column: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ReportError(f"{where}: {column} {value!r} is not a date yyyy-mm-dd") from None


def _parse_number(value: str, where: str, column: str) -> float | None:
    if value == "":
        return None
    try:
        return float(value.replace(",", "."))
    except ValueError:
        raise ReportError(f"{where}: {column} {value!r} is not a number") from None


def _parse_days(value: str, where: str, column: str) -> int:
    try:
        days = int(value)
    except ValueError:
        days = -1
    if days < 0:
        raise ReportError(f"{where}: {column} {value!r} is not a whole number of days >= 0")
    return days


def _require(value: str, where: str, column: str) -> str:
    if not value:
        raise ReportError(f"{where}: {column} is empty")
    return value


def _text(value: str | None, where: str, column: str) -> str | None:
    return value or None


_Field = tuple[str, Callable[[Any, str, str], Any]]  # a column, and how its value is read: (value, where, column)

# the reference files of one record per row: each file's columns, in the record's order, and
# whether a record starts with its row's rank ('stt'); every column is required unless listed
# in _OPTIONAL_COLUMNS
_PLAIN_FILES: dict[str, tuple[tuple[_Field, ...], bool]] = {
    "simplifications.csv": ((("ma_tthc", _require), ("quyet_dinh", _text), ("ngay_quyet_dinh", _parse_date),
                             ("so_ngay_cat_giam", _parse_number), ("noi_dung_cat_giam", _text),
                             ("danh_gia", _text)), True),
    "delegations.csv": ((("ma_tthc", _require), ("van_ban", _text), ("ngay_hieu_luc", _parse_date),
                         ("danh_gia", _text)), True),
    "unpaid_thresholds.csv": ((("ma_tthc", _require), ("threshold_days", _parse_days), ("note", _text)), False),
    "reuse_exclusions.csv": ((("ma_tthc", _require), ("ten_tthc", _text)), False),
    "collection_windows.csv": ((("ma_tthc", _require), ("days", _parse_days), ("can_cu", _text)), False),
}
_OPTIONAL_COLUMNS = {"reuse_exclusions.csv": {"ten_tthc"}}


def _rows(reference_dir: Path, name: str, required: Sequence[str]) -> Iterator[tuple[int, str, dict[str, str]]]:
    """``(line, where, row)`` of each row of a reference file, ``where`` naming the file and line for
    an error message."""
    for line, row in _read_csv(reference_dir / name, required):
        yield line, f"{name} line {line}", row


def _read_plain(reference_dir: Path, name: str) -> list[dict[str, Any]]:
    """The records of one of :data:`_PLAIN_FILES`."""
    fields, ranked = _PLAIN_FILES[name]
    optional = _OPTIONAL_COLUMNS.get(name, set())
    out = []
    for stt, (_, where, row) in enumerate(_rows(reference_dir, name, [c for c, _ in fields if c not in optional]), 1):
        record: dict[str, Any] = {"stt": stt} if ranked else {}
        record.update((column, read(row.get(column), where, column)) for column, read in fields)
        out.append(record)
    return out


def _read_targets(reference_dir: Path) -> list[dict[str, Any]]:
    out = []
    seen: dict[tuple[str, str, int], int] = {}
    for line, where, row in _rows(reference_dir, "targets.csv", ("ma_don_vi", "indicator", "year", "target")):
        unit = _require(row["ma_don_vi"], where, "ma_don_vi")
        indicator = row["indicator"]
        if indicator not in INDICATORS:
            raise ReportError(f"{where}: indicator {indicator!r} is not one of {', '.join(INDICATORS)}")
        try:
            year = int(row["year"])
        except ValueError:
            year = 0
        if not 2000 <= year <= 2100:
            raise ReportError(f"{where}: year {row['year']!r} is not a year such as 2024")
        try:
            target = float(row["target"].replace(",", "."))
        except ValueError:
            target = float("nan")
        if not 0 <= target <= 1:  # also refuses nan
            raise ReportError(f"{where}: target {row['target']!r} is not a fraction between 0 and 1")
        key = (unit, indicator, year)
        if key in seen:
            raise ReportError(f"{where}: {unit} {indicator} {year} already has a target on line {seen[key]}")
        seen[key] = line
        out.append({"ma_don_vi": unit, "indicator": indicator, "year": year, "target": target})
    return out


def _read_unit_procedures(reference_dir: Path) -> list[dict[str, Any]]:
    out = []
    seen: set[tuple[str, str]] = set()
    for _, where, row in _rows(reference_dir, "unit_procedures.csv", ("ma_don_vi", "ma_tthc")):
        unit = _require(row["ma_don_vi"], where, "ma_don_vi")
        if unit == "*":
            raise ReportError(f"{where}: ma_don_vi '*' is not a unit (list each unit's procedures)")
        pair = (unit, _require(row["ma_tthc"], where, "ma_tthc"))
        if pair not in seen:  # a repeated pair is harmless
            seen.add(pair)
            out.append({"ma_don_vi": pair[0], "ma_tthc": pair[1]})
    return out


def load_reference(reference_dir: Path) -> ReferenceData:
    """Read and validate the reference files of ``reference_dir`` (``DVC_REFERENCE_DIR``):
    ``simplifications.csv``, ``delegations.csv``, ``unpaid_thresholds.csv``, ``targets.csv``,
    ``unit_procedures.csv``, ``reuse_exclusions.csv`` and ``collection_windows.csv``.

    Each is optional (missing or header-only: an empty list). A bad value raises
    :class:`ReportError` naming the file and the line (the header is line 1), e.g.
    ``targets.csv line 3: target '95%' is not a fraction between 0 and 1``.
    """
    reference_dir = Path(reference_dir)
    return ReferenceData(
        simplifications=_read_plain(reference_dir, "simplifications.csv"),
        delegations=_read_plain(reference_dir, "delegations.csv"),
        unpaid_thresholds=_read_plain(reference_dir, "unpaid_thresholds.csv"),
        targets=_read_targets(reference_dir),
        unit_procedures=_read_unit_procedures(reference_dir),
        reuse_exclusions=_read_plain(reference_dir, "reuse_exclusions.csv"),
        collection_windows=_read_plain(reference_dir, "collection_windows.csv"),
    )
