"""The README must document every setting (name and default)."""

import re

from tasks.settings import PROJECT_ROOT, Settings


def test_readme_lists_every_setting():
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    missing = [f"DVC_{name.upper()}" for name in Settings.model_fields if f"DVC_{name.upper()}" not in readme]
    assert not missing, f"README does not document: {missing}"


def test_secrets_do_not_print(monkeypatch):
    monkeypatch.setenv("DVC_SOURCE_TOKEN", "tok-very-secret")
    monkeypatch.setenv("DVC_SMTP_PASSWORD", "pw-very-secret")
    s = Settings()
    text = repr(s) + str(s) + str(s.model_dump())
    assert "tok-very-secret" not in text and "pw-very-secret" not in text
    assert s.source_token.get_secret_value() == "tok-very-secret"


def test_every_setting_has_a_description():
    assert all(f.description for f in Settings.model_fields.values())
    assert all(re.fullmatch(r"[a-z_]+", n) for n in Settings.model_fields)


def test_duckdb_memory_limit_reaches_the_warehouse(monkeypatch, tmp_path):
    import pydantic
    import pytest

    from tasks.warehouse import open_warehouse

    monkeypatch.setenv("DVC_WAREHOUSE_URL", f"duckdb:///{tmp_path / 'w.duckdb'}")

    def limit(value: str | None) -> str:
        if value is None:
            monkeypatch.delenv("DVC_DUCKDB_MEMORY_LIMIT", raising=False)
        else:
            monkeypatch.setenv("DVC_DUCKDB_MEMORY_LIMIT", value)
        engine = open_warehouse(Settings())
        try:
            with engine.connect() as c:
                return c.exec_driver_sql("SELECT current_setting('memory_limit')").scalar()
        finally:
            engine.dispose()

    assert limit(None) == limit("384MB") != limit("")  # the default caps; empty is DuckDB's own
    assert limit("300MB") != limit("1GB")
    with pytest.raises(pydantic.ValidationError, match="duckdb_memory_limit"):
        monkeypatch.setenv("DVC_DUCKDB_MEMORY_LIMIT", "lots")
        Settings()


def test_a_duckdb_out_of_memory_failure_names_the_setting(monkeypatch, tmp_path):
    import pytest
    import sqlalchemy as sa

    from flows.nightly import tracked_run

    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    monkeypatch.setenv("DVC_WAREHOUSE_URL", url)
    monkeypatch.setenv("DVC_DUCKDB_MEMORY_LIMIT", "300MB")
    settings = Settings()
    with pytest.raises(MemoryError), tracked_run(settings, "nightly", "test"):
        raise MemoryError("Out of Memory Error: could not allocate block of size 256.0 KiB")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            status, message = c.execute(sa.text("SELECT status, message FROM dq.runs")).one()
    finally:
        engine.dispose()
    assert status == "failed" and "DVC_DUCKDB_MEMORY_LIMIT=300MB" in message and "Out of Memory" in message
