"""Columnar rows -> API dicts (source contract 1.1 and 1.2), page by page, and straight to the
JSON bytes the server sends (`record_texts`, `page_json`: equal to orjson of the dicts)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import orjson

from simulator import catalog as C
from simulator.state import DOSSIER_TS, PAYMENT_TS, State, ascii_fold, local_code
from simulator.workcal import DAY

RESULT_URL = "https://motcua.binhdinh.gov.vn/ketqua/{}.pdf"


@lru_cache(maxsize=64)
def _doc_names(proc_i: int) -> tuple[tuple[str, str], ...]:
    p = C.PROCEDURES[proc_i]
    names = (*p.documents, "Giấy tờ khác")
    return tuple((n, ascii_fold(n).replace(" ", "_").replace(",", "") + ".pdf") for n in names)


def _people_names(loai: list[int], nf: list[int], nm: list[int], ng: list[int], nb: list[int]) -> list[str]:
    out = []
    nw = len(C.BUSINESS_WORDS)
    for lo, f, m, g, b in zip(loai, nf, nm, ng, nb, strict=True):
        if lo == 1:
            out.append(f"{C.FAMILY_NAMES[f]} {C.MIDDLE_NAMES[m]} {C.GIVEN_NAMES[g]}")
        elif lo == 3:
            out.append(f"Trường Tiểu học {C.BUSINESS_WORDS[b % nw]}")
        else:
            out.append(f"{C.BUSINESS_PREFIXES[b // nw]} {C.BUSINESS_WORDS[b % nw]}")
    return out


def _cols(cols: dict[str, np.ndarray], idx: np.ndarray, names: tuple[str, ...]) -> dict[str, list[Any]]:
    return {n: cols[n][idx].tolist() for n in names}


def _supplement_list(ts: dict[str, list[str | None]], j: int, nsupp: int) -> list[dict[str, Any]]:
    rounds = [{"NgayBoSung": ts["s1_req"][j], "NgayTiepNhanBoSung": ts["s1_recv"][j],
               "NgayHenTraTruoc": ts["due0"][j], "NgayHenTraMoi": ts["due1"][j]}]
    if nsupp > 1:
        rounds.append({"NgayBoSung": ts["s2_req"][j], "NgayTiepNhanBoSung": ts["s2_recv"][j],
                       "NgayHenTraTruoc": ts["due1"][j], "NgayHenTraMoi": ts["due2"][j]})
    return rounds


def _documents(proc_i: int, n: int, sohoa: int, reuse: int, kho: int) -> list[dict[str, Any]]:
    names = _doc_names(proc_i)
    docs = []
    for k in range(n):
        name, fname = names[min(k, len(names) - 1)]
        docs.append({"MaThanhPhanHoSo": f"TP{k + 1:02d}", "TenTepDinhKem": fname,
                     "DuocSoHoa": (sohoa >> k) & 1, "DuocTaiSuDung": (reuse >> k) & 1,
                     "DuocLayTuKhoDMQG": (kho >> k) & 1})
    return docs


def _fees(p: C.Procedure, code: str, phi: int, lephi: int, thu: int, zero: int = 0) -> list[dict[str, Any]]:
    """Fee lines; with `zero` (an exempt applicant) every line is declared at price 0."""
    if thu == C.THU_NONE:
        return []
    mode = C.COLLECTION_MODES[thu]
    out = []
    if phi:
        out.append({"MaPhiLePhi": f"PHI-{code}", "TenPhiLePhi": p.fee_names[0], "LoaiPhiLePhi": "Phí",
                    "Gia": 0 if zero else phi, "HinhThucThu": mode})
    if lephi:
        out.append({"MaPhiLePhi": f"LEPHI-{code}", "TenPhiLePhi": p.fee_names[1], "LoaiPhiLePhi": "Lệ phí",
                    "Gia": 0 if zero else lephi, "HinhThucThu": mode})
    return out


_D_INTS = ("proc", "unit", "kenh", "loai", "nf", "nm", "ng", "nb", "cmnd", "idno", "phone", "status",
           "hinhthuc", "tttt", "m_sohoa", "m_reuse", "m_kho", "ndocs", "eresult", "official", "phi",
           "lephi", "thu", "nsupp", "fee0")
_D_TS = DOSSIER_TS


def render_dossiers(ds: State, idx: np.ndarray) -> list[dict[str, Any]]:
    """Dossier dicts for row indices `idx`, fields in the contract's order."""
    d = ds._d
    c = _cols(d, idx, _D_INTS)
    ts = {n: ds._ts_strings(d[n][idx]) for n in _D_TS}
    keys = [k.decode() for k in d["key"][idx].tolist()]
    names = _people_names(c["loai"], c["nf"], c["nm"], c["ng"], c["nb"])
    procs, units, offs = ds.procedures, ds._ctx.unit_names, ds._ctx.officials.officials
    unit_codes = [u for u in ds._ctx.unit_index]
    sc = ds._ctx.source_code
    out = []
    for j, key in enumerate(keys):
        pi, ui = c["proc"][j], c["unit"][j]
        pr = procs[pi]
        er = c["eresult"][j]
        off = offs[c["official"][j]]
        kenh = c["kenh"][j]
        out.append({
            "MaHoSo": key, "MaTTHC": pr["MaTTHC"], "TenTTHC": pr["TenTTHC"], "MaLinhVuc": pr["MaLinhVuc"],
            "TenLinhVuc": pr["TenLinhVuc"], "MaDonVi": local_code(unit_codes[ui], sc), "TenDonVi": units[ui],
            "KenhThucHien": kenh or None, "LoaiDoiTuong": c["loai"][j], "ChuHoSo": names[j],
            "SoGiayToChuHoSo": f"{c['idno'][j]:09d}" if c["cmnd"][j] else f"{c['idno'][j]:012d}",
            "SoDienThoai": f"0{c['phone'][j]:09d}",
            "NgayNopHoSo": ts["nop"][j], "NgayTiepNhan": ts["tiepnhan"][j], "NgayHenTra": ts["hentra"][j],
            "NgayKetThucXuLy": ts["ketthuc"][j], "NgayTra": ts["tra"][j], "NgayTuChoi": ts["tuchoi"][j],
            "TrangThaiHoSo": c["status"][j], "HinhThuc": c["hinhthuc"][j],
            "DuocThanhToanTrucTuyen": c["tttt"][j], "HoSoCoThanhPhanSoHoa": int(c["m_sohoa"][j] != 0),
            "TaiLieuNop": _documents(pi, c["ndocs"][j], c["m_sohoa"][j], c["m_reuse"][j], c["m_kho"][j]),
            "DanhSachGiayToKetQua": [] if not er else [{
                "MaGiayToKetQua": f"KQ-{key}", "TenGiayTo": C.PROCEDURES[pi].result_name,
                "DuongDanTepTinKetQua": RESULT_URL.format(key) if er == 2 else ""}],
            "DanhSachLePhi": _fees(C.PROCEDURES[pi], pr["MaTTHC"], c["phi"][j], c["lephi"][j], c["thu"][j],
                                   c["fee0"][j]),
            "DanhSachHoSoBoSung": _supplement_list(ts, j, c["nsupp"][j]) if c["nsupp"][j] else [],
            "MaCanBoXuLy": off.code, "CanBoXuLy": off.name, "NgayCapNhat": ts["capnhat"][j],
        })
    return out


