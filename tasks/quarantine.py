"""The clerks' view of ``dq.quarantine``: open rows per unit and rule, as a list or a file.

Plain functions, no Prefect: ``dvc-etl quarantine list|export`` (:mod:`tasks.cli_quarantine`) and
the weekly per-unit export call them.

A row of :func:`open_rows` names the record so that a clerk can find and fix it in the provincial
system: the dossier code (``MaHoSo``), the payment code (``Ma``) for a payment, the record's key,
the unit (``MaDonVi`` and its name), the rule, a Vietnamese reason (:data:`REASONS_VI`), the
check's detail and when the row was first and last seen. Never personal data:

- ``dq.quarantine.raw_record`` (the record as read, which holds the applicant's name, ID and phone
  number) is read only to find the unit and the dossier code of the quarantined version, and is
  never output;
- the detail text is the check's (field names and non-personal values); any personal value of the
  record that would appear in it anyway is replaced by ``***``.

When the record was purged (``DVC_QUARANTINE_RAW_RETENTION_DAYS``), the unit comes from the
version already loaded in ``core`` (the dossier, or the payment's dossier), else it is unknown.
"""

from __future__ import annotations

import csv
import json
import os
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tasks.entities import PERSONAL_FIELDS, REGISTRY

#: File formats of an export, by the file's extension.
FORMATS = (".xlsx", ".csv")
#: The unit of rows whose unit is not known (a procedure, a record without MaDonVi).
NO_UNIT = ""
NO_UNIT_LABEL = "(không rõ đơn vị)"

#: What each entity is called in Vietnamese.
ENTITY_VI = {name: e.label_vi for name, e in REGISTRY.items()}

