"""The bench's correctness check (bench/compare.py): two warehouses' tables compared row by row,
independent of row order and of the run metadata, and the differing rows shown.

The fast tests build small DuckDB warehouses by hand; the slow ones compare two real runs of the
bench's pipeline stage, and run the bench with ``--baseline-ref HEAD`` end to end.
"""

from __future__ import annotations

import shutil
import threading
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from bench import compare as cmp
from tests.warehouse_state import VOLATILE_COLUMNS


def _warehouse(path: Path, rows: list[tuple], run_id: str, extra_column: bool = False) -> str:
    """A DuckDB file with a report table (and its history twin, left out), a core table, and
    volatile run metadata in both."""
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA mart; CREATE SCHEMA core")
    con.execute("CREATE TABLE mart.rpt_x (period_start DATE, unit VARCHAR, n INTEGER, rate DECIMAL(9, 4), "
                "publication_id VARCHAR, published_at TIMESTAMP" + (", note VARCHAR" if extra_column else "") + ")")
    con.execute("CREATE TABLE mart.rpt_x_history AS SELECT * FROM mart.rpt_x")
    con.execute("CREATE TABLE core.dossiers (ma_ho_so VARCHAR, ngay TIMESTAMPTZ, _run_id VARCHAR, "
                "_loaded_at TIMESTAMP)")
    now = datetime(2026, 1, 1) if run_id == "a" else datetime(2026, 2, 2)
    for unit, n, rate in rows:
        con.execute("INSERT INTO mart.rpt_x (period_start, unit, n, rate, publication_id, published_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)", [date(2024, 1, 1), unit, n, rate, f"pub-{run_id}", now])
        con.execute("INSERT INTO core.dossiers VALUES (?, ?, ?, ?)",
                    [f"HS-{unit}", datetime(2024, 1, 2, 3, tzinfo=UTC), run_id, now])
    con.close()
    return f"duckdb:///{path}"


ROWS = [("u1", 3, Decimal("0.5")), ("u2", 0, None), ("u3", 7, Decimal("0.1234"))]
TABLES = [cmp.REPORTS, "core.dossiers"]


def test_volatile_columns_are_the_tests_own() -> None:
    assert cmp.VOLATILE_COLUMNS == VOLATILE_COLUMNS


def test_same_rows_in_another_order_and_run_are_identical(tmp_path: Path) -> None:
    a = _warehouse(tmp_path / "a.duckdb", ROWS, "a")
    b = _warehouse(tmp_path / "b.duckdb", ROWS[::-1], "b")
    got = cmp.compare(a, b, TABLES)
    assert list(got) == ["mart.rpt_x", "core.dossiers"]  # the _history twin left out
    assert all(r["same"] for r in got.values())
    assert got["mart.rpt_x"]["a"].startswith("3:")
    assert "publication_id" not in got["mart.rpt_x"]["columns"]
    assert cmp.verdict({"tables": got}) == "yes (1/1)"
    assert cmp.verdict({"tables": got}, "core.") == "yes (1/1)"


def test_a_changed_row_is_a_difference_shown(tmp_path: Path) -> None:
    a = _warehouse(tmp_path / "a.duckdb", ROWS, "a")
    b = _warehouse(tmp_path / "b.duckdb", [ROWS[0], ("u2", 1, None), ROWS[2]], "b")
    got = cmp.compare(a, b, TABLES)
    r = got["mart.rpt_x"]
    assert not r["same"] and got["core.dossiers"]["same"]
    assert r["a"].startswith("3:") and r["b"].startswith("3:")
    assert (r["only_a_count"], r["only_b_count"]) == (1, 1)
    assert r["only_a"] == ["0 | 2024-01-01 | \\N | u2"] and r["only_b"] == ["1 | 2024-01-01 | \\N | u2"]
    assert cmp.verdict({"tables": got}) == "NO (0/1; differ: mart.rpt_x)"
    text = "\n".join(cmp.summary("new vs baseline", {"tables": got, "wall_s": 0.1}))
    assert "`mart.rpt_x` DIFFERS" in text and "baseline: `1 | 2024-01-01 | \\N | u2`" in text


