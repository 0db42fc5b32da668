"""The analyst role reads mart and the non-personal columns of core, nothing else (PostgreSQL).

``dvc-etl db grant-analyst`` quotes every identifier, never takes the password on the command line,
refuses roles it must not touch (exit 2), and fails with one line that never holds the password.
All against the real PostgreSQL server; the command runs as a real subprocess.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tasks.grants import GrantRefused, grant_analyst
from tasks.warehouse import WarehouseError, connect, upgrade
from tests.terminal import DVC_ETL, run_in_pty

# the pipeline role migrates its own warehouse (it owns what it made): an empty database
pytestmark = [pytest.mark.postgres, pytest.mark.empty_warehouse]

MARKER = "pw-MARKER-7c1e9d"


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _uid() -> str:
    return uuid.uuid4().hex[:6]


def _as(url: str, user: str) -> str:
    return sa.engine.make_url(url).set(username=user, password=None).render_as_string(hide_password=False)


@pytest.fixture
def roles(pg_url) -> Iterator[list[str]]:
    """Names of roles a test creates; dropped (with what they own in the test database) afterwards."""
    names: list[str] = []
    yield names
    import psycopg
    from psycopg import sql

    u = sa.engine.make_url(pg_url)
    with psycopg.connect(host=u.host, port=u.port, dbname=u.database, user=u.username, autocommit=True) as c:
        for name in reversed(names):
            if c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
                c.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
                c.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def pipeline(pg_url, roles) -> str:
    """A pipeline role as docs/security.md makes it (no superuser), owning the schemas it migrated.
    Returns its name; the test database is at the latest migration."""
    name = f"dvc_etl_{_uid()}"
    roles.append(name)
    db = sa.engine.make_url(pg_url).database
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE ROLE "{name}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE'))
        c.execute(sa.text(f'REVOKE ALL ON DATABASE "{db}" FROM PUBLIC'))
        c.execute(sa.text(f'GRANT CONNECT, CREATE, TEMPORARY ON DATABASE "{db}" TO "{name}"'))
    admin.dispose()
    engine = connect(_as(pg_url, name))
    upgrade(engine)
    engine.dispose()
    return name


def _cli(args: list[str], url: str, *, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    full.update(DVC_WAREHOUSE_URL=url, DVC_HASH_KEY="grants-test-hash-key-0123456789abcdef", **env)
    return subprocess.run([DVC_ETL, "db", "grant-analyst", *args], env=full, capture_output=True, text=True,
                          timeout=120, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)


def _role(pg_url: str, name: str) -> dict | None:
    engine = sa.create_engine(pg_url)
    with engine.connect() as c:
        row = c.execute(sa.text("SELECT rolname, rolpassword, rolcanlogin FROM pg_authid WHERE rolname = :r"),
                        {"r": name}).mappings().first()
    engine.dispose()
    return dict(row) if row else None


def _password_matches(verifier: str | None, password: str) -> bool:
    """Check a SCRAM-SHA-256 verifier from pg_authid against a password (RFC 5803), as the server
    does at login (the test server trusts every local login, so a login proves nothing)."""
    if not verifier or not verifier.startswith("SCRAM-SHA-256$"):
        return False
    params, keys = verifier[len("SCRAM-SHA-256$"):].split("$")
    iterations, salt = params.split(":")
    stored_key = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored_key


def _can_read(pg_url: str, role: str, table_sql: str) -> bool:
    import psycopg

    u = sa.engine.make_url(pg_url)
    with psycopg.connect(host=u.host, port=u.port, dbname=u.database, user=role) as c:
        try:
            c.execute(f"SELECT * FROM {table_sql}").fetchall()  # noqa: S608 - test's own quoted names
            return True
        except psycopg.errors.InsufficientPrivilege:
            return False


def _one_line(p: subprocess.CompletedProcess) -> str:
    lines = [line for line in (p.stdout + p.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, f"want one line, got: {p.stdout!r} {p.stderr!r}"
    return lines[0]


# ----------------------------------------------------------------------------------------------
# what the analyst can read
# ----------------------------------------------------------------------------------------------
def test_analyst_reads_mart_not_raw_or_personal_columns(pg_url, roles):
    engine = connect(pg_url)
    upgrade(engine)
    role = f"analyst_{_uid()}"
    roles.append(role)
    grant_analyst(engine, role, password="analyst-pw")
    assert _password_matches(_role(pg_url, role)["rolpassword"], "analyst-pw")
    analyst = connect(_as(pg_url, role))
    try:
        with analyst.connect() as c:
            c.execute(sa.text("SELECT count(*) FROM mart.publications")).scalar_one()
            c.execute(sa.text("SELECT ma_ho_so, trang_thai, ngay_tiep_nhan FROM core.dossiers")).fetchall()
            c.execute(sa.text("SELECT * FROM core.payments")).fetchall()
        for forbidden in ("SELECT * FROM raw.dossiers", "SELECT record FROM raw.payments",
                          "SELECT applicant_key FROM core.dossiers", "SELECT * FROM core.dossiers",
                          "SELECT * FROM dq.quarantine", "CREATE TABLE mart.x (a int)",
                          "DELETE FROM mart.publications"):
            with analyst.connect() as c, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                c.execute(sa.text(forbidden))
    finally:
        analyst.dispose()
        engine.dispose()


def test_a_warehouse_not_yet_migrated_is_refused(pg_url):
    engine = connect(pg_url)
    role = f"analyst_{_uid()}"
    with pytest.raises(GrantRefused, match="db upgrade"):
        grant_analyst(engine, role, password="x")
    engine.dispose()
    assert _role(pg_url, role) is None


def test_future_mart_tables_of_the_pipeline_role_are_readable(pg_url, roles, pipeline):
    """The administrator grants; the pipeline's role later creates a mart table (a new migration):
    default privileges are set for the owner of mart, not for the administrator."""
    role = f"analyst_{_uid()}"
    roles.append(role)
    admin = connect(pg_url)
    grant_analyst(admin, role, password="pw")
    admin.dispose()
    as_pipeline = connect(_as(pg_url, pipeline))
    with as_pipeline.begin() as c:
        c.execute(sa.text("CREATE TABLE mart.rpt_added_later (a int)"))
    as_pipeline.dispose()
    assert _can_read(pg_url, role, "mart.rpt_added_later")


# ----------------------------------------------------------------------------------------------
# 1. every identifier is quoted
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ['an"; DROP TABLE canary; --', "Analyst Team:bi %(x)s 'q'"])
def test_a_role_name_needing_quotes_is_created_exactly_as_named(pg_url, roles, name):
    role = f"{name}{_uid()}"
    roles.append(role)
    engine = connect(pg_url)
    upgrade(engine)
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE canary (a int)"))
    grant_analyst(engine, role, password="pw")
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM canary")).scalar_one() == 0  # still there
        assert c.execute(sa.text("SELECT rolname FROM pg_roles WHERE rolname LIKE :p"),
                         {"p": name[:3] + "%"}).scalars().all() == [role]
    engine.dispose()
    assert _can_read(pg_url, role, "mart.publications")
    assert not _can_read(pg_url, role, "raw.dossiers")


def test_catalog_names_needing_quotes_are_granted(pg_url, roles):
    """Table and column names read from the catalog (spaces, capitals, quotes, an injection
    attempt) are quoted: the mart and core tables are granted and nothing else runs."""
    engine = connect(pg_url)
    upgrade(engine)
    odd_core = 'Odd Table"; DROP TABLE canary; --'
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE canary (a int)"))
        c.execute(sa.text('CREATE TABLE mart."Monthly Report" ("Đơn vị" text)'))
        c.execute(sa.text('CREATE TABLE core."Odd Table""; DROP TABLE canary; --" ("Col ""x""" int, "Hồ sơ" text)'))
    role = f"analyst_{_uid()}"
    roles.append(role)
    grant_analyst(engine, role, password="pw")
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT to_regclass('public.canary') IS NOT NULL")).scalar_one()
    engine.dispose()
    assert _can_read(pg_url, role, 'mart."Monthly Report"')
    assert _can_read(pg_url, role, 'core.' + '"' + odd_core.replace('"', '""') + '"')