_P_INTS = ("dossier", "phi", "lephi", "status", "method", "thu", "kenh")
_P_TS = PAYMENT_TS


def _transaction_id(i: int, method: int, kenh: int, status: int, day: str | None) -> str | None:
    if method not in (1, 3) or status not in (C.PAY_PAID, C.PAY_REFUNDED) or not day:
        return None
    prefix = "FT" if method == 3 else ("DVCQG" if kenh == 1 else "BDPAY")
    return f"{prefix}{day[2:8]}{(i * 7919 + 104729) % 10**9:09d}"


def render_payments(ds: State, idx: np.ndarray) -> list[dict[str, Any]]:
    """Payment-request dicts for row indices `idx`, fields in the contract's order."""
    p = ds._p
    c = _cols(p, idx, _P_INTS)
    ts = {n: ds._ts_strings(p[n][idx]) for n in _P_TS}
    keys = [k.decode() for k in p["key"][idx].tolist()]
    dkeys = [k.decode() for k in ds._d["key"][np.asarray(c["dossier"], dtype=np.int64)].tolist()]
    out = []
    for j, i in enumerate(idx.tolist()):
        phi, lephi, st, m = c["phi"][j], c["lephi"][j], c["status"][j], c["method"][j]
        out.append({
            "Ma": keys[j], "MaHoSo": dkeys[j], "SoTien": phi + lephi, "Phi": phi, "LePhi": lephi,
            "TrangThai": C.PAYMENT_STATUSES[st], "HinhThucThanhToan": C.PAYMENT_METHODS[m],
            "HinhThucThu": C.COLLECTION_MODES[c["thu"][j]], "KenhThanhToan": c["kenh"][j] or None,
            "NgayYeuCau": ts["yeucau"][j], "NgayThuPhi": ts["thuphi"][j], "NgayHoanPhi": ts["hoanphi"][j],
            "NgayHuy": ts["huy"][j], "MaGiaoDich": _transaction_id(i, m, c["kenh"][j], st, ts["thuphi"][j]),
            "NgayCapNhat": ts["capnhat"][j],
        })
    return out