#: The Vietnamese reason of each critical rule of the suites (``expectations/*.json``); the
#: normaliser's ``parse_<column>`` / ``required_<column>`` / ``parse_nested_lists`` are built by
#: :func:`reason_vi`. A rule missing here gets a generic reason (a test keeps the list complete).
REASONS_VI: dict[str, str] = {
    "dossier_key_present": "Thiếu mã hồ sơ (MaHoSo): không lưu và tra cứu được hồ sơ.",
    "dossier_key_unique": "Mã hồ sơ (MaHoSo) được gửi nhiều lần cùng ngày cập nhật với nội dung khác nhau: "
                          "không xác định được bản nào là hiện hành.",
    "dossier_updated_at_present": "Thiếu ngày cập nhật (NgayCapNhat).",
    "dossier_status_present": "Thiếu trạng thái hồ sơ (TrangThaiHoSo).",
    "dossier_status_in_code_list": "Trạng thái hồ sơ (TrangThaiHoSo) không thuộc danh mục 1-10.",
    "dossier_channel_in_code_list": "Kênh thực hiện (KenhThucHien) phải là 1 (trực tiếp), 2 (trực tuyến), "
                                    "3 (bưu chính) hoặc để trống.",
    "dossier_applicant_type_in_code_list": "Loại đối tượng (LoaiDoiTuong) phải từ 1 đến 4 hoặc để trống.",
    "dossier_paid_online_flag_in_code_list": "Trường DuocThanhToanTrucTuyen phải là 0, 1 hoặc 2.",
    "dossier_received_has_receipt_date": "Hồ sơ đã tiếp nhận (trạng thái khác 1 và 3) nhưng thiếu ngày tiếp "
                                         "nhận (NgayTiepNhan).",
    "dossier_resolved_has_end_date": "Hồ sơ đã giải quyết (trạng thái 7-10) nhưng thiếu ngày kết thúc xử lý "
                                     "(NgayKetThucXuLy).",
    "dossier_handed_over_has_handover_date": "Hồ sơ đã trả kết quả (trạng thái 10) nhưng thiếu ngày trả (NgayTra).",
    "dossier_due_not_before_receipt": "Ngày hẹn trả (NgayHenTra) trước ngày tiếp nhận (NgayTiepNhan).",
    "dossier_end_not_before_receipt": "Ngày kết thúc xử lý (NgayKetThucXuLy) trước ngày tiếp nhận (NgayTiepNhan).",
    "dossier_handover_not_before_end": "Ngày trả kết quả (NgayTra) trước ngày kết thúc xử lý (NgayKetThucXuLy).",
    "dossier_receipt_date_plausible": "Ngày tiếp nhận (NgayTiepNhan) trước năm 2000 hoặc sau ngày mai: ngày nhập sai.",
    "dossier_end_date_plausible": "Ngày kết thúc xử lý (NgayKetThucXuLy) trước năm 2000 hoặc sau ngày mai: "
                                  "ngày nhập sai.",
    "dossier_handover_date_plausible": "Ngày trả kết quả (NgayTra) trước năm 2000 hoặc sau ngày mai: ngày nhập sai.",
    "payment_key_present": "Thiếu mã yêu cầu thanh toán (Ma).",
    "payment_key_unique": "Mã yêu cầu thanh toán (Ma) được gửi nhiều lần với nội dung khác nhau: không xác định "
                          "được bản nào là hiện hành.",
    "payment_dossier_key_present": "Yêu cầu thanh toán thiếu mã hồ sơ (MaHoSo): không gắn được với hồ sơ nào.",
    "payment_updated_at_present": "Thiếu ngày cập nhật (NgayCapNhat) của yêu cầu thanh toán.",
    "payment_status_present": "Thiếu trạng thái thanh toán (TrangThai).",
    "payment_status_in_code_list": "Trạng thái thanh toán (TrangThai) không thuộc danh mục.",
    "payment_method_in_code_list": "Hình thức thanh toán (HinhThucThanhToan) phải là truc-tuyen, tien-mat, "
                                   "chuyen-khoan hoặc để trống.",
    "payment_collection_in_code_list": "Hình thức thu (HinhThucThu) phải là Thu trước, Thu sau hoặc Đối tượng "
                                       "miễn phí.",
    "payment_channel_in_code_list": "Kênh thanh toán (KenhThanhToan) phải là 1 (Cổng Dịch vụ công quốc gia), "
                                    "2 (nền tảng thanh toán của tỉnh) hoặc để trống.",
    "payment_amount_present": "Thiếu số tiền (SoTien).",
    "payment_amount_non_negative": "Số tiền (SoTien) bị âm.",
    "payment_fee_non_negative": "Phí (Phi) bị âm.",
    "payment_charge_non_negative": "Lệ phí (LePhi) bị âm.",
    "payment_amount_equals_fee_plus_charge": "Số tiền (SoTien) khác tổng phí (Phi) và lệ phí (LePhi).",
    "procedure_key_present": "Thiếu mã thủ tục (MaTTHC).",
    "procedure_key_unique": "Mã thủ tục (MaTTHC) được gửi nhiều lần với nội dung khác nhau.",
    "procedure_code_format": "Mã thủ tục (MaTTHC) sai định dạng (đúng: 1.001653.000.00.00.H08 hoặc 2.002621.H08).",
    "procedure_time_unit_in_code_list": "Đơn vị thời hạn (DonViThoiHan) phải là ngay-lam-viec, ngay, gio hoặc để "
                                        "trống.",
    "procedure_processing_time_non_negative": "Thời hạn giải quyết (ThoiHanGiaiQuyet) bị âm.",
    "procedure_service_level_in_code_list": "Mức độ dịch vụ công (MucDoDVC) phải là 2, 3, 4 hoặc để trống.",
    "procedure_fee_flag_in_code_list": "Trường CoPhiLePhi phải là 0, 1 hoặc để trống.",
    "procedure_online_payment_flag_in_code_list": "Trường CoThanhToanTrucTuyen phải là 0, 1 hoặc để trống.",
    "procedure_paper_result_flag_in_code_list": "Trường KetQuaGiay phải là 0, 1 hoặc để trống.",
    "unit_code_present": "Thiếu mã đơn vị (MaDonVi).",
    "unit_valid_from_present": "Thiếu ngày bắt đầu hiệu lực (HieuLucTu) của đơn vị.",
    "unit_key_unique": "Cặp mã đơn vị và ngày hiệu lực (MaDonVi, HieuLucTu) được gửi nhiều lần.",
    "unit_level_in_code_list": "Cấp đơn vị (CapDonVi) phải là 1 (tỉnh), 2 (huyện), 3 (xã) hoặc để trống.",
    "unit_validity_interval_ordered": "Ngày hết hiệu lực (HieuLucDen) trước ngày bắt đầu hiệu lực (HieuLucTu).",
    "unit_valid_from_plausible": "Ngày bắt đầu hiệu lực (HieuLucTu) ngoài khoảng 1945 đến 10 năm tới: ngày nhập sai.",
    "parse_nested_lists": "Danh sách kèm theo hồ sơ (TaiLieuNop, DanhSachGiayToKetQua, DanhSachHoSoBoSung, "
                          "DanhSachLePhi) sai cấu trúc.",
}


