"""Unit tests of the normaliser: typing, parse issues, duplicates, personal data."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tasks.normalize import applicant_key, canonical_json, normalize
from tasks.settings import EXPECTATIONS_DIR

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


# --- what the 766 indicators need (docs/official-figures.md section 1) --------------------------
OFFICIAL = ["n_tai_lieu_so_hoa", "has_digitised", "n_tai_lieu_kho_dmqg", "has_from_national_store", "n_le_phi",
            "n_le_phi_co_gia"]


def _lists(**kw):
    """A record with every nested list (the fast path), overridden by ``kw``."""
    base = {"TaiLieuNop": [], "DanhSachGiayToKetQua": [], "DanhSachLePhi": [], "DanhSachHoSoBoSung": []}
    base.update(kw)
    return _d(**base)


def _official(rec: dict) -> dict:
    row = normalize("dossiers", [rec], hash_key=KEY).core.iloc[0]
    return {c: (None if pd.isna(row[c]) else row[c]) for c in OFFICIAL}


def test_documents_digitised_and_from_the_national_store():
    docs = [{"DuocSoHoa": 1, "DuocLayTuKhoDMQG": 0}, {"DuocSoHoa": 0, "DuocLayTuKhoDMQG": 1},
            {"DuocSoHoa": 1, "DuocLayTuKhoDMQG": 1}, {"MaThanhPhanHoSo": "TP04"}]
    got = _official(_lists(TaiLieuNop=docs))
    assert (got["n_tai_lieu_so_hoa"], got["has_digitised"]) == (2, True)
    assert (got["n_tai_lieu_kho_dmqg"], got["has_from_national_store"]) == (2, True)
    undigitised = _official(_lists(TaiLieuNop=[{"DuocSoHoa": 0, "DuocLayTuKhoDMQG": 0}, {}]))
    assert (undigitised["n_tai_lieu_so_hoa"], undigitised["has_digitised"]) == (0, False)
    assert (undigitised["n_tai_lieu_kho_dmqg"], undigitised["has_from_national_store"]) == (0, False)
    empty = _official(_lists())  # an empty list is known: none, not unknown
    assert (empty["n_tai_lieu_so_hoa"], empty["has_digitised"], empty["has_from_national_store"]) == (0, False, False)
    # numeric strings (the slow path) give the same values
    slow = _official(_lists(TaiLieuNop=[{"DuocSoHoa": "1", "DuocLayTuKhoDMQG": "0"}, {"DuocSoHoa": "", "DuocLayTuKhoDMQG": "1"}]))
    assert (slow["n_tai_lieu_so_hoa"], slow["has_digitised"], slow["n_tai_lieu_kho_dmqg"]) == (1, True, 1)


def test_fee_lines_with_and_without_a_price():
    fees = [{"LoaiPhiLePhi": "Phí", "Gia": 50000}, {"LoaiPhiLePhi": "Lệ phí", "Gia": 0}, {"LoaiPhiLePhi": "Lệ phí"}]
    got = _official(_lists(DanhSachLePhi=fees))
    assert (got["n_le_phi"], got["n_le_phi_co_gia"]) == (3, 1)
    free = _official(_lists(DanhSachLePhi=[{"Gia": 0}, {"Gia": None}]))
    assert (free["n_le_phi"], free["n_le_phi_co_gia"]) == (2, 0)  # declared but all zero-priced
    none = _official(_lists())
    assert (none["n_le_phi"], none["n_le_phi_co_gia"]) == (0, 0)
    slow = _official(_lists(DanhSachLePhi=[{"Gia": "12000"}, {"Gia": ""}, {"Gia": "0"}]))
    assert (slow["n_le_phi"], slow["n_le_phi_co_gia"]) == (3, 1)


def test_no_lists_leave_every_new_column_unknown():
    got = _official(_d())
    assert got == dict.fromkeys(OFFICIAL)  # null, never 0/False
    # one list present, the others absent: only what that list tells is known
    only_fees = _official(_d(DanhSachLePhi=[{"Gia": 1000}]))
    assert (only_fees["n_le_phi"], only_fees["n_le_phi_co_gia"]) == (1, 1)
    assert only_fees["has_digitised"] is None and only_fees["n_tai_lieu_kho_dmqg"] is None
    nulls = _official(_d(TaiLieuNop=None, DanhSachLePhi=None))  # null lists: unknown too
    assert nulls == dict.fromkeys(OFFICIAL)


def test_a_malformed_flag_or_price_is_the_nested_list_issue():
    for rec in (_lists(TaiLieuNop=[{"DuocSoHoa": 2}]), _lists(TaiLieuNop=[{"DuocLayTuKhoDMQG": "có"}]),
                _lists(DanhSachLePhi=[{"Gia": "năm nghìn"}]), _lists(DanhSachLePhi=["50000"])):
        n = normalize("dossiers", [rec], hash_key=KEY)
        assert list(n.issues["rule"]) == ["parse_nested_lists"], rec
        assert n.supplements is not None and n.supplements.empty


def _round(req, recv=None, before=None, after=None):
    return {"NgayBoSung": req, "NgayTiepNhanBoSung": recv, "NgayHenTraTruoc": before, "NgayHenTraMoi": after}


def test_supplement_rounds_of_the_kept_version():
    newer = _lists(NgayCapNhat="20240120000000", DanhSachHoSoBoSung=[
        _round("20240103080000", "20240105090000", "20240110170000", "20240112170000"),
        _round(20240115080000, "", "20240112170000", None),  # a number, and an empty string = no value
    ])
    older = _lists(NgayCapNhat="20240104000000", DanhSachHoSoBoSung=[_round("20240103080000")])
    other = _lists(MaHoSo="H-2", DanhSachHoSoBoSung=[])
    n = normalize("dossiers", [newer, other, older], hash_key=KEY)
    assert n.issues.empty and n.core.set_index("ma_ho_so").loc["H-1", "n_bo_sung"] == 2
    s = n.supplements
    assert list(s.columns) == ["ma_ho_so", "ngay_cap_nhat", "lan", "ngay_bo_sung", "ngay_tiep_nhan_bo_sung",
                               "ngay_hen_tra_truoc", "ngay_hen_tra_moi"]
    assert list(s["ma_ho_so"]) == ["H-1", "H-1"] and list(s["lan"]) == [1, 2]
    assert set(s["ngay_cap_nhat"]) == {pd.Timestamp("2024-01-20")}  # the kept version's rounds only
    first, second = s.iloc[0], s.iloc[1]
    assert first["ngay_bo_sung"] == pd.Timestamp("2024-01-03 08:00") and first["ngay_tiep_nhan_bo_sung"] == pd.Timestamp(
        "2024-01-05 09:00")
    assert first["ngay_hen_tra_truoc"] == pd.Timestamp("2024-01-10 17:00")
    assert first["ngay_hen_tra_moi"] == pd.Timestamp("2024-01-12 17:00")
    assert second["ngay_bo_sung"] == pd.Timestamp("2024-01-15 08:00")
    assert pd.isna(second["ngay_tiep_nhan_bo_sung"]) and pd.isna(second["ngay_hen_tra_moi"])
    # the slow path (a numeric-string flag elsewhere in the record) gives the same rounds
    slow = normalize("dossiers", [newer | {"TaiLieuNop": [{"DuocSoHoa": "1"}]}], hash_key=KEY).supplements
    pd.testing.assert_frame_equal(slow, s)


def test_supplement_rounds_with_a_bad_timestamp_are_the_nested_list_issue():
    bad_ts = _lists(DanhSachHoSoBoSung=[_round("20240103080000"), _round("03/01/2024")])
    not_object = _lists(MaHoSo="H-2", DanhSachHoSoBoSung=["20240103080000"])
    slow_bad = _d(MaHoSo="H-3", DanhSachHoSoBoSung=[_round("20240231080000")])  # 31 February
    good = _lists(MaHoSo="H-4", DanhSachHoSoBoSung=[_round(" 20240103080000 ")])  # stray spaces: tolerated
    n = normalize("dossiers", [bad_ts, not_object, slow_bad, good], hash_key=KEY)
    got = dict(zip(n.issues["record_key"], n.issues["rule"], strict=True))
    assert got == {"H-1": "parse_nested_lists", "H-2": "parse_nested_lists", "H-3": "parse_nested_lists"}
    detail = n.issues.set_index("record_key")["detail"]
    assert "DanhSachHoSoBoSung[2].NgayBoSung" in detail["H-1"] and "03/01/2024" in detail["H-1"]
    assert n.supplements.set_index("ma_ho_so").loc["H-4", "ngay_bo_sung"] == pd.Timestamp("2024-01-03 08:00")
    # a broken older copy of a key does not taint its kept version
    fixed = _lists(NgayCapNhat="20240106000000", DanhSachHoSoBoSung=[_round("20240103080000")])
    n = normalize("dossiers", [bad_ts, fixed], hash_key=KEY)
    assert n.issues.empty and len(n.supplements) == 1


def test_a_file_record_has_no_rounds_and_unknown_new_columns():
    file_rec = {k: v for k, v in _d(MaHoSo="F").items()} | {"_CoKetQuaDienTu": 1, "_TaiSuDungDuLieu": 0,
                                                            "_row_number": 7}
    n = normalize("dossiers", [file_rec], hash_key=KEY)
    row = n.core.iloc[0]
    assert all(pd.isna(row[c]) for c in OFFICIAL) and pd.isna(row["n_bo_sung"])
    assert pd.isna(row["duoc_thanh_toan_truc_tuyen"])  # the column was not in the file: unknown
    assert bool(row["has_e_result"]) and not bool(row["has_reuse"])
    assert n.supplements is not None and n.supplements.empty
    assert list(n.supplements.columns)[:3] == ["ma_ho_so", "ngay_cap_nhat", "lan"]


# --- the normaliser's rules come from the suites -----------------------------------------------
def _suites(tmp_path: Path, entity: str, edit) -> Path:
    """A copy of the project's suites in which ``edit(expectations)`` changed ``entity``'s."""
    for f in EXPECTATIONS_DIR.glob("*.json"):
        shutil.copy(f, tmp_path / f.name)
    path = tmp_path / f"{entity}.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["expectations"] = edit(doc["expectations"])
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return tmp_path


def _without(check: str):
    return lambda exps: [e for e in exps if not (e["type"] == "dvc_parse" and e["kwargs"]["check"] == check)]


@pytest.mark.parametrize(("entity", "edit", "says"), [
    ("dossiers", _without("typed"), "declares no dvc_parse rule with check 'typed'"),
    ("dossiers", _without("required"), "declares no dvc_parse rule with check 'required'"),
    ("dossiers", _without("nested_lists"), "declares no dvc_parse rule with check 'nested_lists'"),
    ("units", _without("typed"), "declares no dvc_parse rule with check 'typed'"),
    ("payments", lambda exps: [e for e in exps if e["meta"]["rule"] != "payment_key_unique"],
     "has no rule payment_key_unique"),
    ("dossiers", lambda exps: [dict(e, kwargs=dict(e["kwargs"], columns=e["kwargs"]["columns"][:-1]))
                               if e["type"] == "dvc_parse" and e["kwargs"]["check"] == "typed" else e for e in exps],
     r"missing: \['ngay_cap_nhat'\]"),
])
def test_a_suite_without_the_normalisers_rules_fails_loudly(tmp_path, entity, edit, says):
    suites = _suites(tmp_path, entity, edit)
    with pytest.raises(ValueError, match=says) as raised:
        normalize(entity, [], hash_key=KEY, expectations_dir=suites)
    assert f"expectations/{entity}.json" in str(raised.value)


def test_the_severity_of_the_normalisers_issues_comes_from_the_suite(tmp_path):
    def soften(exps):
        for e in exps:
            if e["meta"]["rule"] in ("dossier_values_typed", "dossier_key_unique"):
                e["meta"]["severity"] = "warning"
        return exps

    recs = [_d(MaHoSo="A", NgayTiepNhan="31/02/2024"), _d(MaHoSo="B", TrangThaiHoSo=None),
            _d(MaHoSo="C", KenhThucHien=1), _d(MaHoSo="C", KenhThucHien=2)]
    suites = _suites(tmp_path, "dossiers", soften)
    got = normalize("dossiers", recs, hash_key=KEY, expectations_dir=suites).issues
    as_shipped = normalize("dossiers", recs, hash_key=KEY).issues
    rows = {(k, r): s for k, r, s in zip(got["record_key"], got["rule"], got["severity"], strict=True)}
    assert rows == {("A", "parse_ngay_tiep_nhan"): "warning", ("B", "required_trang_thai"): "critical",
                    ("C", "dossier_key_unique"): "warning"}
    assert set(zip(as_shipped["record_key"], as_shipped["rule"], strict=True)) == set(rows)
    assert set(as_shipped["severity"]) == {"critical"}
