"""Great Expectations validations deferred to the end of a run (``defer_gx`` + ``settle_gx``).

The nightly flow lets GX (the record; the quarantine masks are the gate) validate every chunk in
its background thread while later chunks and entities load and the reports publish, and settles
every validation of the run before it reports, saying how many rows GX saw. Real GX, real DuckDB
warehouse.
"""

from __future__ import annotations

import itertools
import json
import threading
from datetime import date
from pathlib import Path

from simulator.dataset import generate
from tasks import gx as gx_thread
from tasks import pipeline
from tasks.settings import Settings
from tasks.warehouse import connect, upgrade

_DS = generate(seed=11, n_dossiers=60, start=date(2024, 1, 1), end=date(2024, 1, 31))


def _process(engine, settings: Settings, run_id: str, entity: str, *, defer: bool) -> pipeline.EntityResult:
    res = pipeline.EntityResult(entity)
    ctx = pipeline.check_context(engine, settings.source_name, entity, settings, pipeline.now_local())
    records = [dict(r) for r in itertools.islice(_DS.records(entity), 40)]
    pipeline.process_records(engine, entity, records, settings=settings, run_id=run_id, result=res, context=ctx,
                             defer_gx=defer)
    return res


def test_deferred_validations_settle_at_the_end_of_the_run(tmp_path: Path) -> None:
    engine = connect(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    upgrade(engine)
    settings = Settings(hash_key="k", reports_dir=tmp_path / "reports")
    results = {e: _process(engine, settings, "run-a", e, defer=True) for e in ("units", "procedures", "dossiers")}
    # a second run's validation is not settled by the first run's settle
    other = _process(engine, settings, "run-b", "dossiers", defer=True)

    settled = gx_thread.settle_gx("run-a")

    assert set(settled) == {"units", "procedures", "dossiers"}
    docs = tmp_path / "reports" / "data-docs" / "run-a" / "index.html"
    assert docs.is_file()
    for entity, record in settled.items():
        assert record["data_docs"] == str(docs.resolve()), entity
        assert record["gx_success"] is True, entity
        assert results[entity].data_docs == record["data_docs"]  # the results themselves are filled in
    assert gx_thread.settle_gx("run-a") == {}  # nothing left pending for that run
    # waiting for one result by itself takes it off the run's pending list
    pipeline.wait_gx(other)
    assert other.data_docs and gx_thread.settle_gx("run-b") == {}
    engine.dispose()


def test_undeferred_validation_is_done_when_process_records_returns(tmp_path: Path) -> None:
    engine = connect(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    upgrade(engine)
    settings = Settings(hash_key="k", reports_dir=tmp_path / "reports")
    res = _process(engine, settings, "run-c", "units", defer=False)
    assert res.data_docs and Path(res.data_docs).is_file() and res.gx_success is True
    assert gx_thread.settle_gx("run-c") == {}
    engine.dispose()


def test_every_chunk_is_validated_and_the_run_says_what_gx_saw(tmp_path: Path) -> None:
    """Two chunks of 30 dossiers, DVC_GX_ROW_BUDGET=50: GX validates the first 50 rows in full and
    a deterministic sample of the 10 beyond (the same on a rerun); the entity's record, the run's
    record file and the site's index say how many rows GX saw of how many; with
    DVC_DATA_DOCS_KEEP_RUNS=1 the second run's docs replace the first's."""
    records = [dict(r) for r in itertools.islice(_DS.records("dossiers"), 60)]
    seen = []
    for run_id in ("run-d", "run-e"):
        engine = connect(f"duckdb:///{tmp_path / (run_id + '.duckdb')}")
        upgrade(engine)
        settings = Settings(hash_key="k", reports_dir=tmp_path / "reports", gx_row_budget=50, gx_sample_fraction=0.5,
                            data_docs_keep_runs=1)
        res = pipeline.EntityResult("dossiers")
        ctx = pipeline.check_context(engine, settings.source_name, "dossiers", settings, pipeline.now_local())
        for chunk in (records[:30], records[30:]):
            pipeline.process_records(engine, "dossiers", chunk, settings=settings, run_id=run_id, result=res,
                                     context=ctx, defer_gx=True)
        gx = gx_thread.settle_gx(run_id)["dossiers"]["gx"]
        assert res.gx == gx and res.rows_read == 60
        assert (gx["rows_checked"], gx["rows_in_full"], gx["rows_beyond_budget"]) == (60, 50, 10)
        assert (gx["chunks"], gx["chunks_validated"]) == (2, 2) and gx["sampled"]
        assert gx["rows_validated"] == 50 + gx["rows_sampled"] and 0 <= gx["rows_sampled"] <= 10
        assert gx["text"].startswith(f"GX validated {gx['rows_validated']} of 60 rows (2 of 2 chunks)")
        seen.append(gx["rows_sampled"])
        docs = tmp_path / "reports" / "data-docs"
        record = json.loads((docs / run_id / "dvc-run.json").read_text(encoding="utf-8"))
        (validation,) = record["validations"].values()
        assert validation["rows_validated"] == gx["rows_validated"] and validation["entity"] == "dossiers"
        index = (docs / "index.html").read_text(encoding="utf-8")
        assert f'href="{run_id}/index.html"' in index and gx["text"] in index
        engine.dispose()
    assert seen[0] == seen[1]  # the same rows sampled on the rerun
    assert not (tmp_path / "reports" / "data-docs" / "run-d").exists()  # beyond DVC_DATA_DOCS_KEEP_RUNS
    assert "run-d" not in (tmp_path / "reports" / "data-docs" / "index.html").read_text(encoding="utf-8")


def test_the_gx_thread_takes_a_bounded_number_of_batches() -> None:
    """While BATCHES_IN_FLIGHT batches wait in the GX thread, the next hand-over waits: a slow GX
    holds the extraction back instead of piling batches up in memory."""
    release = threading.Event()
    futures = [gx_thread.submit(release.wait, 10) for _ in range(gx_thread.BATCHES_IN_FLIGHT)]
    late = threading.Thread(target=lambda: futures.append(gx_thread.submit(lambda: True)))
    late.start()
    late.join(0.5)
    assert late.is_alive() and len(futures) == gx_thread.BATCHES_IN_FLIGHT
    release.set()
    late.join(10)
    assert not late.is_alive() and all(f.result(10) for f in futures)


def test_small_batches_go_on_while_gx_is_busy_and_a_full_one_waits() -> None:
    """What a hand-over waits for is room for its rows: a nightly's small batches (catalogues, one
    chunk an entity) are handed over while GX is busy (its host starting), a full load's next
    full batch still waits."""
    release = threading.Event()
    futures = [gx_thread.submit(release.wait, 10)]  # a full batch, GX busy
    for _ in range(20):
        small = threading.Thread(target=lambda: futures.append(gx_thread.submit(release.wait, 10, rows=100)))
        small.start()
        small.join(2)
        assert not small.is_alive(), "a small batch waited for GX"
    late = threading.Thread(target=lambda: futures.append(gx_thread.submit(lambda: True)))
    late.start()
    late.join(0.5)
    assert late.is_alive() and len(futures) == 21  # 50,000 + 20 x 100 in flight: no room for 50,000 more
    release.set()
    late.join(10)
    assert not late.is_alive() and all(f.result(10) for f in futures)


def test_the_normalisers_rules_take_their_severity_from_the_suite(tmp_path: Path, monkeypatch) -> None:
    """The check record of a parse failure (``parse_ngay_tiep_nhan``) carries the severity the
    suite's ``dvc_parse`` rule declares, not one written in the pipeline."""
    from tasks import suites

    folder = tmp_path / "expectations"
    folder.mkdir()
    for entity in ("dossiers", "payments", "procedures", "units"):
        doc = json.loads((suites.EXPECTATIONS_DIR / f"{entity}.json").read_text(encoding="utf-8"))
        for exp in doc["expectations"]:
            if exp["type"] == "dvc_parse" and "ngay_tiep_nhan" in exp["kwargs"].get("columns", ()):
                exp["meta"]["severity"] = "warning"
        (folder / f"{entity}.json").write_text(json.dumps(doc), encoding="utf-8")
    assert suites.rule_severity("dossiers", "parse_ngay_tiep_nhan", expectations_dir=folder) == "warning"
    monkeypatch.setattr(suites, "EXPECTATIONS_DIR", folder)
    engine = connect(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    upgrade(engine)
    settings = Settings(hash_key="k", reports_dir=tmp_path / "reports")
    records = [dict(r) for r in itertools.islice(_DS.records("dossiers"), 10)]
    records[3]["NgayTiepNhan"] = "31/02/2024 25:61"
    res = pipeline.EntityResult("dossiers")
    res.data_docs = ""  # no GX here
    ctx = pipeline.check_context(engine, settings.source_name, "dossiers", settings, pipeline.now_local())
    pipeline.process_records(engine, "dossiers", records, settings=settings, run_id="run-p", result=res, context=ctx)
    assert res.checks["parse_ngay_tiep_nhan"]["unexpected_count"] == 1
    assert res.checks["parse_ngay_tiep_nhan"]["severity"] == "warning"
    engine.dispose()


def test_gx_runs_in_its_host_process_and_the_run_never_imports_it(tmp_path: Path) -> None:
    """The run's process hands GX's batches to the GX host (a worker process): it never imports
    great_expectations itself, and the host's record (data docs, success, rows validated) is the
    run's. Run in a fresh interpreter (other tests import GX into this one)."""
    import subprocess
    import sys
    import textwrap

    from tasks.settings import PROJECT_ROOT

    code = textwrap.dedent(f"""
        import json, os, sys
        from tests.test_gx_deferred import _loaded, _process, gx_thread, Settings, connect, upgrade
        from tasks import gx_host
        engine = connect("duckdb:///{tmp_path / 'wh.duckdb'}")
        upgrade(engine)
        settings = Settings(hash_key="k", reports_dir="{tmp_path / 'reports'}")
        res = _process(engine, settings, "run-h", "dossiers", defer=True)
        rec = gx_thread.settle_gx("run-h")["dossiers"]
        host_pid = gx_host.host().pid
        unused = gx_host.host().call(_loaded, ["scipy.stats", "altair"])
        print(json.dumps({{"imported": "great_expectations" in sys.modules, "host": host_pid not in (None, os.getpid()),
                           "rec": rec, "rows": res.rows_read, "unused": unused}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["imported"] is False and out["host"] is True
    rec = out["rec"]
    assert rec["gx_success"] is True and Path(rec["data_docs"]).is_file()
    assert rec["gx"]["rows_validated"] == out["rows"] == 40 and rec["gx"]["chunks_validated"] == 1
    # what GX imports for expectations the suites never use was never loaded, data docs included
    assert out["unused"] == {"scipy.stats": False, "altair": False}


def _loaded(names: list[str]) -> dict[str, bool]:
    """Run in the GX host: whether each module is loaded (not a deferred stand-in, not absent)."""
    import sys

    from tasks.data_docs import _Deferred

    return {n: n in sys.modules and not isinstance(sys.modules[n], _Deferred) for n in names}


def test_a_gx_host_killed_during_a_validation_is_counted_not_fatal(tmp_path: Path) -> None:
    """The GX host is killed while it holds a batch: that batch and the one it had validated
    before (its result died with it) count as GX's failures (``chunks_failed``), nothing is raised
    to the run, and the next batch starts a new host whose record is written and says so. (The
    host is stopped first, so the kill lands while the batch is in hand.)"""
    import os
    import signal
    import time

    from tasks.data_docs import Coverage
    from tasks.gx_host import GxHost

    host = GxHost()
    host.start()
    pid = host.pid
    frame = pipeline.normalize("units", [dict(r) for r in _DS.records("units")], hash_key=b"k").core
    tally = gx_thread.GxTally("units", "run-k", tmp_path / "docs", coverage=Coverage(), host=host)
    (batch,) = tally.select(frame) or tally.flush()
    tally.validate(batch)  # validated by the first host: its result dies with it
    assert (tally.coverage.chunks_validated, tally.coverage.rows_validated) == (1, len(batch))
    os.kill(pid, signal.SIGSTOP)
    worker = threading.Thread(target=tally.validate, args=(batch,))
    worker.start()
    time.sleep(0.5)  # the request is written; the answer is awaited
    os.kill(pid, signal.SIGKILL)
    worker.join(timeout=60)
    assert not worker.is_alive()
    cov = tally.coverage
    assert (cov.chunks_failed, cov.chunks_validated, cov.rows_validated) == (2, 0, 0)  # the lost result too
    tally.validate(batch)  # a new host
    assert host.pid not in (None, pid) and (cov.chunks_validated, cov.rows_validated) == (1, len(batch))
    record = tally.finish()
    assert record["gx_success"] is True and Path(record["data_docs"]).is_file()
    assert (record["gx"]["chunks_validated"], record["gx"]["chunks_failed"]) == (1, 2)
    host.close()


def _host_state() -> tuple[int, str | None, list[str]]:
    """Run in the GX host: its frozen objects, its OpenBLAS setting and its threads' names."""
    import gc
    import os

    threads = [Path(f"/proc/self/task/{t}/comm").read_text().strip() for t in os.listdir("/proc/self/task")]
    return gc.get_freeze_count(), os.environ.get("OPENBLAS_NUM_THREADS"), threads


def test_the_gx_host_keeps_gx_out_of_the_collectors_way_and_spins_no_blas_threads() -> None:
    """Once GX is imported the host freezes what it holds (``gc.freeze``: its collections walk only
    what validations make), and it runs with one OpenBLAS thread: NumPy's per-core threads span
    nothing here but burnt the run's CPU."""
    from tasks.gx_host import GxHost

    host = GxHost()
    try:
        frozen, blas, threads = host.call(_host_state)
    finally:
        host.close()
    assert frozen > 100_000 and blas == "1"
    assert threads.count("python") == 1, threads  # no BLAS thread (named as the process) beside its own


def test_a_nightly_settles_gx_beside_its_reports_and_stops_the_host(tmp_path: Path) -> None:
    """``run_nightly`` hands GX its last batch with the extraction, then settles GX while it
    publishes and stops the GX host once settled (its memory back before the publication's peak):
    the last publication's step sees the host stop; the run carries GX's record all the same.
    When the reports fail, the run still waits for GX's record before it raises."""
    import pytest

    from simulator.server import start_server
    from tasks import gx_host
    from tests.test_normalize_pool import _wait_for

    class Watching(pipeline.NightlySteps):
        def __init__(self, fail: bool = False) -> None:
            self.fail, self.host_stopped_while_publishing = fail, False

        def run(self, name, unit, /, **params):  # noqa: ANN001, ANN201
            if name == "publish-period":  # the host goes once GX has settled, beside this step
                _wait_for(lambda: gx_host.host().pid is None, 20)
                self.host_stopped_while_publishing = gx_host.host().pid is None
                if self.fail:
                    raise RuntimeError("the reports failed")
            return unit(**params)

    ds = generate(seed=11, n_dossiers=300, start=date(2024, 1, 1), end=date(2024, 2, 29))
    with start_server(ds, token="t") as sim:
        for run_id, fail in (("run-n", False), ("run-o", True)):
            engine = connect(f"duckdb:///{tmp_path / (run_id + '.duckdb')}")
            upgrade(engine)
            settings = Settings(source_url=sim.url, source_token="t", hash_key="k", reports_dir=tmp_path / "reports")
            steps = Watching(fail)
            gx_host.host().start()
            if not fail:
                res = pipeline.run_nightly(engine, settings, run_id, full_refresh=True,
                                           periods=[(date(2024, 1, 1), date(2024, 1, 31))], steps=steps)
                dossiers = res.entities["dossiers"]
                assert dossiers.gx_success is True and Path(dossiers.data_docs).is_file()
                assert dossiers.gx["rows_validated"] == dossiers.rows_read > 0
            else:
                with pytest.raises(RuntimeError, match="the reports failed"):
                    pipeline.run_nightly(engine, settings, run_id, full_refresh=True,
                                         periods=[(date(2024, 1, 1), date(2024, 1, 31))], steps=steps)
                assert gx_thread.settle_gx(run_id) == {}  # settled before the run raised
                record = tmp_path / "reports" / "data-docs" / run_id / "dvc-run.json"
                validations = json.loads(record.read_text(encoding="utf-8"))["validations"].values()
                assert "dossiers" in {v["entity"] for v in validations}
            assert steps.host_stopped_while_publishing
            engine.dispose()
