"""Columnar rows -> API dicts (source contract 1.1 and 1.2), page by page."""

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
# fast path: dossiers straight to JSON text (the server's hot loop), equal to the dict path
# ----------------------------------------------------------------------------------------------

def _j(v: Any) -> str:
    return orjson.dumps(v).decode()


class _Fragments:
    """Cached JSON fragments of a dataset (procedures, units, officials, nested lists)."""

    def __init__(self, ds: State) -> None:
        sc = ds._ctx.source_code
        self.procs = [",".join(f'"{k}":{_j(p[k])}' for k in ("MaTTHC", "TenTTHC", "MaLinhVuc", "TenLinhVuc"))
                      for p in ds.procedures]
        self.units = [f'"MaDonVi":{_j(local_code(code, sc))},"TenDonVi":{_j(name)}'
                      for code, name in zip(ds._ctx.unit_index, ds._ctx.unit_names, strict=True)]
        self.offs = [f'"MaCanBoXuLy":{_j(o.code)},"CanBoXuLy":{_j(o.name)}' for o in ds._ctx.officials.officials]
        self.result_names = [_j(p.result_name) for p in C.PROCEDURES]
        self.docs: dict[tuple[int, ...], str] = {}
        self.fees: dict[tuple[int, ...], str] = {}
        self.names: dict[tuple[int, ...], str] = {}

    def doc(self, key: tuple[int, int, int, int, int]) -> str:
        s = self.docs.get(key)
        if s is None:
            s = self.docs[key] = _j(_documents(*key))
        return s

    def fee(self, ds: State, key: tuple[int, int, int, int, int]) -> str:
        s = self.fees.get(key)
        if s is None:
            pi, phi, lephi, thu, zero = key
            s = self.fees[key] = _j(_fees(C.PROCEDURES[pi], ds.procedures[pi]["MaTTHC"], phi, lephi, thu, zero))
        return s


def _ts_json(ds: State, arr: np.ndarray, quirky: list[bool]) -> list[str]:
    """Timestamps -> JSON texts ('"yyyyMMddHHmmss"', 'null', or '""' for a quirky record)."""
    d0 = ds._ctx.cal.d0
    days = _quoted_days(ds)
    return [days[v // DAY - d0] + _TOD_J[v % DAY] if v else ('""' if q else "null")
            for v, q in zip(arr.tolist(), quirky, strict=True)]


def _quoted_days(ds: State) -> list[str]:
    base = ds._day_strings()
    cached = getattr(ds, "_quoted_days_cache", None)
    if cached is None or cached[0] is not base:
        cached = (base, ['"' + s for s in base])
        ds._quoted_days_cache = cached
    return cached[1]


def dossiers_json(ds: State, idx: np.ndarray, quirky: list[bool]) -> list[str]:
    """One JSON object text per dossier, equal to `render_dossiers` + the quirks where `quirky`."""
    fr: _Fragments | None = getattr(ds, "_fragments", None)
    if fr is None:
        fr = ds._fragments = _Fragments(ds)
    d = ds._d
    c = _cols(d, idx, _D_INTS)
    t = [_ts_json(ds, d[n][idx], quirky) for n in ("nop", "tiepnhan", "hentra", "ketthuc", "tra", "tuchoi", "capnhat")]
    keys = [k.decode() for k in d["key"][idx].tolist()]
    names = _people_names(c["loai"], c["nf"], c["nm"], c["ng"], c["nb"])
    ids = [f"{v:09d}" if m else f"{v:012d}" for v, m in zip(c["idno"], c["cmnd"], strict=True)]
    procs, units, offs, rnames = fr.procs, fr.units, fr.offs, fr.result_names
    out = []
    rows = zip(keys, quirky, c["proc"], c["unit"], c["kenh"], c["loai"], names, ids, c["phone"], *t,
               c["status"], c["hinhthuc"], c["tttt"], c["m_sohoa"], c["m_reuse"], c["m_kho"], c["ndocs"],
               c["eresult"], c["phi"], c["lephi"], c["thu"], c["fee0"], c["nsupp"], c["official"], idx.tolist(),
               strict=True)
    for (key, qk, pi, ui, kenh, loai, name, idno, phone, nop, tn, ht, kt, tra, tc, cn, st, hth, tttt,
         sohoa, reuse, kho, ndocs, er, phi, lephi, thu, fee0, ns, off, i) in rows:
        q = '"' if qk else ""
        if er:
            link = RESULT_URL.format(key) if er == 2 else ""
            res = f'[{{"MaGiayToKetQua":"KQ-{key}","TenGiayTo":{rnames[pi]},"DuongDanTepTinKetQua":"{link}"}}]'
        else:
            res = "[]"
        supp = _j(_supplement_list(_supp_ts(ds, i), 0, ns)) if ns else "[]"
        out.append(
            f'{{"MaHoSo":"{key}",{procs[pi]},{units[ui]},'
            f'"KenhThucHien":{q + str(kenh) + q if kenh else "null"},"LoaiDoiTuong":{q}{loai}{q},'
            f'"ChuHoSo":"{name}","SoGiayToChuHoSo":"{idno}","SoDienThoai":"0{phone:09d}",'
            f'"NgayNopHoSo":{nop},"NgayTiepNhan":{tn},"NgayHenTra":{ht},'
            f'"NgayKetThucXuLy":{kt},"NgayTra":{tra},"NgayTuChoi":{tc},'
            f'"TrangThaiHoSo":{q}{st}{q},"HinhThuc":{q}{hth}{q},"DuocThanhToanTrucTuyen":{q}{tttt}{q},'
            f'"HoSoCoThanhPhanSoHoa":{q}{1 if sohoa else 0}{q},'
            f'"TaiLieuNop":{fr.doc((pi, ndocs, sohoa, reuse, kho))},"DanhSachGiayToKetQua":{res},'
            f'"DanhSachLePhi":{fr.fee(ds, (pi, phi, lephi, thu, fee0))},'
            f'"DanhSachHoSoBoSung":{supp},{offs[off]},"NgayCapNhat":{cn}}}'
        )
    return out


def _supp_ts(ds: State, i: int) -> dict[str, list[str | None]]:
    d = ds._d
    cols = ("s1_req", "s1_recv", "s2_req", "s2_recv", "due0", "due1", "due2")
    return {n: ds._ts_strings(d[n][[i]]) for n in cols}


_TOD_J = [f'{s // 3600:02d}{s // 60 % 60:02d}{s % 60:02d}"' for s in range(DAY)]
