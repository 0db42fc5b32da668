"""What an alert receiver sees (issue 16), end to end: bad records planted into the simulator go
through the real nightly flow (Prefect test server, real HTTP, real DuckDB); the alert that reaches
a real webhook receiver and a real SMTP server carries the flow run's link in the Prefect UI
(``PREFECT_UI_URL`` set), the run's data docs and the site index, the top failing rules with their
counts, the first quarantined records by their codes with the rules they failed, and none of the
planted applicants' names, ID numbers or phone numbers, even where a detail echoed them. A run
that fails outright alerts with its links too.
"""

from __future__ import annotations

import json
from datetime import date
from email import message_from_bytes
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from simulator.dataset import generate
from simulator.server import start_server
from tasks.warehouse import connect
from tests.test_alerts import SMTP_PASSWORD, MailSink, WebhookReceiver
from tests.test_alerts import smtp_server as smtp_server  # noqa: F401 - the real SMTP server fixture

TOKEN = "alert-SECRET-token-41aa"
HASH_KEY = "alert-SECRET-hashkey-of-at-least-32-bytes-7c7c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UI = "http://prefect.example.gov.vn:4200"
STAMP = "20240625080000"


def person(i: int) -> dict[str, str]:
    """Distinct personal values per planted dossier: name, 12-digit CCCD, phone as clerks type it."""
    return {"ChuHoSo": f"Nguyễn Thị Bảo Mật {i}", "SoGiayToChuHoSo": f"0792030{i:05d}",
            "SoDienThoai": f"0912 345 6{i:02d}"}


