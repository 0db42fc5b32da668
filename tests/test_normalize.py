"""Unit tests of the normaliser: typing, parse issues, duplicates, personal data."""

from __future__ import annotations

import hashlib

import pandas as pd

from tasks.normalize import applicant_key, canonical_json, normalize

KEY = b"test-key"


def _d(**kw):
    base = {"MaHoSo": "H-1", "TrangThaiHoSo": 10, "NgayCapNhat": "20240105100000",
            "NgayTiepNhan": "20240102080000", "ChuHoSo": "Nguyễn Văn A", "SoGiayToChuHoSo": "079123456789",
            "SoDienThoai": "0912345678"}
    base.update(kw)
    return base


def test_types_and_numeric_strings():
    n = normalize("dossiers", [_d(TrangThaiHoSo="9", KenhThucHien="2", NgayHenTra="")], hash_key=KEY)
    row = n.core.iloc[0]
    assert row["trang_thai"] == 9 and row["kenh_thuc_hien"] == 2
    assert pd.isna(row["ngay_hen_tra"])  # empty string means no value
    assert row["ngay_tiep_nhan"] == pd.Timestamp("2024-01-02 08:00:00")
    assert n.issues.empty


def keyless(record: dict) -> str:
    """The key of a record that lacks its own: '#' and the start of its content hash."""
    return "#" + hashlib.sha256(canonical_json(record)).hexdigest()[:16]


def test_a_record_without_its_key_is_named_by_its_content_wherever_it_is_read():
    lost = _d(MaHoSo=None, TrangThaiHoSo=4)
    first = normalize("dossiers", [lost, _d(MaHoSo="A")], hash_key=KEY)
    later = normalize("dossiers", [_d(MaHoSo="B"), _d(MaHoSo="C"), lost], hash_key=KEY)
    name = keyless(lost)
    assert set(first.issues["record_key"]) == set(later.issues["record_key"]) == {name}
    other = normalize("dossiers", [_d(MaHoSo=None, TrangThaiHoSo=5)], hash_key=KEY)
    assert set(other.issues["record_key"]) != {name}  # different content, different name


def test_unparseable_values_become_critical_issues_not_nulls():
    recs = [_d(MaHoSo="A", NgayTiepNhan="31/02/2024"), _d(MaHoSo="B", TrangThaiHoSo="mười"),
            _d(MaHoSo="C", KenhThucHien=2.5), _d(MaHoSo="", TrangThaiHoSo=4)]
    n = normalize("dossiers", recs, hash_key=KEY)
    got = set(zip(n.issues["record_key"], n.issues["rule"], strict=True))
    assert ("A", "parse_ngay_tiep_nhan") in got
    assert ("B", "parse_trang_thai") in got
    assert ("C", "parse_kenh_thuc_hien") in got
    assert (keyless(recs[3]), "required_ma_ho_so") in got
    assert set(n.issues["severity"]) == {"critical"}


def test_latest_version_wins_and_older_broken_copy_does_not_taint():
    recs = [_d(NgayCapNhat="20240101000000", TrangThaiHoSo="broken"), _d(NgayCapNhat="20240103000000", TrangThaiHoSo=4),
            _d(NgayCapNhat="20240102000000", TrangThaiHoSo=2)]
    n = normalize("dossiers", recs, hash_key=KEY)
    assert len(n.core) == 1 and n.core.iloc[0]["trang_thai"] == 4
    assert n.rows_received == 3 and n.rows_duplicate == 2 and n.rows_read == 1
    assert n.issues.empty
    assert len(n.raw) == 3  # every distinct version is kept raw


def test_personal_data_never_in_core():
    n = normalize("dossiers", [_d()], hash_key=KEY)
    values = {str(v) for v in n.core.iloc[0].tolist()}
    assert not values & {"Nguyễn Văn A", "079123456789", "0912345678"}
    assert n.core.iloc[0]["applicant_key"] == applicant_key("079 123 456 789", KEY)
    assert applicant_key("079123456789", b"other") != n.core.iloc[0]["applicant_key"]


def test_nested_lists_derive_flags_and_files_stay_unknown():
    api = _d(TaiLieuNop=[{"DuocTaiSuDung": 1}, {"DuocTaiSuDung": 0}],
             DanhSachGiayToKetQua=[{"DuongDanTepTinKetQua": ""}, {"DuongDanTepTinKetQua": "https://kq/1.pdf"}],
             DanhSachHoSoBoSung=[{}, {}], DanhSachLePhi=[{"Gia": 8000}, {"Gia": "12000"}])
    file_rec = {k: v for k, v in _d(MaHoSo="F").items()} | {"_CoKetQuaDienTu": 0}
    n = normalize("dossiers", [api, file_rec], hash_key=KEY).core.set_index("ma_ho_so")
    assert n.loc["H-1", "n_tai_lieu"] == 2 and n.loc["H-1", "n_tai_lieu_tai_su_dung"] == 1
    assert bool(n.loc["H-1", "has_reuse"]) and bool(n.loc["H-1", "has_e_result"])
    assert n.loc["H-1", "n_bo_sung"] == 2 and n.loc["H-1", "tong_le_phi_khai"] == 20000
    assert pd.isna(n.loc["F", "has_reuse"])  # unknown, never false
    assert n.loc["F", "has_e_result"] is False or n.loc["F", "has_e_result"] == False  # noqa: E712
    assert pd.isna(n.loc["F", "n_tai_lieu"])


def test_malformed_nested_list_is_quarantined():
    n = normalize("dossiers", [_d(TaiLieuNop="not a list")], hash_key=KEY)
    assert list(n.issues["rule"]) == ["parse_nested_lists"]


def test_units_composite_key_and_dates():
    recs = [{"MaDonVi": "U1", "HieuLucTu": "20200101", "HieuLucDen": "20250630", "CapDonVi": "2"},
            {"MaDonVi": "U1", "HieuLucTu": "20250701", "HieuLucDen": None, "CapDonVi": 3},
            {"MaDonVi": "U2", "HieuLucTu": "2020-01-01"}]
    n = normalize("units", recs, hash_key=KEY)
    assert sorted(n.core["record_key"]) == sorted([keyless(recs[2]), "U1|20200101", "U1|20250701"])
    assert set(n.issues["rule"]) == {"parse_hieu_luc_tu"}


def test_non_object_records_are_issues_not_crashes():
    n = normalize("payments", [None, 5, "x", {"Ma": "P1", "MaHoSo": "H", "TrangThai": "Đã thanh toán",
                                              "NgayCapNhat": "20240101000000"}], hash_key=KEY)
    assert n.rows_read == 4
    keys = set(n.core["record_key"])
    assert "P1" in keys and len(keys) == 4 and all(k.startswith("#") for k in keys - {"P1"})
    assert set(n.issues.loc[n.issues["record_key"] == "P1", "rule"]) == set()
