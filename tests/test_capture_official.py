"""What the loader keeps for the 766 indicators (docs/official-figures.md section 1), on the embedded
DuckDB and the real PostgreSQL: the new core.dossiers columns and core.dossier_supplements, whose
rows are those of each dossier's current version whatever the order the versions load in."""

from __future__ import annotations

import csv
import random
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from tasks.load import load_batch
from tasks.normalize import normalize
from tasks.source_files import parse_file
from tasks.warehouse import connect, upgrade
from tests.warehouse_state import table_fingerprint

KEY = b"k"
NEW_COLUMNS = ["n_tai_lieu_so_hoa", "has_digitised", "n_tai_lieu_kho_dmqg", "has_from_national_store", "n_le_phi",
               "n_le_phi_co_gia"]
ROUND_COLUMNS = "lan, ngay_bo_sung, ngay_tiep_nhan_bo_sung, ngay_hen_tra_truoc, ngay_hen_tra_moi"


def _round(req: str, recv: str | None = None, before: str | None = None, after: str | None = None) -> dict:
    return {"NgayBoSung": req, "NgayTiepNhanBoSung": recv, "NgayHenTraTruoc": before, "NgayHenTraMoi": after}


def _dossier(key: str = "H-1", upd: str = "20240120000000", rounds: list[dict] | None = None, **kw) -> dict:
    rec = {"MaHoSo": key, "MaTTHC": "1.001653.000.00.00.H08", "MaDonVi": "000.00.15.H08", "TrangThaiHoSo": 4,
           "NgayTiepNhan": "20240102080000", "NgayHenTra": "20240118170000", "NgayCapNhat": upd, "KenhThucHien": 2,
           "TaiLieuNop": [{"DuocSoHoa": 1, "DuocLayTuKhoDMQG": 0, "DuocTaiSuDung": 0},
                          {"DuocSoHoa": 0, "DuocLayTuKhoDMQG": 1, "DuocTaiSuDung": 1}],
           "DanhSachGiayToKetQua": [], "DanhSachLePhi": [{"Gia": 0}, {"Gia": 25000}, {"LoaiPhiLePhi": "Phí"}],
           "DanhSachHoSoBoSung": rounds if rounds is not None else []}
    rec.update(kw)
    return rec


THREE = [_round("20240103080000", "20240105090000", "20240110170000", "20240112170000"),
         _round("20240108080000", "20240109100000", "20240112170000", "20240115170000"),
         _round("20240116080000", None, "20240115170000", None)]


def _load(engine, records: list[dict], run_id: str = "r1", origin: str = "api"):
    n = normalize("dossiers", records, hash_key=KEY)
    return load_batch(engine, n, n.issues, source="src", run_id=run_id, origin=origin)


def _rounds(engine, key: str = "H-1") -> list[tuple]:
    with engine.connect() as c:
        rows = c.execute(sa.text(f"SELECT ngay_cap_nhat, {ROUND_COLUMNS} FROM core.dossier_supplements "
                                 "WHERE source = 'src' AND ma_ho_so = :k ORDER BY ngay_cap_nhat, lan"), {"k": key})
        return [tuple(r) for r in rows]


def _current(engine, key: str = "H-1") -> tuple:
    with engine.connect() as c:
        return tuple(c.execute(sa.text("SELECT ngay_cap_nhat, n_bo_sung FROM core.dossiers WHERE ma_ho_so = :k"),
                               {"k": key}).one())


@pytest.fixture
def engine(warehouse_url):
    eng = connect(warehouse_url)
    upgrade(eng)
    yield eng
    eng.dispose()


def test_new_columns_are_loaded(engine):
    _load(engine, [_dossier(), _dossier("H-2", TaiLieuNop=[], DanhSachLePhi=[]),
                   {k: v for k, v in _dossier("H-3").items() if k not in ("TaiLieuNop", "DanhSachLePhi")}])
    with engine.connect() as c:
        rows = {r[0]: tuple(r[1:]) for r in c.execute(
            sa.text(f"SELECT ma_ho_so, {', '.join(NEW_COLUMNS)} FROM core.dossiers ORDER BY ma_ho_so"))}
    assert rows == {"H-1": (1, True, 1, True, 3, 1), "H-2": (0, False, 0, False, 0, 0),
                    "H-3": (None, None, None, None, None, None)}


