"""The bench's correctness check: two warehouses' report and core tables, row by row.

A redesign of the raw layer or of the normaliser must leave the publication unchanged: the bench
runs the previous design's pipeline (``--baseline-ref``, from a ``git worktree`` of that commit)
beside the new one, and compares what they wrote. Per table, :func:`digest_table` gives
``<rows>:<sha256 prefix>`` of its rows, independent of row order, with the run metadata that
legitimately differs between two runs left out (:data:`VOLATILE_COLUMNS`, the same set as
``tests/warehouse_state.py``) and the other columns taken by name (a reordered column is no
difference). Values are rendered the same way whichever engine returns them (numbers as numbers,
aware timestamps in UTC), so a DuckDB and a PostgreSQL warehouse compare too.

Tables differing get a second pass: the rows found more often on one side than on the other, a few
of them printed. The warehouses are read only (DuckDB files opened ``read_only``), one row batch at
a time; only ``mart.rpt_*`` and ``core.*`` are read, so a raw layer of views over landed files is
never touched.

    python -m bench.run stage compare '{"a": URL, "b": URL, "tables": ["reports", "core.dossiers"]}'
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any

from tasks.sql_text import quote

#: Run metadata that legitimately differs between two loads of the same data (as in
#: ``tests/warehouse_state.py``; ``tests/test_bench_compare.py`` checks they agree).
VOLATILE_COLUMNS = frozenset({
    "_run_id", "_loaded_at", "run_id", "resolved_run_id", "first_seen_at", "last_seen_at", "resolved_at",
    "recorded_at", "updated_at", "published_at", "publication_id", "workbook_path", "_source",
})
#: The core tables a redesign of the raw layer or the normaliser must leave identical.
CORE_TABLES = ("core.dossiers", "core.payments", "core.dossier_versions", "core.dossier_supplements")
#: Shorthand for every report table of the publication: ``mart.rpt_*`` without ``_history``.
REPORTS = "reports"
BATCH = 20_000
_MOD = 1 << 128


class Warehouse:
    """Read-only access to a DuckDB file (``duckdb:///path``, attached ``READ_ONLY`` as ``alias``
    to an in-memory DuckDB, shared by the two sides of a comparison) or a PostgreSQL database."""

    def __init__(self, url: str, alias: str, duck: Any = None) -> None:
        self.url, self.alias = url, alias
        self.duck = url.startswith("duckdb")
        if self.duck:
            import duckdb

            self.con: Any = duck if duck is not None else duckdb.connect()
            path = url.split(":///", 1)[1].replace("'", "''")
            self.con.execute(f"ATTACH '{path}' AS {alias} (READ_ONLY)")
        else:
            import psycopg

            self.con = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
            self.con.read_only = True

    def close(self) -> None:
        if self.duck:
            self.con.execute(f"DETACH {self.alias}")
        else:
            self.con.close()

    def name(self, table: str) -> str:
        """The table as a query names it (prefixed by its catalog on DuckDB)."""
        return f"{self.alias}.{table}" if self.duck else table

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.duck:
            return self.con.execute(sql + " AND table_catalog = ?", [*params, self.alias]).fetchall()
        with self.con.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), params)
            return cur.fetchall()

    def report_tables(self) -> list[str]:
        """``mart.rpt_*`` base tables, without their ``_history`` twins."""
        got = self._all("SELECT table_name FROM information_schema.tables WHERE table_schema = 'mart' "
                        "AND table_type = 'BASE TABLE'")
        return sorted(f"mart.{t}" for (t,) in got if t.startswith("rpt_") and not t.endswith("_history"))

    def columns(self, table: str) -> dict[str, str] | None:
        """The table's columns and their types, or None when it does not exist."""
        schema, name = table.split(".")
        got = self._all("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? "
                        "AND table_name = ?", (schema, name))
        return dict(got) or None

    def rows(self, table: str, cols: list[str]) -> Iterator[tuple[Any, ...]]:
        """The table's rows, one batch at a time, as Python values."""
        sql = f"SELECT {', '.join(quote(c) for c in cols) or '1'} FROM {self.name(table)}"  # noqa: S608
        if self.duck:
            cur = self.con.cursor()  # its own result: a half-read table never holds up the next query
            cur.execute(sql)
            while batch := cur.fetchmany(BATCH):
                yield from batch
            return
        with self.con.transaction(), self.con.cursor(name="bench_compare") as cur:
            cur.itersize = BATCH
            cur.execute(sql)
            yield from cur


