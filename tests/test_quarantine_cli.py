"""``dvc-etl quarantine list|export`` and the per-unit export, on the real DuckDB and PostgreSQL.

Bad records go through the real normaliser, checks and loader into ``dq.quarantine`` (raw record
with the applicant's name, ID and phone number included); the clerks' list and files show the
codes, units, rules and Vietnamese reasons, and none of the personal data.
"""

from __future__ import annotations

import csv
import json
import os
import pty
import select
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tasks.cli import app
from tasks.load import load_batch
from tasks.normalize import normalize
from tasks.quality import check
from tasks.quarantine import HEADERS, REASONS_VI, export_per_unit, reason_vi
from tasks.settings import EXPECTATIONS_DIR
from tasks.warehouse import connect, upgrade

BIN = Path(sys.executable).parent
U1, U2 = "000.00.15.H08", "000.00.16.H08"
#: The personal values of the planted records: never in a list or a file.
PERSONAL = ["Nguyễn Thị Mơ", "079123456789", "0912345678", "Trần Văn Bảy", "079987654321", "0987654321"]


def _dossier(code: str, unit: str, person: int = 0, **changes) -> dict:
    rec = {"MaHoSo": code, "MaTTHC": "1.001653.000.00.00.H08", "MaDonVi": unit, "TenDonVi": f"UBND xã {unit[-6:]}",
           "TrangThaiHoSo": 10, "NgayTiepNhan": "20240102080000", "NgayHenTra": "20240108170000",
           "NgayKetThucXuLy": "20240104100000", "NgayTra": "20240105090000", "NgayCapNhat": "20240105100000",
           "KenhThucHien": 2, "ChuHoSo": PERSONAL[3 * person], "SoGiayToChuHoSo": PERSONAL[3 * person + 1],
           "SoDienThoai": PERSONAL[3 * person + 2]}
    rec.update(changes)
    return rec


def _load(engine: sa.Engine, entity: str, records: list[dict], run_id: str = "r1") -> None:
    """The nightly path for one chunk: normalise, check, load (quarantine included)."""
    norm = normalize(entity, records, hash_key=b"quarantine-test-key-0123456789abcdef")
    outcome = check(entity, norm.core)
    issues = outcome.issues
    if len(issues):
        to_ours = dict(zip(outcome.row_keys, norm.core["record_key"], strict=True))
        issues = issues.assign(record_key=issues["record_key"].map(to_ours))
    load_batch(engine, norm, pd.concat([norm.issues, issues], ignore_index=True), source="src", run_id=run_id)


@pytest.fixture
def quarantined(warehouse_url: str) -> str:
    engine = connect(warehouse_url)
    upgrade(engine)
    with engine.begin() as c:
        c.execute(sa.text("INSERT INTO core.units (source, ma_don_vi, hieu_luc_tu, ten_don_vi, cap_don_vi, _source,"
                          " _run_id, _loaded_at) VALUES ('src', :u, DATE '2020-01-01', 'UBND xã Phước Hòa', 3, 'api',"
                          " 'r0', TIMESTAMP '2024-01-01 00:00:00')"), {"u": U1})
    _load(engine, "dossiers", [
        _dossier("HS-OK", U1),
        _dossier("HS-STATUS", U1, TrangThaiHoSo=11),
        _dossier("HS-CHANNEL", U1, KenhThucHien=9),
        # a clerk typed the applicant's name into the receipt date: the detail would quote it
        _dossier("HS-DATE", U2, person=1, NgayTiepNhan=PERSONAL[3]),
    ])
    payment = {"Ma": "TT-NEG", "MaHoSo": "HS-OK", "SoTien": 5000, "Phi": 0, "LePhi": 5000, "TrangThai": "Đã thanh toán",
               "HinhThucThanhToan": "truc-tuyen", "HinhThucThu": "Thu trước", "NgayCapNhat": "20240105100000"}
    _load(engine, "payments", [payment])  # a good version, then a bad newer one (quarantined)
    _load(engine, "payments", [{**payment, "SoTien": -5000, "LePhi": -5000, "NgayCapNhat": "20240106100000"}])
    _load(engine, "dossiers", [_dossier("HS-FIXED", U2, TrangThaiHoSo=12)])
    _load(engine, "dossiers", [_dossier("HS-FIXED", U2, NgayCapNhat="20240106100000")], run_id="r2")  # corrected
    with engine.begin() as c:  # the payment's record was purged (retention): its unit comes from its dossier
        c.execute(sa.text("UPDATE dq.quarantine SET raw_record = NULL WHERE record_key = 'TT-NEG'"))
        raw = " ".join(c.execute(sa.text("SELECT raw_record FROM dq.quarantine WHERE raw_record IS NOT NULL"))
                       .scalars())
    engine.dispose()
    assert all(p in raw for p in PERSONAL), "the raw records hold the personal data"
    return warehouse_url