def test_a_duplicated_row_and_a_missing_table_are_differences(tmp_path: Path) -> None:
    a = _warehouse(tmp_path / "a.duckdb", ROWS, "a")
    b = _warehouse(tmp_path / "b.duckdb", [*ROWS, ROWS[0]], "b")
    got = cmp.compare(a, b, TABLES)["mart.rpt_x"]
    assert not got["same"] and (got["only_a_count"], got["only_b_count"]) == (0, 1)
    con = duckdb.connect(str(tmp_path / "b.duckdb"))
    con.execute("DROP TABLE core.dossiers")
    con.close()
    missing = cmp.compare(a, b, ["core.dossiers"])["core.dossiers"]
    assert missing == {"a": "present", "b": "missing", "same": False}


def test_a_column_on_one_side_is_left_out_and_named(tmp_path: Path) -> None:
    a = _warehouse(tmp_path / "a.duckdb", ROWS, "a")
    b = _warehouse(tmp_path / "b.duckdb", ROWS, "b", extra_column=True)
    got = cmp.compare(a, b, [cmp.REPORTS])["mart.rpt_x"]
    assert got["same"] and got["columns_only_b"] == ["note"] and got["columns_only_a"] == []


def test_values_render_the_same_from_either_engine() -> None:
    # PostgreSQL's NUMERIC and DuckDB's DECIMAL or DOUBLE, an aware timestamp in another zone
    assert cmp.render(Decimal("1.50")) == cmp.render(1.5) == "1.5"
    assert cmp.render(Decimal("3.00")) == cmp.render(3.0) == cmp.render(3) == "3"
    assert cmp.render(0.1 + 0.2) == cmp.render(Decimal("0.3"))
    ict = timezone(timedelta(hours=7))
    assert cmp.render(datetime(2024, 1, 2, 10, tzinfo=ict)) == cmp.render(datetime(2024, 1, 2, 3, tzinfo=UTC))
    assert cmp.render(None) != cmp.render("") and cmp.render(True) == "t"
    assert cmp.render({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'


def test_duckdb_computes_the_digest_python_computes(tmp_path: Path) -> None:
    """Two DuckDB files are digested by DuckDB, others in Python: the same text, the same digest."""
    path = tmp_path / "types.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA core")
    con.execute("CREATE TABLE core.t (b BOOLEAN, i BIGINT, s SMALLINT, d DECIMAL(18, 2), f DOUBLE, dt DATE, "
                "ts TIMESTAMP, tz TIMESTAMPTZ, v VARCHAR, j JSON)")
    con.execute("INSERT INTO core.t VALUES (true, 12345678901, 3, 1234567.50, 0.1 + 0.2, DATE '2024-02-29', "
                "TIMESTAMP '2024-01-02 03:04:05.123456', TIMESTAMPTZ '2024-01-02 10:00:00+07', 'Hồ sơ | x', "
                "'{\"a\": 1}'), (false, -1, 0, -0.01, 1e-7, NULL, TIMESTAMP '2024-01-02 00:00:00', NULL, '', NULL), "
                "(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)")
    con.close()
    wh = cmp.Warehouse(f"duckdb:///{path}", "w")
    try:
        types = wh.columns("core.t")
        assert types is not None
        cols = sorted(types)
        assert cmp.digest_table_sql(wh, "core.t", types, cols) == cmp.digest_table(wh, "core.t", cols)
    finally:
        wh.close()
        wh.con.close()


@pytest.mark.postgres
@pytest.mark.empty_warehouse  # tables of its own
def test_a_duckdb_and_a_postgresql_warehouse_compare(tmp_path: Path, pg_url: str) -> None:
    import psycopg

    a = _warehouse(tmp_path / "a.duckdb", ROWS, "a")
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as con:
        con.execute("CREATE SCHEMA mart; CREATE SCHEMA core")
        con.execute("CREATE TABLE mart.rpt_x (period_start DATE, unit VARCHAR, n INTEGER, rate NUMERIC(9, 4), "
                    "publication_id VARCHAR, published_at TIMESTAMP)")
        con.execute("CREATE TABLE core.dossiers (ma_ho_so VARCHAR, ngay TIMESTAMPTZ, _run_id VARCHAR, "
                    "_loaded_at TIMESTAMP)")
        for unit, n, rate in ROWS[::-1]:
            con.execute("INSERT INTO mart.rpt_x VALUES ('2024-01-01', %s, %s, %s, 'p', now())", (unit, n, rate))
            con.execute("INSERT INTO core.dossiers VALUES (%s, '2024-01-02 10:00:00+07', 'r', now())",
                        (f"HS-{unit}",))
    got = cmp.compare(a, pg_url, TABLES)
    assert all(r["same"] for r in got.values()), got
    assert got["mart.rpt_x"]["a"] == cmp.compare(a, a, TABLES)["mart.rpt_x"]["a"]  # DuckDB's digest: the same


# ----------------------------------------------------------------------------------------------
# real warehouses: the bench's own pipeline stage (child processes), twice
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from bench.run import TOKEN, run_stage
    from simulator.dataset import generate
    from simulator.server import start_server

    work = tmp_path_factory.mktemp("bench-compare")
    ds = generate(seed=3, n_dossiers=1200, start=date(2024, 1, 1), end=date(2024, 6, 30))
    ducks = [work / f"run{i}" / "pipeline.duckdb" for i in (0, 1)]
    results: list[dict] = [{}, {}]
    with start_server(ds, token=TOKEN) as sim:
        def one(i: int) -> None:
            ducks[i].parent.mkdir()
            results[i] = run_stage("pipeline", {"url": sim.url, "workdir": str(ducks[i].parent),
                                                "warehouse_url": f"duckdb:///{ducks[i]}"}, timeout=600)

        threads = [threading.Thread(target=one, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert all("error" not in r for r in results), results
    return ducks[0], ducks[1]


@pytest.mark.slow  # two pipeline runs in child processes: 30-60 s on a shared machine
def test_two_pipeline_runs_have_identical_report_and_core_tables(two_runs: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    a, b = two_runs
    got = cmp.stage_compare({"a": f"duckdb:///{a}", "b": f"duckdb:///{b}", "tables": [cmp.REPORTS, *cmp.CORE_TABLES]})
    tables = got["tables"]
    reports = [t for t in tables if t.startswith("mart.rpt_")]
    assert len(reports) >= 7 and all(tables[t]["same"] for t in tables), cmp.summary("a vs b", got)
    assert int(tables["core.dossiers"]["a"].split(":")[0]) == 1200
    assert any(int(tables[t]["a"].split(":")[0]) > 0 for t in reports)

    # one changed figure in a copy of the second warehouse: that table, that row, and no other
    changed = tmp_path / "changed.duckdb"
    shutil.copyfile(b, changed)
    con = duckdb.connect(str(changed))
    n = con.execute("SELECT count(*) FROM mart.rpt_progress").fetchone()[0]
    assert n > 0
    con.execute("UPDATE mart.rpt_progress SET received_total = received_total + 1 WHERE rowid = (SELECT min(rowid) "
                "FROM mart.rpt_progress)")
    con.close()
    diff = cmp.stage_compare({"a": f"duckdb:///{a}", "b": f"duckdb:///{changed}", "tables": [cmp.REPORTS]})
    assert cmp.verdict(diff) == f"NO ({len(reports) - 1}/{len(reports)}; differ: mart.rpt_progress)"
    r = diff["tables"]["mart.rpt_progress"]
    assert (r["only_a_count"], r["only_b_count"]) == (1, 1) and len(r["only_a"]) == len(r["only_b"]) == 1


@pytest.mark.slow  # the bench end to end at 1,500 dossiers, new and baseline: about a minute or two
def test_bench_with_baseline_head_reports_identical_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.run as br

    monkeypatch.setattr(br, "OUT", tmp_path)
    assert br.main(["--sizes", "1500", "--baseline-ref", "HEAD", "--no-pg", "--no-dlt", "--no-user-path",
                    "--no-nightly"]) == 0
    md = next(tmp_path.glob("bench-*.md")).read_text()
    assert "| pipeline_duckdb_baseline |" in md and "| pipeline_duckdb |" in md
    assert "pipeline_duckdb_over_baseline" in md
    assert "report tables identical to baseline: yes (" in md
    assert "core tables identical to baseline: yes (4/4)" in md