def render(v: Any) -> str:
    """A value as text, the same whichever engine and driver returned it (and the same text as
    :func:`sql_text` has DuckDB compute): numbers to 12 significant digits, timestamps in UTC."""
    if v is None:
        return "\\N"
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (float, Decimal)):
        return format(float(v), ".12g")
    if isinstance(v, datetime):
        if v.tzinfo is not None:
            v = v.astimezone(UTC).replace(tzinfo=None)
        return v.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(v, (date, dtime)):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, sort_keys=True, separators=(",", ":"), default=str)
    return str(v)


def sql_text(col: str, data_type: str) -> str:
    """DuckDB SQL for a column's text as :func:`render` gives it from the column's Python value."""
    q, t = quote(col), data_type.upper()
    if t == "BOOLEAN":
        e = f"CASE WHEN {q} THEN 't' WHEN NOT {q} THEN 'f' END"  # NULL stays NULL
    elif t.startswith(("DECIMAL", "NUMERIC", "DOUBLE", "FLOAT", "REAL")):
        e = f"printf('%.12g', {q}::DOUBLE)"
    elif t in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
        e = f"strftime(timezone('UTC', {q}), '%Y-%m-%d %H:%M:%S.%f')"
    elif t.startswith("TIMESTAMP"):
        e = f"strftime({q}::TIMESTAMP, '%Y-%m-%d %H:%M:%S.%f')"
    elif t == "BLOB":
        e = f"lower(hex({q}))"
    else:
        e = f"CAST({q} AS VARCHAR)"
    return f"coalesce({e}, '\\N')"


def _line_sql(wh: Warehouse, table: str, types: dict[str, str], cols: list[str]) -> str:
    texts = ", ".join(sql_text(c, types[c]) for c in cols) or "''"
    return f"SELECT concat_ws(chr(31), {texts}) AS line FROM {wh.name(table)}"  # noqa: S608


def _line(row: tuple[Any, ...]) -> str:
    return "\x1f".join(render(v) for v in row)


def _row_hash(line: str) -> int:
    return int.from_bytes(hashlib.sha256(line.encode("utf-8")).digest()[:16], "big")


def _digest(n: int, acc: int) -> str:
    return f"{n}:{hashlib.sha256(f'{n}:{acc % _MOD:032x}'.encode()).hexdigest()[:16]}"


def digest_table(wh: Warehouse, table: str, cols: list[str]) -> str:
    """``<rows>:<sha256 prefix>`` of the table's rows over ``cols`` (sorted names), independent of
    row order: from the sum of each row's sha256 (first 128 bits) of its text, so no row is held."""
    n, acc = 0, 0
    for row in wh.rows(table, cols):
        n += 1
        acc += _row_hash(_line(row))
    return _digest(n, acc)


def digest_table_sql(wh: Warehouse, table: str, types: dict[str, str], cols: list[str]) -> str:
    """:func:`digest_table` computed by DuckDB (the same digest: the same text per row, hashed
    and summed in the engine)."""
    half = "coalesce(sum(('0x' || substr(h, {}, 16))::UBIGINT::HUGEINT), 0)"
    sql = (f"SELECT count(*), {half.format(1)}, {half.format(17)} "  # noqa: S608 (names from the catalog)
           f"FROM (SELECT sha256(line) AS h FROM ({_line_sql(wh, table, types, cols)}))")
    n, hi, lo = wh.con.execute(sql).fetchone()
    return _digest(n, (int(hi) << 64) + int(lo))


def _differing_rows(a: Warehouse, b: Warehouse, table: str, cols: list[str], limit: int) -> dict[str, Any]:
    """Rows found more often on one side than on the other: their counts, and up to ``limit`` of
    each side's (a second pass holds one hash per row, a third fetches the rows shown)."""
    counts = [Counter(_row_hash(_line(r)) for r in wh.rows(table, cols)) for wh in (a, b)]
    extra_a, extra_b = counts[0] - counts[1], counts[1] - counts[0]
    out: dict[str, Any] = {"only_a_count": sum(extra_a.values()), "only_b_count": sum(extra_b.values())}
    for key, wh, extra in (("only_a", a, extra_a), ("only_b", b, extra_b)):
        shown: list[str] = []
        if extra:
            for row in wh.rows(table, cols):
                line = _line(row)
                if _row_hash(line) in extra:
                    shown.append(" | ".join(line.split("\x1f")))
                    if len(shown) >= limit:
                        break
        out[key] = shown
    return out


