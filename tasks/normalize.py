"""API-shaped records -> typed frames shaped like the warehouse tables.

Plain, pure functions (no I/O). One entry point, :func:`normalize`, used for API pages and for
parsed Excel/CSV files alike, so both paths give the same cleaned rows.

What it does, per batch of records of one entity:

- parses every field by its declared kind (timestamps ``yyyyMMddHHmmss``, integers that may be
  numeric strings, ``yyyyMMdd`` dates); a value that is present but unparseable becomes a
  **critical parse issue** for that row (rule ``parse_<field>``), never a silent null;
- drops older duplicates of a key within the batch (latest ``NgayCapNhat`` wins, ties: last seen);
- derives the dossier flags from the nested lists (reuse, digitised and national-store documents,
  electronic result, supplements, fees); a file record without the lists keeps them null
  (unknown), never false; the supplement rounds of the kept version of each dossier become
  :attr:`Normalized.supplements` (``core.dossier_supplements``);
- replaces personal data: ``SoGiayToChuHoSo`` becomes ``applicant_key`` (HMAC-SHA256 with the
  configured key); ``ChuHoSo`` and ``SoDienThoai`` never reach the core frame;
- builds the raw frame (canonical JSON of each record as read, with its hash).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from tasks.settings import hash_key_id

ENTITIES = ("dossiers", "payments", "procedures", "units")

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

#: API key field(s) per entity, and the core columns they become.
KEYS: dict[str, tuple[str, ...]] = {
    "dossiers": ("MaHoSo",),
    "payments": ("Ma",),
    "procedures": ("MaTTHC",),
    "units": ("MaDonVi", "HieuLucTu"),
}
CORE_KEYS: dict[str, tuple[str, ...]] = {
    "dossiers": ("ma_ho_so",),
    "payments": ("ma",),
    "procedures": ("ma_tthc",),
    "units": ("ma_don_vi", "hieu_luc_tu"),
}
#: Fields that must be present for a row to exist at all (critical when missing).
REQUIRED: dict[str, tuple[str, ...]] = {
    "dossiers": ("MaHoSo", "TrangThaiHoSo", "NgayCapNhat"),
    "payments": ("Ma", "MaHoSo", "TrangThai", "NgayCapNhat"),
    "procedures": ("MaTTHC",),
    "units": ("MaDonVi", "HieuLucTu"),
}
PERSONAL_FIELDS = ("ChuHoSo", "SoGiayToChuHoSo", "SoDienThoai")

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
#: core.dossier_supplements columns of :attr:`Normalized.supplements` (without source/_run_id), and
#: the API field of each round timestamp (DanhSachHoSoBoSung[]).
SUPPLEMENT_ROUND_FIELDS: list[tuple[str, str]] = [
    ("ngay_bo_sung", "NgayBoSung"),
    ("ngay_tiep_nhan_bo_sung", "NgayTiepNhanBoSung"),
    ("ngay_hen_tra_truoc", "NgayHenTraTruoc"),
    ("ngay_hen_tra_moi", "NgayHenTraMoi"),
]
SUPPLEMENT_COLUMNS = ["ma_ho_so", "ngay_cap_nhat", "lan", *(c for c, _ in SUPPLEMENT_ROUND_FIELDS)]
PROCEDURE_DERIVED = ["cap_thuc_hien"]

ISSUE_COLUMNS = ["record_key", "rule", "severity", "detail"]


@dataclass
class Normalized:
    """The result of normalising one batch of one entity."""

    entity: str
    core: pd.DataFrame  # one row per key (latest version), core.<entity> columns without lineage
    raw: pd.DataFrame  # one row per distinct record read: record_key, record_hash, ngay_cap_nhat, record
    issues: pd.DataFrame  # parse issues: record_key, rule, severity, detail
    rows_received: int = 0
    rows_duplicate: int = 0
    #: record_key -> canonical JSON text of the kept version (a read-only mapping)
    raw_by_key: Mapping[str, str] = field(default_factory=dict)
    #: dossiers only: every well-formed version read (before dedupe): ma_ho_so, ngay_cap_nhat, trang_thai
    versions: pd.DataFrame | None = None
    #: dossiers only: one row per supplement round (DanhSachHoSoBoSung) of the kept version of each
    #: key: :data:`SUPPLEMENT_COLUMNS` (``lan`` = 1-based position in the list). No rows for a record
    #: without the list (a file export); rows of quarantined keys included (the loader drops them).
    supplements: pd.DataFrame | None = None

    @property
    def rows_read(self) -> int:
        return self.rows_received - self.rows_duplicate


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


def _string_array(values: list[str | None]) -> pd.Series:
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
    return _string_array(out), pd.Series(np.zeros(len(values), dtype=bool))


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


def _parse_column(values: list[Any], kind: str) -> tuple[pd.Series, pd.Series]:
    fast = None
    if kind == "str":
        fast = _fast_str(values)
    elif kind == "ts":
        fast = _fast_ts(values)
    elif kind in ("i16", "i64"):
        fast = _fast_int(values, kind)
    return fast if fast is not None else _parse(values, kind)


def _key_series(entity: str, core: pd.DataFrame) -> pd.Series:
    cols = CORE_KEYS[entity]
    if entity == "units":
        tu = core["hieu_luc_tu"].dt.strftime("%Y%m%d")
        return (core["ma_don_vi"].fillna("") + "|" + tu.fillna("")).astype("string")
    return core[cols[0]].astype("string")


# ----------------------------------------------------------------------------------------------
# nested lists of a dossier
# ----------------------------------------------------------------------------------------------
def _as_list(value: Any) -> list | None:
    if value is None:
        return None
    if isinstance(value, list):
        return value
    raise TypeError(f"expected a list, got {type(value).__name__}")


def _flag(value: Any) -> int | None:
    if value is None or value == "":
        return None
    v = int(value)
    if v not in (0, 1):
        raise ValueError(f"flag {v!r} not 0/1")
    return v


#: Number of values :func:`_dossier_lists` returns: the derived columns (DOSSIER_DERIVED without
#: applicant_key, in that order) and the supplement rounds (the list itself, or None).
_N_LIST_VALUES = 14
#: The pandas dtype of each derived column :func:`_dossier_lists` returns, in its order.
_LIST_DTYPES: dict[str, str] = {
    "n_tai_lieu": "Int32", "n_tai_lieu_tai_su_dung": "Int32", "has_reuse": "boolean", "n_ket_qua": "Int32",
    "has_e_result": "boolean", "n_bo_sung": "Int32", "tong_le_phi_khai": "Int64", "n_tai_lieu_so_hoa": "Int32",
    "has_digitised": "boolean", "n_tai_lieu_kho_dmqg": "Int32", "has_from_national_store": "boolean",
    "n_le_phi": "Int32", "n_le_phi_co_gia": "Int32",
}


def _dossier_lists(rec: dict) -> tuple[Any, ...]:
    """(n_tai_lieu, n_reused, has_reuse, n_ket_qua, has_e_result, n_bo_sung, fee_total,
    n_digitised, has_digitised, n_national_store, has_from_national_store, n_fees, n_fees_priced,
    rounds) of one record (``rounds``: the DanhSachHoSoBoSung list of objects, or None); raises
    ValueError/TypeError on malformed lists. A list absent gives None (unknown), never 0/False."""
    docs = _as_list(rec.get("TaiLieuNop")) if "TaiLieuNop" in rec else None
    results = _as_list(rec.get("DanhSachGiayToKetQua")) if "DanhSachGiayToKetQua" in rec else None
    sups = _as_list(rec.get("DanhSachHoSoBoSung")) if "DanhSachHoSoBoSung" in rec else None
    fees = _as_list(rec.get("DanhSachLePhi")) if "DanhSachLePhi" in rec else None
    n_digitised = n_store = None
    has_digitised: bool | None = None
    has_store: bool | None = None
    if docs is not None:
        n_docs = len(docs)
        n_reused = sum(1 for d in docs if _flag(d.get("DuocTaiSuDung")) == 1)
        has_reuse: bool | None = n_reused > 0
        n_digitised = sum(1 for d in docs if _flag(d.get("DuocSoHoa")) == 1)
        has_digitised = n_digitised > 0
        n_store = sum(1 for d in docs if _flag(d.get("DuocLayTuKhoDMQG")) == 1)
        has_store = n_store > 0
    else:
        n_docs = n_reused = None
        f = _flag(rec.get("_TaiSuDungDuLieu"))
        has_reuse = None if f is None else bool(f)
    if results is not None:
        n_res = len(results)
        has_e = any(str(r.get("DuongDanTepTinKetQua") or "").strip() for r in results)
    else:
        n_res = None
        f = _flag(rec.get("_CoKetQuaDienTu"))
        has_e = None if f is None else bool(f)
    if sups is not None:
        n_sup = len(sups)
        for k, s in enumerate(sups, 1):
            if not isinstance(s, dict):
                raise TypeError(f"DanhSachHoSoBoSung[{k}] is a {type(s).__name__}, not an object")
    else:
        n_sup = None
    if fees is not None:
        prices = [int(f.get("Gia") or 0) for f in fees]
        fee_total: int | None = sum(prices)
        n_fees: int | None = len(prices)
        n_priced: int | None = sum(1 for g in prices if g > 0)
    else:
        fee_total = n_fees = n_priced = None
    return (n_docs, n_reused, has_reuse, n_res, has_e, n_sup, fee_total,
            n_digitised, has_digitised, n_store, has_store, n_fees, n_priced, sups)


def _dossier_lists_fast(rec: dict) -> tuple[Any, ...] | None:
    """:func:`_dossier_lists` for well-formed records (lists of dicts, int flags, int fees,
    string links); None when anything is unusual (then :func:`_dossier_lists` decides)."""
    docs = rec.get("TaiLieuNop")
    results = rec.get("DanhSachGiayToKetQua")
    fees = rec.get("DanhSachLePhi")
    sups = rec.get("DanhSachHoSoBoSung")
    if type(docs) is not list or type(results) is not list or type(fees) is not list or type(sups) is not list:
        return None
    n_reused = n_digitised = n_store = 0
    for d in docs:
        if type(d) is not dict:
            return None
        f = d.get("DuocTaiSuDung")
        if f is not None:
            if type(f) is not int or (f != 0 and f != 1):
                return None
            n_reused += f
        f = d.get("DuocSoHoa")
        if f is not None:
            if type(f) is not int or (f != 0 and f != 1):
                return None
            n_digitised += f
        f = d.get("DuocLayTuKhoDMQG")
        if f is not None:
            if type(f) is not int or (f != 0 and f != 1):
                return None
            n_store += f
    has_e = False
    for r in results:
        if type(r) is not dict:
            return None
        link = r.get("DuongDanTepTinKetQua")
        if link is None:
            continue
        if type(link) is not str:
            return None
        if link and not has_e and link.strip():
            has_e = True
    fee_total = 0
    n_priced = 0
    for f in fees:
        if type(f) is not dict:
            return None
        g = f.get("Gia")
        if g is None:
            continue
        if type(g) is not int:
            return None
        fee_total += g
        if g > 0:
            n_priced += 1
    for s in sups:
        if type(s) is not dict:
            return None
    return (len(docs), n_reused, n_reused > 0, len(results), has_e, len(sups), fee_total,
            n_digitised, n_digitised > 0, n_store, n_store > 0, len(fees), n_priced, sups)


def applicant_key(id_number: Any, key: bytes) -> str | None:
    """Keyed hash of an applicant ID number (spaces removed); None when there is no ID."""
    if id_number is None:
        return None
    text = "".join(str(id_number).split())
    if not text:
        return None
    return hmac.digest(key, text.encode("utf-8"), "sha256").hex()


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------
class RecordTexts(Mapping[str, str]):
    """record_key -> canonical JSON text, read from the batch's Arrow column on demand (only the
    quarantined rows' texts are ever needed; a dict of 50k Python strings is ~100 MB)."""

    def __init__(self, positions: dict[str, int], texts: pa.ChunkedArray) -> None:
        self._pos, self._texts = positions, texts

    def __getitem__(self, key: str) -> str:
        return self._texts[self._pos[key]].as_py()

    def __iter__(self) -> Iterator[str]:
        return iter(self._pos)

    def __len__(self) -> int:
        return len(self._pos)


