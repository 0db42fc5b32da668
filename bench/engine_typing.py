"""Typing in the engine, measured on one chunk: what issue 17's design step 2 would save.

One chunk of 15,000 dossiers (30 pages of 500, the simulator's bodies), on one core (CPU seconds,
best of 5):

worker              what the normaliser's worker does today: decode the pages (orjson, the
                    transport's rule) and ``tasks.normalize.normalize`` the records, the collector
                    paused (``tasks.normalize_pool.normalize_parts``)
worker_decode       the decoding alone, the cyclic collector running (as the worker decoded before
                    ``normalize_pool.normalize_parts``)
worker_decode_paused  the decoding alone, the collector paused (as the worker decodes now)
duckdb_pages        DuckDB's ``read_json`` over the pages as the source sends them
                    (``{"data": [...], "page": ...}``): unnesting the records alone
duckdb_array        DuckDB's ``read_json`` over the ``data`` array alone (the envelope cut off,
                    ``format='array'``): the 22 flat fields typed as the normaliser types them
                    (no nested lists, parse issues, NFC, applicant keys or dedupe)
duckdb_texts        ``read_json_objects``: each record's text as sent, its SHA-256 and its key
python_texts        decoding plus the normaliser's canonical text and SHA-256 of each record

    python -m bench.engine_typing
"""

from __future__ import annotations

import hashlib
import resource
import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from simulator.dataset import generate
from tasks.field_types import FIELDS
from tasks.http_transport import page_records
from tasks.normalize import canonical_json
from tasks.normalize_pool import normalize_parts
from tasks.resources import gc_paused

PAGES, PAGE = 30, 500


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def best(fn: Callable[[], Any], n: int = 5) -> float:
    """The least CPU seconds of ``n`` runs."""
    out = []
    for _ in range(n):
        t = _cpu()
        fn()
        out.append(_cpu() - t)
    return min(out)


def _typed_columns(prefix: str = "") -> str:
    sel = []
    for col, api, kind in FIELDS["dossiers"]:
        v = f"{prefix}{api}"
        if kind == "ts":
            sel.append(f"try_strptime(nullif({v}, ''), '%Y%m%d%H%M%S') AS {col}")
        elif kind.startswith("i"):
            sel.append(f"try_cast(nullif(trim({v}), '') AS BIGINT) AS {col}")
        else:
            sel.append(f"nullif({v}, '') AS {col}")
    return ", ".join(sel)


def main() -> None:
    ds = generate(seed=42, n_dossiers=PAGES * PAGE * 4, start=date(2024, 1, 1), end=date(2024, 6, 30))
    bodies = [b'{"data":' + ds.render_json("dossiers", np.arange(p * PAGE, (p + 1) * PAGE))
              + f',"page":{p + 1},"page_size":{PAGE},"total":{PAGES * PAGE}}}'.encode() for p in range(PAGES)]
    tmp = Path(tempfile.mkdtemp(prefix="engine-typing-"))
    pages, arrays = [], []
    for i, b in enumerate(bodies):
        (tmp / f"p{i}.json").write_bytes(b)
        (tmp / f"a{i}.json").write_bytes(b[b.index(b"["):b.rindex(b"]") + 1])
        pages.append(str(tmp / f"p{i}.json"))
        arrays.append(str(tmp / f"a{i}.json"))
    con = duckdb.connect()
    con.execute("SET threads=1")
    varchar = "{" + ", ".join(f"{api}: 'VARCHAR'" for _, api, _ in FIELDS["dossiers"]) + "}"

    def decoded() -> list[dict]:
        return [r for b in bodies for r in page_records(b)]

    def decoded_paused() -> list[dict]:
        with gc_paused():
            return decoded()

    cases: dict[str, Callable[[], Any]] = {
        "worker": lambda: normalize_parts("dossiers", bodies, b"k" * 32),
        "worker_decode": decoded,
        "worker_decode_paused": decoded_paused,
        "duckdb_pages": lambda: con.sql(
            f"SELECT count(*) FROM (SELECT unnest(data) FROM read_json({pages!r}, format='unstructured', "  # noqa: S608 - our temp files
            "maximum_object_size=100000000, columns={data: 'JSON[]'}))").fetchall(),
        "duckdb_array": lambda: con.sql(
            f"SELECT {_typed_columns()} FROM read_json({arrays!r}, format='array', records=true, "  # noqa: S608 - our temp files
            f"maximum_object_size=100000000, columns={varchar})").to_arrow_table(),
        "duckdb_texts": lambda: con.sql(
            "SELECT json AS record, sha256(json::VARCHAR) AS h, json_extract_string(json, '$.MaHoSo') AS k "  # noqa: S608
            f"FROM read_json_objects({arrays!r}, format='array', maximum_object_size=100000000)").to_arrow_table(),
        "python_texts": lambda: [hashlib.sha256(canonical_json(r)).hexdigest() for r in decoded()],
    }
    print(f"one chunk: {PAGES * PAGE:,} dossiers in {PAGES} pages, {sum(map(len, bodies)) / 2**20:.1f} MiB; "
          "CPU seconds, best of 5, one core")
    for name, fn in cases.items():
        print(f"  {name:20s} {best(fn):6.3f}")


if __name__ == "__main__":
    main()