def _differing_rows_sql(a: Warehouse, b: Warehouse, table: str, types: tuple[dict[str, str], dict[str, str]],
                        cols: list[str], limit: int) -> dict[str, Any]:
    """:func:`_differing_rows` of two DuckDB files, by DuckDB (``EXCEPT ALL`` of the rows' texts)."""
    la, lb = _line_sql(a, table, types[0], cols), _line_sql(b, table, types[1], cols)
    out: dict[str, Any] = {}
    for key, x, y in (("only_a", la, lb), ("only_b", lb, la)):
        out[f"{key}_count"] = a.con.execute(f"SELECT count(*) FROM ({x} EXCEPT ALL {y})").fetchone()[0]  # noqa: S608
        got = a.con.execute(f"SELECT line FROM ({x} EXCEPT ALL {y}) ORDER BY line LIMIT {int(limit)}").fetchall()  # noqa: S608
        out[key] = [" | ".join(line.split("\x1f")) for (line,) in got]
    return out


def compare(url_a: str, url_b: str, tables: list[str], limit: int = 3) -> dict[str, Any]:
    """Compare ``tables`` of two warehouses (``"reports"`` stands for every ``mart.rpt_*`` table
    of either). Per table: each side's digest, ``same``, the columns only one side has (left out
    of the digests), and for a difference the differing rows' counts and a few of them. Two
    DuckDB files are compared by DuckDB itself (both attached to one in-memory database), others
    row by row in Python; the digests are the same either way."""
    duck = None
    if url_a.startswith("duckdb") and url_b.startswith("duckdb"):
        import duckdb

        duck = duckdb.connect()
    a = Warehouse(url_a, "cmp_a", duck)
    b = Warehouse(url_b, "cmp_b", duck)
    try:
        names: list[str] = []
        for t in tables:
            names += sorted(set(a.report_tables()) | set(b.report_tables())) if t == REPORTS else [t]
        out: dict[str, Any] = {}
        for table in names:
            ta, tb = a.columns(table), b.columns(table)
            if ta is None or tb is None:
                out[table] = {"a": "missing" if ta is None else "present", "b": "missing" if tb is None else "present",
                              "same": ta is None and tb is None}
                continue
            cols = sorted((set(ta) & set(tb)) - VOLATILE_COLUMNS)
            if duck is not None:
                r: dict[str, Any] = {"a": digest_table_sql(a, table, ta, cols), "b": digest_table_sql(b, table, tb, cols)}
            else:
                r = {"a": digest_table(a, table, cols), "b": digest_table(b, table, cols)}
            r["same"] = r["a"] == r["b"]
            r["columns"] = cols
            if set(ta) != set(tb):
                r["columns_only_a"] = sorted(set(ta) - set(tb))
                r["columns_only_b"] = sorted(set(tb) - set(ta))
            if not r["same"]:
                r.update(_differing_rows_sql(a, b, table, (ta, tb), cols, limit) if duck is not None
                         else _differing_rows(a, b, table, cols, limit))
            out[table] = r
        return out
    finally:
        a.close()
        b.close()
        if duck is not None:
            duck.close()


def stage_compare(p: dict[str, Any]) -> dict[str, Any]:
    """The bench stage: :func:`compare` of ``p["a"]`` and ``p["b"]`` (both kept until it ends)."""
    t0 = time.perf_counter()
    tables = compare(p["a"], p["b"], p.get("tables", [REPORTS]), p.get("limit", 3))
    return {"tables": tables, "wall_s": time.perf_counter() - t0}