_TEXT_BLOCK = 512  # records per block: ~17 MB of orjson buffers at once (4096: ~135 MB)


def _record_texts(records: Sequence[dict]) -> tuple[pa.ChunkedArray, list[str]]:
    """Canonical JSON of every record as one Arrow string column, and the SHA-256 of each. Built
    block by block: orjson's output buffers are ~16 KB each whatever the record's size, so a
    batch's worth of them held at once would be ~0.8 GB per 50k records (measured with tracemalloc:
    a block of 4096 dossiers peaks at ~135 MB)."""
    sha = hashlib.sha256
    chunks: list[pa.Array] = []
    hashes: list[str] = []
    for a in range(0, len(records), _TEXT_BLOCK):
        block = [canonical_json(r) for r in records[a : a + _TEXT_BLOCK]]
        hashes.extend([sha(j).hexdigest() for j in block])
        chunks.append(pa.array(block, pa.large_binary()).cast(pa.large_string()))
    return pa.chunked_array(chunks, pa.large_string()), hashes


def canonical_json(rec: dict) -> bytes:
    try:
        return orjson.dumps(rec, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    except TypeError:  # an integer beyond 64 bits (valid JSON, orjson refuses it): keep its digits as text
        return orjson.dumps(_wide_ints_as_text(rec), option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)


def _wide_ints_as_text(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, dict):
        return {k: _wide_ints_as_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wide_ints_as_text(v) for v in value]
    return value


def _issues(keys: pd.Series, mask: pd.Series, rule: str, detail: pd.Series | str) -> pd.DataFrame:
    idx = mask[mask].index
    if len(idx) == 0:
        return pd.DataFrame(columns=[*ISSUE_COLUMNS, "_pos"])
    det = detail[idx].values if isinstance(detail, pd.Series) else detail
    return pd.DataFrame(
        {"record_key": keys[idx].values, "rule": rule, "severity": "critical", "detail": det, "_pos": idx}
    )


def normalize(entity: str, records: Sequence[dict], *, hash_key: bytes) -> Normalized:
    """Normalise one batch of records of ``entity``. See the module docstring."""
    if entity not in FIELDS:
        raise ValueError(f"unknown entity {entity!r}; expected one of {', '.join(ENTITIES)}")
    records = [r if isinstance(r, dict) else {"_not_an_object": r} for r in records]
    n = len(records)
    spec = FIELDS[entity]
    cols: dict[str, pd.Series] = {}
    bad: dict[str, pd.Series] = {}
    values: dict[str, list[Any]] = {}
    for col, api, kind in spec:
        values[api] = vals = [r.get(api) for r in records]
        cols[col], bad[col] = _parse_column(vals, kind)
    core = pd.DataFrame(cols)
    core.index = pd.RangeIndex(n)

    texts, hashes = _record_texts(records)
    keys = _key_series(entity, core)
    missing_key = keys.isna() | keys.eq("") | keys.str.startswith("|") | keys.str.endswith("|")
    if missing_key.any():
        # a record without its key is named by its content: the same record read again (next
        # night, at another position) has the same name, so its quarantine row is not repeated
        keys = keys.where(~missing_key, pd.Series([f"#{h[:16]}" for h in hashes], dtype="string"))
    issue_frames: list[pd.DataFrame] = []
    for col, api, kind in spec:
        if bad[col].any():
            raw_vals = pd.Series([repr(r.get(api))[:80] for r in records])
            issue_frames.append(
                _issues(keys, bad[col], f"parse_{col}", f"{api} = " + raw_vals + f" is not a valid {kind}")
            )
    api_to_col = {api: col for col, api, _ in spec}
    for api in REQUIRED[entity]:
        col = api_to_col[api]
        missing = core[col].isna() & ~bad[col]
        if missing.any():
            issue_frames.append(_issues(keys, missing, f"required_{col}", f"{api} is missing"))

    rounds: pd.DataFrame | None = None
    if entity == "dossiers":
        hk = _applicant_keys([r.get("SoGiayToChuHoSo") for r in records], hash_key)
        derived: list[tuple] = []
        list_bad = np.zeros(n, dtype=bool)
        list_detail: list[str] = [""] * n
        for i, r in enumerate(records):
            fast = _dossier_lists_fast(r)
            if fast is not None:
                derived.append(fast)
                continue
            try:
                derived.append(_dossier_lists(r))
            except (TypeError, ValueError, AttributeError) as exc:
                derived.append((None,) * _N_LIST_VALUES)
                list_bad[i] = True
                list_detail[i] = f"malformed nested list: {exc}"[:200]
        d = list(zip(*derived, strict=True)) if derived else [[] for _ in range(_N_LIST_VALUES)]
        core["applicant_key"] = _string_array(hk)
        for values, (col, dtype) in zip(d, _LIST_DTYPES.items(), strict=False):  # d's last: the rounds
            core[col] = pd.array(values, dtype=dtype)
        # beside each hash, the id of its key: a key rotation shows, and rows left to re-hash can be found
        key_id = hash_key_id(hash_key)
        core["applicant_key_id"] = _string_array([None if h is None else key_id for h in hk])
        rounds = _supplement_rounds(d[13], list_bad, list_detail)
        if list_bad.any():
            mask = pd.Series(list_bad)
            issue_frames.append(_issues(keys, mask, "parse_nested_lists", pd.Series(list_detail)))
    elif entity == "procedures":
        core["cap_thuc_hien"] = pd.Series([_levels(r.get("CapThucHien")) for r in records], dtype="string")

    issues = (
        pd.concat(issue_frames, ignore_index=True)
        if issue_frames
        else pd.DataFrame(columns=[*ISSUE_COLUMNS, "_pos"])
    )

    # raw: every distinct record read (parse failures included: raw is "as extracted")
    upd = values["NgayCapNhat"] if "NgayCapNhat" in values else [r.get("NgayCapNhat") for r in records]
    raw = pd.DataFrame(
        {
            "record_key": keys.values,
            "record_hash": hashes,
            "ngay_cap_nhat": _string_array([v if v is None or type(v) is str else _text(v) for v in upd]),
            "record": pd.Series(pd.arrays.ArrowStringArray(texts)),
        }
    )

    # latest version per key wins; ties: the last one read
    core["_record_key"] = keys.values
    core["_order"] = np.arange(n)
    order = core.sort_values(["ngay_cap_nhat", "_order"] if "ngay_cap_nhat" in core else ["_order"],
                             na_position="first", kind="stable")
    versions = None
    if entity == "dossiers":
        clean = ~core["_order"].isin(set(issues["_pos"])) & core["ngay_cap_nhat"].notna() & core["trang_thai"].notna()
        versions = (
            core.loc[clean, ["ma_ho_so", "ngay_cap_nhat", "trang_thai"]]
            .drop_duplicates(["ma_ho_so", "ngay_cap_nhat"], keep="last")
            .reset_index(drop=True)
        )
    dup = order.duplicated("_record_key", keep="last")
    kept = order[~dup].sort_values("_order")
    supplements = _kept_rounds(rounds, core, kept["_order"]) if rounds is not None else None
    ties = _conflicting_ties(entity, keys, core, raw["record_hash"])
    raw = raw.drop_duplicates(["record_key", "record_hash"]).reset_index(drop=True)
    raw_by_key = RecordTexts(dict(zip(kept["_record_key"], kept["_order"].tolist(), strict=True)), texts)
    # issues only for the kept version of each key (an older, broken copy is superseded)
    issues = issues[issues["_pos"].isin(set(kept["_order"]))].drop(columns="_pos").reset_index(drop=True)
    if len(ties):
        issues = pd.concat([issues, ties], ignore_index=True)
    core = kept.drop(columns=["_order"]).rename(columns={"_record_key": "record_key"})
    core = core.reset_index(drop=True)
    return Normalized(entity, core, raw, issues, rows_received=n, rows_duplicate=int(dup.sum()), raw_by_key=raw_by_key,
                      versions=versions, supplements=supplements)


def _supplement_rounds(lists: Sequence[list | None], list_bad: np.ndarray, list_detail: list[str]) -> pd.DataFrame:
    """Every supplement round of every record read: ``_pos`` (the record's position), ``lan`` and
    the round timestamps, parsed column by column like the record's own ``ts`` fields. A record
    with a round timestamp present but unparseable is marked in ``list_bad`` / ``list_detail``
    (the ``parse_nested_lists`` issue)."""
    pos: list[int] = []
    lan: list[int] = []
    vals: list[list[Any]] = [[] for _ in SUPPLEMENT_ROUND_FIELDS]
    apis = [api for _, api in SUPPLEMENT_ROUND_FIELDS]
    for i, sups in enumerate(lists):
        if not sups:
            continue
        for k, s in enumerate(sups, 1):
            pos.append(i)
            lan.append(k)
            for j, api in enumerate(apis):
                vals[j].append(s.get(api))
    frame = pd.DataFrame({"_pos": np.asarray(pos, dtype=np.int64), "lan": pd.array(lan, dtype="Int32")})
    for (col, api), values in zip(SUPPLEMENT_ROUND_FIELDS, vals, strict=True):
        parsed, bad = _parse_column(values, "ts")
        frame[col] = parsed.astype("datetime64[us]").to_numpy()
        if bad.any():
            for at in np.flatnonzero(bad.to_numpy()):
                i = pos[at]
                if not list_bad[i]:
                    list_bad[i] = True
                    list_detail[i] = (f"malformed nested list: DanhSachHoSoBoSung[{lan[at]}].{api} = "
                                      f"{values[at]!r:.80} is not a valid ts")[:200]
    return frame


def _kept_rounds(rounds: pd.DataFrame, core: pd.DataFrame, kept_pos: pd.Series) -> pd.DataFrame:
    """The rounds of the kept version of each key, with its ma_ho_so and ngay_cap_nhat; rounds of a
    record without either (quarantined anyway) are left out."""
    r = rounds[rounds["_pos"].isin(kept_pos.to_numpy())]
    at = r["_pos"].to_numpy()
    out = pd.DataFrame({
        "ma_ho_so": core["ma_ho_so"].take(at).reset_index(drop=True),
        "ngay_cap_nhat": core["ngay_cap_nhat"].take(at).reset_index(drop=True),
        "lan": r["lan"].reset_index(drop=True),
    })
    for col, _ in SUPPLEMENT_ROUND_FIELDS:
        out[col] = r[col].reset_index(drop=True)
    out = out[out["ma_ho_so"].notna() & out["ngay_cap_nhat"].notna()]
    return out[SUPPLEMENT_COLUMNS].reset_index(drop=True)


#: The suite rule (expectations/<entity>.json) broken by a key that arrives twice in one batch with
#: the same NgayCapNhat (catalogues: with none) and different content.
KEY_UNIQUE_RULES = {"dossiers": "dossier_key_unique", "payments": "payment_key_unique",
                    "procedures": "procedure_key_unique", "units": "unit_key_unique"}


def _conflicting_ties(entity: str, keys: pd.Series, core: pd.DataFrame, hashes: pd.Series) -> pd.DataFrame:
    """Critical issues for the keys whose latest version is tied with a different record: the batch
    cannot tell which one is current, so the row is quarantined instead of the last one winning."""
    multi = keys.duplicated(keep=False).to_numpy()  # only keys read more than once can conflict
    if not multi.any():
        return pd.DataFrame(columns=ISSUE_COLUMNS)
    stamp = core["ngay_cap_nhat"][multi].astype("string").fillna("").values if "ngay_cap_nhat" in core else ""
    g = pd.DataFrame({"k": keys[multi].values, "t": stamp, "h": hashes[multi].values})
    top = g[g["t"] == g.groupby("k")["t"].transform("max")]
    versions = top.groupby("k")["h"].nunique()
    bad = versions[versions > 1]
    key_fields = "/".join(KEYS[entity])
    same = " with the same NgayCapNhat" if "ngay_cap_nhat" in core else ""
    return pd.DataFrame({
        "record_key": pd.Series(bad.index, dtype="string"), "rule": KEY_UNIQUE_RULES[entity], "severity": "critical",
        "detail": [f"{key_fields} = {k} arrived {n} times{same} and with different content: "
                   "which one is current cannot be told" for k, n in bad.items()],
    }, columns=ISSUE_COLUMNS)


def _applicant_keys(ids: list[Any], key: bytes) -> list[str | None]:
    digest = hmac.digest
    out: list[str | None] = []
    append = out.append
    for v in ids:
        if type(v) is str and v and v.isalnum() and v.isascii():
            append(digest(key, v.encode(), "sha256").hex())
        else:
            append(applicant_key(v, key))
    return out


def _levels(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return str(value)


def now_local() -> datetime:
    """Current local wall time (Asia/Ho_Chi_Minh), naive, to the second."""
    from zoneinfo import ZoneInfo

    return datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).replace(tzinfo=None, microsecond=0)
