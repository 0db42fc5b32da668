"""Concurrent runs: two ``dvc-etl run`` processes started together on the same warehouse.

Each one either completes (exit 0: it waited for the writer lock, ``DVC_LOCK_WAIT_SECONDS``) or
exits 4 with the "being written" message; at least one completes; the warehouse ends equal to the
one of a single uninterrupted run (nothing doubled, nothing corrupt) and mart is consistent.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.reliability_support import (
    baseline,
    current_periods,
    drop_warehouse,
    mart_problems,
    new_warehouse,
    sim_env,
    start_cli,
    warehouse_state,
)

CASES = [
    pytest.param("duckdb", "60", id="duckdb-second-waits", marks=pytest.mark.slow),
    pytest.param("postgresql", "0", id="postgresql-second-exits-4", marks=pytest.mark.postgres),
    pytest.param("duckdb", "0", id="duckdb-second-exits-4", marks=pytest.mark.slow),
    pytest.param("postgresql", "60", id="postgresql-second-waits", marks=[pytest.mark.postgres, pytest.mark.slow]),
]


@pytest.mark.parametrize(("backend", "wait"), CASES)
def test_two_runs_started_together(prefect_harness, tmp_path, backend, wait):
    want_state, want_periods = baseline(backend, tmp_path / "baseline")
    url = new_warehouse(backend, tmp_path)
    try:
        env = sim_env(tmp_path, url, DVC_LOCK_WAIT_SECONDS=wait)
        procs = [start_cli(["run", "-q"], env, tmp_path / f"run{i}") for i in range(2)]
        outcomes = []
        for p in procs:
            out, err = p.communicate(timeout=300)
            outcomes.append((p.returncode, out, err))
        codes = sorted(rc for rc, _, _ in outcomes)
        for rc, _out, err in outcomes:
            assert rc in (0, 4), f"exit {rc}: {err[-3000:]}"
            if rc == 4:
                final = err[err.rfind("error:"):]  # the CLI's last word: one clear message
                assert err.rfind("error:") >= 0 and "being written" in final, err[-2000:]
                assert "Traceback" not in final, final
                assert "\n" not in final.strip(), f"the message is hard-wrapped: {final!r}"  # whole in logs
        assert 0 in codes, outcomes
        if wait == "0":
            assert codes == [0, 4], f"with DVC_LOCK_WAIT_SECONDS=0 the second run must exit 4: {codes}"
        got = warehouse_state(url)
        diff = {t: (got[t], want_state[t]) for t in want_state if got[t] != want_state[t]}
        assert not diff, f"two concurrent runs left a warehouse unlike one run's: {diff}"
        assert current_periods(url) == want_periods
        engine = sa.create_engine(url)
        with engine.connect() as c:
            assert mart_problems(c) == []
            statuses = sorted(r[0] for r in c.execute(sa.text("SELECT status FROM dq.runs")))
        engine.dispose()
        assert statuses == ["success"] * codes.count(0), statuses
        print("concurrency-trial", {"backend": backend, "wait": wait, "exit_codes": codes})
    finally:
        drop_warehouse(url)
