"""The fields of each entity and how a column of raw values becomes a typed column.

:data:`FIELDS` maps every API field the normaliser keeps to its ``core.<entity>`` column and its
kind; :func:`parse_column` types one column of values by its kind. A value present but not of its
kind is marked in the returned mask (the normaliser reports it as a parse issue), never turned
into a silent null. Plain, pure functions (no I/O).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int32)


_STR_OR_NONE = frozenset((str, type(None)))
_INT_STR_OR_NONE = frozenset((int, str, type(None)))


def string_array(values: Sequence[str | None]) -> pd.Series:
    return pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([pa.array(values, pa.large_string())])))


def _fast_str(values: Sequence[Any]) -> tuple[pd.Series, pd.Series] | None:
    """Only str and None, none with leading/trailing blanks: the Arrow column straight from the
    values (empty strings become nulls); None otherwise."""
    if not set(map(type, values)) <= _STR_OR_NONE:
        return None
    present = list(filter(None, values))  # neither None nor ""
    if list(map(str.strip, present)) != present:  # str.strip drops what str.isspace() calls blank
        return None
    arr = pa.array(values, pa.large_string())
    if len(present) + values.count(None) != len(values):  # empty strings: null
        arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.large_string()), arr)
    return pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([arr]))), pd.Series(
        np.zeros(len(values), dtype=bool))


def _fast_ts(values: Sequence[Any]) -> tuple[pd.Series, pd.Series] | None:
    """Only str and None, every non-empty string 14 ASCII digits of a valid time: read from the
    bytes of the Arrow column of the values; None otherwise."""
    n = len(values)
    if not set(map(type, values)) <= _STR_OR_NONE:
        return None
    if not n:
        return pd.Series(np.array([], dtype="datetime64[us]")), pd.Series(np.zeros(0, dtype=bool))
    try:
        arr = pa.array(values, pa.string())
    except (UnicodeEncodeError, pa.ArrowException):
        return None
    if not isinstance(arr, pa.StringArray) or arr.offset:
        return None
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=n + 1)
    lengths = np.diff(offsets)  # bytes; 0 for None and ""
    present = lengths != 0
    out = np.full(n, np.datetime64("NaT"), dtype="datetime64[us]")
    if present.any():
        if (lengths[present] != _DIGITS_TS).any():
            return None
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8, count=int(offsets[-1]))[int(offsets[0]):]
        stamps = _ts_from_digits(data)
        if stamps is None:
            return None
        out[present] = stamps
    return pd.Series(out), pd.Series(np.zeros(n, dtype=bool))


def _ts_from_digits(data: np.ndarray) -> np.ndarray | None:
    """``datetime64[us]`` of consecutive 14-byte ``yyyyMMddHHmmss`` texts (uint8 bytes); None when
    a byte is not an ASCII digit or a field is out of range (year 1900..2200, a real date)."""
    u = data - np.uint8(48)  # wraps around below "0": any byte not a digit is then above 9
    if (u > 9).any():
        return None
    d = u.reshape(-1, _DIGITS_TS).T.astype(np.int32)  # one contiguous row per digit position
    y = d[0] * 1000 + d[1] * 100 + d[2] * 10 + d[3]
    mo = d[4] * 10 + d[5]
    dd = d[6] * 10 + d[7]
    hh = d[8] * 10 + d[9]
    mi = d[10] * 10 + d[11]
    ss = d[12] * 10 + d[13]
    if ((mo < 1) | (mo > 12) | (hh > 23) | (mi > 59) | (ss > 59) | (dd < 1) | (y < 1900) | (y > 2200)).any():
        return None
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    if (dd > _DAYS_IN_MONTH[mo - 1] + ((mo == 2) & leap)).any():
        return None
    # days since 1970-01-01 of the civil date (H. Hinnant's days_from_civil: years start in March)
    jan_feb = mo <= 2
    yy = (y - jan_feb).astype(np.int64)
    era = yy // 400
    yoe = yy - era * 400
    doy = (153 * (mo + np.where(jan_feb, 9, -3)) + 2) // 5 + dd - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    return ((days * 86400 + (hh * 3600 + mi * 60 + ss)) * 1_000_000).view("datetime64[us]")


def _fast_int(values: Sequence[Any], kind: str) -> tuple[pd.Series, pd.Series] | None:
    """Only int, str and None: ints and strings of ASCII digits within the kind's limit, empty
    strings (null); None otherwise. Each distinct value is typed once."""
    if not set(map(type, values)) <= _INT_STR_OR_NONE:  # no bool or float, equal to an int
        return None
    limit = 32767 if kind == "i16" else 2**62
    typed: dict[Any, int | None] = {}
    for v in set(values):
        if type(v) is int:
            if not -limit <= v <= limit:
                return None
            typed[v] = v
        elif v is None or not v:
            typed[v] = None
        elif v.isascii() and v.isdigit():
            try:
                x = int(v)
            except ValueError:  # beyond int()'s digit limit (and so beyond the kind's)
                return None
            if x > limit:
                return None
            typed[v] = x
        else:
            return None
    arr = pa.array(list(map(typed.__getitem__, values)), pa.int64())
    data = pc.fill_null(arr, 1).to_numpy().astype(np.int16 if kind == "i16" else np.int64)
    mask = arr.is_null().to_numpy(zero_copy_only=False)
    return pd.Series(pd.arrays.IntegerArray(data, mask)), pd.Series(np.zeros(len(values), dtype=bool))


def parse_column(values: Sequence[Any], kind: str) -> tuple[pd.Series, pd.Series]:
    fast = None
    if kind == "str":
        fast = _fast_str(values)
    elif kind == "ts":
        fast = _fast_ts(values)
    elif kind in ("i16", "i64"):
        fast = _fast_int(values, kind)
    return fast if fast is not None else _parse(values, kind)