# ----------------------------------------------------------------------------------------------
# fast path: records straight to JSON bytes (the server's hot loop), equal to the dict path
# ----------------------------------------------------------------------------------------------
# A page is built column by column: each field becomes a column of UTF-8 fragments (numpy object
# arrays of bytes, filled from small lookup tables by fancy indexing or by numpy's own number
# formatting), the columns a (records x fragments) matrix, and one bytes.join makes a record or
# the whole page. No text outlives the page.

def _j(v: Any) -> bytes:
    return orjson.dumps(v)


def _obj(items: Any) -> np.ndarray:
    """A 1-D object array of `items` (str items are stored UTF-8 encoded)."""
    items = [s.encode() if isinstance(s, str) else s for s in items]
    a = np.empty(len(items), dtype=object)
    a[:] = items
    return a


def _int_table(size: int, null_zero: bool = False) -> np.ndarray:
    """[quirky, value] -> the value's JSON text (a numeric string when quirky; 0 -> null if asked)."""
    t = np.empty((2, size), dtype=object)
    t[0] = [str(v).encode() for v in range(size)]
    t[1] = [f'"{v}"'.encode() for v in range(size)]
    if null_zero:
        t[:, 0] = b"null"
    return t


_TOD_J = _obj([*(f'{s // 3600:02d}{s // 60 % 60:02d}{s % 60:02d}"' for s in range(DAY)), b""])  # [DAY]: none
_INT = _int_table(16)
_INT_NULL0 = _int_table(16, null_zero=True)
_URL_A, _URL_B = (s.encode() for s in RESULT_URL.split("{}"))
# DanhSachGiayToKetQua by eresult (0: none, 1: no link, 2: a link to the electronic result)
_RES_OPEN = _obj([b"[]", b'[{"MaGiayToKetQua":"KQ-', b'[{"MaGiayToKetQua":"KQ-'])
_RES_URL_A = _obj([b"", b"", _URL_A])
_RES_CLOSE = _obj([b"", b'"}]', _URL_B + b'"}]'])
_SCHOOL = "Trường Tiểu học ".encode()
_STATUSES = _obj(_j(s) for s in C.PAYMENT_STATUSES)
_METHODS = _obj(_j(s) for s in C.PAYMENT_METHODS)
_MODES = _obj(_j(s) for s in C.COLLECTION_MODES)
_KENH, _LOAI = 4, 5  # KenhThucHien 0..3, LoaiDoiTuong 1..4
_TXN_PREFIX = _obj([b"null", b'"FT', b'"DVCQG', b'"BDPAY'])  # none, transfer, online (national / province)
_TXN_CLOSE = _obj([b"", b'"'])


def _combos(fmt: Any, *sizes: int) -> np.ndarray:
    """Every text `fmt(*values)` over the value ranges, as one flat table indexed by `_code`."""
    return _obj(fmt(*v) for v in np.ndindex(*sizes))


def _code(cols: tuple[np.ndarray, ...], sizes: tuple[int, ...]) -> np.ndarray:
    return np.ravel_multi_index(tuple(np.asarray(c, dtype=np.intp) for c in cols), sizes)


