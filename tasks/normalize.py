"""API-shaped records -> typed frames shaped like the warehouse tables.

Plain, pure functions (no I/O). One entry point, :func:`normalize`, used for API pages and for
parsed Excel/CSV files alike, so both paths give the same cleaned rows.

What it does, per batch of records of one entity:

- parses every field by its declared kind (timestamps ``yyyyMMddHHmmss``, integers that may be
  numeric strings, ``yyyyMMdd`` dates); a value that is present but unparseable becomes a
  **critical parse issue** for that row (rule ``parse_<field>``), never a silent null;
- drops older duplicates of a key within the batch (latest ``NgayCapNhat`` wins, ties: last seen);
- derives the dossier flags from the nested lists (reuse, electronic result, supplements, fees);
  a file record without the lists keeps them null (unknown), never false;
- replaces personal data: ``SoGiayToChuHoSo`` becomes ``applicant_key`` (HMAC-SHA256 with the
  configured key); ``ChuHoSo`` and ``SoDienThoai`` never reach the core frame;
- builds the raw frame (canonical JSON of each record as read, with its hash).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd

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
]
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
    raw_by_key: dict[str, str] = field(default_factory=dict)  # record_key -> JSON of the kept version
    #: dossiers only: every well-formed version read (before dedupe): ma_ho_so, ngay_cap_nhat, trang_thai
    versions: pd.DataFrame | None = None

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


def _dossier_lists(rec: dict) -> tuple[Any, ...]:
    """(n_tai_lieu, n_reused, has_reuse, n_ket_qua, has_e_result, n_bo_sung, fee_total) of one
    record; raises ValueError/TypeError on malformed lists."""
    docs = _as_list(rec.get("TaiLieuNop")) if "TaiLieuNop" in rec else None
    results = _as_list(rec.get("DanhSachGiayToKetQua")) if "DanhSachGiayToKetQua" in rec else None
    sups = _as_list(rec.get("DanhSachHoSoBoSung")) if "DanhSachHoSoBoSung" in rec else None
    fees = _as_list(rec.get("DanhSachLePhi")) if "DanhSachLePhi" in rec else None
    if docs is not None:
        n_docs = len(docs)
        n_reused = sum(1 for d in docs if _flag(d.get("DuocTaiSuDung")) == 1)
        has_reuse: bool | None = n_reused > 0
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
    n_sup = len(sups) if sups is not None else None
    fee_total = sum(int(f.get("Gia") or 0) for f in fees) if fees is not None else None
    return n_docs, n_reused, has_reuse, n_res, has_e, n_sup, fee_total


def applicant_key(id_number: Any, key: bytes) -> str | None:
    """Keyed hash of an applicant ID number (spaces removed); None when there is no ID."""
    if id_number is None:
        return None
    text = "".join(str(id_number).split())
    if not text:
        return None
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------
def canonical_json(rec: dict) -> bytes:
    return orjson.dumps(rec, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)


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
    for col, api, kind in spec:
        cols[col], bad[col] = _parse([r.get(api) for r in records], kind)
    core = pd.DataFrame(cols)
    core.index = pd.RangeIndex(n)

    keys = _key_series(entity, core)
    missing_key = keys.isna() | keys.eq("") | keys.str.startswith("|") | keys.str.endswith("|")
    keys = keys.where(~missing_key, pd.Series([f"#{i}" for i in range(n)], dtype="string"))

    jsons = [canonical_json(r) for r in records]
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

    if entity == "dossiers":
        hk = [applicant_key(r.get("SoGiayToChuHoSo"), hash_key) for r in records]
        derived: list[tuple] = []
        list_bad = np.zeros(n, dtype=bool)
        list_detail: list[str] = [""] * n
        for i, r in enumerate(records):
            try:
                derived.append(_dossier_lists(r))
            except (TypeError, ValueError, AttributeError) as exc:
                derived.append((None,) * 7)
                list_bad[i] = True
                list_detail[i] = f"malformed nested list: {exc}"[:200]
        d = list(zip(*derived, strict=True)) if derived else [[] for _ in range(7)]
        core["applicant_key"] = pd.Series(hk, dtype="string")
        core["n_tai_lieu"] = pd.array(d[0], dtype="Int32")
        core["n_tai_lieu_tai_su_dung"] = pd.array(d[1], dtype="Int32")
        core["has_reuse"] = pd.array(d[2], dtype="boolean")
        core["n_ket_qua"] = pd.array(d[3], dtype="Int32")
        core["has_e_result"] = pd.array(d[4], dtype="boolean")
        core["n_bo_sung"] = pd.array(d[5], dtype="Int32")
        core["tong_le_phi_khai"] = pd.array(d[6], dtype="Int64")
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
    raw = pd.DataFrame(
        {
            "record_key": keys.values,
            "record_hash": [hashlib.sha256(j).hexdigest() for j in jsons],
            "ngay_cap_nhat": pd.Series([_text(r.get("NgayCapNhat")) for r in records], dtype="string"),
            "record": pd.Series([j.decode("utf-8") for j in jsons], dtype="string"),
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
    raw = raw.drop_duplicates(["record_key", "record_hash"]).reset_index(drop=True)
    raw_by_key = {k: jsons[i].decode("utf-8") for k, i in zip(kept["_record_key"], kept["_order"], strict=True)}
    # issues only for the kept version of each key (an older, broken copy is superseded)
    issues = issues[issues["_pos"].isin(set(kept["_order"]))].drop(columns="_pos").reset_index(drop=True)
    core = kept.drop(columns=["_order"]).rename(columns={"_record_key": "record_key"})
    core = core.reset_index(drop=True)
    return Normalized(entity, core, raw, issues, rows_received=n, rows_duplicate=int(dup.sum()), raw_by_key=raw_by_key,
                      versions=versions)


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
