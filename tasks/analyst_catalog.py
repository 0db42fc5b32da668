"""What the analysts' copy holds, read from the warehouse's catalog (DuckDB).

:func:`copied_relations` lists the ``mart`` and ``core`` relations the copy takes (never one with a
restricted column: its ``*_public`` view instead); :func:`kept_views` says which views stay views
there; :func:`comment_statements` carries the data dictionary's comments over;
:func:`grows_by_publication` names the tables a copy keeps from the previous one and appends to.
The copy is attached to the warehouse's connection as :data:`ALIAS` (:mod:`tasks.analyst`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

from tasks.grants import CORE_RESTRICTED
from tasks.sql_text import literal, quote

#: The name the copy is attached under, beside the warehouse.
ALIAS = "dvc_analyst_copy"


def copied_relations(conn: Connection) -> list[tuple[str, str]]:
    """(schema, name) of what the copy holds, in a stable order."""
    rows = conn.exec_driver_sql(
        "SELECT t.table_schema, t.table_name, list(c.column_name) FROM information_schema.tables t "
        "JOIN information_schema.columns c ON c.table_schema = t.table_schema AND c.table_name = t.table_name "
        "WHERE t.table_catalog = current_database() AND c.table_catalog = current_database() "
        "AND t.table_schema IN ('mart', 'core') GROUP BY ALL ORDER BY 1 DESC, 2"
    ).fetchall()
    out = []
    for schema, name, columns in rows:
        restricted = CORE_RESTRICTED.get(f"{schema}.{name}", set())
        if restricted & set(columns):
            continue  # its *_public view is copied instead
        out.append((schema, name))
    return out


def kept_views(conn: Connection, relations: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The views among ``relations`` that the copy keeps as views (their defining query), not as
    tables: those that read only tables the copy holds (``core.dossier_status_history`` over
    ``core.dossier_versions``), so that a query of the copy computes them from the same snapshot,
    as the warehouse does, and the copy is not made to compute them (a window over every version).
    A view over a relation the copy lacks (``core.dossiers_public``, over ``core.dossiers``) or
    whose query cannot be read here is stored as a table."""
    import json

    views = {(schema, name): sql for schema, name, sql in conn.exec_driver_sql(
        "SELECT schema_name, view_name, sql FROM duckdb_views() WHERE database_name = current_database() "
        "AND NOT internal").fetchall()}
    tables = {r for r in relations if r not in views}
    kept = {}
    for (schema, name), sql in views.items():
        prefix = f"CREATE VIEW {schema}.{name} AS "
        if (schema, name) not in relations or not sql.startswith(prefix):
            continue
        query = sql[len(prefix):].rstrip().rstrip(";")
        tree = json.loads(conn.exec_driver_sql("SELECT CAST(json_serialize_sql(?) AS VARCHAR)", (query,)).scalar_one())
        reads = base_tables(tree)
        if not tree.get("error") and reads is not None and reads and reads <= tables:
            kept[(schema, name)] = query
    return kept


def base_tables(tree: Any) -> set[tuple[str, str]] | None:
    """The (schema, table) every table reference of a parsed query (``json_serialize_sql``) names,
    its common table expressions aside; None if one names another database or no schema."""
    ctes: set[str] = set()
    refs: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for entry in (node.get("cte_map") or {}).get("map") or ():
                ctes.add(entry.get("key"))
            if node.get("type") == "BASE_TABLE":
                refs.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tree)
    out = set()
    for ref in refs:
        schema, table = ref.get("schema_name") or "", ref.get("table_name") or ""
        if not schema and not ref.get("catalog_name") and table in ctes:
            continue
        if ref.get("catalog_name") or not schema:
            return None
        out.add((schema, table))
    return out


def comment_statements(conn: Connection, relations: list[tuple[str, str]], views: set[tuple[str, str]],
                       kept: Sequence[tuple[str, str]] = ()) -> list[str]:
    """COMMENT statements re-creating, on the copy, the comments of the copied relations and their
    columns (a view's comment goes to the table it becomes, or to the view ``views`` keeps); the
    tables ``kept`` from the previous copy first lose theirs."""
    copied = set(relations)
    stmts = []
    for schema, name in kept:
        stmts.append(f"COMMENT ON TABLE {ALIAS}.{quote(schema)}.{quote(name)} IS NULL")
        stmts += [f"COMMENT ON COLUMN {ALIAS}.{quote(schema)}.{quote(name)}.{quote(column)} IS NULL"
                  for column, _ in table_columns(conn, ALIAS, schema, name)]
    for schema, name, comment in conn.exec_driver_sql(
        "SELECT schema_name, table_name, comment FROM duckdb_tables() WHERE database_name = current_database() "
        "AND comment IS NOT NULL UNION ALL SELECT schema_name, view_name, comment FROM duckdb_views() "
        "WHERE database_name = current_database() AND comment IS NOT NULL"
    ).fetchall():
        if (schema, name) in copied and comment:
            kind = "VIEW" if (schema, name) in views else "TABLE"
            stmts.append(f"COMMENT ON {kind} {ALIAS}.{quote(schema)}.{quote(name)} IS {literal(comment)}")
    for schema, name, column, comment in conn.exec_driver_sql(
        "SELECT schema_name, table_name, column_name, comment FROM duckdb_columns() "
        "WHERE database_name = current_database() AND comment IS NOT NULL"
    ).fetchall():
        if (schema, name) in copied and comment:
            stmts.append(f"COMMENT ON COLUMN {ALIAS}.{quote(schema)}.{quote(name)}.{quote(column)} "
                         f"IS {literal(comment)}")
    return stmts


def table_columns(conn: Connection, database: str, schema: str, name: str) -> list[tuple[str, str]]:
    """(column, type) of a table of an attached ``database``, in order."""
    return [tuple(r) for r in conn.exec_driver_sql(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = ? AND schema_name = ? "
        "AND table_name = ? ORDER BY column_index", (database, schema, name)).fetchall()]


def grows_by_publication(schema: str, name: str, columns: list[tuple[str, str]]) -> bool:
    """A table that only ever gains rows, a publication's at a time: ``mart.<x>_history``
    (``tasks.reports.publish`` appends each publication's rows with its ``publication_id``; nothing
    updates or deletes them)."""
    return schema == "mart" and name.endswith("_history") and ("publication_id", "VARCHAR") in columns
