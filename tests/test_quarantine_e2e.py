"""The data-quality gate end to end: bad records planted into the simulator and into clerk files
go through the real pipeline (Prefect flow, real HTTP, real warehouse) and each one lands in
``dq.quarantine`` under the rule of the suites / normaliser that it breaks, with its raw record;
every good row loads, the counts reconcile, warnings load and are recorded, and a corrected
record that arrives later loads and resolves its quarantine rows.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import openpyxl
import orjson
import pytest
import requests
import sqlalchemy as sa

from simulator.dataset import Dataset, generate
from simulator.inject import inject, planted
from simulator.server import start_server
from tasks.source_api import SourceClient
from tasks.warehouse import connect

C, W = "critical", "warning"
TOKEN = "plant-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOT_AN_OBJECT = "this record is not an object"


@dataclass
class Plant:
    """One kind of bad (or suspicious) record: what is planted and where it must land."""

    kind: str
    entity: str
    records: list[Any]  # served in this order (two for a conflicting duplicate)
    rules: set[str]  # every rule the record must be flagged by, all of ``severity``
    severity: str = C
    key: str | None = None  # record_key in dq.*; None: keyless, found by its raw record
    fix: dict[str, Any] | None = field(default=None)  # a corrected version for a later run

    @property
    def raw(self) -> Any:
        """The record as the warehouse keeps it (the version that won within the batch)."""
        last = self.records[-1]
        return last if isinstance(last, dict) else {"_not_an_object": last}


def _stamp(i: int) -> str:
    """A distinct NgayCapNhat per plant, inside the generated data's period."""
    return (datetime(2024, 6, 20, 8) + timedelta(minutes=7 * i)).strftime("%Y%m%d%H%M%S")


def base_records(ds: Dataset) -> tuple[dict, dict, dict, dict]:
    """A clean handed-over dossier (no supplement), a paid payment of a dossier, a procedure and a unit."""
    dossier = next(d for d in ds.records("dossiers") if d["TrangThaiHoSo"] == 10 and not d["DanhSachHoSoBoSung"]
                   and d["NgayTiepNhan"] and d["NgayKetThucXuLy"] and d["NgayTra"])
    payment = next(p for p in ds.records("payments") if p["TrangThai"] == "Đã thanh toán" and p["SoTien"] > 0)
    return dossier, payment, dict(ds.procedures[0]), dict(ds.units[2])


