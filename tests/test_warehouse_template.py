"""The migrated warehouse the fixtures copy (tests/warehouse_template.py) is the one ``upgrade``
makes of an empty warehouse: the same tables, columns, types, views and comments, the same
migrations recorded, and ``upgrade`` finds nothing left to apply."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tasks.warehouse import connect, upgrade

_SCHEMAS = "('raw', 'core', 'dq', 'mart', 'ref')"
_COLUMNS = ("SELECT table_schema, table_name, column_name, data_type, is_nullable, column_default "
            f"FROM information_schema.columns WHERE table_schema IN {_SCHEMAS}")
_COMMENTS = {
    "duckdb": "SELECT schema_name, table_name, comment FROM duckdb_tables() UNION ALL "
              "SELECT schema_name, view_name, comment FROM duckdb_views() WHERE NOT internal UNION ALL "
              "SELECT schema_name, table_name || '.' || column_name, comment FROM duckdb_columns()",
    "postgresql": "SELECT c.table_schema, c.table_name || '.' || c.column_name, "
                  "col_description((c.table_schema || '.' || c.table_name)::regclass, c.ordinal_position) "
                  f"FROM information_schema.columns c WHERE c.table_schema IN {_SCHEMAS}",
}


def _shape(url: str) -> dict[str, list]:
    engine = connect(url)
    try:
        assert upgrade(engine) == []  # nothing left to apply
        dialect = engine.dialect.name
        with engine.connect() as c:
            return {
                "columns": sorted(map(tuple, c.execute(sa.text(_COLUMNS)).fetchall()), key=repr),
                "comments": sorted(map(tuple, c.execute(sa.text(_COMMENTS[dialect])).fetchall()), key=repr),
                "migrations": sorted(c.execute(sa.text("SELECT version FROM dq.schema_migrations")).scalars()),
            }
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_the_copied_warehouse_is_the_one_upgrade_makes(backend, tmp_path, tmp_path_factory):
    from tests.conftest import create_pg_database, drop_pg_database
    from tests.warehouse_template import duckdb_copy

    if backend == "duckdb":
        urls = [f"duckdb:///{tmp_path / 'fresh.duckdb'}", duckdb_copy(tmp_path_factory, tmp_path / "copy.duckdb")]
    else:
        urls = [create_pg_database(), create_pg_database(migrated=True)]
    engine = connect(urls[0])  # the fresh one, migrated here
    upgrade(engine)
    engine.dispose()
    try:
        fresh_shape, copy_shape = (_shape(u) for u in urls)
        assert fresh_shape["columns"] and fresh_shape["migrations"]
        assert copy_shape == fresh_shape
    finally:
        if backend == "postgresql":
            for url in urls:
                drop_pg_database(url)
