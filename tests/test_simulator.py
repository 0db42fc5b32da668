"""Simulator dataset, exports and CLI: determinism, contract shapes, invariants, realism.

Figures are recomputed here from the records themselves (and an independent holiday calendar),
not read back from the generator's internals.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import unicodedata
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import holidays
import orjson
import pytest
import requests
from openpyxl import load_workbook

from simulator.dataset import Dataset, generate
from simulator.export import export_files

pytestmark = pytest.mark.timeout(120)

DOSSIER_FIELDS = {
    "MaHoSo", "MaTTHC", "TenTTHC", "MaLinhVuc", "TenLinhVuc", "MaDonVi", "TenDonVi", "KenhThucHien",
    "LoaiDoiTuong", "ChuHoSo", "SoGiayToChuHoSo", "SoDienThoai", "NgayNopHoSo", "NgayTiepNhan", "NgayHenTra",
    "NgayKetThucXuLy", "NgayTra", "NgayTuChoi", "TrangThaiHoSo", "HinhThuc", "DuocThanhToanTrucTuyen",
    "HoSoCoThanhPhanSoHoa", "TaiLieuNop", "DanhSachGiayToKetQua", "DanhSachLePhi", "DanhSachHoSoBoSung",
    "MaCanBoXuLy", "CanBoXuLy", "NgayCapNhat",
}
PAYMENT_FIELDS = {"Ma", "MaHoSo", "SoTien", "Phi", "LePhi", "TrangThai", "HinhThucThanhToan", "HinhThucThu",
                  "KenhThanhToan", "NgayYeuCau", "NgayThuPhi", "NgayHoanPhi", "NgayHuy", "MaGiaoDich", "NgayCapNhat"}
PROCEDURE_FIELDS = {"MaTTHC", "TenTTHC", "MaLinhVuc", "TenLinhVuc", "CapThucHien", "ThoiHanGiaiQuyet",
                    "DonViThoiHan", "MucDoDVC", "CoPhiLePhi", "CoThanhToanTrucTuyen", "KetQuaGiay"}
UNIT_FIELDS = {"MaDonVi", "TenDonVi", "CapDonVi", "MaDonViCha", "HieuLucTu", "HieuLucDen", "MaDonViKeNhiem"}
D_TS = ("NgayNopHoSo", "NgayTiepNhan", "NgayHenTra", "NgayKetThucXuLy", "NgayTra", "NgayTuChoi", "NgayCapNhat")
P_TS = ("NgayYeuCau", "NgayThuPhi", "NgayHoanPhi", "NgayHuy", "NgayCapNhat")
TS_RE = re.compile(r"^\d{14}$")


# -- helpers (independent of the generator) --------------------------------------------------------

def ts(s: str | None) -> datetime | None:
    return datetime.strptime(s, "%Y%m%d%H%M%S") if s else None


def is_working_day(d: date) -> bool:
    makeup = {date(2024, 5, 4), date(2025, 4, 26), date(2026, 8, 22)}
    if d in makeup:
        return True
    return d.weekday() < 5 and d not in holidays.country_holidays("VN", years=d.year)


def add_working_days(d: date, k: int) -> date:
    while k:
        d += timedelta(days=1)
        k -= is_working_day(d)
    return d


def obligation(pays: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in pays if p["SoTien"] > 0 and p["HinhThucThu"] != "Đối tượng miễn phí"
            and p["TrangThai"] not in ("Hủy thanh toán", "Đã hoàn phí")]


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return generate(seed=42, n_dossiers=3000)


@pytest.fixture(scope="module")
def D(ds: Dataset) -> list[dict[str, Any]]:  # noqa: N802 - short name for the record list
    return ds.records("dossiers")


@pytest.fixture(scope="module")
def P(ds: Dataset) -> list[dict[str, Any]]:  # noqa: N802
    return ds.records("payments")


@pytest.fixture(scope="module")
def pays_by_dossier(P: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:  # noqa: N803
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in P:
        out[p["MaHoSo"]].append(p)
    return out


# -- determinism -----------------------------------------------------------------------------------

def test_same_seed_same_bytes_other_seed_other_data(ds: Dataset) -> None:
    again = generate(seed=42, n_dossiers=3000)
    for entity in ("dossiers", "payments", "procedures", "units"):
        assert orjson.dumps(again.records(entity)) == orjson.dumps(ds.records(entity)), entity
    other = generate(seed=43, n_dossiers=3000)
    assert orjson.dumps(other.records("dossiers")) != orjson.dumps(ds.records("dossiers"))


# -- shapes ----------------------------------------------------------------------------------------

def test_field_names_and_types(ds: Dataset, D: list[dict[str, Any]], P: list[dict[str, Any]]) -> None:  # noqa: N803
    assert len(D) == 3000 and len(ds.dossiers) == 3000
    assert ds.dossiers[5] == D[5] and ds.dossiers[-1] == D[-1]
    assert all(set(d) == DOSSIER_FIELDS for d in D)
    assert all(set(p) == PAYMENT_FIELDS for p in P)
    assert all(set(p) == PROCEDURE_FIELDS for p in ds.procedures)
    assert all(set(u) == UNIT_FIELDS for u in ds.units)
    assert len({d["MaHoSo"] for d in D}) == len(D)
    assert len({p["Ma"] for p in P}) == len(P)
    for d in D:
        assert re.match(r"^\d{3}\.\d{2}\.\d{2}\.H08-\d{6}-\d{5}$", d["MaHoSo"]), d["MaHoSo"]
        for f in D_TS:
            assert d[f] is None or TS_RE.match(d[f]), (f, d[f])
        assert re.fullmatch(r"\d{12}|\d{9}", d["SoGiayToChuHoSo"])
        assert re.fullmatch(r"0\d{9}", d["SoDienThoai"])
        assert d["KenhThucHien"] in (None, 1, 2, 3) and d["LoaiDoiTuong"] in (1, 2, 3, 4)
        assert d["DuocThanhToanTrucTuyen"] in (0, 1, 2) and d["HinhThuc"] in (0, 1)
        for t in d["TaiLieuNop"]:
            assert set(t) == {"MaThanhPhanHoSo", "TenTepDinhKem", "DuocSoHoa", "DuocTaiSuDung", "DuocLayTuKhoDMQG"}
        for f in d["DanhSachLePhi"]:
            assert f["LoaiPhiLePhi"] in ("Phí", "Lệ phí") and f["Gia"] >= 0
        if any(f["Gia"] == 0 for f in d["DanhSachLePhi"]):  # zero-price lines: exempt applicants only
            assert all(f["Gia"] == 0 and f["HinhThucThu"] == "Đối tượng miễn phí" for f in d["DanhSachLePhi"])
        assert d["HoSoCoThanhPhanSoHoa"] == int(any(t["DuocSoHoa"] for t in d["TaiLieuNop"]))
    assert {len(d["SoGiayToChuHoSo"]) for d in D} == {9, 12}
    for p in P:
        for f in P_TS:
            assert p[f] is None or TS_RE.match(p[f])


def test_quirky_form_and_json_path_match(ds: Dataset) -> None:
    import numpy as np

    idx = np.arange(ds.count("dossiers"))
    quirky = ds.render("dossiers", idx, quirks=True)
    assert orjson.loads(ds.render_json("dossiers", idx)) == quirky
    as_str = [d for d in quirky if isinstance(d["TrangThaiHoSo"], str)]
    assert 0.03 * len(quirky) < len(as_str) < 0.15 * len(quirky)
    assert any(d["NgayTuChoi"] == "" for d in as_str)
    assert all(d["NgayTuChoi"] != "" for d in quirky if not isinstance(d["TrangThaiHoSo"], str))
    pq = ds.render("payments", np.arange(ds.count("payments")), quirks=True)
    assert any(isinstance(p["SoTien"], str) and p["SoTien"].isdigit() for p in pq)


# -- catalogue -------------------------------------------------------------------------------------

def test_procedures_catalogue(ds: Dataset) -> None:
    procs = {p["MaTTHC"]: p for p in ds.procedures}
    assert 30 <= len(procs) <= 60
    assert procs["1.001653.000.00.00.H08"]["TenTTHC"] == "Đổi, cấp lại Giấy xác nhận khuyết tật"
    assert procs["1.001653.000.00.00.H08"]["ThoiHanGiaiQuyet"] == 4
    assert procs["1.000903.000.00.00.H08"]["TenTTHC"] == "Cấp giấy phép kinh doanh Karaoke"
    assert procs["1.002425.000.00.00.H08"]["TenTTHC"].startswith("Cấp giấy chứng nhận cơ sở đủ điều kiện an toàn")
    assert "2.002621.H08" in procs
    assert {p["MucDoDVC"] for p in procs.values()} == {2, 3, 4}
    assert {p["DonViThoiHan"] for p in procs.values()} == {"ngay-lam-viec", "ngay", "gio"}
    assert Counter(p["DonViThoiHan"] for p in procs.values()).most_common(1)[0][0] == "ngay-lam-viec"
    names = " ".join(p["TenTTHC"] for p in procs.values() if p["CoPhiLePhi"])
    for word in ("trích lục", "Chứng thực bản sao", "kết hôn có yếu tố nước ngoài", "hộ kinh doanh"):
        assert word in names


def test_units_catalogue_and_level_change(ds: Dataset, D: list[dict[str, Any]]) -> None:  # noqa: N803
    by_code: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for u in ds.units:
        by_code[u["MaDonVi"]].append(u)
    levels = Counter(u["CapDonVi"] for u in ds.units)
    assert levels[1] >= 1 and levels[2] >= 5 and levels[3] >= 13
    assert by_code["000.00.15.H08"][0]["TenDonVi"] == "UBND huyện Tuy Phước"
    changed = [c for c, rows in by_code.items() if len({r["CapDonVi"] for r in rows}) == 2]
    assert len(changed) == 1
    rows = sorted(by_code[changed[0]], key=lambda r: r["HieuLucTu"])
    assert rows[0]["HieuLucDen"] < rows[1]["HieuLucTu"]
    switch = rows[1]["HieuLucTu"]
    handled = [d["NgayTiepNhan"][:8] for d in D if d["MaDonVi"] == changed[0] and d["NgayTiepNhan"]]
    assert any(x < switch for x in handled) and any(x >= switch for x in handled)
    assert all(u["HieuLucDen"] is None and u["MaDonViKeNhiem"] is None for u in ds.units if u["CapDonVi"] == 2)


def test_2025_restructuring() -> None:
    ds = generate(seed=5, n_dossiers=800, start=date(2025, 3, 1), end=date(2025, 9, 30))
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for u in ds.units:
        rows[u["MaDonVi"]].append(u)
    district = [u for u in ds.units if u["CapDonVi"] == 2]
    assert district and all(u["HieuLucDen"] == "20250630" and u["MaDonViKeNhiem"] for u in district)
    assert all(u["MaDonViKeNhiem"] in rows for u in district)
    for d in ds.dossiers:
        day = (d["NgayTiepNhan"] or d["NgayNopHoSo"])[:8]
        valid = [u for u in rows[d["MaDonVi"]] if u["HieuLucTu"] <= day <= (u["HieuLucDen"] or "99999999")]
        if d["NgayTiepNhan"]:
            assert valid, (d["MaHoSo"], d["MaDonVi"], day)


# -- invariants ------------------------------------------------------------------------------------

def test_date_order_and_watermark(ds: Dataset, D: list[dict[str, Any]]) -> None:  # noqa: N803
    now = ds.now
    for d in D:
        t = {f: ts(d[f]) for f in D_TS}
        if t["NgayTiepNhan"]:
            assert t["NgayNopHoSo"] <= t["NgayTiepNhan"]
        if t["NgayKetThucXuLy"]:
            assert t["NgayTiepNhan"] < t["NgayKetThucXuLy"]
        if t["NgayTra"]:
            assert t["NgayKetThucXuLy"] <= t["NgayTra"]
        events = [v for f, v in t.items() if v and f not in ("NgayCapNhat", "NgayHenTra")]
        assert max(events) <= t["NgayCapNhat"] <= now
        assert date(2024, 1, 1) <= (t["NgayTiepNhan"] or t["NgayNopHoSo"]).date() <= date(2024, 6, 30)


def test_due_dates_are_working_days_and_follow_working_hours(D: list[dict[str, Any]]) -> None:  # noqa: N803
    dues = [ts(d["NgayHenTra"]) for d in D if d["NgayHenTra"]]
    assert dues and all(is_working_day(x.date()) for x in dues)
    checked = 0
    for d in D:
        if d["MaTTHC"] != "1.001653.000.00.00.H08" or not d["NgayTiepNhan"] or d["DanhSachHoSoBoSung"]:
            continue
        r = ts(d["NgayTiepNhan"])
        if is_working_day(r.date()) and 7 < r.hour + r.minute / 60 < 17:
            assert ts(d["NgayHenTra"]).date() == add_working_days(r.date(), 4), d["MaHoSo"]
            checked += 1
    assert checked >= 10


def test_supplements_move_the_due_date(D: list[dict[str, Any]]) -> None:  # noqa: N803
    closed = 0
    for d in D:
        rounds = d["DanhSachHoSoBoSung"]
        for r in rounds:
            assert r["NgayBoSung"] and r["NgayHenTraTruoc"]
            if r["NgayTiepNhanBoSung"]:
                assert r["NgayHenTraMoi"] > r["NgayHenTraTruoc"] and r["NgayTiepNhanBoSung"] > r["NgayBoSung"]
                closed += 1
        if rounds and rounds[-1]["NgayHenTraMoi"]:
            assert d["NgayHenTra"] == rounds[-1]["NgayHenTraMoi"]
        if d["TrangThaiHoSo"] == 5:
            assert rounds and rounds[-1]["NgayTiepNhanBoSung"] is None
    assert closed >= 20
    assert len([d for d in D if len(d["DanhSachHoSoBoSung"]) == 2]) >= 3


def test_statuses_consistent_with_dates(D: list[dict[str, Any]]) -> None:  # noqa: N803
    for d in D:
        s = d["TrangThaiHoSo"]
        if s == 1:
            assert not d["NgayTiepNhan"] and not d["NgayKetThucXuLy"] and d["KenhThucHien"] == 2
        elif s == 3:
            assert d["NgayTuChoi"] and not d["NgayKetThucXuLy"] and not d["NgayTra"]
        elif s in (2, 4, 5, 6):
            assert d["NgayTiepNhan"] and d["NgayHenTra"] and not d["NgayKetThucXuLy"] and not d["NgayTra"]
        elif s in (7, 8, 9):
            assert d["NgayKetThucXuLy"] and not d["NgayTra"]
        else:
            assert s == 10 and d["NgayKetThucXuLy"] and d["NgayTra"]
        if s not in (9, 10):
            assert d["DanhSachGiayToKetQua"] == []


def test_realistic_shares(D: list[dict[str, Any]]) -> None:  # noqa: N803
    status = Counter(d["TrangThaiHoSo"] for d in D)
    assert set(status) == set(range(1, 11))
    assert status.most_common(1)[0][0] == 10 and status[9] > status[7]
    channel = Counter(d["KenhThucHien"] for d in D)
    assert 0.5 <= channel[2] / len(D) <= 0.7 and channel[3] > 0 and channel[None] > 0
    resolved = [d for d in D if d["TrangThaiHoSo"] in (8, 9, 10) and d["NgayHenTra"]]
    late = [d for d in resolved if d["NgayKetThucXuLy"][:8] > d["NgayHenTra"][:8]]
    same_day_later = [d for d in resolved if d["NgayKetThucXuLy"][:8] == d["NgayHenTra"][:8]
                      and d["NgayKetThucXuLy"] > d["NgayHenTra"]]
    assert 5 <= len(late) <= 0.03 * len(D)
    assert len(same_day_later) >= 20
    e_links = [d for d in D if any(r["DuongDanTepTinKetQua"] for r in d["DanhSachGiayToKetQua"])]
    resolved_910 = [d for d in D if d["TrangThaiHoSo"] in (9, 10)]
    assert 0.15 < len(e_links) / len(resolved_910) < 0.8
    reuse = [d for d in D if any(t["DuocTaiSuDung"] for t in d["TaiLieuNop"])]
    assert 0.02 < len(reuse) / len(D) < 0.2
    officials = Counter(d["MaCanBoXuLy"] for d in D)
    assert len(officials) >= 40


def test_payments(ds: Dataset, D: list[dict[str, Any]], P: list[dict[str, Any]],  # noqa: N803
                  pays_by_dossier: dict[str, list[dict[str, Any]]]) -> None:
    assert 0.2 <= len(P) / len(D) <= 0.6
    dossiers = {d["MaHoSo"]: d for d in D}
    procs = {p["MaTTHC"]: p for p in ds.procedures}
    assert set(pays_by_dossier) <= set(dossiers)
    for p in P:
        assert p["SoTien"] == p["Phi"] + p["LePhi"]
        if p["HinhThucThu"] == "Đối tượng miễn phí":
            assert p["SoTien"] == 0
        if p["TrangThai"] == "Đã thanh toán" and p["SoTien"] > 0:
            assert p["NgayThuPhi"] and p["HinhThucThanhToan"] in ("truc-tuyen", "tien-mat", "chuyen-khoan")
        if p["HinhThucThanhToan"] == "truc-tuyen":
            assert p["KenhThanhToan"] in (1, 2)
        if p["TrangThai"] == "Đã hoàn phí":
            assert p["NgayHoanPhi"] >= p["NgayThuPhi"]
        if p["TrangThai"] == "Hủy thanh toán":
            assert p["NgayHuy"]
        assert procs[dossiers[p["MaHoSo"]]["MaTTHC"]]["CoPhiLePhi"] == 1
    assert set(Counter(p["TrangThai"] for p in P)) == {
        "Đã thanh toán", "Chờ thanh toán", "Chưa thanh toán", "Đã hoàn phí", "Hủy thanh toán"}
    assert {p["HinhThucThanhToan"] for p in P} == {"truc-tuyen", "tien-mat", "chuyen-khoan", None}
    assert {p["HinhThucThu"] for p in P} == {"Thu trước", "Thu sau", "Đối tượng miễn phí"}
    assert all(p["MaGiaoDich"] for p in P if p["HinhThucThanhToan"] == "truc-tuyen" and p["TrangThai"] == "Đã thanh toán")
    late_paid = [p for p in P if p["HinhThucThu"] == "Thu sau" and p["NgayThuPhi"]
                 and ts(p["NgayThuPhi"]) - ts(dossiers[p["MaHoSo"]]["NgayKetThucXuLy"]) > timedelta(days=30)]
    assert len(late_paid) >= 5
    unpaid_results = [d for d in D if (d["TrangThaiHoSo"] in (9, 10)
                                       or any(r["DuongDanTepTinKetQua"] for r in d["DanhSachGiayToKetQua"]))
                      and (ob := obligation(pays_by_dossier[d["MaHoSo"]]))
                      and any(p["TrangThai"] != "Đã thanh toán" for p in ob)]
    assert len(unpaid_results) >= 20


def test_online_payment_flag_matches_payments(D: list[dict[str, Any]],  # noqa: N803
                                              pays_by_dossier: dict[str, list[dict[str, Any]]]) -> None:
    fee_codes_with_list = 0
    for d in D:
        pays = pays_by_dossier.get(d["MaHoSo"], [])
        online = [p for p in pays if p["TrangThai"] == "Đã thanh toán" and p["HinhThucThanhToan"] == "truc-tuyen"]
        if online:
            assert d["DuocThanhToanTrucTuyen"] in (1, 2)
        elif pays:
            assert d["DuocThanhToanTrucTuyen"] == 0, d["MaHoSo"]
        if pays:
            fee_codes_with_list += bool(d["DanhSachLePhi"])
            modes = {f["HinhThucThu"] for f in d["DanhSachLePhi"]}
            assert modes <= {p["HinhThucThu"] for p in pays}
    assert fee_codes_with_list > 500


# -- advance ---------------------------------------------------------------------------------------

def test_advance_changes_and_adds_records() -> None:
    ds = generate(seed=3, n_dossiers=2000)
    before = {d["MaHoSo"]: d for d in ds.dossiers}
    pay_before = {p["Ma"]: p for p in ds.payments}
    old_now = ds.now.strftime("%Y%m%d%H%M%S")
    new_now = ds.now + timedelta(days=1)
    stats = ds.advance(300, now=new_now, seed=1)
    after = {d["MaHoSo"]: d for d in ds.dossiers}
    changed = [d for d in after.values() if d["NgayCapNhat"] > old_now]
    assert len(changed) == 300
    assert stats["new_dossiers"] == len(set(after) - set(before)) == 90
    assert all(d["NgayCapNhat"] <= new_now.strftime("%Y%m%d%H%M%S") for d in changed)
    progressed = [k for k, d in before.items() if after[k]["TrangThaiHoSo"] != d["TrangThaiHoSo"]]
    assert len(progressed) >= 50
    assert all(before[k]["TrangThaiHoSo"] != 10 for k in progressed)
    late = [p for p in ds.payments if p["Ma"] in pay_before and p["NgayThuPhi"]
            and pay_before[p["Ma"]]["NgayThuPhi"] is None]
    assert late and all(p["NgayCapNhat"] > old_now and p["TrangThai"] == "Đã thanh toán" for p in late)
    order, upd = ds.ordered("dossiers")
    assert list(upd) == sorted(upd) and len(order) == len(after)
    with pytest.raises(ValueError):
        ds.advance(5, now=new_now)
    twin = generate(seed=3, n_dossiers=2000)
    twin.advance(300, now=new_now, seed=1)
    assert orjson.dumps(twin.records("dossiers")) == orjson.dumps(ds.records("dossiers"))
    assert orjson.dumps(twin.records("payments")) == orjson.dumps(ds.records("payments"))


# -- exports ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exports(ds: Dataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("exports")
    paths = export_files(ds, out, limit=250, seed=7)
    return {p.name: p for p in paths}


def test_export_files_written(exports: dict[str, Path]) -> None:
    assert sorted(exports) == sorted(f"{e}_{lay}.{ext}" for e in ("dossiers", "payments")
                                     for lay in ("plain", "ugly") for ext in ("xlsx", "csv"))


def test_plain_exports_roundtrip(ds: Dataset, exports: dict[str, Path]) -> None:
    ws = load_workbook(exports["dossiers_plain.xlsx"]).active
    rows = list(ws.iter_rows(values_only=True))
    assert rows[0][:3] == ("STT", "Mã hồ sơ", "Mã TTHC") and "Ngày cập nhật" in rows[0]
    assert len(rows) == 251
    first = ds.dossiers[:250]
    assert {r[1] for r in rows[1:]} == {d["MaHoSo"] for d in first}
    col = rows[0].index("Ngày tiếp nhận")
    by_key = {d["MaHoSo"]: d for d in first}
    for r in rows[1:]:
        exp = by_key[r[1]]["NgayTiepNhan"]
        assert (r[col].strftime("%Y%m%d%H%M%S") if r[col] else None) == exp
    with exports["payments_plain.csv"].open(encoding="utf-8") as f:
        assert f.read(1) != "\ufeff"
    with exports["payments_plain.csv"].open(encoding="utf-8") as f:
        prow = list(csv.DictReader(f))
    pays = {p["Ma"]: p for p in ds.payments[:250]}
    assert len(prow) == 250
    for r in prow:
        assert int(r["Số tiền"]) == pays[r["Mã thanh toán"]]["SoTien"]


def _texts(rows: list[tuple[Any, ...]]) -> list[str]:
    return [v for r in rows for v in r if isinstance(v, str)]


def test_ugly_xlsx_layout(exports: dict[str, Path]) -> None:
    wb = load_workbook(exports["dossiers_ugly.xlsx"])
    ws = wb.active
    rows = list(ws.iter_rows(values_only=True))
    texts = _texts(rows)
    assert rows[0][0] == "UBND HUYỆN TUY PHƯỚC"
    header_i = next(i for i, r in enumerate(rows) if r[0] == "STT")
    assert 1 <= header_i <= 5
    top, sub = rows[header_i], rows[header_i + 1]
    assert "Thời gian" in top and "Ngày tiếp nhận" in sub
    merged = [str(m) for m in ws.merged_cells.ranges]
    g = top.index("Thời gian")
    assert any(m.startswith(f"{ws.cell(header_i + 1, g + 1).coordinate}:") for m in merged)
    labels = [v for v in top + sub if isinstance(v, str)]
    assert any(not unicodedata.is_normalized("NFC", v) for v in labels)
    folded = {unicodedata.normalize("NFC", " ".join(v.split())).lower() for v in labels}
    assert "TRẠNG THÁI" in labels and {"mã thủ tục", "ngày có kết quả", "tên thủ tục"} <= folded
    assert "Ghi chú" in labels
    firsts = [r[0] for r in rows]
    assert "I. Cấp huyện" in firsts and "II. Cấp xã" in firsts
    assert firsts.index("I. Cấp huyện") < firsts.index("II. Cấp xã")
    assert rows[-1][0] == "Tổng cộng"
    assert any(re.fullmatch(r"\d{2}/\d{2}/\d{4}", t) for t in texts)
    assert any(re.fullmatch(r"\d{2}/\d{2}/\d{4} \d{2}:\d{2}", t) for t in texts)
    assert any(re.fullmatch(r"\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2}", t) for t in texts)
    assert any(isinstance(v, datetime) for r in rows[header_i + 2:] for v in r)
    assert any("\u00a0" in t or t != t.strip() for t in texts)
    assert {"Đã trả kết quả", "Trực tuyến", "Có", "Không"} <= {t.strip() for t in texts}
    pws = load_workbook(exports["payments_ugly.xlsx"]).active
    ptexts = _texts(list(pws.iter_rows(values_only=True)))
    assert any(re.fullmatch(r"\d{1,3}(\.\d{3})+", t) for t in ptexts)
    assert "Ngày thanh toán" in ptexts


def test_ugly_csv_layout(exports: dict[str, Path]) -> None:
    raw = exports["dossiers_ugly.csv"].read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    text = raw.decode("utf-8-sig")
    rows = list(csv.reader(text.splitlines(), delimiter=";"))
    assert rows[0][0] == "UBND HUYỆN TUY PHƯỚC" and len(rows[0]) == len(rows[-1])
    assert any(r[0] == "STT" for r in rows[:6])
    assert any(r[0] == "II. Cấp xã" for r in rows) and rows[-1][0] == "Tổng cộng"


# -- CLI -------------------------------------------------------------------------------------------

def test_cli_serve_prints_url_and_exits_on_sigterm() -> None:
    code = "from simulator.cli import simulate_app; simulate_app()"
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--dossiers", "300", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1], env={**os.environ})
    try:
        line = proc.stdout.readline().strip()
        m = re.fullmatch(r"Simulator listening on (http://127\.0\.0\.1:\d+)", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        r = requests.get(f"{m.group(1)}/api/v1/dossiers", headers={"Authorization": "Bearer sim-token"}, timeout=10)
        assert r.status_code == 200 and r.json()["total"] == 300
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_export(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from simulator.cli import simulate_app

    res = CliRunner().invoke(simulate_app, ["export", "--out", str(tmp_path), "--dossiers", "200",
                                            "--format", "csv", "--layout", "ugly", "--limit", "50"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dossiers_ugly.csv", "payments_ugly.csv"]
    bad = CliRunner().invoke(simulate_app, ["export", "--out", str(tmp_path), "--format", "pdf"])
    assert bad.exit_code != 0
    plain = tmp_path / "plain"
    res = CliRunner().invoke(simulate_app, ["export", "--out", str(plain), "--dossiers", "100", "--format", "csv",
                                            "--layout", "plain", "--limit", "20", "--flags"])
    assert res.exit_code == 0, res.output
    assert "Tái sử dụng dữ liệu" in (plain / "dossiers_plain.csv").read_text(encoding="utf-8").splitlines()[0]
    res = CliRunner().invoke(simulate_app, ["export", "--out", str(plain), "--dossiers", "100", "--format", "xlsx",
                                            "--layout", "ugly", "--limit", "20", "--no-flags"])
    assert res.exit_code == 0, res.output
    labels = {" ".join(str(v).split()) for r in load_workbook(plain / "dossiers_ugly.xlsx").active.iter_rows(
        max_row=8, values_only=True) for v in r if v}
    assert not {unicodedata.normalize("NFC", v).lower() for v in labels} & {"thanh toán trực tuyến", "có kết quả điện tử"}


# -- page rendering (the streaming server's path) ---------------------------------------------------

def test_page_text_is_the_dict_path_byte_for_byte() -> None:
    """The column-wise renderer (record texts, whole pages) gives exactly what orjson makes of the
    API dicts with their quirks, also after activity (new records, a longer calendar)."""
    ds = generate(seed=8, n_dossiers=2500)
    for step in range(2):
        for entity in ("dossiers", "payments"):
            idx = ds.ordered(entity)[0]
            want = [orjson.dumps(r) for r in ds.render(entity, idx, quirks=True)]
            assert ds._render_texts(entity, idx) == want
            for a in range(0, len(idx), 700):
                page = ds.page_json(entity, idx[a:a + 700], b"<", b">")
                assert page == b"<[" + b",".join(want[a:a + 700]) + b"]>"
            assert ds.page_json(entity, idx[:0]) == b"[]"
            assert ds.page_json(entity, idx[:1]) == ds.render_json(entity, idx[:1])
        if step == 0:
            ds.advance(400, now=ds.now + timedelta(days=300), seed=2)
