"""Backfill by month partitions (stop half-way, resume) and catch-up after downtime in batches.

Real flows (Prefect test server), the simulator on loopback, real DuckDB files. "The same
warehouse" is :func:`tests.warehouse_state.fingerprint` (every raw/core/dq table, run metadata left out).
"""

from __future__ import annotations

import shutil
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from simulator.dataset import generate
from simulator.server import FaultConfig, start_server
from tasks.pipeline import batch_windows
from tasks.runs import backfill_id, done_partitions
from tasks.warehouse import connect
from tests.warehouse_state import fingerprint

TOKEN = "backfill-token"
START, END = date(2024, 1, 1), date(2024, 4, 30)  # four month partitions


def _env(dvc_env, url: str, wh: str, **extra: str) -> None:
    dvc_env(DVC_SOURCE_URL=url, DVC_SOURCE_TOKEN=TOKEN, DVC_WAREHOUSE_URL=wh, DVC_PAGE_SIZE="50",
            DVC_HTTP_MAX_RETRIES="1", DVC_HTTP_BACKOFF_MAX="0.05", DVC_LOCK_WAIT_SECONDS="0", **extra)


def _partitions(wh: str) -> list[tuple[date, str]]:
    engine = connect(wh)
    try:
        with engine.connect() as c:
            rows = c.execute(sa.text("SELECT partition_start, status FROM dq.backfill_partitions ORDER BY 1"))
            return [(r[0], r[1]) for r in rows]
    finally:
        engine.dispose()


def _fingerprint(wh: str) -> dict[str, str]:
    engine = connect(wh)
    try:
        return fingerprint(engine)
    finally:
        engine.dispose()


@pytest.mark.slow  # ~45 s: three backfills of four partitions (make test-all)
def test_backfill_stopped_half_way_resumes_only_missing_partitions(prefect_harness, dvc_env, tmp_path: Path):
    from flows.ops import backfill

    ds = generate(seed=11, n_dossiers=800, start=START, end=END)
    with start_server(ds, token=TOKEN) as sim:
        # the reference: one uninterrupted backfill, four partitions at once (threads, one DuckDB file)
        straight = f"duckdb:///{tmp_path / 'straight.duckdb'}"
        _env(dvc_env, sim.url, straight)
        out = backfill(START, END, concurrency=4, publish=False)
        assert out["skipped"] == [] and len(out["ran"]) == 4
        assert [s for _, s in _partitions(straight)] == ["done"] * 4
        reference = _fingerprint(straight)
        assert int(reference["core.dossiers"].split(":")[0]) > 700
        per_partition = sim.stats()["ok"] / 4

        # the same backfill, one partition at a time, the source going down (503 for every request)
        # about half-way through the second partition
        resumed = f"duckdb:///{tmp_path / 'resumed.duckdb'}"
        _env(dvc_env, sim.url, resumed)
        sim.set_faults(FaultConfig(abort_after=int(per_partition * 1.5)))
        with pytest.raises(Exception, match="503|unavailable"):
            backfill(START, END, concurrency=1, publish=False)
        first = _partitions(resumed)
        done_first = [p for p, s in first if s == "done"]
        assert 1 <= len(done_first) < 4, first
        assert "failed" in [s for _, s in first]

        # the rerun: only the missing partitions run, two at a time
        sim.set_faults(None)
        out = backfill(START, END, concurrency=2, publish=False)
    assert out["skipped"] == [str(p) for p in done_first]
    months = [date(2024, m, 1) for m in range(1, 5)]
    assert sorted(r["partition"][0] for r in out["ran"]) == [str(m) for m in months if m not in done_first]
    assert [s for _, s in _partitions(resumed)] == ["done"] * 4
    engine = connect(resumed)
    try:
        assert done_partitions(engine, backfill_id("default", START, END)) == set(months)
    finally:
        engine.dispose()
    assert _fingerprint(resumed) == reference


def test_batch_windows_split_the_window_into_bounded_batches():
    t0 = datetime(2024, 7, 1, 1, 0)
    assert batch_windows((None, None), 1) == [(None, None)]  # first run / full refresh: one read
    assert batch_windows((t0, t0 + timedelta(hours=5)), 1) == [(t0, t0 + timedelta(hours=5))]
    three = batch_windows((t0, t0 + timedelta(days=2, hours=1)), 1)
    assert three == [(t0, t0 + timedelta(days=1)), (t0 + timedelta(days=1), t0 + timedelta(days=2)),
                     (t0 + timedelta(days=2), t0 + timedelta(days=2, hours=1))]
    # open end: split up to now, the last batch stays open (records changed while we read)
    open_ = batch_windows((t0, None), 2, now=t0 + timedelta(days=5))
    assert open_[-1] == (t0 + timedelta(days=4), None) and len(open_) == 3


@pytest.mark.slow  # ~45 s; the batch windows are tested above, catch-up end to end in make test-all
def test_catch_up_after_downtime_reads_in_batches_and_matches_one_big_window(prefect_harness, dvc_env, tmp_path):
    from flows.nightly import nightly
    from tasks import pipeline
    from tasks.settings import get_settings
    from tasks.source_api import SourceClient

    ds = generate(seed=5, n_dossiers=500, start=date(2024, 1, 1), end=date(2024, 3, 31))
    batched, single = tmp_path / "batched.duckdb", tmp_path / "single.duckdb"
    with start_server(ds, token=TOKEN) as sim:
        _env(dvc_env, sim.url, f"duckdb:///{batched}")
        nightly(publish=False)
        engine = connect(f"duckdb:///{batched}")
        with engine.connect() as c:
            c.execute(sa.text("CHECKPOINT"))  # the WAL into the file, then the same first load in both
        engine.dispose()
        shutil.copyfile(batched, single)
        # five days without a run while the source keeps changing
        t = ds.now
        for day in range(1, 6):
            with sim.lock:
                ds.advance(60, t + timedelta(days=day), seed=day)
        until = ds.now + timedelta(hours=1)
        # the nightly catches up one day at a time...
        _env(dvc_env, sim.url, f"duckdb:///{batched}", DVC_BATCH_DAYS="1")
        caught_up = nightly(publish=False, until=until)
        # ...the other warehouse reads the same changes in one window
        _env(dvc_env, sim.url, f"duckdb:///{single}", DVC_BATCH_DAYS="31")
        settings = get_settings()
        engine = connect(settings.warehouse_url)
        one = {}
        try:
            with SourceClient.from_settings(settings) as client:
                for entity in pipeline.INCREMENTAL:
                    window = pipeline.extraction_window(engine, settings, entity, full_refresh=False, since=None,
                                                        until=until)
                    one[entity] = pipeline.extract_entity(engine, client, entity, settings=settings, run_id="one-window",
                                                          window=window)
        finally:
            engine.dispose()
    for entity in pipeline.INCREMENTAL:
        windows = caught_up["entities"][entity]["batches"]
        assert len(windows) >= 5, windows
        assert all(hi - lo <= timedelta(days=1) for lo, hi in windows)
        assert all(a[1] == b[0] for a, b in zip(windows, windows[1:], strict=False))  # contiguous, no gap
        assert windows[0][0] == one[entity].window[0] and windows[-1][1] == until
        assert len(one[entity].batches) == 1
        assert caught_up["entities"][entity]["rows_read"] > 0
        assert caught_up["entities"][entity]["rows_read"] == one[entity].rows_read
    assert _fingerprint(f"duckdb:///{batched}") == _fingerprint(f"duckdb:///{single}")