def _api_field(entity: str, column: str) -> str:
    """The source field of a core column (``ngay_tiep_nhan`` -> ``NgayTiepNhan``)."""
    try:
        from tasks.field_types import FIELDS
    except ImportError:  # pragma: no cover - the field list moved: the column name still says it
        return column
    return next((api for col, api, _ in FIELDS.get(entity, ()) if col == column), column)


def reason_vi(entity: str, rule: str) -> str:
    """The Vietnamese reason of a quarantine rule, for a clerk."""
    if rule in REASONS_VI:
        return REASONS_VI[rule]
    if rule.startswith("parse_"):
        return f"Giá trị của trường {_api_field(entity, rule.removeprefix('parse_'))} sai định dạng hoặc sai kiểu."
    if rule.startswith("required_"):
        return f"Thiếu trường bắt buộc {_api_field(entity, rule.removeprefix('required_'))}."
    return f"Không đạt quy tắc kiểm tra dữ liệu {rule}."


@dataclass(frozen=True)
class QuarantineRow:
    """One open quarantine row as a clerk sees it (no personal data)."""

    ma_don_vi: str
    ten_don_vi: str
    loai: str
    ma_ho_so: str
    ma_thanh_toan: str
    ma_ban_ghi: str
    rule: str
    ly_do: str
    chi_tiet: str
    first_seen_at: datetime
    last_seen_at: datetime
    source: str


#: Column headers of a list or an export, in order (Vietnamese, with the source field names).
HEADERS = {
    "ma_don_vi": "Mã đơn vị (MaDonVi)",
    "ten_don_vi": "Tên đơn vị",
    "loai": "Loại bản ghi",
    "ma_ho_so": "Mã hồ sơ (MaHoSo)",
    "ma_thanh_toan": "Mã thanh toán (Ma)",
    "ma_ban_ghi": "Mã bản ghi",
    "rule": "Quy tắc",
    "ly_do": "Lý do",
    "chi_tiet": "Chi tiết",
    "first_seen_at": "Phát hiện lần đầu",
    "last_seen_at": "Phát hiện lần cuối",
    "source": "Nguồn",
}
assert list(HEADERS) == [f.name for f in fields(QuarantineRow)]


def _record(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _scrub(detail: str, record: dict[str, Any]) -> str:
    """The detail with any personal value of the record replaced by ``***``."""
    for name in PERSONAL_FIELDS:
        value = _text(record.get(name))
        if len(value) >= 2 and value in detail:
            detail = detail.replace(value, "***")
    return detail


def _lookup(conn: sa.Connection, sql: str, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], tuple]:
    """``{(source, key): row[2:]}`` of a query over ``(source, key) IN`` the given pairs, in chunks."""
    wanted = sorted({k for k in keys if k[1]})
    out: dict[tuple[str, str], tuple] = {}
    stmt = sa.text(sql).bindparams(sa.bindparam("keys", expanding=True))
    for i in range(0, len(wanted), 500):
        chunk = set(wanted[i:i + 500])
        for row in conn.execute(stmt, {"keys": sorted({k for _, k in chunk})}):
            if (row[0], row[1]) in chunk:
                out[(row[0], row[1])] = tuple(row[2:])
    return out