# ----------------------------------------------------------------------------------------------
# 2. the password never on the command line
# ----------------------------------------------------------------------------------------------
def test_password_option_is_refused_without_echoing_it(pg_url):
    p = _cli(["analyst_x", "--password", MARKER], pg_url)
    assert p.returncode == 2
    line = _one_line(p)
    assert "--password-stdin" in line and "DVC_ANALYST_PASSWORD" in line
    assert MARKER not in p.stdout + p.stderr
    assert _role(pg_url, "analyst_x") is None


def test_password_from_stdin_environment_or_none(pg_url, roles):
    upgrade(engine := connect(pg_url))
    engine.dispose()
    a, b, c = (f"analyst_{_uid()}" for _ in range(3))
    roles.extend([a, b, c])

    p = _cli([a, "--password-stdin"], pg_url, stdin=f"{MARKER}-stdin\n")
    assert p.returncode == 0, p.stderr
    assert MARKER not in p.stdout + p.stderr
    assert _password_matches(_role(pg_url, a)["rolpassword"], f"{MARKER}-stdin")

    p = _cli([b], pg_url, DVC_ANALYST_PASSWORD=f"{MARKER}-env")
    assert p.returncode == 0, p.stderr
    assert _password_matches(_role(pg_url, b)["rolpassword"], f"{MARKER}-env")

    p = _cli([c, "--no-password"], pg_url)
    assert p.returncode == 0, p.stderr
    assert _role(pg_url, c)["rolpassword"] is None and _role(pg_url, c)["rolcanlogin"]
    # an existing role keeps its password with --no-password
    p = _cli([a, "--no-password"], pg_url)
    assert p.returncode == 0, p.stderr
    assert _password_matches(_role(pg_url, a)["rolpassword"], f"{MARKER}-stdin")


