"""The clerk's "Xuất Excel" exports (source contract section 2), as the file parser's test corpus.

Layouts:
- `plain`: one header row with the labels of section 2, one row per record, dates as Excel
  date cells (xlsx) or `dd/MM/yyyy HH:mm:ss` (csv, comma, no BOM).
- `ugly`: what officials actually send: 1-5 title rows, a two-row header with merged group cells,
  labels varying in case, spacing and Unicode form (NFD), section rows `I. Cấp huyện` /
  `II. Cấp xã`, a closing `Tổng cộng` row, dates mixed among `dd/MM/yyyy`, `dd/MM/yyyy HH:mm`,
  `dd/MM/yyyy HH:mm:ss` and real date cells, amounts as `1.234.000` text, stray and
  non-breaking spaces, an unknown column (`Ghi chú`); csv with BOM and `;`.

Files are named `<entity>_<layout>.<ext>`.

Flag columns (`Thanh toán trực tuyến`, `Có kết quả điện tử`, `Tái sử dụng dữ liệu`): not every
screen exports them. `export_files(..., flags=None)` (the default) writes them everywhere except in
the plain CSV dossier list (`dossiers_plain.csv`, the list screen's quick export), so a pipeline
reading that file has unknown flags; `flags=True` / `flags=False` forces them on / off everywhere.
"""

from __future__ import annotations

import csv
import random
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from openpyxl import Workbook
from openpyxl.styles import Alignment, Font

from simulator import catalog as C
from simulator.dataset import Dataset

SECTION_LABELS = {2: "I. Cấp huyện", 3: "II. Cấp xã", 1: "III. Cấp tỉnh"}
TOTAL_LABEL = "Tổng cộng"
UNKNOWN_COLUMN = "Ghi chú"


@dataclass(frozen=True)
class Column:
    """One exported column: label, the ugly layout's alternative label, how to get the value, kind."""

    label: str
    get: Callable[[dict[str, Any]], Any]
    kind: str = "text"  # text | ts | amount | int
    alt: str | None = None
    group: str | None = None


def _flag(v: bool) -> str:
    return "Có" if v else "Không"


def _e_result(d: dict[str, Any]) -> str:
    return _flag(any(r.get("DuongDanTepTinKetQua") for r in d["DanhSachGiayToKetQua"]))


def _reuse(d: dict[str, Any]) -> str:
    return _flag(any(t.get("DuocTaiSuDung") == 1 for t in d["TaiLieuNop"]))


def _channel(d: dict[str, Any]) -> str:
    return C.CHANNEL_LABELS.get(d["KenhThucHien"], "") if d["KenhThucHien"] else ""


_TIME = "Thời gian"
_OWNER = "Thông tin chủ hồ sơ"
_MONEY = "Số tiền phải nộp (đồng)"

DOSSIER_COLUMNS: tuple[Column, ...] = (
    Column("Mã hồ sơ", lambda d: d["MaHoSo"]),
    Column("Mã TTHC", lambda d: d["MaTTHC"], alt="Mã thủ tục"),
    Column("Tên TTHC", lambda d: d["TenTTHC"], alt="Tên thủ tục"),
    Column("Lĩnh vực", lambda d: d["TenLinhVuc"]),
    Column("Mã đơn vị", lambda d: d["MaDonVi"]),
    Column("Đơn vị xử lý", lambda d: d["TenDonVi"]),
    Column("Kênh nộp", _channel),
    Column("Chủ hồ sơ", lambda d: d["ChuHoSo"], group=_OWNER),
    Column("Số giấy tờ", lambda d: d["SoGiayToChuHoSo"], group=_OWNER),
    Column("Số điện thoại", lambda d: d["SoDienThoai"], group=_OWNER),
    Column("Ngày nộp", lambda d: d["NgayNopHoSo"], "ts", group=_TIME),
    Column("Ngày tiếp nhận", lambda d: d["NgayTiepNhan"], "ts", group=_TIME),
    Column("Ngày hẹn trả", lambda d: d["NgayHenTra"], "ts", group=_TIME),
    Column("Ngày kết thúc xử lý", lambda d: d["NgayKetThucXuLy"], "ts", alt="Ngày có kết quả", group=_TIME),
    Column("Ngày trả kết quả", lambda d: d["NgayTra"], "ts", group=_TIME),
    Column("Trạng thái", lambda d: C.STATUS_LABELS[d["TrangThaiHoSo"]]),
    Column("Cán bộ xử lý", lambda d: d["CanBoXuLy"]),
    Column("Mã cán bộ", lambda d: d["MaCanBoXuLy"]),
    Column("Thanh toán trực tuyến", lambda d: _flag(d["DuocThanhToanTrucTuyen"] in (1, 2))),
    Column("Có kết quả điện tử", _e_result),
    Column("Tái sử dụng dữ liệu", _reuse),
    Column("Ngày cập nhật", lambda d: d["NgayCapNhat"], "ts"),
)

