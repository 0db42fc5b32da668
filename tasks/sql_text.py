"""SQL text for the statements that cannot take bound parameters (DuckDB's ``ATTACH``, ``COPY``,
``read_parquet`` lists, catalog names in DDL): identifiers and string literals quoted the one
way, doubling the quote character. Values that can be parameters are parameters."""

from __future__ import annotations


def quote(name: str) -> str:
    """An identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A string literal, single-quoted (for ``exec_driver_sql``)."""
    return "'" + text.replace("'", "''") + "'"


def text_literal(text: str) -> str:
    """A string literal for a statement run through ``sqlalchemy.text``: its colons escaped, so
    none reads as a bound parameter."""
    return literal(text).replace(":", "\\:")
