"""SQL text for statements without bound parameters (tasks/sql_text.py): names and strings with
the quote characters and colons in them survive a real DuckDB statement, by exec_driver_sql and
by sqlalchemy.text alike."""

from __future__ import annotations

import sqlalchemy as sa

from tasks.sql_text import literal, quote, text_literal

ODD_NAME = 'we"ird \'name\''
ODD_TEXT = "it's :not_a_param \"x\" ''"


def test_names_and_strings_round_trip_through_duckdb() -> None:
    engine = sa.create_engine("duckdb:///:memory:")
    with engine.begin() as c:
        c.exec_driver_sql(f"CREATE TABLE {quote(ODD_NAME)} ({quote(ODD_NAME)} VARCHAR)")
        c.exec_driver_sql(f"INSERT INTO {quote(ODD_NAME)} VALUES ({literal(ODD_TEXT)})")
        got = c.execute(sa.text(f"SELECT {quote(ODD_NAME)} FROM {quote(ODD_NAME)} "  # noqa: S608 - the test's names
                                f"WHERE {quote(ODD_NAME)} = {text_literal(ODD_TEXT)}")).scalar_one()
        assert got == ODD_TEXT
        assert c.exec_driver_sql("SELECT table_name FROM information_schema.tables").scalar_one() == ODD_NAME


def test_the_quote_characters_are_doubled_and_nothing_else_changes() -> None:
    assert quote('a"b') == '"a""b"' and quote("a'b") == "\"a'b\""
    assert literal("a'b") == "'a''b'" and literal('a"b:c') == "'a\"b:c'"
    assert text_literal("a'b:c") == "'a''b\\:c'"