PAYMENT_COLUMNS: tuple[Column, ...] = (
    Column("Mã thanh toán", lambda p: p["Ma"]),
    Column("Mã hồ sơ", lambda p: p["MaHoSo"]),
    Column("Số tiền", lambda p: p["SoTien"], "amount", group=_MONEY),
    Column("Phí", lambda p: p["Phi"], "amount", group=_MONEY),
    Column("Lệ phí", lambda p: p["LePhi"], "amount", group=_MONEY),
    Column("Trạng thái", lambda p: p["TrangThai"]),
    Column("Hình thức thanh toán", lambda p: C.PAYMENT_METHOD_LABELS.get(p["HinhThucThanhToan"] or "", "")),
    Column("Hình thức thu", lambda p: p["HinhThucThu"]),
    Column("Ngày yêu cầu", lambda p: p["NgayYeuCau"], "ts", group=_TIME),
    Column("Ngày thu phí", lambda p: p["NgayThuPhi"], "ts", alt="Ngày thanh toán", group=_TIME),
    Column("Mã giao dịch", lambda p: p["MaGiaoDich"] or ""),
    Column("Ngày cập nhật", lambda p: p["NgayCapNhat"], "ts"),
)

FLAG_COLUMNS: tuple[str, ...] = ("Thanh toán trực tuyến", "Có kết quả điện tử", "Tái sử dụng dữ liệu")
"""Dossier-list columns some exports lack (then the flags are unknown, not false)."""

TITLES = {"dossiers": "SỔ THEO DÕI HỒ SƠ", "payments": "DANH SÁCH THANH TOÁN PHÍ, LỆ PHÍ"}


def _parse_ts(s: str | None) -> datetime | None:
    return datetime.strptime(s, "%Y%m%d%H%M%S") if s else None


def _dots(n: int) -> str:
    return f"{n:,}".replace(",", ".")


# ----------------------------------------------------------------------------------------------
# building the grid (a list of rows, layout-independent of the file format)
# ----------------------------------------------------------------------------------------------

@dataclass
class Grid:
    """Rows of one export plus the merged ranges (1-based, inclusive) an xlsx file should carry."""

    rows: list[list[Any]]
    merges: list[tuple[int, int, int, int]]
    header_rows: tuple[int, ...]


def _levels(ds: Dataset) -> Callable[[str, str | None], int]:
    rows: dict[str, list[tuple[str, str, int]]] = {}
    for u in ds.units:
        rows.setdefault(u["MaDonVi"], []).append((u["HieuLucTu"], u["HieuLucDen"] or "99999999", u["CapDonVi"]))

    def level(code: str, ts: str | None) -> int:
        day = (ts or "")[:8] or "99999999"
        cands = rows.get(code, [])
        for lo, hi, lev in cands:
            if lo <= day <= hi:
                return lev
        return cands[-1][2] if cands else 3

    return level


def _records(ds: Dataset, entity: str, limit: int | None) -> tuple[list[dict[str, Any]], list[int]]:
    n = ds.count(entity) if limit is None else min(limit, ds.count(entity))
    recs = ds.render(entity, np.arange(n))
    level = _levels(ds)
    if entity == "dossiers":
        levels = [level(d["MaDonVi"], d["NgayTiepNhan"] or d["NgayNopHoSo"]) for d in recs]
    else:
        didx = ds._p["dossier"][:n]
        dossiers = ds.render("dossiers", didx)
        levels = [level(d["MaDonVi"], d["NgayTiepNhan"] or d["NgayNopHoSo"]) for d in dossiers]
    return recs, levels


