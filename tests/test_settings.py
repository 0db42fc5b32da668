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

    from flows.lifecycle import tracked_run

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


def test_period_cut_defaults_to_calendar_and_takes_decree_09(monkeypatch):
    monkeypatch.delenv("DVC_PERIOD_CUT", raising=False)
    assert Settings().period_cut == "calendar"
    for value, want in (("calendar", "calendar"), ("decree-09", "decree-09"), (" Decree-09 ", "decree-09"),
                        ("CALENDAR", "calendar")):
        monkeypatch.setenv("DVC_PERIOD_CUT", value)
        assert Settings().period_cut == want


def test_a_bad_period_cut_is_refused_naming_the_setting_and_the_values(monkeypatch):
    import pydantic
    import pytest

    from tasks.cli import settings_error_lines

    for value in ("monthly", "decree-9", "decree 09", "", "09"):
        monkeypatch.setenv("DVC_PERIOD_CUT", value)
        with pytest.raises(pydantic.ValidationError, match="period_cut") as info:
            Settings()
        (line,) = settings_error_lines(info.value)
        assert line.startswith("DVC_PERIOD_CUT: ") and "'calendar' or 'decree-09'" in line and repr(value) in line


def test_period_cut_values_are_the_cuts_clock_resolves(monkeypatch):
    import typing

    from tasks.clock import CUTS, resolve_period

    assert typing.get_args(Settings.model_fields["period_cut"].annotation) == CUTS
    for cut in CUTS:
        monkeypatch.setenv("DVC_PERIOD_CUT", cut)
        assert resolve_period("2024-06", Settings().period_cut).cut == cut


def test_report_number_and_place_are_unset_by_default_and_kept_as_given(monkeypatch):
    monkeypatch.delenv("DVC_REPORT_NUMBER", raising=False)
    monkeypatch.delenv("DVC_REPORT_PLACE", raising=False)
    s = Settings()
    assert s.report_number is None and s.report_place is None
    monkeypatch.setenv("DVC_REPORT_NUMBER", "340/BC-UBND ngày 15/6/2024")
    monkeypatch.setenv("DVC_REPORT_PLACE", "Tuy Phước")
    s = Settings()
    assert s.report_number == "340/BC-UBND ngày 15/6/2024" and s.report_place == "Tuy Phước"


# ---------------------------------------------------------------------------------------------
# Issue 14: an http:// source URL only on loopback, unless DVC_ALLOW_INSECURE_HTTP
# ---------------------------------------------------------------------------------------------
INSECURE = ["http://dvc.example.gov.vn", "http://10.0.0.5:8080/api", "HTTP://Dvc.Example.gov.vn",
            "http://user:pw@dvc.example.gov.vn/", "http://127.0.0.1.example.net", "http://[fd00::2]:80",
            "http://localhost.example.gov.vn"]
FINE = ["https://dvc.example.gov.vn", "http://127.0.0.1:8000", "http://127.9.9.9", "http://localhost:9",
        "http://[::1]:8000/api", "http://LOCALHOST", None]


def test_an_http_source_url_is_refused_unless_loopback_or_allowed(monkeypatch):
    import pydantic
    import pytest

    for url in INSECURE:
        with pytest.raises(pydantic.ValidationError) as err:
            Settings(_env_file=None, source_url=url)
        text = str(err.value)
        assert "DVC_SOURCE_URL" in text and "DVC_ALLOW_INSECURE_HTTP" in text, text
        assert "pw@" not in text  # never the URL's credentials
        assert Settings(_env_file=None, source_url=url, allow_insecure_http=True).source_url == url
    for url in FINE:
        assert Settings(_env_file=None, source_url=url).source_url == url
    assert Settings(_env_file=None).allow_insecure_http is False


def test_the_cli_refuses_an_http_source_url_with_exit_2_naming_both_settings(dvc_env, tmp_path):
    from typer.testing import CliRunner

    from tasks.cli import EXIT_USAGE, app

    wh = tmp_path / "wh.duckdb"
    for command in (["run"], ["backfill", "--from", "2024-01-01", "--to", "2024-01-31"]):
        dvc_env(DVC_WAREHOUSE_URL=f"duckdb:///{wh}", DVC_SOURCE_URL="http://dvc.example.gov.vn")
        res = CliRunner().invoke(app, command)
        assert res.exit_code == EXIT_USAGE, res.output
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "DVC_SOURCE_URL" in lines[0] and "DVC_ALLOW_INSECURE_HTTP" in lines[0], lines
        assert not wh.exists()
    dvc_env(DVC_WAREHOUSE_URL=f"duckdb:///{wh}", DVC_SOURCE_URL="http://dvc.example.gov.vn",
            DVC_ALLOW_INSECURE_HTTP="true")
    from tasks.settings import get_settings

    assert get_settings().allow_insecure_http is True  # explicitly allowed: the settings load


def test_a_flow_refuses_an_http_source_url(dvc_env, tmp_path):
    import pydantic
    import pytest

    from flows.lifecycle import run_settings

    dvc_env(DVC_WAREHOUSE_URL=f"duckdb:///{tmp_path / 'wh.duckdb'}", DVC_SOURCE_URL="http://dvc.example.gov.vn")
    with pytest.raises(pydantic.ValidationError, match="DVC_ALLOW_INSECURE_HTTP"):
        run_settings()
    assert not (tmp_path / "wh.duckdb").exists()