def plants(ds: Dataset) -> list[Plant]:
    """The planted kinds: API records, critical first, then warning-level ones."""
    d0, p0, pr0, u0 = base_records(ds)
    out: list[Plant] = []

    def dossier(kind: str, rules: set[str], severity: str = C, keyless: bool = False, fix: dict | None = None,
                **changes: Any) -> None:
        n = len(out)
        key = f"PLANT-D{n:02d}"
        rec = {**d0, "MaHoSo": key, "NgayCapNhat": _stamp(n), **changes}
        if keyless:
            rec["MaHoSo"] = None
        out.append(Plant(kind, "dossiers", [rec], rules, severity, None if keyless else rec["MaHoSo"], fix))

    def payment(kind: str, rules: set[str], severity: str = C, fix: dict | None = None, **changes: Any) -> None:
        n = len(out)
        rec = {**p0, "Ma": f"PLANT-P{n:02d}", "MaGiaoDich": None, "NgayCapNhat": _stamp(n), **changes}
        out.append(Plant(kind, "payments", [rec], rules, severity, rec["Ma"], fix))

    def procedure(kind: str, rules: set[str], severity: str = C, fix: dict | None = None, **changes: Any) -> None:
        rec = {**pr0, "MaTTHC": f"1.{990000 + len(out):06d}.000.00.00.H08", **changes}
        out.append(Plant(kind, "procedures", [rec], rules, severity, rec["MaTTHC"], fix))

    def unit(kind: str, rules: set[str], severity: str = C, fix: dict | None = None, keyless: bool = False,
             **changes: Any) -> None:
        rec = {**u0, "MaDonVi": f"000.99.{len(out):02d}.H08", "TenDonVi": "UBND xã Thử Nghiệm", **changes}
        key = None if keyless else f"{rec['MaDonVi']}|{rec['HieuLucTu']}"
        out.append(Plant(kind, "units", [rec], rules, severity, key, fix))

    # dossiers: codes, dates, required fields, structure
    dossier("status 11", {"dossier_status_in_code_list"}, TrangThaiHoSo=11, fix={"TrangThaiHoSo": 10})
    dossier("status 'abc'", {"parse_trang_thai", "dossier_status_present"}, TrangThaiHoSo="abc")
    dossier("channel 7", {"dossier_channel_in_code_list"}, KenhThucHien=7, fix={"KenhThucHien": 2})
    dossier("missing MaHoSo", {"required_ma_ho_so", "dossier_key_present"}, keyless=True)
    dossier("received after due", {"dossier_due_not_before_receipt"},
            NgayHenTra=_shift(d0["NgayTiepNhan"], days=-1))
    dossier("end before receipt", {"dossier_end_not_before_receipt"},
            NgayKetThucXuLy=_shift(d0["NgayTiepNhan"], days=-2))
    dossier("handover before end", {"dossier_handover_not_before_end"},
            NgayTra=_shift(d0["NgayKetThucXuLy"], days=-1), fix={"NgayTra": d0["NgayTra"]})
    dossier("status 10 without NgayTra", {"dossier_handed_over_has_handover_date"}, NgayTra=None)
    dossier("status 9 without NgayKetThucXuLy", {"dossier_resolved_has_end_date"}, TrangThaiHoSo=9,
            NgayKetThucXuLy="", NgayTra=None)
    dossier("date 31/02/2024", {"parse_ngay_tiep_nhan", "dossier_received_has_receipt_date"},
            NgayTiepNhan="31/02/2024")
    dossier("timestamp of 12 digits", {"parse_ngay_nop_ho_so"}, NgayNopHoSo="202405201000")
    dossier("applicant type 9", {"dossier_applicant_type_in_code_list"}, LoaiDoiTuong=9)
    dossier("paid-online flag 5", {"dossier_paid_online_flag_in_code_list"}, DuocThanhToanTrucTuyen="5")
    dossier("nested list not a list", {"parse_nested_lists"}, TaiLieuNop="to_khai.pdf")
    dossier("receipt in 1990", {"dossier_receipt_date_plausible"}, NgayNopHoSo="19900101080000",
            NgayTiepNhan="19900102080000")
    dossier("handover in 2099", {"dossier_handover_date_plausible"}, NgayTra="20990101080000")
    dossier("fractional channel", {"parse_kenh_thuc_hien"}, KenhThucHien=2.5)
    dossier("missing NgayCapNhat", {"required_ngay_cap_nhat", "dossier_updated_at_present"}, NgayCapNhat=None)
    n = len(out)  # the same key twice, same NgayCapNhat, different content: which one is current?
    first = {**d0, "MaHoSo": f"PLANT-D{n:02d}", "NgayCapNhat": _stamp(n)}
    second = {**first, "TrangThaiHoSo": 9, "NgayTra": None}
    out.append(Plant("duplicate key, conflicting content", "dossiers", [first, second], {"dossier_key_unique"},
                     key=first["MaHoSo"], fix={"TrangThaiHoSo": 10, "NgayTra": d0["NgayTra"]}))
    out.append(Plant("record not an object", "dossiers", [NOT_AN_OBJECT],
                     {"required_ma_ho_so", "required_trang_thai", "required_ngay_cap_nhat", "dossier_key_present",
                      "dossier_status_present", "dossier_updated_at_present",
                      "dossier_received_has_receipt_date"}))  # an unknown status counts as past intake
    # payments
    payment("SoTien != Phi + LePhi", {"payment_amount_equals_fee_plus_charge"}, SoTien=p0["SoTien"] + 1000,
            fix={"SoTien": p0["SoTien"]})
    payment("negative amount", {"payment_amount_non_negative"}, SoTien=-50_000, Phi=None, LePhi=None)
    payment("unknown status label", {"payment_status_in_code_list"}, TrangThai="Đã thu")
    payment("unknown method", {"payment_method_in_code_list"}, HinhThucThanhToan="vi-dien-tu")
    payment("unknown HinhThucThu", {"payment_collection_in_code_list"}, HinhThucThu="Thu hộ")
    payment("payment without MaHoSo", {"required_ma_ho_so", "payment_dossier_key_present"}, MaHoSo="")
    payment("payment channel 9", {"payment_channel_in_code_list"}, KenhThanhToan=9)
    payment("amount in words", {"parse_so_tien", "payment_amount_present"}, SoTien="mười nghìn")
    # procedures
    procedure("procedure code malformed", {"procedure_code_format"}, MaTTHC="1.001653-H08")
    procedure("DonViThoiHan 'tuan'", {"procedure_time_unit_in_code_list"}, DonViThoiHan="tuan",
              fix={"DonViThoiHan": "ngay-lam-viec"})
    procedure("service level 7", {"procedure_service_level_in_code_list"}, MucDoDVC=7)
    procedure("negative processing time", {"procedure_processing_time_non_negative"}, ThoiHanGiaiQuyet=-3)
    # units
    unit("HieuLucDen before HieuLucTu", {"unit_validity_interval_ordered"}, HieuLucTu="20240101",
         HieuLucDen="20231231", fix={"HieuLucDen": None})
    unit("unit level 5", {"unit_level_in_code_list"}, CapDonVi=5)
    unit("HieuLucTu not yyyyMMdd", {"parse_hieu_luc_tu", "unit_valid_from_present"}, keyless=True,
         HieuLucTu="01/01/2020")
    # warning-level: loaded, and recorded in dq.warnings
    dossier("procedure not in the catalogue", {"dossier_procedure_in_catalogue"}, W,
            MaTTHC="1.999999.000.00.00.H08")
    dossier("unit not in the catalogue", {"dossier_unit_in_catalogue"}, W, MaDonVi="000.77.77.H08")
    dossier("delivery code 5", {"dossier_delivery_in_code_list"}, W, HinhThuc=5)
    payment("payment for a dossier not yet arrived", {"payment_dossier_in_warehouse"}, W, MaHoSo="NOT-YET-ARRIVED-1")
    payment("paid without NgayThuPhi", {"payment_paid_has_payment_date"}, W, NgayThuPhi=None)
    procedure("procedure without a name", {"procedure_name_present"}, W, TenTTHC="  ")
    return out


