"""Source outage: the API is down for a whole run.

The run fails fast (bounded by the retry budget), sends exactly one alert to a real local webhook,
keeps the last publication untouched; with the source back, the next run catches up to the
warehouse of one uninterrupted run.
"""

from __future__ import annotations

import socket
import time

import pytest
import sqlalchemy as sa

from tasks.warehouse import connect
from tests.reliability_support import (
    baseline,
    current_periods,
    mart_problems,
    new_warehouse,
    run_cli,
    sim_env,
)
from tests.test_alerts import WebhookReceiver
from tests.warehouse_state import FINGERPRINT_TABLES, fingerprint

MART = ["mart.publications", "mart.rpt_progress", "mart.rpt_service_indicators", "mart.rpt_unpaid_results"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: connections are refused


def _mart_state(url: str) -> dict[str, str]:
    engine = connect(url)
    try:
        with engine.connect() as c:
            rows = c.execute(sa.text("SELECT publication_id, is_current, workbook_path FROM mart.publications "
                                     "ORDER BY publication_id")).fetchall()
        return {"publications": str(rows), **fingerprint(engine, MART)}
    finally:
        engine.dispose()


@pytest.mark.slow  # ~30 s; tests/test_gate.py keeps an outage case in the default suite
def test_source_down_for_a_whole_run(prefect_harness, tmp_path, tmp_path_factory):
    want_state, want_periods = baseline("duckdb", tmp_path / "baseline", tmp_path_factory)
    url = new_warehouse("duckdb", tmp_path)
    first = run_cli(["run", "-q", "--until", "2024-02-15"], sim_env(tmp_path, url), tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    before = _mart_state(url)
    workbooks = {p: p.read_bytes() for p in (tmp_path / "reports").glob("*.xlsx")}
    assert workbooks

    with WebhookReceiver() as hook:
        env = sim_env(tmp_path, url, DVC_SOURCE_URL=f"http://127.0.0.1:{_closed_port()}", DVC_ALERT_WEBHOOK_URL=hook.url)
        t0 = time.monotonic()
        down = run_cli(["run", "-q"], env, tmp_path, timeout=180)
        elapsed = time.monotonic() - t0
        time.sleep(1)
        alerts = list(hook.bodies)
    assert down.returncode == 1, down.stderr[-3000:]
    (tmp_path / "outage-stderr.txt").write_text(down.stderr)
    final = down.stderr[down.stderr.rfind("error:"):]  # the CLI's last word: one clear message
    assert down.stderr.rfind("error:") >= 0 and "127.0.0.1" in final, down.stderr[-3000:]
    assert "Traceback" not in final, final
    assert elapsed < 90, f"the run took {elapsed:.0f} s to give up"
    assert len(alerts) == 1, f"want exactly one alert, got {len(alerts)}: {alerts}"
    assert _mart_state(url) == before, "the outage run touched the last publication"
    assert {p: p.read_bytes() for p in (tmp_path / "reports").glob("*.xlsx")} == workbooks
    engine = connect(url)
    with engine.connect() as c:
        assert mart_problems(c) == []
        last = c.execute(sa.text("SELECT status, message FROM dq.runs ORDER BY started_at DESC LIMIT 1")).one()
    engine.dispose()
    assert last.status == "failed" and last.message

    catchup = run_cli(["run", "-q"], sim_env(tmp_path, url), tmp_path)
    assert catchup.returncode == 0, catchup.stderr[-3000:]
    engine = connect(url)
    got = fingerprint(engine, FINGERPRINT_TABLES)
    engine.dispose()
    diff = {t: (got[t], want_state[t]) for t in FINGERPRINT_TABLES if got[t] != want_state[t]}
    assert not diff, f"the catch-up run did not converge to an uninterrupted run: {diff}"
    assert set(want_periods) <= set(current_periods(url))
    print("outage-trial", {"seconds_to_fail": round(elapsed, 1), "alerts": len(alerts)})