def planted(d0: dict[str, Any], p0: dict[str, Any]) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Eleven bad records (nine dossiers, two payments) and the personal values they hold. Three
    echo a personal value in their check's detail: a name as the status, a phone (as typed, and
    as a number) as the channel, an ID number as the receipt date."""
    dossiers = []

    def dossier(i: int, **changes: Any) -> None:
        dossiers.append({**d0, **person(i), "MaHoSo": f"ALERT-D{i:02d}", "NgayCapNhat": STAMP, **changes})

    dossier(1, TrangThaiHoSo=11)
    dossier(2, TrangThaiHoSo=12)
    dossier(3, TrangThaiHoSo=13)  # dossier_status_in_code_list: 3 rows
    dossier(4, KenhThucHien=7)
    dossier(5, KenhThucHien=int(person(5)["SoDienThoai"].replace(" ", "")))  # the phone, typed as a number
    dossier(6, TrangThaiHoSo=person(6)["ChuHoSo"])  # the applicant's name in the status
    dossier(7, KenhThucHien=person(7)["SoDienThoai"])  # the phone in the channel
    dossier(8, NgayTiepNhan=person(8)["SoGiayToChuHoSo"])  # the ID number as the receipt date
    dossier(9, MaHoSo=None)  # no key: named by its content's hash
    payments = [{**p0, "Ma": f"ALERT-P{i}", "MaGiaoDich": None, "SoTien": p0["SoTien"] + i, "NgayCapNhat": STAMP}
                for i in (10, 11)]
    personal = [v for i in range(1, 10) for v in person(i).values()]
    personal += [str(int(person(5)["SoDienThoai"].replace(" ", "")))]  # as the number it became
    return {"dossiers": dossiers, "payments": payments}, personal


def mail(sink: MailSink, i: int = 0) -> tuple[str, str]:
    msg = message_from_bytes(sink.messages[i][1])
    payload = msg.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return str(msg["Subject"]), payload.decode(msg.get_content_charset() or "utf-8").replace("\r\n", "\n")


def test_the_alert_of_a_run_with_bad_records(prefect_harness, dvc_env, tmp_path: Path, smtp_server) -> None:
    from prefect.settings import PREFECT_UI_URL, temporary_settings

    from flows.nightly import nightly
    from tasks.alerts import failure_alert
    from tasks.settings import get_settings
    from tests.test_quarantine_e2e import base_records

    sink, smtp_port = smtp_server
    ds = generate(seed=7, n_dossiers=40, start=date(2024, 1, 1), end=date(2024, 6, 30))
    d0, p0, _, _ = base_records(ds)
    body, personal = planted(d0, p0)
    url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    with start_server(ds, token=TOKEN) as sim, WebhookReceiver() as hook, \
            temporary_settings(updates={PREFECT_UI_URL: UI + "/"}):
        assert requests.post(f"{sim.url}/_sim/inject", json=body, headers=AUTH, timeout=10).status_code == 200
        env = dict(DVC_SOURCE_URL=sim.url, DVC_SOURCE_TOKEN=TOKEN, DVC_WAREHOUSE_URL=url, DVC_HASH_KEY=HASH_KEY,
                   DVC_ALERT_WEBHOOK_URL=hook.url, DVC_SMTP_HOST="127.0.0.1", DVC_SMTP_PORT=str(smtp_port),
                   DVC_SMTP_USER="etl", DVC_SMTP_PASSWORD=SMTP_PASSWORD, DVC_ALERT_EMAIL_TO="ops@example.gov.vn",
                   DVC_HTTP_MAX_RETRIES="1", DVC_HTTP_BACKOFF_MAX="0.2")
        dvc_env(**env)
        state = nightly(full_refresh=True, publish=False, return_state=True)
        summary = state.result()
        run_id, flow_run = summary["run_id"], state.state_details.flow_run_id
        assert summary["blocked"] and summary["rows_quarantined"] == 11
        assert len(hook.bodies) == 1 and len(sink.messages) == 1
        alert_body = hook.bodies[0]
        _, text = mail(sink)
        docs = (Path(get_settings().reports_dir) / "data-docs" / run_id / "index.html").resolve()
        site = docs.parent.parent / "index.html"
        assert docs.is_file() and site.is_file()
        # the run's own docs once more, as a failure alert of that run would carry them
        late = failure_alert(run_id, "default", "boom", settings=get_settings())
        assert (late.docs_path, late.site_url) == (str(docs), str(site))

        # -- a run that fails outright (the source refuses the token): its alert carries the links too
        hook.bodies.clear()
        sink.messages.clear()
        dvc_env(**{**env, "DVC_SOURCE_TOKEN": "alert-SECRET-wrong-token"})
        failed = nightly(return_state=True)
        assert failed.is_failed()
        assert len(hook.bodies) == 1 and len(sink.messages) == 1
        failure_body, (failure_subject, failure_text) = hook.bodies[0], mail(sink)

    engine = connect(url)
    with engine.connect() as c:
        failing = {(r.entity, r.rule): (r.severity, r.unexpected_count) for r in c.execute(sa.text(
            "SELECT entity, rule, severity, unexpected_count FROM dq.check_results WHERE run_id = :r AND NOT success"),
            {"r": run_id})}
        keyless = c.execute(sa.text("SELECT DISTINCT record_key FROM dq.quarantine WHERE run_id = :r AND "
                                    "record_key LIKE '#%'"), {"r": run_id}).scalar_one()
    engine.dispose()
    raw = json.dumps(alert_body, ensure_ascii=False)
    blocks = "\n".join(b["text"]["text"] for b in alert_body["blocks"] if "text" in b and b["type"] == "section")

    # 1. the flow run in the Prefect UI
    link = f"{UI}/runs/flow-run/{flow_run}"
    assert f"Flow run: {link}" in text.splitlines() and f"*Flow run*: <{link}|" in blocks
    # 2. the run's data docs and the site's index (file paths: DVC_DATA_DOCS_URL is unset)
    assert f"Data docs: {docs}" in text.splitlines() and f"All runs: {site}" in text.splitlines()
    assert f"*Data docs*: `{docs}`" in blocks and f"*All runs*: `{site}`" in blocks
    # 3. the top failing rules with their counts: most rows first, then by entity and rule
    top = ["dossiers.dossier_status_in_code_list: 3 rows (critical)",
           "dossiers.parse_kenh_thuc_hien: 2 rows (critical)",  # the phones: not a channel code at all
           "payments.payment_amount_equals_fee_plus_charge: 2 rows (critical)",
           "dossiers.dossier_channel_in_code_list: 1 row (critical)",
           "dossiers.dossier_key_present: 1 row (critical)"]
    for line in top:  # the counts are the run's (dq.check_results)
        name, _, rest = line.partition(": ")
        assert rest == f"{failing[tuple(name.split('.'))][1]} row{'s' if ' rows ' in line else ''} (critical)", line
    lines = text.split("Top failing rules:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert lines[:5] == [f"  - {line}" for line in top], lines
    assert any(line.startswith("  - dossiers.dossier_freshness: failed (warning, batch check): ") for line in lines)
    shown = len([line for line in lines if not line.startswith("  - ...")])
    assert lines[-1] == f"  - ... and {len(failing) - shown} more failing rules (see the data docs)"
    for line in top:
        assert f"• {line}" in blocks, line
    # 4. the first ten records (dossiers by code, keyless last, then payments) with their reasons
    records = text.split("First quarantined records (codes and reasons, no personal data):\n", 1)[1].splitlines()
    want = [f"MaHoSo ALERT-D{i:02d}: {rule}" for i, rule in (
        (1, "dossier_status_in_code_list (trang_thai = 11 not in (1, "),
        (2, "dossier_status_in_code_list (trang_thai = 12 not in (1, "),
        (3, "dossier_status_in_code_list (trang_thai = 13 not in (1, "),
        (4, "dossier_channel_in_code_list (kenh_thuc_hien = 7 not in (1, 2, 3))"),
        (5, "parse_kenh_thuc_hien (KenhThucHien = *** is not a valid i16)"),  # the phone as a number
        (6, "dossier_status_present (trang_thai is empty); parse_trang_thai (TrangThaiHoSo = '***' is not a "),
        (7, "parse_kenh_thuc_hien (KenhThucHien = '***' is not a valid i16)"),
        (8, "dossier_received_has_receipt_date (ngay_tiep_nhan is empty "))]
    want += [f"dossiers record {keyless} without MaHoSo: dossier_key_present (ma_ho_so is empty); "
             "required_ma_ho_so (MaHoSo is missing)",
             f"Ma ALERT-P10 (MaHoSo {p0['MaHoSo']}): payment_amount_equals_fee_plus_charge (so_tien = ",
             "... and 1 more record (dvc-etl quarantine list)"]
    assert len(records) == len(want), records
    for got, expected in zip(records, want, strict=True):
        assert got.startswith(f"  - {expected}"), (got, expected)
    assert records[7].endswith("; parse_ngay_tiep_nhan (NgayTiepNhan = '***' is not a valid ts)")
    assert "ALERT-P11" not in text and "MaHoSo ALERT-D01: dossier_status_in_code_list" in blocks
    assert f"Ma ALERT-P10 (MaHoSo {p0['MaHoSo']})" in blocks
    # never personal data, in any channel; never a secret
    for blob in (raw, text):
        for value in personal:
            assert value not in blob, value
        for secret in (TOKEN, HASH_KEY, SMTP_PASSWORD, "SECRETPATHxyz"):
            assert secret not in blob, secret

    # the failure alert: the error, the flow run's link and the data docs' index
    failed_link = f"{UI}/runs/flow-run/{failed.state_details.flow_run_id}"
    assert "FAILURE" in failure_subject and f"Flow run: {failed_link}" in failure_text.splitlines()
    assert f"All runs: {site}" in failure_text.splitlines() and "401" in failure_text
    assert "Data docs: not built for this run" in failure_text.splitlines()
    assert failed_link in json.dumps(failure_body) and "alert-SECRET-wrong-token" not in json.dumps(failure_body)


def test_first_failing_records_of_a_run(warehouse_url: str) -> None:
    """``first_failing_records`` on a real warehouse (DuckDB and PostgreSQL): only the run's open
    rows, dossiers first then payments, by code, keyless last; a payment's dossier from its raw
    record; the details scrubbed of the record's personal values; the total counted."""
    from datetime import datetime

    from tasks.runs import first_failing_records
    from tasks.warehouse import upgrade

    engine = connect(warehouse_url)
    upgrade(engine)
    t = datetime(2024, 7, 1, 2)
    who = {"ChuHoSo": "Lê Thị Riêng Tư", "SoGiayToChuHoSo": "079203009999", "SoDienThoai": "0912 000 111"}
    rows = [  # entity, key, rule, detail, raw, run, resolved
        ("payments", "P-1", "payment_amount_non_negative", "so_tien = -5", {"Ma": "P-1", "MaHoSo": "D-9"}, "r1", None),
        ("units", "U-1|20190101", "unit_level_in_code_list", "cap = 5", {}, "r1", None),
        ("dossiers", "#00aa", "required_ma_ho_so", "MaHoSo is missing", who, "r1", None),
        ("dossiers", "D-2", "parse_trang_thai", f"TrangThaiHoSo = '{who['ChuHoSo']}' is not a valid i16", who, "r1",
         None),
        ("dossiers", "D-2", "dossier_status_present", "trang_thai is empty", who, "r1", None),
        ("dossiers", "D-1", "dossier_status_in_code_list", "trang_thai = 11", who, "r1", None),
        ("dossiers", "D-0", "dossier_status_in_code_list", "trang_thai = 12", who, "r1", t),  # resolved
        ("dossiers", "D-3", "dossier_status_in_code_list", "trang_thai = 13", who, "r0", None),  # another run
    ]
    with engine.begin() as c:
        for ent, key, rule, detail, raw, run, resolved in rows:
            c.execute(sa.text(
                "INSERT INTO dq.quarantine (source, entity, record_key, rule, severity, detail, raw_record, run_id, "
                "first_seen_at, last_seen_at, resolved_at) VALUES ('s', :e, :k, :rule, 'critical', :d, :raw, :run, "
                ":t, :t, :res)"), {"e": ent, "k": key, "rule": rule, "d": detail, "raw": json.dumps(raw), "run": run,
                                   "t": t, "res": resolved})
    try:
        got, total = first_failing_records(engine, "r1", limit=4)
        assert total == 5
        assert [r.text() for r in got] == [
            "MaHoSo D-1: dossier_status_in_code_list (trang_thai = 11)",
            "MaHoSo D-2: dossier_status_present (trang_thai is empty); parse_trang_thai (TrangThaiHoSo = '***' is "
            "not a valid i16)",
            "dossiers record #00aa without MaHoSo: required_ma_ho_so (MaHoSo is missing)",
            "Ma P-1 (MaHoSo D-9): payment_amount_non_negative (so_tien = -5)"]
        assert [r.text() for r in first_failing_records(engine, "r1")[0]][-1] == (
            "MaDonVi/HieuLucTu U-1|20190101: unit_level_in_code_list (cap = 5)")
        assert first_failing_records(engine, "nothing") == ([], 0)
    finally:
        engine.dispose()
