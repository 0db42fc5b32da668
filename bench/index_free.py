"""Key indexes or none: DuckDB's core tables at province scale, measured before an index-free loader.

The loader upserts each chunk into ``core.dossiers`` and ``core.dossier_versions`` through their
primary keys (``INSERT .. ON CONFLICT``, :mod:`tasks.load`). DuckDB keeps a key's index (ART) in
memory, outside what it can evict, so at 5M dossiers the indexes alone approach the default
``DVC_DUCKDB_MEMORY_LIMIT`` (384MB). This loads the same synthetic rows twice, each in a child
process, and says how long the loads took, how much memory DuckDB held, and whether one query over
the loaded table still runs within the limit:

keys    the migrated tables with their primary keys, loaded as ``tasks.load`` loads them
none    the same columns without keys: newer versions by ``UPDATE .. FROM`` the chunk, new keys by
        an anti-join ``INSERT`` (uniqueness would be the loader's, which holds the only writer lock)

Rows: ``--rows`` dossiers (default 5M) in chunks of ``--chunk`` (15,000), each chunk one
transaction, then each key's version once more (a later ``NgayCapNhat``) for the last tenth of the
rows, as a nightly's changes. By default every column of ``core.dossiers`` is filled by DuckDB from
the row number (keys shaped as the source's, dates over half a year, a few hundred values per
text: narrow, compressible rows); ``--from-warehouse`` takes the rows of a bench warehouse's
``core.dossiers`` instead (the 1M rows of ``pipeline.duckdb``, read again under new keys until
``--rows``): the real texts, which is what decides whether the indexes leave room for a query.

    python -m bench.index_free [--rows 5000000] [--memory 384MB] [--from-warehouse W.duckdb]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

VERSION_COLS = ["source", "ma_ho_so", "ngay_cap_nhat", "trang_thai", "_run_id"]


def _ddl(key: bool) -> tuple[str, str, list[tuple[str, str]]]:
    """The migrated DDL of ``core.dossiers`` and ``core.dossier_versions`` (keys stripped unless
    ``key``) and the dossiers' (column, type)."""
    from tasks.warehouse import connect, upgrade

    with tempfile.TemporaryDirectory() as tmp:
        engine = connect(f"duckdb:///{tmp}/ddl.duckdb")
        upgrade(engine)
        engine.dispose()
        con = duckdb.connect(f"{tmp}/ddl.duckdb", read_only=True)
        ddl = {t: con.execute("SELECT sql FROM duckdb_tables() WHERE schema_name = 'core' AND table_name = ?",
                              [t]).fetchone()[0] for t in ("dossiers", "dossier_versions")}
        cols = con.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = 'core' "
                           "AND table_name = 'dossiers' ORDER BY column_index").fetchall()
        con.close()
    if not key:
        ddl = {t: sql[: sql.index(", PRIMARY KEY")] + ");" for t, sql in ddl.items()}
    return ddl["dossiers"], ddl["dossier_versions"], cols


def _value(name: str, kind: str, later: bool) -> str:
    """A column's value from the row number ``r`` (SQL)."""
    fixed = {"source": "'S1'", "ma_ho_so":  # '000.15.31.H08-231229-00054', as the source's keys (26 characters)
             "'000.' || lpad(CAST(r % 97 AS VARCHAR), 2, '0') || '.31.H08-' || lpad(CAST(r // 97 AS VARCHAR), 11, '0')", "_source": "'api'",
             "_run_id": "'bench'", "trang_thai": "CAST(1 + r % 10 AS SMALLINT)",
             "ngay_cap_nhat": f"TIMESTAMP '2024-01-01' + to_seconds(r % 15552000 + {86400 if later else 0})"}
    if name in fixed:
        return fixed[name]
    if kind == "VARCHAR":
        return f"'{name[:6]}-' || CAST((r * 7919) % 500 AS VARCHAR)"
    if kind == "TIMESTAMP":
        return "TIMESTAMP '2024-01-01' + to_seconds((r * 104729) % 15552000)"
    if kind == "BOOLEAN":
        return "r % 3 = 0"
    return f"CAST(r % 7 AS {kind})"


def _source_rows(n: int, names: list[str], start: int, stop: int, later: bool) -> str:
    """The SELECT of rows ``start .. stop - 1`` of the attached warehouse ``src``: its ``n`` rows
    read again and again, round ``i // n`` under keys suffixed ``-r<round>``."""
    parts = []
    while start < stop:
        rnd, first = divmod(start, n)
        take = min(stop - start, n - first)
        values = [f"ma_ho_so || '-r{rnd}' AS ma_ho_so" if c == "ma_ho_so" else
                  "ngay_cap_nhat + INTERVAL 1 DAY AS ngay_cap_nhat" if c == "ngay_cap_nhat" and later else c
                  for c in names]
        parts.append(f"SELECT {', '.join(values)} FROM src.core.dossiers "  # noqa: S608 - our columns
                     f"WHERE rowid BETWEEN {first} AND {first + take - 1}")
        start += take
    return " UNION ALL ".join(parts)


