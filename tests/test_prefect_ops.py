"""What ops see of the flows in Prefect, under Prefect's test harness (a real API server on
127.0.0.1), with real warehouses and a real webhook receiver.

- The weekly ``dvc-quarantine-export`` flow writes one list per unit into
  ``<DVC_REPORTS_DIR>/quarantine/``, taking the DuckDB warehouse's writer lock (waiting for the run
  that holds it) and reading a PostgreSQL one beside a running writer.
- Named final states: a monthly report of the other period cut ends ``Skipped``.
- One alert per failure: the flows' failure hook alerts a failed run; a crashed run of a deployment
  is left to the crash automation (``make deploy``), a crashed run outside one is alerted by the hook.

The gate's ``Blocked`` state is tested in ``tests/test_gate.py``, the inbox's ``Skipped`` and
``FilesRejected`` in ``tests/test_inbox.py``, the automations and the logs in the UI on a real
server in ``tests/test_prefect_server.py``.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import openpyxl

from tasks.warehouse import connect, writer_lock
from tests.test_alerts import WebhookReceiver
from tests.test_quarantine_cli import U1, U2, _no_personal_data
from tests.test_quarantine_cli import quarantined as quarantined  # noqa: F401 - the warehouse with open rows


def _api_state(flow_run_id) -> tuple[str, str]:
    """The flow run's final state as Prefect's API (the UI, the automations) has it: (type, name)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
    return state.type.value, state.name


def test_weekly_quarantine_export_writes_one_list_per_unit(
    prefect_harness, quarantined: str, dvc_env, tmp_path: Path  # noqa: F811 - the fixture
) -> None:
    """A run holds the writer lock when the export starts. On DuckDB (one process per file) the
    export waits for it, then writes; on PostgreSQL it reads beside the writer without waiting.
    One ``quarantine-<MaDonVi>.xlsx`` per unit with open rows, no personal data; last week's file of
    a unit with no open row any more is gone."""
    from flows.ops import quarantine_export

    dvc_env(DVC_WAREHOUSE_URL=quarantined, DVC_LOCK_WAIT_SECONDS="60")
    out_dir = tmp_path / "reports" / "quarantine"
    out_dir.mkdir(parents=True)
    (out_dir / "quarantine-000.00.99.H08.xlsx").write_bytes(b"last week's list of a unit now clean")
    engine = connect(quarantined)
    on_duckdb = engine.dialect.name == "duckdb"
    lock = writer_lock(engine, holder="nightly-20240701013000-busy00")
    lock.__enter__()
    # DuckDB: the run holding the lock finishes 1.5 s later; PostgreSQL: it holds it throughout
    release = threading.Timer(1.5, lock.__exit__, (None, None, None)) if on_duckdb else None
    if release:
        release.start()
    try:
        t0 = time.monotonic()
        state = quarantine_export(return_state=True)
        took = time.monotonic() - t0
    finally:
        if release:
            release.join()
        else:
            lock.__exit__(None, None, None)
        engine.dispose()

    assert _api_state(state.state_details.flow_run_id) == ("COMPLETED", "Completed")
    out = state.result()
    assert sorted(Path(f).name for f in out["files"]) == [f"quarantine-{U1}.xlsx", f"quarantine-{U2}.xlsx"]
    assert sorted(p.name for p in out_dir.iterdir()) == [f"quarantine-{U1}.xlsx", f"quarantine-{U2}.xlsx"]
    assert out["folder"] == str(out_dir)
    if on_duckdb:
        assert took >= 1.4, f"the export did not wait for the writer lock ({took:.1f} s)"
    ws = openpyxl.load_workbook(out_dir / f"quarantine-{U1}.xlsx").active
    table = [[str(v) for v in row] for row in ws.iter_rows(values_only=True)]
    assert {r[3] for r in table[1:]} == {"HS-STATUS", "HS-CHANNEL", "HS-OK"}
    _no_personal_data(json.dumps(table, ensure_ascii=False))


def test_a_monthly_report_of_the_other_cut_ends_skipped(prefect_harness, dvc_env, tmp_path: Path) -> None:
    from flows.ops import monthly_report

    dvc_env(DVC_WAREHOUSE_URL=f"duckdb:///{tmp_path / 'wh.duckdb'}", DVC_PERIOD_CUT="calendar")
    state = monthly_report(only_for_cut="decree-09", return_state=True)
    assert _api_state(state.state_details.flow_run_id) == ("COMPLETED", "Skipped")
    assert state.result()["skipped"] is True and "DVC_PERIOD_CUT is calendar" in state.message
    assert not (tmp_path / "wh.duckdb").exists()  # nothing was opened


def test_failure_hook_alerts_failed_runs_and_leaves_crashed_deployment_runs_to_the_automation(
    prefect_harness, dvc_env
) -> None:
    """The hook on real flow runs of the harness's API: a failed run alerts (once: the crash
    automation matches Crashed only); a crashed run of a deployment does not (the automation
    alerts it, and also the crashes no hook survives); a crashed run outside a deployment
    (``dvc-etl run``) does."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed, Failed

    from flows.lifecycle import alert_on_failure
    from flows.nightly import nightly

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow(nightly)
        deployment_id = client.create_deployment(flow_id=flow_id, name="nightly-hook-test")
        in_deployment = client.create_flow_run_from_deployment(deployment_id)
        outside = client.create_flow_run(nightly)
    with WebhookReceiver() as hook:
        dvc_env(DVC_ALERT_WEBHOOK_URL=hook.url)
        alert_on_failure(nightly, in_deployment, Crashed(message="worker lost"))
        assert hook.bodies == []
        alert_on_failure(nightly, in_deployment, Failed(message="SourceAuthError: 401"))
        alert_on_failure(nightly, outside, Crashed(message="KeyboardInterrupt"))
    texts = [b["text"] for b in hook.bodies]
    assert len(texts) == 2 and all(t.startswith("[FAILURE]") for t in texts), texts
    assert in_deployment.name in texts[0] and "Failed" in texts[0], texts[0]
    assert outside.name in texts[1] and "Crashed" in texts[1], texts[1]
