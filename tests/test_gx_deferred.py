"""Great Expectations validations deferred to the end of a run (``defer_gx`` + ``settle_gx``).

The nightly flow lets GX (the record; the quarantine masks are the gate) run in its background
thread while later entities load and the reports publish, and settles every validation of the
run before it reports. Real GX, real DuckDB warehouse.
"""

from __future__ import annotations

import itertools
from datetime import date
from pathlib import Path

from tasks import pipeline
from tasks.settings import Settings
from tasks.simulator.dataset import generate
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

    settled = pipeline.settle_gx("run-a")

    assert set(settled) == {"units", "procedures", "dossiers"}
    docs = tmp_path / "reports" / "data-docs" / "run-a" / "index.html"
    assert docs.is_file()
    for entity, record in settled.items():
        assert record["data_docs"] == str(docs.resolve()), entity
        assert record["gx_success"] is True, entity
        assert results[entity].data_docs == record["data_docs"]  # the results themselves are filled in
    assert pipeline.settle_gx("run-a") == {}  # nothing left pending for that run
    # waiting for one result by itself takes it off the run's pending list
    pipeline.wait_gx(other)
    assert other.data_docs and pipeline.settle_gx("run-b") == {}
    engine.dispose()


def test_undeferred_validation_is_done_when_process_records_returns(tmp_path: Path) -> None:
    engine = connect(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    upgrade(engine)
    settings = Settings(hash_key="k", reports_dir=tmp_path / "reports")
    res = _process(engine, settings, "run-c", "units", defer=False)
    assert res.data_docs and Path(res.data_docs).is_file() and res.gx_success is True
    assert pipeline.settle_gx("run-c") == {}
    engine.dispose()