def open_rows(engine: Engine, *, unit: str | None = None, since: date | None = None,
              rule: str | None = None) -> list[QuarantineRow]:
    """The open (unresolved) quarantine rows, sorted by unit, rule and code.

    ``unit``: only the rows of this ``MaDonVi`` (``""``: the rows without a known unit);
    ``since``: only the rows first seen on or after this day; ``rule``: only this rule."""
    where, params = ["resolved_at IS NULL"], {}
    if rule:
        where.append("rule = :rule")
        params["rule"] = rule
    if since:
        where.append("first_seen_at >= :since")
        params["since"] = datetime.combine(since, datetime.min.time())
    with engine.connect() as conn:
        found = conn.execute(sa.text(
            "SELECT source, entity, record_key, rule, detail, raw_record, first_seen_at, last_seen_at "  # noqa: S608
            f"FROM dq.quarantine WHERE {' AND '.join(where)}"  # fixed clauses; the values are bound
        ), params).fetchall()
        # what each record says (the quarantined version), then core's loaded version as a fallback
        parsed = []
        for source, entity, key, rule_, detail, raw, first, last in found:
            rec = _record(raw)
            dossier = key if entity == "dossiers" else _text(rec.get("MaHoSo")) if entity == "payments" else ""
            parsed.append((source, entity, key, rule_, _text(detail), rec, first, last, dossier))
        payments = _lookup(conn, "SELECT source, ma, ma_ho_so FROM core.payments WHERE ma IN :keys",
                           ((p[0], p[2]) for p in parsed if p[1] == "payments" and not p[8]))
        parsed = [(*p[:8], p[8] or _text(payments.get((p[0], p[2]), ("",))[0])) for p in parsed]
        dossiers = _lookup(conn, "SELECT source, ma_ho_so, ma_don_vi, ten_don_vi FROM core.dossiers "
                                 "WHERE ma_ho_so IN :keys", ((p[0], p[8]) for p in parsed if p[8]))
        names = {_text(u): _text(n) for u, n in conn.execute(sa.text(
            "SELECT ma_don_vi, ten_don_vi FROM core.units ORDER BY hieu_luc_tu"))}  # the latest name wins
    rows = []
    for source, entity, key, rule_, detail, rec, first, last, dossier in parsed:
        loaded = dossiers.get((source, dossier), ("", ""))
        if entity == "units":
            code = _text(rec.get("MaDonVi")) or (key.split("|")[0] if not key.startswith("#") else "")
        elif entity in ("dossiers", "payments"):
            code = (_text(rec.get("MaDonVi")) if entity == "dossiers" else "") or _text(loaded[0])
        else:
            code = NO_UNIT
        if unit is not None and code != unit:
            continue
        name = names.get(code) or (_text(rec.get("TenDonVi")) if entity in ("dossiers", "units") else "") \
            or _text(loaded[1])
        rows.append(QuarantineRow(
            ma_don_vi=code, ten_don_vi=name if code else NO_UNIT_LABEL, loai=ENTITY_VI.get(entity, entity),
            ma_ho_so=dossier if not dossier.startswith("#") else "",
            ma_thanh_toan=key if entity == "payments" and not key.startswith("#") else "",
            ma_ban_ghi=key, rule=rule_, ly_do=reason_vi(entity, rule_), chi_tiet=_scrub(detail, rec),
            first_seen_at=first, last_seen_at=last, source=source,
        ))
    rows.sort(key=lambda r: (r.ma_don_vi == NO_UNIT, r.ma_don_vi, r.rule, r.ma_ho_so, r.ma_ban_ghi, r.source))
    return rows


