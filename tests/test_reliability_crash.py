"""Crash consistency: a real ``dvc-etl run`` is SIGKILLed at named points (``tasks/faults.py``,
env ``DVC_CRASH_AT``) and by timing during extraction; a rerun must converge to the warehouse of an
uninterrupted run (``tests.warehouse_state.fingerprint`` of raw/core/dq + the current report tables), and
on PostgreSQL a reader polling ``mart`` while the run is killed never sees a half-published period.

Three representative points (extraction, mid-load, publication) run in ``make test``, in turn on one PostgreSQL warehouse; the full matrix (22 points on DuckDB, the
publication points again on PostgreSQL) is ``@pytest.mark.slow`` (``make test-all``).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tasks.faults import POINTS
from tests.reliability_support import (
    MartPoller,
    baseline,
    current_periods,
    drop_warehouse,
    mart_problems,
    new_warehouse,
    run_cli,
    shared_simulator,
    sim_env,
    start_cli,
    warehouse_state,
)

#: (point, backend). "kill@N": SIGKILL from outside once the simulator has answered N data requests
#: of this run (timing-based, during extraction). Other names: DVC_CRASH_AT values.
DEFAULT_POINTS = ["kill@4", "load.after_core#3", "publish.table#4"]
ALL_POINTS = [
    "kill@1", "kill@3", "kill@7", "kill@10",
    "extract.after_page#1", "extract.after_page#5",
    "load.after_raw#1", "load.after_raw#3",
    "load.after_core#4",
    "load.before_commit#2", "load.before_commit#3",
    "load.after_commit#3",
    "extract.after_entity#1", "extract.after_entity#2",
    "publish.table#1", "publish.table#10",
    "publish.before_commit#1", "publish.before_commit#2",
    "publish.after_commit#1", "publish.after_commit#2",
    "workbook.after_write#2",
    "run.before_finish",
]
PG_POINTS = ["load.after_core#3", "publish.table#2", "publish.table#12", "publish.before_commit#1",
             "publish.after_commit#2", "run.before_finish"]
SLOW = [(p, "duckdb") for p in ALL_POINTS] + [(p, "postgresql") for p in PG_POINTS]


def test_every_named_point_exists_in_the_code():
    """A crash point named in a test but called nowhere would silently never fire."""
    root = Path(__file__).resolve().parent.parent
    code = "".join(p.read_text(encoding="utf-8") for d in ("tasks", "flows") for p in (root / d).glob("*.py")
                   if p.name != "faults.py")
    for name in POINTS:
        assert f'crash_point("{name}")' in code, name
    for point in DEFAULT_POINTS + [p for p, _ in SLOW]:
        if not point.startswith("kill@"):
            assert point.split("#")[0] in POINTS, point


def _crash_run(point: str, url: str, work: Path) -> None:
    """Start ``dvc-etl run`` and have it killed at ``point``; asserts the kill happened."""
    sim = shared_simulator()
    if point.startswith("kill@"):
        n = int(point[5:])
        base = sim.stats().get("ok", 0)
        proc = start_cli(["run", "-q"], sim_env(work, url), work)
        deadline = time.monotonic() + 180
        while proc.poll() is None and time.monotonic() < deadline:
            if sim.stats().get("ok", 0) - base >= n:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        out, err = proc.communicate(timeout=60)
    else:
        proc = start_cli(["run", "-q"], sim_env(work, url, DVC_CRASH_AT=point), work)
        out, err = proc.communicate(timeout=240)
    assert proc.returncode == -signal.SIGKILL, f"{point} was never reached (exit {proc.returncode}): {err[-3000:]}"


def crash_then_rerun(points: list[str], backend: str, work: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Kill one run at each of ``points`` in turn (on one warehouse), then rerun once; the
    warehouse must equal the one of an uninterrupted run. PostgreSQL: a poller checks mart
    throughout."""
    want_state, want_periods = baseline(backend, work / "baseline", tmp_path_factory)
    url = new_warehouse(backend, work)
    poller = MartPoller(url) if backend == "postgresql" else None
    try:
        if poller:
            poller.__enter__()
        try:
            for point in points:
                _crash_run(point, url, work)
            rerun = run_cli(["run", "-q"], sim_env(work, url), work)
        finally:
            if poller:
                poller.__exit__(None, None, None)
        assert rerun.returncode == 0, f"rerun after {points}: {rerun.stderr[-3000:]}"
        got = warehouse_state(url)
        diff = {t: (got[t], want_state[t]) for t in want_state if got[t] != want_state[t]}
        assert not diff, f"after crashes at {points} and a rerun the warehouse differs from an uninterrupted run: {diff}"
        assert current_periods(url) == want_periods
        if poller is not None:
            engine = sa.create_engine(url)
            with engine.connect() as c:
                assert mart_problems(c) == []
            engine.dispose()
            assert poller.snapshots_with_publications > 0, "the poller never saw a publication"
            assert poller.problems == [], poller.problems[:5]
        rows = sum(int(v.split(":")[0]) for k, v in got.items() if k.startswith(("core.", "raw.")))
        record = {"points": points, "backend": backend, "rows": rows,
                  "snapshots": poller.snapshots if poller else 0}
        print("crash-trial", record)
        return record
    finally:
        drop_warehouse(url)


@pytest.mark.postgres
def test_crashes_during_extraction_load_and_publication_then_rerun_converges(prefect_harness, tmp_path,
                                                                             tmp_path_factory):
    """Default suite: one PostgreSQL warehouse, a run killed at each of the DEFAULT_POINTS in
    turn while a reader polls mart, then one rerun: same warehouse as an uninterrupted run."""
    crash_then_rerun(DEFAULT_POINTS, "postgresql", tmp_path, tmp_path_factory)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize(("point", "backend"), SLOW, ids=[f"{p}-{b}" for p, b in SLOW])
def test_crash_matrix(prefect_harness, tmp_path, tmp_path_factory, point, backend):
    """Every point on its own: one crash, one rerun, compared with an uninterrupted run."""
    crash_then_rerun([point], backend, tmp_path, tmp_path_factory)