def test_rounds_are_loaded_and_replaced_by_a_newer_version_with_fewer(engine):
    _load(engine, [_dossier(rounds=THREE), _dossier("H-2", rounds=THREE[:1])])
    got = _rounds(engine)
    assert [r[1] for r in got] == [1, 2, 3] and {r[0] for r in got} == {datetime(2024, 1, 20)}
    assert got[0][1:] == (1, datetime(2024, 1, 3, 8), datetime(2024, 1, 5, 9), datetime(2024, 1, 10, 17),
                          datetime(2024, 1, 12, 17))
    assert got[2][3] is None and got[2][5] is None  # still open; no new due date
    # a newer version with one round (the list was rewritten): the old three go
    _load(engine, [_dossier(upd="20240125000000", rounds=[_round("20240122080000")])], run_id="r2")
    assert _rounds(engine) == [(datetime(2024, 1, 25), 1, datetime(2024, 1, 22, 8), None, None, None)]
    assert _current(engine) == (datetime(2024, 1, 25), 1)
    assert len(_rounds(engine, "H-2")) == 1  # another key of an earlier batch is untouched
    # a newer version without rounds: none left
    _load(engine, [_dossier(upd="20240126000000", rounds=[])], run_id="r3")
    assert _rounds(engine) == [] and _current(engine) == (datetime(2024, 1, 26), 0)


def test_an_older_version_loaded_late_never_changes_the_rounds(engine):
    _load(engine, [_dossier(upd="20240125000000", rounds=THREE[:2])])
    before = _rounds(engine)
    _load(engine, [_dossier(upd="20240120000000", rounds=THREE)], run_id="r2")
    assert _rounds(engine) == before and _current(engine) == (datetime(2024, 1, 25), 2)
    # and with both versions in one batch, the batch's latest version wins
    _load(engine, [_dossier("H-2", upd="20240130000000", rounds=THREE[:1]),
                   _dossier("H-2", upd="20240120000000", rounds=THREE)], run_id="r3")
    assert [r[:2] for r in _rounds(engine, "H-2")] == [(datetime(2024, 1, 30), 1)]


def test_the_same_version_sent_again_with_other_rounds_replaces_them(engine):
    """The source re-sends a version with the same NgayCapNhat and other rounds: the dossier row is
    replaced (tasks/load.py), and so are its rounds, the extra ones included."""
    _load(engine, [_dossier(rounds=THREE)])
    _load(engine, [_dossier(rounds=[_round("20240104080000", "20240105090000")])], run_id="r2")
    assert _rounds(engine) == [(datetime(2024, 1, 20), 1, datetime(2024, 1, 4, 8), datetime(2024, 1, 5, 9),
                                None, None)]
    assert _current(engine) == (datetime(2024, 1, 20), 1)


def test_rerun_and_reordered_loads_give_the_same_rounds(engine, warehouse_url, tmp_path):
    versions = [_dossier(f"H-{i}", upd=f"202401{10 + v:02d}000000", rounds=THREE[: (i + v) % 4])
                for i in range(30) for v in range(3)]
    _load(engine, versions[:45])
    _load(engine, versions[45:], run_id="r2")
    with engine.connect() as c:
        first = table_fingerprint(c, "core.dossier_supplements")
    _load(engine, versions, run_id="r3")  # the same batch again
    _load(engine, versions[:45], run_id="r4")
    with engine.connect() as c:
        assert table_fingerprint(c, "core.dossier_supplements") == first
        stale = c.execute(sa.text(
            "SELECT count(*) FROM core.dossier_supplements s JOIN core.dossiers d ON d.source = s.source "
            "AND d.ma_ho_so = s.ma_ho_so WHERE s.ngay_cap_nhat <> d.ngay_cap_nhat")).scalar_one()
        counted = c.execute(sa.text(
            "SELECT sum(n_bo_sung) FROM core.dossiers")).scalar_one()
        total = c.execute(sa.text("SELECT count(*) FROM core.dossier_supplements")).scalar_one()
    assert stale == 0 and total == counted > 0
    other = connect(f"duckdb:///{tmp_path / 'other.duckdb'}")
    upgrade(other)
    shuffled = versions[:]
    random.Random(7).shuffle(shuffled)
    for i in range(0, len(shuffled), 10):
        _load(other, shuffled[i : i + 10], run_id=f"x{i}")
    with other.connect() as c:
        assert table_fingerprint(c, "core.dossier_supplements") == first
    other.dispose()


