"""Analysts' access to a PostgreSQL warehouse: the read-only role of ``dvc-etl db grant-analyst``.

Plain functions, no Prefect. :func:`grant_analyst` gives a login role read access to ``mart``
(every table and view, present and future) and to ``core`` without the pseudonymous applicant key
(:data:`CORE_RESTRICTED`); ``raw`` and ``dq`` stay closed.

What makes ``SELECT *`` work for the role, and keeps working without a new grant:

- ``mart``: ``SELECT`` on every table, and default privileges ``FOR ROLE`` each owner of ``mart``
  (the pipeline's role, which runs the migrations), so tables and views a later migration or
  publication creates are readable at once.
- ``core``: ``SELECT`` on each relation without a restricted column; on a relation with one
  (``core.dossiers``), ``SELECT`` on its other columns only, and the view beside it
  (:data:`CORE_PUBLIC_VIEWS`: ``core.dossiers_public``, every column but the applicant key) is
  the one to ``SELECT *`` from. Every ``core.*_public`` view is granted ``SELECT`` to ``PUBLIC`` by
  the migration that creates it (``sql/migrations/0007_analyst_views_grant.postgresql.sql``): only
  roles with ``USAGE`` on ``core`` (analysts and the pipeline) can reach it, and a public view
  added later needs no new grant.
- The data dictionary is on the objects: ``COMMENT ON`` every ``mart`` table and column
  (``sql/migrations/0007_analyst_views.sql``); publications never recreate ``mart`` tables (they
  replace rows), so the comments stay.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tasks.warehouse import WarehouseError, applied_versions, dialect_name, migrations, raw_driver_connection

#: Columns of core tables an analyst must not read (pseudonymous applicant key).
CORE_RESTRICTED = {"core.dossiers": {"applicant_key"}}
#: For each core table with restricted columns, the view without them (``SELECT *`` works on it).
CORE_PUBLIC_VIEWS = {"core.dossiers": "core.dossiers_public"}
#: Role names PostgreSQL reserves (besides the ``pg_`` prefix).
_RESERVED_ROLE_NAMES = {"public", "none", "current_user", "session_user", "current_role"}
#: Predefined roles an analyst must not inherit from (they read or write everything, or the server).
_DANGEROUS_PREDEFINED = {
    "pg_read_all_data", "pg_write_all_data", "pg_read_server_files", "pg_write_server_files",
    "pg_execute_server_program", "pg_signal_backend", "pg_checkpoint", "pg_database_owner",
    "pg_create_subscription", "pg_use_reserved_connections",
}
#: The role and every role it inherits from (directly or not), with what makes each unfit for an
#: analyst: being the role running this command, a dangerous attribute, or owning any object
#: (pg_shdepend covers every database; the local catalogs are checked too).
_ROLE_FACTS_SQL = """
WITH RECURSIVE up(oid) AS (
    SELECT oid FROM pg_roles WHERE rolname = %(role)s
    UNION
    SELECT m.roleid FROM pg_auth_members m JOIN up ON m.member = up.oid
)
SELECT r.rolname,
       r.rolname = %(role)s,
       r.rolname IN (current_user, session_user),
       array_remove(ARRAY[
           CASE WHEN r.rolsuper THEN 'SUPERUSER' END, CASE WHEN r.rolcreaterole THEN 'CREATEROLE' END,
           CASE WHEN r.rolcreatedb THEN 'CREATEDB' END, CASE WHEN r.rolreplication THEN 'REPLICATION' END,
           CASE WHEN r.rolbypassrls THEN 'BYPASSRLS' END], NULL),
       EXISTS (SELECT 1 FROM pg_shdepend d WHERE d.refclassid = 'pg_authid'::regclass
                                              AND d.refobjid = r.oid AND d.deptype = 'o')
       OR EXISTS (SELECT 1 FROM pg_database WHERE datdba = r.oid)
       OR EXISTS (SELECT 1 FROM pg_namespace WHERE nspowner = r.oid)
       OR EXISTS (SELECT 1 FROM pg_class WHERE relowner = r.oid)
       OR EXISTS (SELECT 1 FROM pg_proc WHERE proowner = r.oid)
       OR EXISTS (SELECT 1 FROM pg_type WHERE typowner = r.oid)