# status, form, online payment, digitised (each with its quirk form) in one fragment
_STATE_SIZES = (2, 16, 2, 3, 2)
_STATE = _combos(lambda q, st, hth, tttt, sohoa: (
    f',"TrangThaiHoSo":{_INT[q, st].decode()},"HinhThuc":{_INT[q, hth].decode()},'
    f'"DuocThanhToanTrucTuyen":{_INT[q, tttt].decode()},"HoSoCoThanhPhanSoHoa":{_INT[q, sohoa].decode()}'
), *_STATE_SIZES)


class _Fragments:
    """Cached JSON fragments of a dataset (procedures, units, officials, names, nested lists), the
    field names folded in, so a record is a few dozen fragments."""

    def __init__(self, ds: State) -> None:
        sc = ds._ctx.source_code
        self.procs = _obj('",' + ",".join(f'"{k}":{_j(p[k]).decode()}' for k in ("MaTTHC", "TenTTHC", "MaLinhVuc",
                                                                                 "TenLinhVuc")) + ","
                          for p in ds.procedures)
        units = [f'"MaDonVi":{_j(local_code(code, sc)).decode()},"TenDonVi":{_j(name).decode()}'
                 for code, name in zip(ds._ctx.unit_index, ds._ctx.unit_names, strict=True)]
        self.unit_sizes = (len(units), 2, _KENH, _LOAI)
        # unit, channel, applicant type (with the quirk form) up to the applicant's name
        self.unit_kind = _combos(lambda u, q, kenh, loai: (
            f'{units[u]},"KenhThucHien":{_INT_NULL0[q, kenh].decode()},"LoaiDoiTuong":{_INT[q, loai].decode()},'
            '"ChuHoSo":"'), *self.unit_sizes)
        self.offs = _obj(f',"MaCanBoXuLy":{_j(o.code).decode()},"CanBoXuLy":{_j(o.name).decode()},"NgayCapNhat":'
                         for o in ds._ctx.officials.officials)
        self.family = _obj(C.FAMILY_NAMES)
        self.middle = _obj(" " + s for s in C.MIDDLE_NAMES)
        self.given = _obj(" " + s for s in C.GIVEN_NAMES)
        self.biz_prefix = _obj(s + " " for s in C.BUSINESS_PREFIXES)
        self.biz_word = _obj(C.BUSINESS_WORDS)
        self.docs = _Lookup()
        self.fees = _Lookup()
        self.amounts = _Lookup()
        self.res_mid = np.empty((3, len(C.PROCEDURES)), dtype=object)
        self.res_mid[0] = b""
        self.res_mid[1:] = [f'","TenGiayTo":{_j(p.result_name).decode()},"DuongDanTepTinKetQua":"'.encode()
                            for p in C.PROCEDURES]
        self._days: tuple[list[str], dict[str | None, np.ndarray]] | None = None

    def days(self, ds: State, label: str | None) -> np.ndarray:
        """`label` + a timestamp's day: [label null, label "", label "yyyyMMdd per calendar day...];
        with no label: ["", "", yyMMdd per calendar day...] (rebuilt when the calendar grows)."""
        base = ds._day_strings()
        if self._days is None or self._days[0] is not base:
            self._days = (base, {})
        tables = self._days[1]
        t = tables.get(label)
        if t is None:
            if label is None:
                t = tables[label] = _obj(["", "", *(s[2:8] for s in base)])
            else:
                t = tables[label] = _obj([label + "null", label + '""', *(label + '"' + s for s in base)])
        return t


def _fragments(ds: State) -> _Fragments:
    fr: _Fragments | None = getattr(ds, "_page_fragments", None)
    if fr is None:
        fr = ds._page_fragments = _Fragments(ds)
    return fr


def quirky_mask(idx: np.ndarray, entity: str) -> np.ndarray:
    """Which rows carry the quirks (vectorised `dataset._quirky`)."""
    salt = 17 if entity == "dossiers" else 91
    return ((np.asarray(idx, dtype=np.int64) * 2654435761 + salt) >> 5) % 100 < 8