def _shift(ts: str, days: int) -> str:
    return (datetime.strptime(ts, "%Y%m%d%H%M%S") + timedelta(days=days)).strftime("%Y%m%d%H%M%S")


def plant_body(kinds: list[Plant]) -> dict[str, list[Any]]:
    body: dict[str, list[Any]] = defaultdict(list)
    for p in kinds:
        body[p.entity].extend(p.records)
    return dict(body)


def corrections(kinds: list[Plant], stamp: str) -> dict[str, list[Any]]:
    """Corrected versions (newer NgayCapNhat for dossiers and payments) of the plants that have one."""
    body: dict[str, list[Any]] = defaultdict(list)
    for p in kinds:
        if p.fix is None:
            continue
        rec = {**p.records[-1], **p.fix}
        if p.entity in ("dossiers", "payments"):
            rec["NgayCapNhat"] = stamp
        body[p.entity].append(rec)
    return dict(body)


# ---------------------------------------------------------------------------------------------
# Files: a clerk's Excel and CSV exports with bad rows
# ---------------------------------------------------------------------------------------------
DOSSIER_HEADER = ["STT", "Mã hồ sơ", "Mã TTHC", "Mã đơn vị", "Kênh nộp", "Ngày nộp", "Ngày tiếp nhận", "Ngày hẹn trả",
                  "Ngày kết thúc xử lý", "Ngày trả kết quả", "Trạng thái", "Ngày cập nhật"]
PAYMENT_HEADER = ["STT", "Mã thanh toán", "Mã hồ sơ", "Số tiền", "Phí", "Lệ phí", "Trạng thái",
                  "Hình thức thanh toán", "Hình thức thu", "Ngày yêu cầu", "Ngày thu phí", "Ngày cập nhật"]


@dataclass
class FileRow:
    kind: str
    values: dict[str, Any]  # label -> cell
    rules: set[str]  # empty: a good row
    key: str | None
    raw_check: tuple[str, Any] | None = None  # (API field, value) the quarantined raw record keeps