@pytest.mark.parametrize(("args", "env", "stdin", "expect"), [
    ([], {}, None, "--password-stdin"),                                   # no terminal, no source
    (["--password-stdin"], {}, "\n", "empty"),
    (["--password-stdin"], {"DVC_ANALYST_PASSWORD": MARKER}, MARKER + "\n", "one source"),
    (["--no-password", "--password-stdin"], {}, MARKER + "\n", "one source"),
])
def test_missing_or_ambiguous_password_is_a_usage_error(pg_url, args, env, stdin, expect):
    p = _cli(["analyst_y", *args], pg_url, stdin=stdin, **env)
    assert p.returncode == 2
    assert expect in _one_line(p)
    assert MARKER not in p.stdout + p.stderr
    assert _role(pg_url, "analyst_y") is None


def test_interactive_prompt_is_hidden_and_confirmed(pg_url, roles):
    """At a terminal the password is asked twice with echo off: it never shows on the screen."""
    upgrade(engine := connect(pg_url))
    engine.dispose()
    role = f"analyst_{_uid()}"
    roles.append(role)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    env.update(DVC_WAREHOUSE_URL=pg_url, DVC_HASH_KEY="grants-test-hash-key-0123456789abcdef")
    answer = MARKER.encode() + b"\n"
    code, text, answers = run_in_pty(["db", "grant-analyst", role], env, 120,
                                     answers=[(b"Password for role", answer), (b"Repeat for confirmation", answer)])
    assert code == 0, text
    assert not answers, text
    assert MARKER not in text
    assert _password_matches(_role(pg_url, role)["rolpassword"], MARKER)


# ----------------------------------------------------------------------------------------------
# 3. roles it must not touch
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pipeline", "myself", "superuser", "createrole", "createdb", "owns_function",
                                  "owns_other_database", "member_of_pipeline"])
