"""The gate closes: a run with critical failures above ``DVC_CRITICAL_THRESHOLD`` loads its data
but publishes nothing (the previous publication, every ``mart.rpt_*`` table and the workbook stay
exactly as they were), ends 'blocked', makes ``dvc-etl run`` exit 3, and alerts the ops team by a
real webhook and a real SMTP server; a run that fails outright alerts too. No secret in any alert.
In Prefect (its API, as the UI and the automations read it) the blocked run ends in the state
``Blocked``, not a plain ``Completed``, and gets no failure alert besides its data-quality alert.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from typer.testing import CliRunner

from simulator.dataset import generate
from simulator.server import start_server
from tasks.warehouse import connect
from tests.test_alerts import SMTP_PASSWORD, WebhookReceiver
from tests.test_alerts import smtp_server as smtp_server  # noqa: F401 - the real SMTP server fixture

TOKEN = "gate-SECRET-token-3e1f"
HASH_KEY = "gate-SECRET-hashkey-c0de-of-at-least-32-bytes"
WRONG_TOKEN = "gate-SECRET-wrong-token-9b9b"
SECRETS = (TOKEN, SMTP_PASSWORD, HASH_KEY, WRONG_TOKEN, "SECRETPATHxyz")
AUTH = {"Authorization": f"Bearer {TOKEN}"}
THRESHOLD = 2


def mart_snapshot(engine: sa.Engine) -> dict[str, list[tuple]]:
    """Every row of mart.publications and of every mart.rpt_* table, in a stable order."""
    tables = sorted(t for t in sa.inspect(engine).get_table_names(schema="mart")
                    if t.startswith("rpt_") or t == "publications")
    assert "publications" in tables and len(tables) >= 7, tables
    out = {}
    with engine.connect() as c:
        for t in tables:
            rows = [tuple(r) for r in c.execute(sa.text(f"SELECT * FROM mart.{t}"))]
            out[t] = sorted(rows, key=lambda r: tuple(str(v) for v in r))
    return out


def files_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.xlsx"))}


def last_run(engine: sa.Engine) -> Any:
    with engine.connect() as c:
        return c.execute(sa.text("SELECT run_id, status, published, message FROM dq.runs "
                                 "ORDER BY started_at DESC, run_id DESC LIMIT 1")).one()


def no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, secret


def mail_text(raw: bytes) -> tuple[str, str]:
    msg = message_from_bytes(raw)
    payload = msg.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return str(msg["Subject"]), payload.decode(msg.get_content_charset() or "utf-8")


def last_flow_run_state(flow_name: str = "dvc-nightly") -> tuple[str, str, str]:
    """(type, name, message) of the flow's latest run, read from Prefect's API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        run, = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                                     sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=1)
    return run.state.type.value, run.state.name, run.state.message or ""


