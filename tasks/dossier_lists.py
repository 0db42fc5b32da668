"""A dossier's nested lists: the columns derived from them and its supplement rounds.

The API sends, with each dossier, its submitted documents (``TaiLieuNop``), result documents
(``DanhSachGiayToKetQua``), supplement rounds (``DanhSachHoSoBoSung``) and fee lines
(``DanhSachLePhi``). They become counts and flags of ``core.dossiers`` (reuse, digitised and
national-store documents, electronic result, supplements, fees) and the rows of
``core.dossier_supplements``. A file record without the lists keeps them null (unknown), never
false. Plain, pure functions (no I/O).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tasks.field_types import SUPPLEMENT_COLUMNS, SUPPLEMENT_ROUND_FIELDS, parse_column

#: The nested lists of a dossier record, as the API names them.
NESTED_LISTS: tuple[str, ...] = ("TaiLieuNop", "DanhSachGiayToKetQua", "DanhSachHoSoBoSung", "DanhSachLePhi")


@dataclass
class DossierLists:
    """What the nested lists of a batch of dossier records give, record by record."""

    #: the derived ``core.dossiers`` columns (``DOSSIER_DERIVED`` without the applicant key), in order
    columns: dict[str, Any]
    #: every supplement round of every record read: ``_pos`` (the record's position), ``lan`` and
    #: the round timestamps (:func:`kept_rounds` keeps those of the kept versions)
    rounds: pd.DataFrame
    #: records whose lists are malformed (the ``parse_nested_lists`` issue), and why
    bad: np.ndarray
    detail: list[str]


def derive_lists(records: Sequence[dict]) -> DossierLists:
    """Derive the list columns and supplement rounds of every record (see the module docstring).
    A malformed list leaves the record's derived columns null and marks it in ``bad``."""
    n = len(records)
    derived: list[tuple] = []
    bad = np.zeros(n, dtype=bool)
    detail: list[str] = [""] * n
    for i, r in enumerate(records):
        fast = _dossier_lists_fast(r)
        if fast is not None:
            derived.append(fast)
            continue
        try:
            derived.append(_dossier_lists(r))
        except (TypeError, ValueError, AttributeError) as exc:
            derived.append((None,) * _N_LIST_VALUES)
            bad[i] = True
            detail[i] = f"malformed nested list: {exc}"[:200]
    d = list(zip(*derived, strict=True)) if derived else [[] for _ in range(_N_LIST_VALUES)]
    columns = {col: _column(values, dtype)
               for values, (col, dtype) in zip(d, _LIST_DTYPES.items(), strict=False)}  # d's last: the rounds
    rounds = _supplement_rounds(d[_N_LIST_VALUES - 1], bad, detail)
    return DossierLists(columns, rounds, bad, detail)


def _column(values: Sequence[Any], dtype: str) -> Any:
    """``pd.array(values, dtype=dtype)``, built straight from numpy when no value is null (the
    values are exact ints, or bools for "boolean", by construction)."""
    if None not in values:
        try:
            data = np.array(values, dtype={"boolean": bool, "Int32": np.int32}.get(dtype, np.int64))
        except (OverflowError, TypeError, ValueError):  # beyond the dtype: pandas says how
            return pd.array(values, dtype=dtype)
        cls = pd.arrays.BooleanArray if dtype == "boolean" else pd.arrays.IntegerArray
        return cls(data, np.zeros(len(data), dtype=bool))
    return pd.array(values, dtype=dtype)


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
    links = _present(results, "DuongDanTepTinKetQua", str)
    prices = _present(fees, "Gia", int)
    if links is None or prices is None:
        return None
    for s in sups:
        if type(s) is not dict:
            return None
    return (len(docs), n_reused, n_reused > 0, len(results), any(map(str.strip, links)), len(sups), sum(prices),
            n_digitised, n_digitised > 0, n_store, n_store > 0, len(fees), sum(map((0).__lt__, prices)), sups)


def _present(items: list, key: str, kind: type) -> list | None:
    """The values of ``key`` present (not None) in ``items``, a list of dicts, all exactly of type
    ``kind`` (a bool is not an int); None when an item is not a dict or a value is of another type."""
    values = []
    for item in items:
        if type(item) is not dict:
            return None
        value = item.get(key)
        if value is None:
            continue
        if type(value) is not kind:
            return None
        values.append(value)
    return values


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
        parsed, bad = parse_column(values, "ts")
        frame[col] = parsed.astype("datetime64[us]").to_numpy()
        if bad.any():
            for at in np.flatnonzero(bad.to_numpy()):
                i = pos[at]
                if not list_bad[i]:
                    list_bad[i] = True
                    list_detail[i] = (f"malformed nested list: DanhSachHoSoBoSung[{lan[at]}].{api} = "
                                      f"{values[at]!r:.80} is not a valid ts")[:200]
    return frame


def kept_rounds(rounds: pd.DataFrame, core: pd.DataFrame, kept_pos: pd.Series) -> pd.DataFrame:
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