def _ts(ds: State, fr: _Fragments, label: str, arr: np.ndarray, qi: np.ndarray | None) -> list[np.ndarray]:
    """`label` + timestamps as two fragment columns: label + '"yyyyMMdd' and 'HHmmss"', or label +
    'null' (label + '""' where quirky) and nothing."""
    nz = arr != 0
    day = np.where(nz, arr // DAY - ds._ctx.cal.d0 + 2, 0 if qi is None else qi)
    return [fr.days(ds, label)[day], _TOD_J[np.where(nz, arr % DAY, DAY)]]


def _digits(v: np.ndarray, width: int) -> np.ndarray:
    """Integers as zero-padded decimal ASCII, at least `width` digits (format(v, f"0{width}d"))."""
    v = np.asarray(v, dtype=np.int64)
    if len(v) and (v.min() < 0 or v.max() >= 10**width):
        return _obj(format(x, f"0{width}d").encode() for x in v.tolist())
    s = (v + 10**width).astype(f"S{width + 1}")
    return np.ascontiguousarray(s.view(np.uint8).reshape(-1, width + 1)[:, 1:]).view(f"S{width}").ravel().astype(object)


class _Lookup:
    """Texts by an integer code (a row's fields packed), sorted for a vectorised look-up; a code
    seen for the first time is rendered by `make` once. Bounded by the fields' combinations."""

    def __init__(self) -> None:
        self.codes = np.empty(0, dtype=np.int64)
        self.texts = np.empty(0, dtype=object)

    def __call__(self, code: np.ndarray, cols: tuple[np.ndarray, ...], make: Any) -> np.ndarray:
        pos = np.searchsorted(self.codes, code)
        hit = self.codes[np.minimum(pos, len(self.codes) - 1)] == code if len(self.codes) else np.zeros(len(code), bool)
        if not hit.all():
            miss = np.flatnonzero(~hit)
            new, first = np.unique(code[miss], return_index=True)
            rows = miss[first]
            texts = _obj(make(*vals) for vals in zip(*(np.asarray(c)[rows].tolist() for c in cols), strict=True))
            codes = np.concatenate([self.codes, new])
            order = np.argsort(codes, kind="stable")
            self.codes, self.texts = codes[order], np.concatenate([self.texts, texts])[order]
            pos = np.searchsorted(self.codes, code)
        return self.texts[pos]


def _matrix(cols: list[Any], n: int) -> np.ndarray:
    """(records x fragments) object matrix; adjacent constants merged."""
    merged: list[Any] = []
    for c in cols:
        if isinstance(c, str):
            c = c.encode()
        if isinstance(c, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += c
        else:
            merged.append(c)
    m = np.empty((n, len(merged)), dtype=object)
    for k, c in enumerate(merged):
        m[:, k] = c
    return m


def _dossier_matrix(ds: State, idx: np.ndarray) -> np.ndarray:
    fr, d = _fragments(ds), ds._d
    n = len(idx)
    qi = quirky_mask(idx, "dossiers").astype(np.intp)
    c = {k: d[k][idx] for k in _D_INTS}
    pi, loai, nb = c["proc"].astype(np.int64), c["loai"], c["nb"].astype(np.int64)
    keys = d["key"][idx].astype(object)
    nw = len(C.BUSINESS_WORDS)
    word = fr.biz_word[nb % nw]
    person, school = loai == 1, loai == 3
    names = [np.where(person, fr.family[c["nf"]], np.where(school, _SCHOOL, fr.biz_prefix[nb // nw])),
             np.where(person, fr.middle[c["nm"]], word), np.where(person, fr.given[c["ng"]], b"")]
    cmnd = c["cmnd"].astype(bool)
    ids = np.empty(n, dtype=object)
    ids[cmnd] = _digits(c["idno"][cmnd], 9)
    ids[~cmnd] = _digits(c["idno"][~cmnd], 12)
    er = c["eresult"].astype(np.intp)
    res = [_RES_OPEN[er], np.where(er != 0, keys, b""), fr.res_mid[er, pi], _RES_URL_A[er],
           np.where(er == 2, keys, b""), _RES_CLOSE[er]]
    docs_code = (((pi << 8 | c["ndocs"].astype(np.int64) & 0xFF) << 8 | c["m_sohoa"].astype(np.int64) & 0xFF) << 8
                 | c["m_reuse"].astype(np.int64) & 0xFF) << 8 | c["m_kho"].astype(np.int64) & 0xFF
    docs = fr.docs(docs_code, (pi, c["ndocs"], c["m_sohoa"], c["m_reuse"], c["m_kho"]),
                   lambda *k: b',"TaiLieuNop":' + _j(_documents(*k)) + b',"DanhSachGiayToKetQua":')
    fees = _fee_texts(ds, fr, pi, c)
    supp = np.full(n, b"[]", dtype=object)
    sub = np.flatnonzero(c["nsupp"])
    if len(sub):
        ts = {k: ds._ts_strings(d[k][idx[sub]]) for k in ("s1_req", "s1_recv", "s2_req", "s2_recv",
                                                          "due0", "due1", "due2")}
        supp[sub] = [_j(_supplement_list(ts, j, ns)) for j, ns in enumerate(c["nsupp"][sub].tolist())]
    state = _code((qi, c["status"], c["hinhthuc"], c["tttt"], c["m_sohoa"] != 0), _STATE_SIZES)
    return _matrix([
        '{"MaHoSo":"', keys, fr.procs[pi], fr.unit_kind[_code((c["unit"], qi, c["kenh"], loai), fr.unit_sizes)],
        *names, '","SoGiayToChuHoSo":"', ids, '","SoDienThoai":"0', _digits(c["phone"], 9),
        *_ts(ds, fr, '","NgayNopHoSo":', d["nop"][idx], qi), *_ts(ds, fr, ',"NgayTiepNhan":', d["tiepnhan"][idx], qi),
        *_ts(ds, fr, ',"NgayHenTra":', d["hentra"][idx], qi), *_ts(ds, fr, ',"NgayKetThucXuLy":', d["ketthuc"][idx], qi),
        *_ts(ds, fr, ',"NgayTra":', d["tra"][idx], qi), *_ts(ds, fr, ',"NgayTuChoi":', d["tuchoi"][idx], qi),
        _STATE[state], docs, *res, fees, supp, fr.offs[c["official"]], *_ts(ds, fr, "", d["capnhat"][idx], qi), "}",
    ], n)


def _fee_texts(ds: State, fr: _Fragments, pi: np.ndarray, c: dict[str, np.ndarray]) -> np.ndarray:
    """',"DanhSachLePhi":[...],"DanhSachHoSoBoSung":' per row."""
    phi, lephi = c["phi"].astype(np.int64), c["lephi"].astype(np.int64)
    lookup = fr.fees
    if len(phi) and (min(phi.min(), lephi.min()) < 0 or max(phi.max(), lephi.max()) >= 1 << 24):
        lookup = _Lookup()  # amounts too large to pack: a look-up of this page's rows only
        phi, lephi = (np.unique(a, return_inverse=True)[1].reshape(-1) for a in (phi, lephi))
    code = (((pi << 24 | phi) << 24 | lephi) << 4 | c["thu"].astype(np.int64) & 0xF) << 1 | (c["fee0"] != 0)

    def make(p: int, phi: int, lephi: int, thu: int, zero: int) -> bytes:
        lines = _fees(C.PROCEDURES[p], ds.procedures[p]["MaTTHC"], phi, lephi, thu, zero)
        return b',"DanhSachLePhi":' + _j(lines) + b',"DanhSachHoSoBoSung":'

    return lookup(code, (pi, c["phi"], c["lephi"], c["thu"], c["fee0"]), make)


def _amount_texts(fr: _Fragments, phi: np.ndarray, lephi: np.ndarray, qi: np.ndarray) -> np.ndarray:
    """'"SoTien":..,"Phi":..,"LePhi":..' per row (numeric strings where quirky)."""
    lookup = fr.amounts
    if len(phi) and (min(phi.min(), lephi.min()) < 0 or max(phi.max(), lephi.max()) >= 1 << 30):
        lookup = _Lookup()  # too large to pack: a look-up of this page's rows only
        code = np.unique(np.stack([phi, lephi, qi], axis=1), axis=0, return_inverse=True)[1].reshape(-1)
    else:
        code = (phi << 30 | lephi) << 1 | qi

    def make(a: int, b: int, q: int) -> bytes:
        v = [str(x) if not q else f'"{x}"' for x in (a + b, a, b)]
        return f'","SoTien":{v[0]},"Phi":{v[1]},"LePhi":{v[2]}'.encode()

    return lookup(code, (phi, lephi, qi), make)


_PAY_SIZES = (2, 5, 4, 4, 3)  # quirky, status, method, collection mode, payment channel
_PAY_STATE = _combos(lambda q, st, m, thu, kenh: (
    f',"TrangThai":{_STATUSES[st].decode()},"HinhThucThanhToan":{_METHODS[m].decode()},'
    f'"HinhThucThu":{_MODES[thu].decode()},"KenhThanhToan":{_INT_NULL0[q, kenh].decode()}'
), *_PAY_SIZES)


def _payment_matrix(ds: State, idx: np.ndarray) -> np.ndarray:
    fr, p = _fragments(ds), ds._p
    n = len(idx)
    qi = quirky_mask(idx, "payments").astype(np.intp)
    c = {k: p[k][idx] for k in _P_INTS}
    phi, lephi, st, m, kenh = (c[k].astype(np.int64) for k in ("phi", "lephi", "status", "method", "kenh"))
    thuphi = p["thuphi"][idx]
    # MaGiaoDich (paid or refunded online or by transfer): prefix, yyMMdd of the payment, a number
    has = np.isin(m, (1, 3)) & np.isin(st, (C.PAY_PAID, C.PAY_REFUNDED)) & (thuphi != 0)
    prefix = np.where(has, np.where(m == 3, 1, np.where(kenh == 1, 2, 3)), 0)
    day = np.where(has, thuphi // DAY - ds._ctx.cal.d0 + 2, 0)
    txn = [_TXN_PREFIX[prefix], fr.days(ds, None)[day],
           np.where(has, _digits((idx * 7919 + 104729) % 10**9, 9), b""), _TXN_CLOSE[has.astype(np.intp)]]
    state = _code((qi, st, m, c["thu"], kenh), _PAY_SIZES)
    return _matrix([
        '{"Ma":"', p["key"][idx].astype(object), '","MaHoSo":"',
        ds._d["key"][c["dossier"].astype(np.int64)].astype(object), _amount_texts(fr, phi, lephi, qi),
        _PAY_STATE[state], *_ts(ds, fr, ',"NgayYeuCau":', p["yeucau"][idx], qi),
        *_ts(ds, fr, ',"NgayThuPhi":', thuphi, qi), *_ts(ds, fr, ',"NgayHoanPhi":', p["hoanphi"][idx], qi),
        *_ts(ds, fr, ',"NgayHuy":', p["huy"][idx], qi), ',"MaGiaoDich":', *txn,
        *_ts(ds, fr, ',"NgayCapNhat":', p["capnhat"][idx], None), "}",
    ], n)


def _matrix_for(ds: State, entity: str, idx: np.ndarray) -> np.ndarray | None:
    """The fragments of the records at `idx`, one row each; None when one of them holds a value
    outside the fragment tables (a test plants a code the catalogue does not know): the caller
    then renders them by the dict path, which any value goes through."""
    idx = np.asarray(idx, dtype=np.int64)
    try:
        return _dossier_matrix(ds, idx) if entity == "dossiers" else _payment_matrix(ds, idx)
    except (ValueError, IndexError):
        return None


def _dict_path(ds: State, entity: str, idx: np.ndarray) -> list[bytes]:
    return [orjson.dumps(r) for r in ds.render(entity, np.asarray(idx, dtype=np.int64), quirks=True)]


def record_texts(ds: State, entity: str, idx: np.ndarray) -> list[bytes]:
    """One JSON object per dossier or payment at `idx`, quirks applied: what orjson makes of the
    dict path (`render_dossiers`/`render_payments` + the quirks), byte for byte."""
    if len(idx) == 0:
        return []
    m = _matrix_for(ds, entity, idx)
    return _dict_path(ds, entity, idx) if m is None else list(map(b"".join, m.tolist()))


def page_json(ds: State, entity: str, idx: np.ndarray, head: bytes = b"", tail: bytes = b"") -> bytes:
    """`head` + the JSON array of the dossiers or payments at `idx` (quirks applied) + `tail`, in
    one join (a page body is copied once): the array is `record_texts` joined with ","."""
    if len(idx) == 0:
        return head + b"[]" + tail
    m = _matrix_for(ds, entity, idx)
    if m is None:
        return head + b"[" + b",".join(_dict_path(ds, entity, idx)) + b"]" + tail
    opener = m[0, 0]
    m[1:, 0] = b"}," + opener
    m[0, 0] = head + b"[" + opener
    m[:, -1] = b""
    m[-1, -1] = b"}]" + tail
    return b"".join(m.ravel().tolist())