def _label(col: Column, ugly: bool, rnd: random.Random, forced: dict[str, str]) -> str:
    label = col.alt if (ugly and col.alt) else col.label
    if not ugly:
        return label
    style = forced.get(col.label) or rnd.choice(["same", "same", "upper", "nfd", "space", "lower"])
    if style == "upper":
        return label.upper()
    if style == "lower":
        return label.lower()
    if style == "nfd":
        return unicodedata.normalize("NFD", label)
    if style == "space":
        return " " + label.replace(" ", "  ", 1) + "\u00a0"
    return label


def _header(cols: Sequence[Column], ugly: bool, rnd: random.Random, first_row: int
            ) -> tuple[list[list[Any]], list[tuple[int, int, int, int]]]:
    forced = {"Mã hồ sơ": "nfd", "Trạng thái": "upper", "Mã thanh toán": "nfd"}
    labels = ["STT"] + [_label(c, ugly, rnd, forced) for c in cols]
    if not ugly:
        return [labels], []
    top: list[Any] = ["STT"]
    bottom: list[Any] = [None]
    merges = [(first_row, 1, first_row + 1, 1)]
    groups: dict[str, list[int]] = {}
    for j, c in enumerate(cols, start=2):
        if c.group:
            groups.setdefault(c.group, []).append(j)
            top.append(c.group if len(groups[c.group]) == 1 else None)
            bottom.append(labels[j - 1])
        else:
            top.append(labels[j - 1])
            bottom.append(None)
            merges.append((first_row, j, first_row + 1, j))
    merges += [(first_row, js[0], first_row, js[-1]) for js in groups.values()]
    return [top, bottom], merges


def _cell(col: Column, rec: dict[str, Any], ugly: bool, fmt: str, rnd: random.Random) -> Any:
    v = col.get(rec)
    if col.kind == "ts":
        dt = _parse_ts(v)
        if dt is None:
            return None
        if not ugly:
            return dt if fmt == "xlsx" else dt.strftime("%d/%m/%Y %H:%M:%S")
        choice = rnd.randrange(4 if fmt == "xlsx" else 3)
        return (dt.strftime("%d/%m/%Y"), dt.strftime("%d/%m/%Y %H:%M"), dt.strftime("%d/%m/%Y %H:%M:%S"), dt)[choice]
    if col.kind == "amount":
        return _dots(v) if ugly and rnd.random() < 0.6 else v
    if ugly and isinstance(v, str) and v and rnd.random() < 0.05:
        return rnd.choice([" " + v, v + " ", v + "\u00a0", "\u00a0" + v])
    return v


def default_flags(entity: str, layout: str, fmt: str) -> bool:
    """Whether a default export of this kind carries the flag columns (all but the plain CSV dossier list)."""
    return not (entity == "dossiers" and layout == "plain" and fmt == "csv")


def build_grid(ds: Dataset, entity: str, layout: str, fmt: str, seed: int, limit: int | None,
               flags: bool = True) -> Grid:
    """The rows of one export (title rows, header, sections, data, total) and its merges.

    Without `flags`, a dossier list lacks the columns of `FLAG_COLUMNS`."""
    ugly = layout == "ugly"
    rnd = random.Random(f"{seed}-{entity}-{layout}-{fmt}")
    cols = DOSSIER_COLUMNS if entity == "dossiers" else PAYMENT_COLUMNS
    if not flags:
        cols = tuple(c for c in cols if c.label not in FLAG_COLUMNS)
    width = len(cols) + 1 + (1 if ugly else 0)
    rows: list[list[Any]] = []
    merges: list[tuple[int, int, int, int]] = []
    if ugly:
        period = f"Từ ngày {ds._ctx.start:%d/%m/%Y} đến ngày {ds._ctx.end:%d/%m/%Y}"
        titles = ["UBND HUYỆN TUY PHƯỚC", TITLES[entity], period, "", ""][: rnd.randint(1, 5)]
        for t in titles:
            rows.append([t or None] + [None] * (width - 1))
            if t:
                merges.append((len(rows), 1, len(rows), min(width, 8)))
    first = len(rows) + 1
    header, hmerges = _header(cols, ugly, rnd, first)
    if ugly:
        header[0].append(UNKNOWN_COLUMN)
        header[1].append(None)
        hmerges.append((first, width, first + 1, width))
    rows += header
    merges += hmerges
    recs, levels = _records(ds, entity, limit)
    _data_rows(rows, merges, cols, recs, levels, ugly, fmt, rnd, width)
    return Grid(rows, merges, tuple(range(first, first + len(header))))


