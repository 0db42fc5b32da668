"""What the tests compare to prove two loads gave the same warehouse: a fingerprint of each table.

:func:`fingerprint` hashes the rows of raw, core and dq tables (or the tables given), leaving out
the run metadata that legitimately differs between two loads of the same data
(:data:`VOLATILE_COLUMNS`: run ids, load and publication times...). Row order does not matter.
"""

from __future__ import annotations

import hashlib

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

#: Run metadata that legitimately differs between two loads of the same data.
VOLATILE_COLUMNS = {
    "_run_id", "_loaded_at", "run_id", "resolved_run_id", "first_seen_at", "last_seen_at", "resolved_at",
    "recorded_at", "updated_at", "published_at", "publication_id", "workbook_path", "_source",
}
#: The tables a load writes (raw, core, and the quarantine and watermarks of dq).
FINGERPRINT_TABLES = [
    "raw.dossiers", "raw.payments", "raw.procedures", "raw.units",
    "core.dossiers", "core.payments", "core.procedures", "core.units", "core.dossier_versions",
    "core.dossier_supplements",
    "dq.quarantine", "dq.watermarks",
]


def table_fingerprint(conn: Connection, table: str) -> str:
    """``<rows>:<sha256 prefix>`` of a table's rows (volatile run-metadata columns left out),
    independent of row order."""
    frame = pd.read_sql(sa.text(f"SELECT * FROM {table}"), conn)  # table from a fixed list
    frame = frame[[c for c in frame.columns if c not in VOLATILE_COLUMNS]]
    lines = ["\x1f".join("" if pd.isna(v) else str(v) for v in row) for row in frame.itertuples(index=False)]
    digest = hashlib.sha256()
    for line in sorted(lines):
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")
    return f"{len(frame)}:{digest.hexdigest()[:16]}"


def fingerprint(engine: Engine, tables: list[str] | None = None) -> dict[str, str]:
    """:func:`table_fingerprint` of each table (default: :data:`FINGERPRINT_TABLES`)."""
    with engine.connect() as conn:
        return {t: table_fingerprint(conn, t) for t in tables or FINGERPRINT_TABLES}