def dossier_file_rows(d0: dict) -> list[FileRow]:
    good = {"Mã TTHC": d0["MaTTHC"], "Mã đơn vị": d0["MaDonVi"], "Kênh nộp": "Trực tuyến",
            "Ngày nộp": "20/05/2024 08:00", "Ngày tiếp nhận": "21/05/2024 08:00", "Ngày hẹn trả": "24/05/2024 17:00",
            "Ngày kết thúc xử lý": "23/05/2024 10:00", "Ngày trả kết quả": "24/05/2024 09:00",
            "Trạng thái": "Đã trả kết quả", "Ngày cập nhật": "24/05/2024 09:30"}
    return [
        FileRow("good file row", {**good, "Mã hồ sơ": "FILE-D-OK-1"}, set(), "FILE-D-OK-1"),
        FileRow("file: unknown status label", {**good, "Mã hồ sơ": "FILE-D-2", "Trạng thái": "Đang chờ duyệt"},
                {"parse_trang_thai", "dossier_status_present"}, "FILE-D-2", ("TrangThaiHoSo", "Đang chờ duyệt")),
        FileRow("file: date 31/02/2024", {**good, "Mã hồ sơ": "FILE-D-3", "Ngày tiếp nhận": "31/02/2024"},
                {"parse_ngay_tiep_nhan", "dossier_received_has_receipt_date"}, "FILE-D-3",
                ("NgayTiepNhan", "31/02/2024")),
        FileRow("file: unknown channel label", {**good, "Mã hồ sơ": "FILE-D-4", "Kênh nộp": "Fax"},
                {"parse_kenh_thuc_hien"}, "FILE-D-4", ("KenhThucHien", "Fax")),
        FileRow("file: empty Mã hồ sơ", {**good, "Mã hồ sơ": None}, {"required_ma_ho_so", "dossier_key_present"},
                None, ("MaHoSo", None)),
        FileRow("file: handover before end", {**good, "Mã hồ sơ": "FILE-D-6", "Ngày trả kết quả": "22/05/2024"},
                {"dossier_handover_not_before_end"}, "FILE-D-6"),
        FileRow("good file row 2", {**good, "Mã hồ sơ": "FILE-D-OK-7", "Kênh nộp": "Trực tiếp"}, set(), "FILE-D-OK-7"),
    ]


def payment_file_rows(p0: dict) -> list[FileRow]:
    good = {"Mã hồ sơ": p0["MaHoSo"], "Số tiền": "10.000", "Phí": "10.000", "Lệ phí": "0",
            "Trạng thái": "Đã thanh toán", "Hình thức thanh toán": "Tiền mặt", "Hình thức thu": "Thu trước",
            "Ngày yêu cầu": "20/05/2024 08:00", "Ngày thu phí": "20/05/2024 09:00",
            "Ngày cập nhật": "20/05/2024 09:05"}
    return [
        FileRow("good payment row", {**good, "Mã thanh toán": "FILE-P-OK-1"}, set(), "FILE-P-OK-1"),
        FileRow("file: amount '1.2.3'", {**good, "Mã thanh toán": "FILE-P-2", "Số tiền": "1.2.3"},
                {"parse_so_tien", "payment_amount_present"}, "FILE-P-2", ("SoTien", "1.2.3")),
        FileRow("file: unknown payment status", {**good, "Mã thanh toán": "FILE-P-3", "Trạng thái": "Đã thu tiền"},
                {"payment_status_in_code_list"}, "FILE-P-3", ("TrangThai", "Đã thu tiền")),
        FileRow("file: method 'Séc'", {**good, "Mã thanh toán": "FILE-P-4", "Hình thức thanh toán": "Séc"},
                {"payment_method_in_code_list"}, "FILE-P-4", ("HinhThucThanhToan", "Séc")),
        FileRow("file: amount != fee + charge", {**good, "Mã thanh toán": "FILE-P-5", "Số tiền": "12.000"},
                {"payment_amount_equals_fee_plus_charge"}, "FILE-P-5", ("SoTien", 12000)),
    ]


def write_xlsx(path: Path, header: list[str], rows: list[FileRow]) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["UBND HUYỆN TUY PHƯỚC"])
    ws.append(["SỔ THEO DÕI HỒ SƠ"])
    ws.append(["Từ ngày 01/05/2024 đến ngày 31/05/2024"])
    ws.append([])
    ws.append(header)
    for i, r in enumerate(rows, 1):
        ws.append([i, *(r.values.get(h) for h in header[1:])])
    ws.append(["Tổng cộng", None, None])
    wb.save(path)
    return path


