"""The analysts' copy after months of nightlies: written whole, or kept and appended to.

Every publication appends its rows to ``mart.rpt_*_history`` (the work lists whole: ~140k rows for
a 1M-dossier warehouse), two publications a night, and the analysts' copy
(:func:`tasks.analyst.publish_analyst_copy`) holds all of it. This takes a bench warehouse (the 1M
``pipeline.duckdb`` the bench's pipeline stage leaves, with its landing folder beside it), copies it
to a temporary folder, gives it ``--nights`` nights of history (two publications a night, each the
rows of the warehouse's latest publication again under a new id), and then times, each in one
process, on the same machine:

full         the copy written from scratch (no previous copy: what every night did before the copy
             kept its history)
incremental  the next night's copy (two publications more), the previous copy there: its history
             kept, the new publications appended, the rest written again; repeated ``--repeat``
             nights, with the copy's file size after each (the dropped tables' blocks are reused)

Ratios are incremental / full, on the same history (full is measured again on the last night's
state). The copy's contents are compared with the warehouse's at the end (row counts per table).

    python -m bench.analyst_copy --warehouse demo/dvc.duckdb [--nights 180] [--repeat 3]

Any DuckDB warehouse with a publication will do: ``make run``'s ``demo/dvc.duckdb`` (45k rows), or
the 1M one the pipeline stage leaves when run alone (a simulator from ``python -m bench.run serve
--n 1000000``, then ``python -m bench.run stage pipeline '{"url": ..., "workdir": W,
"warehouse_url": "duckdb:///W/pipeline.duckdb"}'``). The warehouse itself is not changed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from tasks.analyst import copy_blocks, publish_analyst_copy


def _copy_warehouse(src: Path, into: Path) -> Path:
    dst = into / "wh.duckdb"
    shutil.copyfile(src, dst)
    landing = src.with_name(f"{src.stem}-landing")
    if landing.is_dir():
        shutil.copytree(landing, into / "wh-landing")
    return dst


def _history_tables(c) -> list[str]:
    return c.exec_driver_sql("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'mart' "
                             "AND suffix(table_name, '_history')").scalars().all()


def _add_publications(engine, count: int, tag: str) -> int:
    """``count`` publications more, each the latest publication's rows under a new id; returns the
    history rows added."""
    with engine.begin() as c:
        latest = c.exec_driver_sql("SELECT publication_id FROM mart.publications ORDER BY published_at DESC, "
                                   "publication_id DESC LIMIT 1").scalar_one()
        tables = _history_tables(c)
        new_id = f"publication_id || '-{tag}-' || CAST(i AS VARCHAR)"
        c.exec_driver_sql(f"INSERT INTO mart.publications SELECT p.* REPLACE ({new_id} AS publication_id, "  # noqa: S608
                          "published_at + to_seconds(i + 1) AS published_at, false AS is_current) "
                          f"FROM mart.publications p, range({count}) t(i) WHERE publication_id = ?", (latest,))
        added = 0
        for t in tables:
            added += c.exec_driver_sql(f"INSERT INTO mart.{t} SELECT h.* REPLACE ({new_id} AS publication_id) "  # noqa: S608
                                       f"FROM mart.{t} h, range({count}) t(i) WHERE publication_id = ?",
                                       (latest,)).scalar_one()
    return added


def _timed_copy(engine, target: Path) -> float:
    t0 = time.perf_counter()
    publish_analyst_copy(engine, target)
    return round(time.perf_counter() - t0, 2)


def _counts_match(engine, target: Path) -> bool:
    with engine.connect() as c:
        c.exec_driver_sql(f"ATTACH '{target}' AS chk (READ_ONLY)")
        try:
            tables = c.exec_driver_sql("SELECT schema_name, table_name FROM duckdb_tables() "
                                       "WHERE database_name = 'chk'").fetchall()
            same = all(c.exec_driver_sql(f'SELECT (SELECT count(*) FROM chk."{s}"."{t}") = '  # noqa: S608
                                         f'(SELECT count(*) FROM "{s}"."{t}")').scalar_one() for s, t in tables)
        finally:
            c.rollback()
            c.exec_driver_sql("DETACH DATABASE IF EXISTS chk")
            c.commit()
    return same


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warehouse", required=True, type=Path, help="a bench warehouse (pipeline.duckdb)")
    ap.add_argument("--nights", type=int, default=180, help="nights of history before the measured nights")
    ap.add_argument("--repeat", type=int, default=3, help="measured nights")
    args = ap.parse_args(argv)
    from tasks.warehouse import connect

    with tempfile.TemporaryDirectory(dir=args.warehouse.parent) as tmp:
        db = _copy_warehouse(args.warehouse, Path(tmp))
        engine = connect(f"duckdb:///{db}")
        target = Path(tmp) / "analysts.duckdb"
        t0 = time.perf_counter()
        rows = _add_publications(engine, 2 * args.nights, "night")
        out: dict = {"nights": args.nights, "history_rows_added": rows,
                     "history_setup_s": round(time.perf_counter() - t0, 1)}
        with engine.connect() as c:
            tables = _history_tables(c)
            out["history_rows"] = sum(c.exec_driver_sql(f"SELECT count(*) FROM mart.{t}").scalar_one()  # noqa: S608
                                      for t in tables)
        out["full_s"] = _timed_copy(engine, target)
        out["full_mib"] = round(target.stat().st_size / 2**20, 1)
        out["full_used_free_blocks"] = copy_blocks(target)
        nights = []
        for i in range(args.repeat):
            _add_publications(engine, 2, f"measured{i}")
            nights.append({"incremental_s": _timed_copy(engine, target),
                           "mib": round(target.stat().st_size / 2**20, 1), "used_free_blocks": copy_blocks(target)})
        out["incremental"] = nights
        out["counts_match"] = _counts_match(engine, target)
        target.chmod(0o600)
        target.unlink()
        out["full_last_s"] = _timed_copy(engine, target)
        out["full_last_mib"] = round(target.stat().st_size / 2**20, 1)
        best = min(n["incremental_s"] for n in nights)
        out["incremental_over_full"] = round(best / out["full_last_s"], 3)
        engine.dispose()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