def test_quarantined_rounds_and_failed_transactions_leave_nothing(engine):
    r = _load(engine, [_dossier(rounds=[_round("20240103080000"), _round("2024-01-08")]),
                       _dossier("H-2", rounds=THREE[:1], NgayTiepNhan="31/02/2024")])
    assert (r.rows_loaded, r.rows_quarantined) == (0, 2)
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM core.dossier_supplements")).scalar_one() == 0
        rules = dict(c.execute(sa.text("SELECT record_key, rule FROM dq.quarantine")).fetchall())
    assert rules == {"H-1": "parse_nested_lists", "H-2": "parse_ngay_tiep_nhan"}
    with pytest.raises(RuntimeError):
        with engine.begin() as conn:
            n = normalize("dossiers", [_dossier("H-3", rounds=THREE)], hash_key=KEY)
            load_batch(conn, n, n.issues, source="src", run_id="r2")
            raise RuntimeError("crash after the load, before commit")
    assert _rounds(engine, "H-3") == []


def _write_export(path: Path, rows: list[list[str]], header: list[str]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        w = csv.writer(f, delimiter=";")
        w.writerow(["SỔ THEO DÕI HỒ SƠ"])
        w.writerow(header)
        w.writerows(rows)
    return path


def test_a_file_dossier_leaves_the_new_columns_unknown(engine, tmp_path):
    header = ["STT", "Mã hồ sơ", "Mã TTHC", "Trạng thái", "Kênh nộp", "Ngày tiếp nhận", "Ngày cập nhật"]
    rows = [["1", "F-1", "1.001653.000.00.00.H08", "Đang xử lý", "Trực tuyến", "02/01/2024 08:00",
             "20/01/2024 00:00"]]
    parsed = parse_file(_write_export(tmp_path / "so_theo_doi.csv", rows, header))
    assert parsed.entity == "dossiers" and len(parsed.records) == 1
    assert "DuocThanhToanTrucTuyen" not in parsed.records[0]  # the column is not in the file
    r = _load(engine, parsed.records, origin="file:so_theo_doi.csv")
    assert r.rows_loaded == 1
    with engine.connect() as c:
        row = c.execute(sa.text(f"SELECT {', '.join(NEW_COLUMNS)}, n_bo_sung, has_reuse, has_e_result, "
                                "duoc_thanh_toan_truc_tuyen FROM core.dossiers WHERE ma_ho_so = 'F-1'")).one()
        assert c.execute(sa.text("SELECT count(*) FROM core.dossier_supplements")).scalar_one() == 0
    assert tuple(row) == (None,) * 10  # unknown, never 0/False
    # with the flag columns: they fill has_reuse / has_e_result / duoc_thanh_toan_truc_tuyen, nothing else
    header2 = [*header, "Thanh toán trực tuyến", "Có kết quả điện tử", "Tái sử dụng dữ liệu"]
    rows2 = [[*rows[0][:-1], "21/01/2024 00:00", "Có", "Không", "Có"]]
    parsed2 = parse_file(_write_export(tmp_path / "so_theo_doi_2.csv", rows2, header2))
    _load(engine, parsed2.records, run_id="r2", origin="file:so_theo_doi_2.csv")
    with engine.connect() as c:
        row = c.execute(sa.text(f"SELECT {', '.join(NEW_COLUMNS)}, n_bo_sung, has_reuse, has_e_result, "
                                "duoc_thanh_toan_truc_tuyen FROM core.dossiers WHERE ma_ho_so = 'F-1'")).one()
    assert tuple(row) == (None,) * 7 + (True, False, 1)


def test_a_newer_file_version_drops_the_api_rounds(engine, tmp_path):
    """A file version newer than the API's carries no lists: the dossier's rounds become unknown
    (n_bo_sung null, no rows at its version), not the API's stale ones."""
    _load(engine, [_dossier("F-1", rounds=THREE)])
    header = ["Mã hồ sơ", "Trạng thái", "Ngày cập nhật"]
    parsed = parse_file(_write_export(tmp_path / "moi.csv", [["F-1", "Đang xử lý", "21/01/2024 08:00"]], header))
    _load(engine, parsed.records, run_id="r2", origin="file:moi.csv")
    assert _rounds(engine, "F-1") == [] and _current(engine, "F-1") == (datetime(2024, 1, 21, 8), None)