def _sort_key(entity: str) -> Callable[[dict[str, Any]], str]:
    if entity == "dossiers":
        return lambda d: (d["NgayTiepNhan"] or d["NgayNopHoSo"] or "") + d["MaHoSo"]
    return lambda p: (p["NgayYeuCau"] or "") + p["Ma"]


def _data_rows(rows: list[list[Any]], merges: list[tuple[int, int, int, int]], cols: Sequence[Column],
               recs: list[dict[str, Any]], levels: list[int], ugly: bool, fmt: str, rnd: random.Random,
               width: int) -> None:
    entity = "dossiers" if "MaTTHC" in (recs[0] if recs else {}) else "payments"
    key = _sort_key(entity)
    rank = {2: 0, 3: 1, 1: 2}
    pairs = sorted(zip(levels, recs, strict=True), key=lambda lr: (rank[lr[0]] if ugly else 0, key(lr[1])))
    stt, current, total = 0, None, 0
    for lev, rec in pairs:
        if ugly and lev != current:
            current = lev
            rows.append([SECTION_LABELS[lev]] + [None] * (width - 1))
            merges.append((len(rows), 1, len(rows), min(width, 6)))
        stt += 1
        row = [stt] + [_cell(c, rec, ugly, fmt, rnd) for c in cols]
        if ugly:
            row.append("Trễ hạn" if rnd.random() < 0.01 else None)
        rows.append(row)
        total += rec.get("SoTien", 0) if entity == "payments" else 1
    if ugly:
        tail: list[Any] = [TOTAL_LABEL] + [None] * (width - 1)
        tail[1] = f"{stt} hồ sơ" if entity == "dossiers" else f"{stt} yêu cầu"
        if entity == "payments":
            tail[3] = _dots(total)
        rows.append(tail)


# ----------------------------------------------------------------------------------------------
# writing files
# ----------------------------------------------------------------------------------------------

def _write_xlsx(grid: Grid, path: Path, sheet: str) -> None:
    wb = Workbook()
    ws = wb.active
    ws.title = sheet
    for r in grid.rows:
        ws.append(r)
    for r1, c1, r2, c2 in grid.merges:
        if (r1, c1) != (r2, c2):
            ws.merge_cells(start_row=r1, start_column=c1, end_row=r2, end_column=c2)
    bold = Font(bold=True)
    for r in grid.header_rows:
        for cell in ws[r]:
            cell.font = bold
            cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
    for row in ws.iter_rows(min_row=grid.header_rows[-1] + 1):
        for cell in row:
            if isinstance(cell.value, datetime):
                cell.number_format = "dd/mm/yyyy hh:mm:ss" if cell.value.second else "dd/mm/yyyy hh:mm"
    wb.save(path)


def _write_csv(grid: Grid, path: Path, ugly: bool) -> None:
    with path.open("w", encoding="utf-8-sig" if ugly else "utf-8", newline="") as f:
        w = csv.writer(f, delimiter=";" if ugly else ",")
        for r in grid.rows:
            w.writerow(["" if v is None else v for v in r])


def export_files(ds: Dataset, out_dir: str | Path, *, entities: Iterable[str] = ("dossiers", "payments"),
                 formats: Iterable[str] = ("xlsx", "csv"), layouts: Iterable[str] = ("plain", "ugly"),
                 seed: int = 0, limit: int | None = None, flags: bool | None = None) -> list[Path]:
    """Write the exports; returns the paths written (`<entity>_<layout>.<ext>`).

    `flags`: None writes the flag columns as `default_flags` says (every file but
    `dossiers_plain.csv`), True / False in every dossier list."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for entity in entities:
        if entity not in TITLES:
            raise ValueError(f"cannot export {entity!r}: only dossiers and payments")
        for layout in layouts:
            if layout not in ("plain", "ugly"):
                raise ValueError(f"unknown layout {layout!r}")
            for fmt in formats:
                with_flags = default_flags(entity, layout, fmt) if flags is None else flags
                grid = build_grid(ds, entity, layout, fmt, seed, limit, flags=with_flags)
                path = out / f"{entity}_{layout}.{fmt}"
                if fmt == "xlsx":
                    _write_xlsx(grid, path, "So theo doi" if entity == "dossiers" else "Thanh toan")
                elif fmt == "csv":
                    _write_csv(grid, path, layout == "ugly")
                else:
                    raise ValueError(f"unknown format {fmt!r}")
                paths.append(path)
    return paths