def run(mode: str, rows: int, chunk: int, memory: str, source: str | None = None) -> dict[str, Any]:
    dossiers_ddl, versions_ddl, cols = _ddl(mode == "keys")
    names = [c for c, _ in cols]
    col_list = ", ".join(names)
    keys = ["source", "ma_ho_so"]
    data = [c for c in names if c not in (*keys, "_source", "_run_id", "_loaded_at")]

    def changed(new: str) -> str:  # the chunk's row ``new`` differs from the table's ``t``
        return f"({', '.join('t.' + c for c in data)}) IS DISTINCT FROM ({', '.join(f'{new}.{c}' for c in data)})"

    def sets(new: str) -> str:
        return ", ".join(f"{c} = {new}.{c}" for c in names if c not in keys)

    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect(f"{tmp}/w.duckdb", config={"memory_limit": memory})
        con.execute("CREATE SCHEMA core")
        con.execute(dossiers_ddl)
        con.execute(versions_ddl)
        con.execute("SET checkpoint_threshold = '128MB'")  # tasks.load's
        if source:
            con.execute(f"ATTACH '{source}' AS src (READ_ONLY)")
            source_rows = con.execute("SELECT count(*) FROM src.core.dossiers").fetchone()[0]
        t0, held = time.perf_counter(), 0
        starts = [(i, False) for i in range(0, rows, chunk)] + [(i, True) for i in range(rows - rows // 10, rows, chunk)]
        for n, (start, later) in enumerate(starts):
            stop = min(start + chunk, rows)
            if source:
                select = _source_rows(source_rows, names, start, stop, later)
            else:
                values = ", ".join(f"{_value(c, k, later)} AS {c}" for c, k in cols)
                select = f"SELECT {values} FROM range({start}, {stop}) AS t(r)"  # noqa: S608 - our columns
            con.execute("BEGIN")
            con.execute(f"CREATE OR REPLACE TEMP TABLE stg AS {select}")
            if mode == "keys":
                con.execute(f"INSERT INTO core.dossiers AS t ({col_list}) SELECT {col_list} FROM stg AS s "  # noqa: S608
                            f"ON CONFLICT (source, ma_ho_so) DO UPDATE SET {sets('excluded')} "
                            f"WHERE excluded.ngay_cap_nhat > t.ngay_cap_nhat AND {changed('excluded')}")
                con.execute(f"INSERT INTO core.dossier_versions SELECT {', '.join(VERSION_COLS)} FROM stg "  # noqa: S608
                            "ON CONFLICT (source, ma_ho_so, ngay_cap_nhat) DO NOTHING")
            else:
                con.execute(f"UPDATE core.dossiers AS t SET {sets('s')} FROM stg AS s WHERE t.source = s.source "  # noqa: S608
                            f"AND t.ma_ho_so = s.ma_ho_so AND s.ngay_cap_nhat > t.ngay_cap_nhat AND {changed('s')}")
                con.execute(f"INSERT INTO core.dossiers ({col_list}) SELECT {col_list} FROM stg AS s WHERE NOT EXISTS "  # noqa: S608
                            "(SELECT 1 FROM core.dossiers AS t WHERE t.source = s.source AND t.ma_ho_so = s.ma_ho_so)")
                con.execute(f"INSERT INTO core.dossier_versions SELECT {', '.join(VERSION_COLS)} FROM stg AS s "  # noqa: S608
                            "WHERE NOT EXISTS (SELECT 1 FROM core.dossier_versions AS v WHERE v.source = s.source "
                            "AND v.ma_ho_so = s.ma_ho_so AND v.ngay_cap_nhat = s.ngay_cap_nhat)")
            con.execute("COMMIT")
            if n % 50 == 0 or n == len(starts) - 1:
                held = max(held, con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchone()[0])
                print(f"  {mode}: {stop:,} rows{' (again)' if later else ''}, "
                      f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        load_s = time.perf_counter() - t0
        try:
            distinct = con.execute("SELECT count(*), count(DISTINCT (source, ma_ho_so)) FROM core.dossiers").fetchone()
            query = f"ran: {distinct[0]:,} rows, {distinct[1]:,} keys"
        except duckdb.OutOfMemoryException as exc:
            query = f"failed: {str(exc).splitlines()[0]}"
        versions = con.execute("SELECT count(*) FROM core.dossier_versions").fetchone()[0]
        con.close()
    return {"mode": mode, "load_s": round(load_s, 1), "duckdb_memory_mib": round(held / 2**20), "query": query,
            "versions": versions}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--chunk", type=int, default=15_000)
    ap.add_argument("--memory", default="384MB")
    ap.add_argument("--from-warehouse", help="a bench warehouse whose core.dossiers rows to load")
    ap.add_argument("--mode", choices=["keys", "none"], help=argparse.SUPPRESS)  # a child's run
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(run(args.mode, args.rows, args.chunk, args.memory, args.from_warehouse)))
        return
    rows_from = f"the rows of {args.from_warehouse}" if args.from_warehouse else "synthetic rows"
    print(f"{args.rows:,} dossiers ({rows_from}) in chunks of {args.chunk:,}, DuckDB memory limit {args.memory}")
    extra = ["--from-warehouse", str(Path(args.from_warehouse).resolve())] if args.from_warehouse else []
    for mode in ("keys", "none"):
        out = subprocess.run([sys.executable, "-m", "bench.index_free", "--mode", mode, "--rows", str(args.rows),
                              "--chunk", str(args.chunk), "--memory", args.memory, *extra],
                             cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True)
        if out.returncode:
            print(f"  {mode}: FAILED (exit {out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {mode:5s} load {r['load_s']:7.1f} s, DuckDB held up to {r['duckdb_memory_mib']:,} MiB, "
              f"{r['versions']:,} versions; a query after it {r['query']}")


if __name__ == "__main__":
    main()