def _invoke(dvc_env, url: str, *args: str):
    dvc_env(DVC_WAREHOUSE_URL=url)
    return CliRunner().invoke(app, ["quarantine", *args])


def _no_personal_data(text: str) -> None:
    for value in PERSONAL:
        assert value not in text, value
    assert "ChuHoSo" not in text and "SoGiayToChuHoSo" not in text and "SoDienThoai" not in text


def test_list_groups_open_rows_per_unit_and_rule_without_personal_data(quarantined, dvc_env):
    res = _invoke(dvc_env, quarantined, "list")
    assert res.exit_code == 0, res.output
    out = res.output
    _no_personal_data(out)
    lines = out.splitlines()
    # grouped: the unit line, then each rule with its count and reason, then its rows
    assert lines[0].startswith(f"{U1}\tUBND xã Phước Hòa\t4 ")
    assert f"  dossier_status_in_code_list\t1\t{REASONS_VI['dossier_status_in_code_list']}" in lines
    assert any(line.startswith("    HS-STATUS\t-\t") and "trang_thai = 11" in line for line in lines)
    assert any(line.startswith("    HS-OK\tTT-NEG\t") for line in lines)  # a payment: its dossier and its code
    assert any(line.startswith(f"{U2}\t") for line in lines)
    assert "Giá trị của trường NgayTiepNhan sai định dạng" in out and "***" in out  # the name, scrubbed
    assert "HS-FIXED" not in out and "HS-OK\t-" not in out  # resolved rows and clean dossiers are not listed
    assert out.rstrip().endswith("ghi danh sách ra tệp.") and "6 bản ghi bị giữ lại, 2 đơn vị" in out

    res = _invoke(dvc_env, quarantined, "list", "--unit", U2)
    assert res.exit_code == 0 and "HS-DATE" in res.output and "HS-STATUS" not in res.output
    res = _invoke(dvc_env, quarantined, "list", "--rule", "payment_amount_non_negative")
    assert res.exit_code == 0 and "TT-NEG" in res.output and "HS-STATUS" not in res.output
    res = _invoke(dvc_env, quarantined, "list", "--since", str(date.today() + timedelta(days=2)))
    assert res.exit_code == 0 and "Không có bản ghi nào" in res.output
    res = _invoke(dvc_env, quarantined, "list", "--since", "yesterday")
    assert res.exit_code == 2 and "--since" in res.output


def test_export_writes_the_rows_by_extension_without_personal_data(quarantined, dvc_env, tmp_path):
    for suffix in (".xlsx", ".csv"):
        out = tmp_path / f"danh-sach{suffix}"
        res = _invoke(dvc_env, quarantined, "export", "--out", str(out))
        assert res.exit_code == 0, res.output
        if suffix == ".xlsx":
            ws = openpyxl.load_workbook(out).active
            table = [["" if v is None else str(v) for v in row] for row in ws.iter_rows(values_only=True)]
        else:
            with out.open(encoding="utf-8-sig", newline="") as fh:
                table = list(csv.reader(fh))
        assert table[0] == list(HEADERS.values())
        rows = [dict(zip(HEADERS, r, strict=True)) for r in table[1:]]
        _no_personal_data(json.dumps(table, ensure_ascii=False))
        got = {(r["ma_don_vi"], r["ma_ho_so"], r["ma_thanh_toan"], r["rule"]) for r in rows}
        assert got == {
            (U1, "HS-STATUS", "", "dossier_status_in_code_list"),
            (U1, "HS-CHANNEL", "", "dossier_channel_in_code_list"),
            (U1, "HS-OK", "TT-NEG", "payment_amount_non_negative"),  # record purged: unit of its dossier
            (U1, "HS-OK", "TT-NEG", "payment_charge_non_negative"),
            (U2, "HS-DATE", "", "parse_ngay_tiep_nhan"),
            (U2, "HS-DATE", "", "dossier_received_has_receipt_date"),
        }, suffix
        status = next(r for r in rows if r["ma_ho_so"] == "HS-STATUS")
        assert status["ly_do"] == REASONS_VI["dossier_status_in_code_list"] and status["loai"] == "Hồ sơ"
        assert status["ten_don_vi"] == "UBND xã Phước Hòa"  # the catalogue's name
        assert status["first_seen_at"] and status["last_seen_at"] >= status["first_seen_at"]

    res = _invoke(dvc_env, quarantined, "export", "--out", str(tmp_path / "danh-sach.pdf"))
    assert res.exit_code == 2 and ".xlsx or .csv" in res.output
    assert not (tmp_path / "danh-sach.pdf").exists()
    res = _invoke(dvc_env, quarantined, "export", "--out", str(tmp_path / "u2.csv"), "--unit", U2)
    assert res.exit_code == 0 and "2 bản ghi" in res.output