def write_csv(path: Path, header: list[str], rows: list[FileRow]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        w = csv.writer(fh, delimiter=";")
        w.writerow(["DANH SÁCH THANH TOÁN PHÍ, LỆ PHÍ"])
        w.writerow(header)
        for i, r in enumerate(rows, 1):
            w.writerow([i, *("" if r.values.get(h) is None else r.values[h] for h in header[1:])])
    return path


# ---------------------------------------------------------------------------------------------
# Reading the warehouse back
# ---------------------------------------------------------------------------------------------
def quarantine(engine: sa.Engine) -> list[Any]:
    with engine.connect() as c:
        return c.execute(sa.text(
            "SELECT entity, record_key, rule, severity, raw_record, run_id, resolved_at, resolved_run_id "
            "FROM dq.quarantine")).fetchall()


def by_record(rows: list[Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(entity, record_key) -> {rules: {rule: severity}, raw: parsed raw_record, ...}."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        # raw_record is NULL once the row is resolved (retention, tasks/retention.py)
        raw = json.loads(r.raw_record) if r.raw_record is not None else None
        e = out.setdefault((r.entity, r.record_key), {"rules": {}, "raw": raw, "rows": []})
        e["rules"][r.rule] = r.severity
        e["rows"].append(r)
    return out


def find(quarantined: dict[tuple[str, str], dict[str, Any]], entity: str, key: str | None, raw: Any
         ) -> tuple[str, dict[str, Any]]:
    """The quarantined record of a plant: by key, or (keyless plants) by its raw record."""
    if key is not None:
        assert (entity, key) in quarantined, f"{entity} {key} not quarantined"
        return key, quarantined[(entity, key)]
    hits = [(k, v) for (e, k), v in quarantined.items() if e == entity and v["raw"] == raw]
    assert len(hits) == 1, f"{entity}: {len(hits)} quarantined records equal to {raw!r}"
    return hits[0]


def count(engine: sa.Engine, sql: str, **params: Any) -> int:
    with engine.connect() as c:
        return int(c.execute(sa.text(sql), params).scalar_one())


def run_summary(engine: sa.Engine, run_id: str) -> dict[str, Any]:
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT * FROM dq.run_summary WHERE run_id = :r"), {"r": run_id}).fetchall()
    return {r.entity: r for r in rows}


def read_artifact(flow_run_id: Any) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["dvc-checks"]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    assert len(arts) == 1, arts
    assert arts[0].type == "markdown"
    return str(arts[0].data)


# ---------------------------------------------------------------------------------------------
# The simulator's planting hook on its own (fast)
# ---------------------------------------------------------------------------------------------
def test_planted_records_are_served_verbatim_in_updated_order() -> None:
    ds = generate(seed=11, n_dossiers=60)
    d0 = ds.dossiers[3]
    early = {**d0, "MaHoSo": "P-EARLY", "NgayCapNhat": "20240101000001"}
    late = {**d0, "MaHoSo": "P-LATE", "NgayCapNhat": "20240625120000", "TrangThaiHoSo": "abc"}
    broken_ts = {**d0, "MaHoSo": "P-BROKEN-TS", "NgayCapNhat": "2024"}
    with start_server(ds, token=TOKEN) as sim:
        r = requests.post(f"{sim.url}/_sim/inject", json={"dossiers": [late, NOT_AN_OBJECT, early, broken_ts],
                                                          "units": [{"MaDonVi": "U-X"}]}, headers=AUTH, timeout=10)
        assert r.status_code == 200 and r.json() == {"planted": {"dossiers": 4, "units": 1}}
        assert requests.post(f"{sim.url}/_sim/inject", json=[1], headers=AUTH, timeout=10).status_code == 400
        assert requests.post(f"{sim.url}/_sim/inject", json={"cats": []}, headers=AUTH, timeout=10).status_code == 400
        assert requests.post(f"{sim.url}/_sim/inject", json={"units": []}, timeout=10).status_code == 401
        expected_base = sorted(ds.records("dossiers", quirks=True), key=lambda d: (d["NgayCapNhat"], d["MaHoSo"]))
        for page_size, seek in ((7, False), (7, True), (1000, True)):
            with SourceClient(sim.url, TOKEN, page_size=page_size) as client:
                got = [rec for page in client.iter_pages("dossiers", seek=seek) for rec in page.records]
            # offset paging reads each record once; seek paging re-reads a boundary's records
            distinct = list({orjson.dumps(g, option=orjson.OPT_SORT_KEYS): g for g in got}.values())
            assert len(distinct) == len(expected_base) + 4
            if not seek:
                assert len(got) == len(distinct)
            keys = [g.get("MaHoSo") for g in distinct]
            # planted ones are served as planted, in NgayCapNhat order with the generated ones; records
            # without a valid NgayCapNhat sit at the simulator's now (the end), in planting order
            assert distinct[0] == early and keys.index("P-LATE") < len(keys) - 2
            assert distinct[-2:] == [{"_not_an_object": NOT_AN_OBJECT}, broken_ts]
            assert [g for g in distinct if g.get("MaHoSo") == "P-LATE"] == [late]
            stamps = [g["NgayCapNhat"] for g in distinct[:-2]]
            assert stamps == sorted(stamps)
            assert [g for g in distinct if not str(g.get("MaHoSo", "")).startswith("P-")
                    and "_not_an_object" not in g] == expected_base
        with SourceClient(sim.url, TOKEN, page_size=5) as client:
            window = [rec.get("MaHoSo") for page in client.iter_pages("dossiers", datetime(2024, 6, 25),
                                                                      datetime(2024, 6, 26))
                      for rec in page.records]
            units = [rec for page in client.iter_pages("units") for rec in page.records]
        assert "P-LATE" in window and "P-EARLY" not in window and "P-BROKEN-TS" not in window
        assert len(units) == ds.count("units") + 1 and units[-1] == {"MaDonVi": "U-X"}
        # replace: the planted units are swapped, the generated ones stay
        r = requests.post(f"{sim.url}/_sim/inject", params={"replace": "1"}, json={"units": []}, headers=AUTH,
                          timeout=10)
        assert r.json() == {"planted": {"units": 0}}
        with SourceClient(sim.url, TOKEN, page_size=5) as client:
            assert len([rec for page in client.iter_pages("units") for rec in page.records]) == ds.count("units")
    inject(ds, "payments", [{"Ma": "X"}])
    assert planted(ds, "payments") == [{"Ma": "X"}] and planted(ds, "procedures") == []


# ---------------------------------------------------------------------------------------------
# The gate, end to end
# ---------------------------------------------------------------------------------------------
@pytest.fixture(params=["duckdb", pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.slow])])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """DuckDB in the default suite; the same test on PostgreSQL is in the slow suite (time budget)."""
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'wh.duckdb'}"
    return request.getfixturevalue("pg_url")