FROM up JOIN pg_roles r ON r.oid = up.oid
ORDER BY r.rolname = %(role)s DESC, r.rolname
"""


class GrantRefused(WarehouseError):
    """``grant_analyst`` will not act on this role or this warehouse (a usage error: exit 2)."""


def _check_role_name(role: str) -> None:
    """Any name PostgreSQL keeps exactly as given (it is always quoted): 1-63 bytes, no control
    characters, not reserved. Longer names would be cut silently by the server."""
    if not role or len(role.encode("utf-8")) > 63:
        raise GrantRefused(f"invalid role name {role!r}: it must be 1 to 63 bytes long")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in role):
        raise GrantRefused(f"invalid role name {role!r}: control characters are not allowed")
    if role.lower() in _RESERVED_ROLE_NAMES or role.lower().startswith("pg_"):
        raise GrantRefused(f"invalid role name {role!r}: the name is reserved by PostgreSQL")


def _refuse_unfit_role(cur: Any, role: str) -> None:
    """Refuse an existing role that is the caller, owns objects, has a dangerous attribute, or
    inherits from such a role: making it an analyst would hand out (or take away) far more."""
    cur.execute(_ROLE_FACTS_SQL, {"role": role})
    for name, is_target, is_me, attributes, owns in cur.fetchall():
        who = f"role {role!r}" if is_target else f"role {role!r} is a member of {name!r}, which"
        because = (
            "is the role running this command (the pipeline's own role?)" if is_me
            else f"has {', '.join(attributes)}" if attributes
            else "owns objects (databases, schemas, tables, functions or types)" if owns
            else "is a predefined role with wide access" if name in _DANGEROUS_PREDEFINED
            else None
        )
        if because:
            raise GrantRefused(f"refusing to make {role!r} an analyst: {who} {because}")


def _grant_error(exc: BaseException, role: str, password: str | None) -> WarehouseError:
    """One line from a database error: the server's primary message, never the statement (which
    could hold a password verifier) and never the password."""
    orig = getattr(exc, "orig", None) or exc
    diag = getattr(orig, "diag", None)
    text = getattr(diag, "message_primary", None) or str(orig) or type(orig).__name__
    text = text.strip().splitlines()[0] if text.strip() else type(orig).__name__
    if password:
        text = text.replace(password, "***")
    return WarehouseError(f"grant-analyst {role!r} failed: {text}")


def grant_analyst(engine: Engine, role: str, *, password: str | None = None) -> None:
    """Read access to ``mart`` (all tables and views, present and future) and to ``core`` without
    the restricted columns (``SELECT *`` on ``core.dossiers_public``); ``raw`` and ``dq`` stay
    closed. Creates ``role`` (LOGIN) if missing.

    Every identifier (the role, the database, schemas, tables and columns read from the catalog)
    is quoted by psycopg's ``sql.Identifier``; the statements never pass SQLAlchemy's text parser.
    ``password`` (None: leave it unset or unchanged) is sent as a SCRAM-SHA-256 verifier computed
    here, so the clear text never reaches the server, its logs or an error message.
    Raises ``GrantRefused`` for a role it must not touch (the caller, an owner of objects, a role
    with SUPERUSER/CREATEROLE/CREATEDB/REPLICATION/BYPASSRLS, or a member of one) and
    ``WarehouseError`` (one line, no password) when the database refuses."""
    if dialect_name(engine) != "postgresql":
        raise GrantRefused("grant-analyst needs a PostgreSQL warehouse (DuckDB files have no roles)")
    _check_role_name(role)
    if password is not None and (not password or "\x00" in password):
        raise GrantRefused("the analyst password must be non-empty text without NUL characters")
    import psycopg

    try:
        with engine.begin() as conn:
            pending = [v for v, _ in migrations("postgresql") if v not in applied_versions(conn)]
            if pending:
                raise GrantRefused(
                    f"the warehouse schema is not up to date ({len(pending)} pending migration(s)): run "
                    "`dvc-etl db upgrade` as the pipeline's role first"
                )
            with raw_driver_connection(conn).cursor() as cur:
                _grant(cur, role, password)
    except WarehouseError:
        raise
    except (sa.exc.DBAPIError, psycopg.Error) as exc:
        raise _grant_error(exc, role, password) from None


def _grant(cur: Any, role: str, password: str | None) -> None:
    from psycopg import sql

    ident, stmt = sql.Identifier, sql.SQL
    r = ident(role)
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
    if cur.fetchone():
        _refuse_unfit_role(cur, role)
    else:
        cur.execute(stmt("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS")
                    .format(r))
    if password is not None:
        verifier = cur.connection.pgconn.encrypt_password(
            password.encode("utf-8"), role.encode("utf-8"), b"scram-sha-256"
        ).decode("ascii")
        cur.execute(stmt("ALTER ROLE {} PASSWORD {}").format(r, sql.Literal(verifier)))
    cur.execute("SELECT current_database()")
    cur.execute(stmt("GRANT CONNECT ON DATABASE {} TO {}").format(ident(cur.fetchone()[0]), r))
    for schema in ("raw", "dq"):
        cur.execute(stmt("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(ident(schema), r))
        cur.execute(stmt("REVOKE ALL ON SCHEMA {} FROM {}").format(ident(schema), r))
    mart = ident("mart")
    cur.execute(stmt("GRANT USAGE ON SCHEMA {} TO {}").format(mart, r))
    cur.execute(stmt("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(mart, r))
    # future mart tables and views are created by whoever owns mart (the pipeline's role running
    # migrations and publications), not by the administrator running this: default privileges for
    # each owner (TABLES covers views)
    cur.execute(
        "SELECT DISTINCT o.rolname FROM pg_namespace n JOIN pg_roles o ON o.oid = n.nspowner "
        "WHERE n.nspname = 'mart' UNION "
        "SELECT DISTINCT o.rolname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_roles o ON o.oid = c.relowner WHERE n.nspname = 'mart' ORDER BY 1"
    )
    for (owner,) in cur.fetchall():
        cur.execute(stmt("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {}")
                    .format(ident(owner), mart, r))
    cur.execute(stmt("GRANT USAGE ON SCHEMA {} TO {}").format(ident("core"), r))
    cur.execute(
        "SELECT c.relname, a.attname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "WHERE n.nspname = 'core' AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY c.relname, a.attnum"
    )
    tables: dict[str, list[str]] = {}
    for table, column in cur.fetchall():
        tables.setdefault(table, []).append(column)
    for table, columns in tables.items():
        target = ident("core", table)
        cur.execute(stmt("REVOKE ALL ON {} FROM {}").format(target, r))  # drops column grants too
        restricted = CORE_RESTRICTED.get(f"core.{table}", set())
        if not restricted & set(columns):  # the whole relation: columns added later stay readable
            cur.execute(stmt("GRANT SELECT ON {} TO {}").format(target, r))
            continue
        allowed = [c for c in columns if c not in restricted]
        if allowed:
            cur.execute(stmt("GRANT SELECT ({}) ON {} TO {}")
                        .format(sql.SQL(", ").join(ident(c) for c in allowed), target, r))