def test_blocked_run_keeps_the_publication_and_alerts(prefect_harness, duckdb_url, dvc_env, tmp_path,
                                                      smtp_server) -> None:
    from flows.nightly import nightly
    from tasks.cli import EXIT_BLOCKED, app
    from tasks.source_api import SourceAuthError, SourceError
    from tests.test_quarantine_e2e import base_records

    sink, smtp_port = smtp_server
    ds = generate(seed=9, n_dossiers=150, start=date(2024, 1, 1), end=date(2024, 6, 30))
    d0, p0, _, u0 = base_records(ds)
    engine = connect(duckdb_url)
    reports = tmp_path / "reports"
    with start_server(ds, token=TOKEN) as sim, WebhookReceiver() as hook:
        env = dict(DVC_SOURCE_URL=sim.url, DVC_SOURCE_TOKEN=TOKEN, DVC_WAREHOUSE_URL=duckdb_url,
                   DVC_CRITICAL_THRESHOLD=str(THRESHOLD), DVC_ALERT_WEBHOOK_URL=hook.url,
                   DVC_SMTP_HOST="127.0.0.1", DVC_SMTP_PORT=str(smtp_port), DVC_SMTP_USER="etl",
                   DVC_SMTP_PASSWORD=SMTP_PASSWORD, DVC_ALERT_EMAIL_TO="ops@example.gov.vn",
                   DVC_HASH_KEY=HASH_KEY, DVC_HTTP_MAX_RETRIES="1", DVC_HTTP_BACKOFF_MAX="0.2")
        dvc_env(**env)

        # -- run 1: clean data, publishes the data cut's month and the month before ----------------------
        s1 = nightly(full_refresh=True)
        assert not s1["blocked"] and s1["rows_quarantined"] == 0 and len(s1["published"]) == 2
        assert last_run(engine).status == "success"
        assert last_flow_run_state()[:2] == ("COMPLETED", "Completed")
        before = mart_snapshot(engine)
        assert len(before["publications"]) == 2 and sum(len(v) for k, v in before.items() if k != "publications") > 50
        workbooks = files_digest(reports)
        assert len(workbooks) == 2 and {Path(p["workbook"]).name for p in s1["published"]} == set(workbooks)
        # the simulated source is stale (2024 data): the batch-level freshness rule always alerts
        assert len(hook.bodies) == 1 and len(sink.messages) == 1
        assert "dossier_freshness" in json.dumps(hook.bodies[0], ensure_ascii=False)
        assert hook.bodies[0]["text"].startswith("[WARNING] Data-quality warnings")
        hook.bodies.clear()
        sink.messages.clear()

        # -- run 2 (the CLI): new activity at the source plus critical failures above the threshold -------
        assert requests.post(f"{sim.url}/_sim/advance", params={"changes": 40}, headers=AUTH,
                             timeout=30).status_code == 200
        stamp = ds.now.strftime("%Y%m%d") + "000500"
        plants = {
            "dossiers": [{**d0, "MaHoSo": "GATE-1", "TrangThaiHoSo": 11, "NgayCapNhat": stamp},
                         {**d0, "MaHoSo": "GATE-2", "KenhThucHien": 7, "NgayCapNhat": stamp},
                         {**d0, "MaHoSo": "GATE-3", "NgayTra": None, "NgayCapNhat": stamp}],
            "payments": [{**p0, "Ma": "GATE-P1", "SoTien": p0["SoTien"] + 1, "NgayCapNhat": stamp}],
            "units": [{**u0, "MaDonVi": "000.98.01.H08", "CapDonVi": 5}],
        }
        assert requests.post(f"{sim.url}/_sim/inject", json=plants, headers=AUTH, timeout=10).status_code == 200
        result = CliRunner().invoke(app, ["run"])
        assert result.exit_code == EXIT_BLOCKED == 3, result.output
        run2 = last_run(engine)
        assert (run2.status, bool(run2.published)) == ("blocked", False)
        # not a plain green run in the UI: the named state ops filter on (prefect flow-run ls --state Blocked)
        kind, name, message = last_flow_run_state()
        assert (kind, name) == ("COMPLETED", "Blocked"), (kind, name, message)
        assert message.startswith(f"run {run2.run_id}: data-quality gate closed, 5 rows failed critical checks "
                                  f"(DVC_CRITICAL_THRESHOLD={THRESHOLD}); reports not published"), message
        with engine.connect() as c:
            q = {(r.entity, r.record_key, r.rule) for r in c.execute(
                sa.text("SELECT entity, record_key, rule FROM dq.quarantine WHERE run_id = :r"), {"r": run2.run_id})}
            summary = {r.entity: r for r in c.execute(
                sa.text("SELECT * FROM dq.run_summary WHERE run_id = :r"), {"r": run2.run_id})}
        assert q == {("dossiers", "GATE-1", "dossier_status_in_code_list"),
                     ("dossiers", "GATE-2", "dossier_channel_in_code_list"),
                     ("dossiers", "GATE-3", "dossier_handed_over_has_handover_date"),
                     ("payments", "GATE-P1", "payment_amount_equals_fee_plus_charge"),
                     ("units", "000.98.01.H08|20190101", "unit_level_in_code_list")}
        assert sum(s.rows_quarantined for s in summary.values()) == 5 > THRESHOLD
        assert summary["dossiers"].rows_loaded > 0  # the new activity loaded: data in, reports not out
        assert all(s.rows_read == s.rows_loaded + s.rows_quarantined for s in summary.values())
        # nothing was published: publications, report tables and workbooks are exactly as after run 1
        assert mart_snapshot(engine) == before
        assert files_digest(reports) == workbooks

        # the alert: run id, failing rules with counts, data docs path; webhook and e-mail
        docs = reports / "data-docs" / run2.run_id / "index.html"
        assert docs.is_file()
        assert len(hook.bodies) == 1 and len(sink.messages) == 1
        body = hook.bodies[0]
        raw = json.dumps(body, ensure_ascii=False)
        assert body["text"].startswith("[CRITICAL] Critical data-quality failures - reports not published")
        assert f"run {run2.run_id}" in body["text"] and "quarantined=5" in body["text"]
        for line in ("dossiers.dossier_channel_in_code_list: 1 row (critical)",
                     "dossiers.dossier_handed_over_has_handover_date: 1 row (critical)",
                     "dossiers.dossier_status_in_code_list: 1 row (critical)",
                     "payments.payment_amount_equals_fee_plus_charge: 1 row (critical)",
                     "units.unit_level_in_code_list: 1 row (critical)", "MaHoSo GATE-1: dossier_status_in_code_list",
                     "Ma GATE-P1 (MaHoSo ", str(docs.resolve())):
            assert line in raw, line
        rcpts, data = sink.messages[0]
        subject, text = mail_text(data)
        assert rcpts == ["ops@example.gov.vn"] and sink.logins == [("etl", SMTP_PASSWORD)] * 2
        assert "CRITICAL" in subject and run2.run_id in subject
        assert f"Run id: {run2.run_id}" in text and "quarantined: 5" in text
        assert "units.unit_level_in_code_list: 1 row (critical)" in text and f"Data docs: {docs.resolve()}" in text
        for blob in (raw, data.decode("utf-8", "replace"), result.output):
            no_secret(blob)
        hook.bodies.clear()
        sink.messages.clear()

        # -- run 3: the source refuses the token (401): the run fails and alerts --------------------------
        dvc_env(**{**env, "DVC_SOURCE_TOKEN": WRONG_TOKEN})
        with pytest.raises(SourceAuthError):
            nightly()
        run3 = last_run(engine)
        assert run3.status == "failed" and "DVC_SOURCE_TOKEN" in run3.message
        assert last_flow_run_state()[:2] == ("FAILED", "Failed")
        assert len(hook.bodies) == 1 and len(sink.messages) == 1
        raw = json.dumps(hook.bodies[0], ensure_ascii=False)
        subject, text = mail_text(sink.messages[0][1])
        assert hook.bodies[0]["text"].startswith("[FAILURE] dvc-etl run ") and "Failed" in hook.bodies[0]["text"]
        assert f"run {run3.run_id}" in hook.bodies[0]["text"] and f"Run id: {run3.run_id}" in text  # as in dq.runs
        assert "401" in raw and "DVC_SOURCE_TOKEN" in raw and "FAILURE" in subject and "401" in text
        for blob in (raw, sink.messages[0][1].decode("utf-8", "replace")):
            no_secret(blob)
        hook.bodies.clear()
        sink.messages.clear()
        sim_url = sim.url

    # -- run 4: the source is unreachable (simulator stopped): the run fails and alerts ------------------
    with WebhookReceiver() as hook2:
        dvc_env(**{**env, "DVC_SOURCE_URL": sim_url, "DVC_ALERT_WEBHOOK_URL": hook2.url})
        with pytest.raises(SourceError):
            nightly()
    run4 = last_run(engine)
    assert run4.status == "failed" and run4.run_id != run3.run_id
    assert len(hook2.bodies) == 1 and len(sink.messages) == 1
    raw = json.dumps(hook2.bodies[0], ensure_ascii=False)
    assert hook2.bodies[0]["text"].startswith("[FAILURE]") and f"run {run4.run_id}" in hook2.bodies[0]["text"]
    assert "127.0.0.1" in raw and "SourceUnavailable" in raw
    no_secret(raw)
    no_secret(sink.messages[0][1].decode("utf-8", "replace"))
    # the blocked and failed runs changed nothing that was published
    assert mart_snapshot(engine) == before and files_digest(reports) == workbooks
    engine.dispose()