def test_planted_bad_records_are_quarantined_end_to_end(prefect_harness, warehouse_url, dvc_env, tmp_path) -> None:
    from flows.nightly import nightly
    from tasks.inbox import ingest_file
    from tasks.pipeline import new_run_id
    from tasks.settings import get_settings

    ds = generate(seed=5, n_dossiers=150, start=date(2024, 1, 1), end=date(2024, 6, 30))
    generated = {e: ds.count(e) for e in ("dossiers", "payments", "procedures", "units")}
    kinds = plants(ds)
    crit = [p for p in kinds if p.severity == C]
    warn = [p for p in kinds if p.severity == W]
    assert len(crit) >= 25 and len({p.kind for p in kinds}) == len(kinds)
    d0, p0, _, _ = base_records(ds)
    engine = connect(warehouse_url)

    with start_server(ds, token=TOKEN) as sim:
        r = requests.post(f"{sim.url}/_sim/inject", json=plant_body(kinds), headers=AUTH, timeout=10)
        assert r.status_code == 200, r.text
        dvc_env(DVC_SOURCE_URL=sim.url, DVC_SOURCE_TOKEN=TOKEN, DVC_WAREHOUSE_URL=warehouse_url)
        state = nightly(full_refresh=True, publish=False, return_state=True)
        summary = state.result()
        run1 = summary["run_id"]

        # -- every planted record is quarantined under its rule(s), with its raw record ---------------
        q = by_record(quarantine(engine))
        seen: set[tuple[str, str]] = set()
        for p in crit:
            key, rec = find(q, p.entity, p.key, p.raw)
            assert rec["rules"] == dict.fromkeys(p.rules, C), (p.kind, rec["rules"])
            assert rec["raw"] == p.raw, p.kind
            assert all(r.run_id == run1 and r.resolved_at is None for r in rec["rows"]), p.kind
            seen.add((p.entity, key))
        assert set(q) == seen  # nothing else: no generated record was quarantined
        # -- every good row (and every warning-level plant) loaded --------------------------------------
        for entity in generated:
            n_warn = sum(1 for p in warn if p.entity == entity)
            assert count(engine, f"SELECT count(*) FROM core.{entity}") == generated[entity] + n_warn, entity
        with engine.connect() as c:
            loaded_keys = {r[0] for r in c.execute(sa.text("SELECT ma_ho_so FROM core.dossiers"))}
        assert not loaded_keys & {p.key for p in crit if p.entity == "dossiers"}
        # -- the counts reconcile, per entity, and add up to what the source served -------------------
        # (one page per entity at the default page size: no seek re-read adds duplicates here)
        rs = run_summary(engine, run1)
        for entity, n in generated.items():
            mine = [p for p in kinds if p.entity == entity]
            s = rs[entity]
            assert s.rows_received == n + sum(len(p.records) for p in mine), entity
            assert s.rows_duplicate == sum(len(p.records) - 1 for p in mine), entity
            assert s.rows_read == n + len(mine) == s.rows_loaded + s.rows_quarantined, entity
            assert s.rows_quarantined == sum(1 for p in mine if p.severity == C), entity
            assert s.rows_loaded == n + sum(1 for p in mine if p.severity == W), entity
            assert s.reconciled
            e = summary["entities"][entity]
            assert (e["rows_read"], e["rows_loaded"], e["rows_quarantined"]) == (
                s.rows_read, s.rows_loaded, s.rows_quarantined)
        # -- warning-level plants loaded and are in dq.warnings -----------------------------------------
        with engine.connect() as c:
            warnings = {(r.entity, r.record_key, r.rule) for r in c.execute(
                sa.text("SELECT entity, record_key, rule FROM dq.warnings WHERE run_id = :r"), {"r": run1})}
        for p in warn:
            key_col = {"dossiers": "ma_ho_so", "payments": "ma", "procedures": "ma_tthc"}[p.entity]
            assert count(engine, f"SELECT count(*) FROM core.{p.entity} WHERE {key_col} = :k", k=p.key) == 1, p.kind
            for rule in p.rules:
                assert (p.entity, p.key, rule) in warnings, p.kind
        # -- the run's record: blocked (quarantine > threshold 0), checks, artifact, data docs ------------
        assert summary["blocked"] and summary["rows_quarantined"] == len(crit)
        with engine.connect() as c:
            run = c.execute(sa.text("SELECT status, published FROM dq.runs WHERE run_id = :r"), {"r": run1}).one()
            failed = {(r.entity, r.rule): (r.severity, r.unexpected_count) for r in c.execute(
                sa.text("SELECT entity, rule, severity, unexpected_count FROM dq.check_results "
                        "WHERE run_id = :r AND NOT success"), {"r": run1})}
        assert (run.status, bool(run.published)) == ("blocked", False)
        for p in kinds:
            for rule in p.rules:
                assert (p.entity, rule) in failed and failed[(p.entity, rule)][0] == p.severity, (p.kind, rule)
        assert failed[("dossiers", "dossier_key_unique")][1] == 1
        assert failed[("dossiers", "required_ma_ho_so")][1] == 2  # missing MaHoSo + not an object
        docs = Path(get_settings().reports_dir) / "data-docs" / run1 / "index.html"
        assert docs.is_file() and summary["data_docs"] == str(docs.resolve())
        md = read_artifact(state.state_details.flow_run_id)
        assert run1 in md and "Reports not published" in md and str(docs.resolve()) in md
        for p in crit:
            for rule in p.rules:
                assert f"| {p.entity} | {rule} | critical |" in md, rule
        assert "| dossiers | dossier_procedure_in_catalogue | warning | 1 |" in md

        # -- files: the clerk's Excel and CSV exports with bad rows ---------------------------------------
        settings = get_settings()
        run_f = new_run_id("files")
        drows, prows = dossier_file_rows(d0), payment_file_rows(p0)
        xlsx = write_xlsx(tmp_path / "so-theo-doi.xlsx", DOSSIER_HEADER, drows)
        csvf = write_csv(tmp_path / "thanh-toan.csv", PAYMENT_HEADER, prows)
        for path, rows, entity in ((xlsx, drows, "dossiers"), (csvf, prows, "payments")):
            out = ingest_file(engine, path, settings=settings, run_id=run_f)
            bad = [r for r in rows if r.rules]
            assert (out.status, out.entity, out.rows_read, out.rows_loaded, out.rows_quarantined) == (
                "loaded", entity, len(rows), len(rows) - len(bad), len(bad)), out
        q = by_record([r for r in quarantine(engine) if r.run_id == run_f])
        for r in [*drows, *prows]:
            entity = "dossiers" if r in drows else "payments"
            if not r.rules:
                key_col = "ma_ho_so" if entity == "dossiers" else "ma"
                assert count(engine, f"SELECT count(*) FROM core.{entity} WHERE {key_col} = :k", k=r.key) == 1
                continue
            if r.key is None:
                hits = [v for (e, _k), v in q.items() if e == entity and v["raw"].get("MaHoSo") is None]
                assert len(hits) == 1
                rec = hits[0]
            else:
                rec = q[(entity, r.key)]
            assert rec["rules"] == dict.fromkeys(r.rules, C), (r.kind, rec["rules"])
            assert rec["raw"]["_row_number"] > 0
            if r.raw_check:
                assert rec["raw"][r.raw_check[0]] == r.raw_check[1], r.kind
        assert len(q) == sum(1 for r in [*drows, *prows] if r.rules)
        for entity, s in run_summary(engine, run_f).items():
            assert s.rows_read == s.rows_loaded + s.rows_quarantined and s.reconciled, entity

        # -- later: corrected versions arrive and load; their quarantine rows are resolved -----------------
        fixed = [p for p in kinds if p.fix is not None]
        body = corrections(kinds, (ds.now + timedelta(hours=8)).strftime("%Y%m%d%H%M%S"))
        for entity in ("procedures", "units"):  # catalogues are re-read whole: the source now serves the fix
            body[entity] = body.get(entity, [])
        for entity, recs in body.items():
            replace = "1" if entity in ("procedures", "units") else "0"
            r = requests.post(f"{sim.url}/_sim/inject", params={"replace": replace}, json={entity: recs},
                              headers=AUTH, timeout=10)
            assert r.status_code == 200, r.text
        summary2 = nightly(publish=False)  # incremental: the watermark's window holds the corrections
        run2 = summary2["run_id"]

    q = by_record(quarantine(engine))
    for p in fixed:
        rec = q[(p.entity, p.key)]
        assert all(r.resolved_at is not None and r.resolved_run_id == run2 for r in rec["rows"]), p.kind
        assert all(r.raw_record is None for r in rec["rows"]), p.kind  # personal data purged once resolved
        key_col = {"dossiers": "ma_ho_so", "payments": "ma", "procedures": "ma_tthc", "units": "ma_don_vi"}[p.entity]
        key = p.key.split("|")[0]
        assert count(engine, f"SELECT count(*) FROM core.{p.entity} WHERE {key_col} = :k", k=key) == 1, p.kind
    unresolved = {k for k, v in q.items() if any(r.resolved_at is None for r in v["rows"])}
    assert unresolved == {k for k, v in q.items() if k not in {(p.entity, p.key) for p in fixed}}
    with engine.connect() as c:
        status = c.execute(sa.text("SELECT trang_thai FROM core.dossiers WHERE ma_ho_so = :k"),
                           {"k": fixed[0].key}).scalar_one()
    assert status == 10
    for entity, s in run_summary(engine, run2).items():
        assert s.rows_read == s.rows_loaded + s.rows_quarantined and s.reconciled, entity
    n_fixed = {e: sum(1 for p in fixed if p.entity == e) for e in generated}
    assert summary2["entities"]["dossiers"]["rows_loaded"] >= n_fixed["dossiers"]
    assert summary2["entities"]["payments"]["rows_loaded"] >= n_fixed["payments"]
    engine.dispose()