def groups(rows: Sequence[QuarantineRow]) -> list[tuple[tuple[str, str], list[tuple[str, list[QuarantineRow]]]]]:
    """``[((unit code, unit name), [(rule, rows)...])...]`` in the order of ``rows``."""
    out: list[tuple[tuple[str, str], list[tuple[str, list[QuarantineRow]]]]] = []
    for r in rows:
        if not out or out[-1][0][0] != r.ma_don_vi:
            out.append(((r.ma_don_vi, r.ten_don_vi), []))
        rules = out[-1][1]
        if not rules or rules[-1][0] != r.rule:
            rules.append((r.rule, []))
        rules[-1][1].append(r)
    return out


def _cell(value: Any) -> Any:
    return value.replace(microsecond=0) if isinstance(value, datetime) else value


def _write_xlsx(rows: Sequence[QuarantineRow], path: Path) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    wb = Workbook()
    ws = wb.active
    ws.title = "Hồ sơ bị giữ lại"
    ws.append(list(HEADERS.values()))
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for r in rows:
        ws.append([_cell(getattr(r, f)) for f in HEADERS])
    widths = {"ly_do": 60, "chi_tiet": 50, "ten_don_vi": 30, "rule": 34}
    for i, name in enumerate(HEADERS, 1):
        ws.column_dimensions[get_column_letter(i)].width = widths.get(name, 20)
        if name.endswith("_seen_at"):
            for (cell,) in ws.iter_rows(min_row=2, min_col=i, max_col=i):
                cell.number_format = "dd/mm/yyyy hh:mm"
    ws.freeze_panes = "A2"
    ws.auto_filter.ref = ws.dimensions
    wb.save(path)


def _write_csv(rows: Sequence[QuarantineRow], path: Path) -> None:
    # UTF-8 with a byte-order mark: Excel opens the Vietnamese text correctly
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADERS.values())
        for r in rows:
            w.writerow(["" if v is None else str(_cell(v)) for v in (getattr(r, f) for f in HEADERS)])


def export(rows: Sequence[QuarantineRow], out: Path | str) -> Path:
    """Write ``rows`` to ``out`` as .xlsx or .csv, by its extension, atomically (a temporary file
    beside it, then a rename). Raises ``ValueError`` for another extension."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{out.name}: the export file must end in .xlsx or .csv (got {suffix or 'no extension'!r})")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        (_write_xlsx if suffix == ".xlsx" else _write_csv)(rows, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
PER_UNIT_PREFIX = "quarantine-"


def unit_file_name(unit: str, suffix: str = ".xlsx") -> str:
    """``quarantine-<MaDonVi>.xlsx`` (``quarantine-khong-ro-don-vi.xlsx`` without a unit)."""
    safe = _UNSAFE.sub("_", unit).strip("._") if unit else ""
    return f"{PER_UNIT_PREFIX}{safe or 'khong-ro-don-vi'}{suffix}"


def export_per_unit(engine: Engine, out_dir: Path | str, *, suffix: str = ".xlsx") -> list[Path]:
    """One file per unit with open quarantine rows in ``out_dir`` (the weekly export for the units'
    clerks): ``quarantine-<MaDonVi>.xlsx``. A unit's earlier file is replaced; the file of a unit
    that has no open row any more is removed, so the folder always shows the current lists.
    Returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    by_unit: dict[str, list[QuarantineRow]] = {}
    for r in open_rows(engine):
        by_unit.setdefault(r.ma_don_vi, []).append(r)
    for unit, rows in by_unit.items():
        written.append(export(rows, out_dir / unit_file_name(unit, suffix)))
    for old in out_dir.glob(f"{PER_UNIT_PREFIX}*{suffix}"):
        if old not in written:
            old.unlink(missing_ok=True)
    return written