def summary(label: str, result: dict[str, Any], a: str = "new", b: str = "baseline") -> list[str]:
    """Markdown lines for one comparison: a verdict line per group (report tables, core tables),
    then each differing table with its digests and a few of the differing rows."""
    if "error" in result:
        return [f"- {label}: the comparison FAILED: {result['error'][-300:]!r}"]
    tables: dict[str, Any] = result.get("tables", {})
    groups = {"report tables": [t for t in tables if t.startswith("mart.")],
              "core tables": [t for t in tables if not t.startswith("mart.")]}
    lines = []
    for group, names in groups.items():
        if not names:
            continue
        same = [t for t in names if tables[t]["same"]]
        verdict = "yes" if len(same) == len(names) else "NO"
        lines.append(f"- {group} identical, {label}: {verdict} ({len(same)}/{len(names)}; compared in "
                     f"{result.get('wall_s', 0):.1f} s)")
        for t in names:
            r = tables[t]
            extra = ""
            if r.get("columns_only_a") or r.get("columns_only_b"):
                extra = (f"; columns left out, only in {a}: {', '.join(r['columns_only_a']) or '-'}, only in {b}: "
                         f"{', '.join(r['columns_only_b']) or '-'}")
            if r["same"]:
                lines.append(f"  - `{t}` {r['a']}{extra}")
                continue
            lines.append(f"  - `{t}` DIFFERS: {a} {r['a']}, {b} {r['b']}{extra}")
            if "only_a_count" in r:
                lines.append(f"    - rows only in {a}: {r['only_a_count']:,}, only in {b}: {r['only_b_count']:,}; "
                             f"columns: {' | '.join(r['columns'])}")
                lines += [f"    - {a}: `{row[:400]}`" for row in r["only_a"]]
                lines += [f"    - {b}: `{row[:400]}`" for row in r["only_b"]]
    return lines


def verdict(result: dict[str, Any], schema: str = "mart.") -> str:
    """``yes (n/n)`` or ``NO (k/n; differ: tables)`` for the tables of ``schema`` (default: the
    report tables) of a comparison."""
    if "error" in result:
        return "not compared: " + (result["error"].strip().splitlines() or ["?"])[-1][:200]
    reports = {t: r for t, r in result.get("tables", {}).items() if t.startswith(schema)}
    differ = [t for t, r in reports.items() if not r["same"]]
    ok = len(reports) - len(differ)
    return f"yes ({ok}/{len(reports)})" if not differ else f"NO ({ok}/{len(reports)}; differ: {', '.join(differ)})"


def comparison_lines(res: dict[str, Any]) -> list[str]:
    """The verdicts (report tables identical to the baseline's, and DuckDB vs PostgreSQL), then
    each comparison table by table."""
    cmps = res.get("comparisons") or {}
    commit = res.get("baseline_commit")
    lines = [""] if cmps else []
    if "baseline" in cmps:
        lines += [f"report tables identical to baseline: {verdict(cmps['baseline'])}",
                  f"core tables identical to baseline: {verdict(cmps['baseline'], 'core.')}"]
    if "postgresql" in cmps:
        lines.append(f"report tables identical, DuckDB vs PostgreSQL: {verdict(cmps['postgresql'])}")
    if "baseline" in cmps:
        lines += ["", *summary(f"new vs baseline {commit} (DuckDB)", cmps["baseline"], "new", "baseline")]
    if "postgresql" in cmps:
        lines += ["", *summary("DuckDB vs PostgreSQL (new)", cmps["postgresql"], "DuckDB", "PostgreSQL")]
    return lines


@contextlib.contextmanager
def baseline_worktree(ref: str | None, root: Path) -> Iterator[tuple[Path, str] | None]:
    """A detached ``git worktree`` of ``ref`` (the previous design) and its short commit, removed
    at the end; None without a ``ref``."""
    if not ref:
        yield None
        return
    commit = subprocess.run(["git", "rev-parse", "--short", f"{ref}^{{commit}}"], cwd=root, check=True,
                            capture_output=True, text=True).stdout.strip()
    tree = Path(tempfile.mkdtemp(prefix="dvc-bench-baseline-")) / commit
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=root, check=True,
                   capture_output=True, text=True)
    try:
        # the stages run with the worktree first on PYTHONPATH (bench.run.run_stage): make sure its
        # code, not this tree's editable install, is what they import
        got = subprocess.run([sys.executable, "-c", "import bench.run, tasks; print(tasks.__file__)"], cwd=tree,
                             env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True,
                             check=True).stdout.strip()
        if not Path(got).is_relative_to(tree):
            raise RuntimeError(f"the baseline's stages would import {got}, not the worktree's code")
        yield tree, commit
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=root, capture_output=True)
        shutil.rmtree(tree.parent, ignore_errors=True)
