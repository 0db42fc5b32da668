"""The fields of each entity and how a column of raw values becomes a typed column.

:data:`FIELDS` maps every API field the normaliser keeps to its ``core.<entity>`` column and its
kind; :func:`parse_column` types one column of values by its kind. A value present but not of its
kind is marked in the returned mask (the normaliser reports it as a parse issue), never turned
into a silent null. Plain, pure functions (no I/O).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

# (core column, API field, kind). Kinds: str, i16, i64, ts, d8 (yyyyMMdd date), f64.
FIELDS: dict[str, list[tuple[str, str, str]]] = {
    "dossiers": [
        ("ma_ho_so", "MaHoSo", "str"),
        ("ma_tthc", "MaTTHC", "str"),
        ("ten_tthc", "TenTTHC", "str"),
        ("ma_linh_vuc", "MaLinhVuc", "str"),
        ("ten_linh_vuc", "TenLinhVuc", "str"),
        ("ma_don_vi", "MaDonVi", "str"),
        ("ten_don_vi", "TenDonVi", "str"),
        ("kenh_thuc_hien", "KenhThucHien", "i16"),
        ("loai_doi_tuong", "LoaiDoiTuong", "i16"),
        ("ngay_nop_ho_so", "NgayNopHoSo", "ts"),
        ("ngay_tiep_nhan", "NgayTiepNhan", "ts"),
        ("ngay_hen_tra", "NgayHenTra", "ts"),
        ("ngay_ket_thuc_xu_ly", "NgayKetThucXuLy", "ts"),
        ("ngay_tra", "NgayTra", "ts"),
        ("ngay_tu_choi", "NgayTuChoi", "ts"),
        ("trang_thai", "TrangThaiHoSo", "i16"),
        ("hinh_thuc", "HinhThuc", "i16"),
        ("duoc_thanh_toan_truc_tuyen", "DuocThanhToanTrucTuyen", "i16"),
        ("co_thanh_phan_so_hoa", "HoSoCoThanhPhanSoHoa", "i16"),
        ("ma_can_bo_xu_ly", "MaCanBoXuLy", "str"),
        ("can_bo_xu_ly", "CanBoXuLy", "str"),
        ("ngay_cap_nhat", "NgayCapNhat", "ts"),
    ],
    "payments": [
        ("ma", "Ma", "str"),
        ("ma_ho_so", "MaHoSo", "str"),
        ("so_tien", "SoTien", "i64"),
        ("phi", "Phi", "i64"),
        ("le_phi", "LePhi", "i64"),
        ("trang_thai", "TrangThai", "str"),
        ("hinh_thuc_thanh_toan", "HinhThucThanhToan", "str"),
        ("hinh_thuc_thu", "HinhThucThu", "str"),
        ("kenh_thanh_toan", "KenhThanhToan", "i16"),
        ("ngay_yeu_cau", "NgayYeuCau", "ts"),
        ("ngay_thu_phi", "NgayThuPhi", "ts"),
        ("ngay_hoan_phi", "NgayHoanPhi", "ts"),
        ("ngay_huy", "NgayHuy", "ts"),
        ("ma_giao_dich", "MaGiaoDich", "str"),
        ("ngay_cap_nhat", "NgayCapNhat", "ts"),
    ],
    "procedures": [
        ("ma_tthc", "MaTTHC", "str"),
        ("ten_tthc", "TenTTHC", "str"),
        ("ma_linh_vuc", "MaLinhVuc", "str"),
        ("ten_linh_vuc", "TenLinhVuc", "str"),
        ("thoi_han_giai_quyet", "ThoiHanGiaiQuyet", "f64"),
        ("don_vi_thoi_han", "DonViThoiHan", "str"),
        ("muc_do_dvc", "MucDoDVC", "i16"),
        ("co_phi_le_phi", "CoPhiLePhi", "i16"),
        ("co_thanh_toan_truc_tuyen", "CoThanhToanTrucTuyen", "i16"),
        ("ket_qua_giay", "KetQuaGiay", "i16"),
    ],
    "units": [
        ("ma_don_vi", "MaDonVi", "str"),
        ("hieu_luc_tu", "HieuLucTu", "d8"),
        ("hieu_luc_den", "HieuLucDen", "d8"),
        ("ten_don_vi", "TenDonVi", "str"),
        ("cap_don_vi", "CapDonVi", "i16"),
        ("ma_don_vi_cha", "MaDonViCha", "str"),
        ("ma_don_vi_ke_nhiem", "MaDonViKeNhiem", "str"),
    ],
}

#: Columns of core.<entity> after the parsed fields (derived), in table order.
DOSSIER_DERIVED = [
    "applicant_key",
    "n_tai_lieu",
    "n_tai_lieu_tai_su_dung",
    "has_reuse",
    "n_ket_qua",
    "has_e_result",
    "n_bo_sung",
    "tong_le_phi_khai",
    "n_tai_lieu_so_hoa",
    "has_digitised",
    "n_tai_lieu_kho_dmqg",
    "has_from_national_store",
    "n_le_phi",
    "n_le_phi_co_gia",
    "applicant_key_id",  # tasks.settings.hash_key_id of the key that made applicant_key (0006)
]
#: The core.dossier_supplements column and API field of each round timestamp (DanhSachHoSoBoSung[]);
#: :data:`SUPPLEMENT_COLUMNS`: the columns of :attr:`tasks.normalize.Normalized.supplements` (the
#: table's without source and lineage).
SUPPLEMENT_ROUND_FIELDS: list[tuple[str, str]] = [
    ("ngay_bo_sung", "NgayBoSung"),
    ("ngay_tiep_nhan_bo_sung", "NgayTiepNhanBoSung"),
    ("ngay_hen_tra_truoc", "NgayHenTraTruoc"),
    ("ngay_hen_tra_moi", "NgayHenTraMoi"),
]
SUPPLEMENT_COLUMNS = ["ma_ho_so", "ngay_cap_nhat", "lan", *(c for c, _ in SUPPLEMENT_ROUND_FIELDS)]
PROCEDURE_DERIVED = ["cap_thuc_hien"]


# ----------------------------------------------------------------------------------------------
# value parsing (vectorised)
# ----------------------------------------------------------------------------------------------
def _blank(values: pd.Series) -> pd.Series:
    """True where the value means "no value": None/NaN or a blank string."""
    as_str = values.astype("string")
    return values.isna() | as_str.str.strip().fillna("").eq("")


def _parse(values: list[Any], kind: str) -> tuple[pd.Series, pd.Series]:
    """Parse one column. Returns (typed series, mask of present-but-unparseable values)."""
    s = pd.Series(values, dtype="object")
    blank = _blank(s)
    if kind == "str":
        out = s.where(~blank, None)
        bad = out.notna() & ~out.map(lambda v: isinstance(v, (str, int)) and not isinstance(v, bool))
        out = out.where(~bad, None).astype("string").str.strip()
        return out, bad
    text = s.where(~blank, None).astype("string").str.strip()
    if kind in ("ts", "d8"):
        fmt = "%Y%m%d%H%M%S" if kind == "ts" else "%Y%m%d"
        width = 14 if kind == "ts" else 8
        ok_shape = text.str.fullmatch(r"\d{" + str(width) + "}").fillna(False)
        parsed = pd.to_datetime(text.where(ok_shape), format=fmt, errors="coerce")
        out = parsed.astype("datetime64[us]")
        bad = ~blank & out.isna()
        return out, bad
    num = pd.to_numeric(text, errors="coerce")
    bad = ~blank & num.isna()
    if kind == "f64":
        return num.astype("Float64"), bad
    frac = num.notna() & (num != np.floor(num.fillna(0)))
    limit = 32767 if kind == "i16" else 2**62
    too_big = num.notna() & (num.abs() > limit)
    bad = bad | frac | too_big
    num = num.where(~(frac | too_big))
    return num.astype("Int16" if kind == "i16" else "Int64"), bad


# Fast paths for the common, clean case. Each returns None as soon as a value falls outside what
# it handles exactly (leading/trailing blanks, non-ASCII digits, odd types, out-of-range fields),
# and the column is then parsed by :func:`_parse`, so the results are the same either way.
_DIGITS_TS = 14
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def string_array(values: list[str | None]) -> pd.Series:
    return pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([pa.array(values, pa.large_string())])))


def _fast_str(values: list[Any]) -> tuple[pd.Series, pd.Series] | None:
    out: list[str | None] = []
    append = out.append
    for v in values:
        if v is None:
            append(None)
        elif type(v) is str:
            if not v:
                append(None)
            elif v[0].isspace() or v[-1].isspace():
                return None
            else:
                append(v)
        else:
            return None
    return string_array(out), pd.Series(np.zeros(len(values), dtype=bool))


def _fast_ts(values: list[Any]) -> tuple[pd.Series, pd.Series] | None:
    n = len(values)
    pos: list[int] = []
    texts: list[str] = []
    for i, v in enumerate(values):
        if v is None or v == "":
            continue
        if type(v) is not str or len(v) != _DIGITS_TS:
            return None
        pos.append(i)
        texts.append(v)
    out = np.full(n, np.datetime64("NaT"), dtype="datetime64[us]")
    if texts:
        buf = "".join(texts).encode("utf-8")
        if len(buf) != _DIGITS_TS * len(texts):
            return None  # non-ASCII characters
        d = (np.frombuffer(buf, dtype=np.uint8).reshape(-1, _DIGITS_TS) - 48).astype(np.int64)
        if (d > 9).any() or (d < 0).any():
            return None
        y = d[:, 0] * 1000 + d[:, 1] * 100 + d[:, 2] * 10 + d[:, 3]
        mo = d[:, 4] * 10 + d[:, 5]
        dd = d[:, 6] * 10 + d[:, 7]
        hh = d[:, 8] * 10 + d[:, 9]
        mi = d[:, 10] * 10 + d[:, 11]
        ss = d[:, 12] * 10 + d[:, 13]
        if ((mo < 1) | (mo > 12) | (hh > 23) | (mi > 59) | (ss > 59) | (dd < 1) | (y < 1900) | (y > 2200)).any():
            return None
        leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
        dim = _DAYS_IN_MONTH[mo - 1] + ((mo == 2) & leap)
        if (dd > dim).any():
            return None
        months = ((y - 1970) * 12 + (mo - 1)).astype("datetime64[M]")
        days = months.astype("datetime64[D]") + (dd - 1).astype("timedelta64[D]")
        secs = hh * 3600 + mi * 60 + ss
        out[np.asarray(pos, dtype=np.int64)] = days.astype("datetime64[us]") + (secs * 1_000_000).astype(
            "timedelta64[us]")
    return pd.Series(out), pd.Series(np.zeros(n, dtype=bool))


def _fast_int(values: list[Any], kind: str) -> tuple[pd.Series, pd.Series] | None:
    limit = 32767 if kind == "i16" else 2**62
    out: list[int | None] = []
    append = out.append
    for v in values:
        t = type(v)
        if t is int:
            if -limit <= v <= limit:
                append(v)
                continue
            return None
        if v is None or (t is str and not v):
            append(None)
        elif t is str and v.isascii() and v.isdigit():
            x = int(v)
            if x > limit:
                return None
            append(x)
        else:
            return None
    return pd.Series(pd.array(out, dtype="Int16" if kind == "i16" else "Int64")), pd.Series(
        np.zeros(len(values), dtype=bool))

def parse_column(values: list[Any], kind: str) -> tuple[pd.Series, pd.Series]:
    fast = None
    if kind == "str":
        fast = _fast_str(values)
    elif kind == "ts":
        fast = _fast_ts(values)
    elif kind in ("i16", "i64"):
        fast = _fast_int(values, kind)
    return fast if fast is not None else _parse(values, kind)