def test_unfit_roles_are_refused_and_left_untouched(pg_url, roles, pipeline, kind):
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    runner_url = pg_url
    target = f"{kind}_{_uid()}"
    other_db = None
    with admin.connect() as c:
        if kind == "pipeline":
            target = pipeline
        elif kind == "myself":  # the pipeline's role running the command on itself
            target, runner_url = pipeline, _as(pg_url, pipeline)
        else:
            roles.append(target)
            attrs = {"superuser": "SUPERUSER", "createrole": "CREATEROLE", "createdb": "CREATEDB"}.get(kind, "")
            c.execute(sa.text(f'CREATE ROLE "{target}" LOGIN {attrs} PASSWORD \'before\''))
            if kind == "owns_function":
                c.execute(sa.text(f'CREATE FUNCTION public.f_{target}() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$; '
                                  f'ALTER FUNCTION public.f_{target}() OWNER TO "{target}"'))
            elif kind == "owns_other_database":
                other_db = f"other_{target}"
                c.execute(sa.text(f'CREATE DATABASE "{other_db}" OWNER "{target}"'))
            elif kind == "member_of_pipeline":
                c.execute(sa.text(f'GRANT "{pipeline}" TO "{target}"'))
        before = c.execute(sa.text("SELECT rolpassword FROM pg_authid WHERE rolname = :r"), {"r": target}).scalar()
    try:
        if kind in ("pipeline", "myself"):  # the command line: exit code 2, one line
            p = _cli([target], runner_url, DVC_ANALYST_PASSWORD=MARKER)
            line = _one_line(p)
            assert p.returncode == 2, line
            assert MARKER not in p.stdout + p.stderr
            line = line.removeprefix("error: ")
        else:  # the same check in the library, without a process start per case
            runner = connect(runner_url)
            with pytest.raises(GrantRefused) as caught:
                grant_analyst(runner, target, password=MARKER)
            runner.dispose()
            line = str(caught.value)
        assert line.startswith("refusing to make"), line
        assert {"pipeline": "owns objects", "myself": "running this command", "superuser": "SUPERUSER",
                "createrole": "CREATEROLE", "createdb": "CREATEDB", "owns_function": "owns objects",
                "owns_other_database": "owns objects", "member_of_pipeline": "is a member of"}[kind] in line
        assert MARKER not in line
        with admin.connect() as c:
            assert c.execute(sa.text("SELECT rolpassword FROM pg_authid WHERE rolname = :r"),
                             {"r": target}).scalar() == before
            assert not c.execute(sa.text("SELECT has_schema_privilege(:r, 'mart', 'USAGE')"),
                                 {"r": target}).scalar() or kind in ("pipeline", "myself", "superuser", "member_of_pipeline")
            assert c.execute(sa.text("SELECT count(*) FROM pg_default_acl d JOIN pg_namespace n "
                                     "ON n.oid = d.defaclnamespace WHERE n.nspname = 'mart'")).scalar() == 0
    finally:
        if other_db:
            with admin.connect() as c:
                c.execute(sa.text(f'DROP DATABASE "{other_db}"'))
        admin.dispose()


# ----------------------------------------------------------------------------------------------
# 4. a failure is one line, never the password
# ----------------------------------------------------------------------------------------------
def test_a_failing_grant_prints_one_line_without_the_password(pg_url, roles, pipeline):
    """The pipeline's role (no CREATEROLE) cannot set another role's password nor create a role:
    the command fails with the server's one-line reason, and the password shows nowhere."""
    existing = f"analyst_{_uid()}"
    roles.append(existing)
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE ROLE "{existing}" LOGIN'))
    admin.dispose()
    as_pipeline = _as(pg_url, pipeline)
    for target, how in ((existing, {"DVC_ANALYST_PASSWORD": MARKER}), (f"analyst_{_uid()}", {})):
        p = _cli([target, *([] if how else ["--password-stdin"])], as_pipeline,
                 stdin=None if how else MARKER + "\n", **how)
        line = _one_line(p)
        assert p.returncode == 1, line
        assert line.startswith(f"error: grant-analyst '{target}' failed: "), line
        assert "permission denied" in line or "must have" in line, line
        assert MARKER not in p.stdout + p.stderr
    # the library raises the same one line, with no chained exception that could quote a statement
    engine = connect(as_pipeline)
    with pytest.raises(WarehouseError) as caught:
        grant_analyst(engine, existing, password=MARKER)
    engine.dispose()
    assert MARKER not in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