def test_export_per_unit_writes_one_file_per_unit_and_drops_stale_ones(quarantined, tmp_path):
    out_dir = tmp_path / "reports" / "quarantine"
    out_dir.mkdir(parents=True)
    (out_dir / "quarantine-000.00.99.H08.xlsx").write_bytes(b"last week's unit, now clean")
    (out_dir / "keep-me.xlsx").write_bytes(b"not ours")
    engine = connect(quarantined)
    files = export_per_unit(engine, out_dir)
    engine.dispose()
    assert sorted(f.name for f in files) == [f"quarantine-{U1}.xlsx", f"quarantine-{U2}.xlsx"]
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([*(f.name for f in files), "keep-me.xlsx"])
    ws = openpyxl.load_workbook(out_dir / f"quarantine-{U2}.xlsx").active
    codes = {row[3] for row in ws.iter_rows(min_row=2, values_only=True)}
    assert codes == {"HS-DATE"}
    _no_personal_data(json.dumps([[str(v) for v in r] for r in ws.iter_rows(values_only=True)], ensure_ascii=False))


def test_every_critical_rule_has_a_vietnamese_reason():
    """A critical rule added to a suite must say in Vietnamese what the clerk has to fix."""
    missing = []
    for path in sorted(EXPECTATIONS_DIR.glob("*.json")):
        suite = json.loads(path.read_text(encoding="utf-8"))
        entity = suite.get("meta", {}).get("entity") or path.stem
        for exp in suite["expectations"]:
            meta = exp.get("meta", {})
            if meta.get("severity") != "critical":
                continue
            pattern = exp.get("kwargs", {}).get("issue_rule")
            if pattern:  # the normaliser's parse rules, reported per column
                names = [pattern.format(column=c) for c in exp["kwargs"].get("columns", [])] or [pattern]
            else:
                names = [meta["rule"]]
            for name in names:
                text = reason_vi(entity, name)
                if text.startswith("Không đạt quy tắc") or name in text.split("(")[0]:
                    missing.append(name)
    assert not missing, f"no Vietnamese reason in tasks/quarantine.py REASONS_VI: {missing}"


@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)
def test_list_is_a_table_at_a_terminal_and_busy_warehouse_exits_4(quarantined, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    env.update(DVC_WAREHOUSE_URL=quarantined, COLUMNS="200")
    main, secondary = pty.openpty()
    proc = subprocess.Popen([str(BIN / "dvc-etl"), "quarantine", "list"], stdin=secondary, stdout=secondary,
                            stderr=secondary, env=env, cwd=tmp_path)
    os.close(secondary)
    shown = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if select.select([main], [], [], 0.5)[0]:
            try:
                data = os.read(main, 65536)
            except OSError:
                data = b""
            if not data:
                break
            shown += data
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(main)
    text = shown.decode(errors="replace")
    assert proc.returncode == 0, text
    assert f"{U1} UBND xã Phước Hòa: 4 bản ghi" in text and "Lý do" in text and "│" in text
    _no_personal_data(text)

    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
                               "print('ready', flush=True); sys.stdin.read()", quarantined.removeprefix("duckdb:///")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        p = subprocess.run([str(BIN / "dvc-etl"), "quarantine", "list"], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 4, p.stdout + p.stderr
        assert "in use by a run" in p.stderr
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
