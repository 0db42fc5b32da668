"""The ``dvc-etl`` command line: help everywhere, exit codes, status, progress bars on a terminal
only, run ids in the log lines, no secrets in the output."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from simulator.dataset import generate
from simulator.server import start_server
from tasks.cli import EXIT_USAGE, app
from tests.terminal import run_in_pty

BIN = Path(sys.executable).parent
SECRET = "tok-do-not-print-5f3a9"


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path, as `dvc-etl --help` lists them (the lazily loaded `simulate` included)."""
    out = [path]
    ctx = group.make_context("dvc-etl", [], resilient_parsing=True)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
            out += _commands(cmd, (*path, name))
        else:
            out.append((*path, name))
    return out


def test_every_command_has_help():
    runner = CliRunner()
    paths = _commands(typer.main.get_command(app))
    names = {" ".join(p) for p in paths}
    assert {"run", "report", "demo", "backfill", "status", "ingest-files", "db upgrade", "db purge",
            "db grant-analyst", "simulate serve", "simulate export"} <= names
    for path in paths:
        res = runner.invoke(app, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        assert "Usage" in res.output and "--help" in res.output, path


def test_version_prints_the_installed_version():
    from importlib.metadata import version

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"dvc-etl {version('dvc-etl')}"
    assert "--version" in CliRunner().invoke(app, ["--help"]).output


def test_simulate_is_listed_in_the_help_and_runs_from_the_simulator_package(tmp_path):
    """`simulate` is a command of the simulator's own package, loaded when used; its help and its
    commands are those of `simulator.cli`."""
    res = CliRunner().invoke(app, ["--help"])
    assert res.exit_code == 0 and "simulate" in res.output and "The built-in simulator" in res.output
    res = CliRunner().invoke(app, ["simulate", "export", "--out", str(tmp_path), "--dossiers", "60", "--format", "csv",
                                   "--layout", "plain", "--limit", "5"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dossiers_plain.csv", "payments_plain.csv"]


@pytest.mark.parametrize("args", [
    ["run", "--since", "2024-13-01"],
    ["run", "--until", "yesterday"],
    ["report", "--from", "2024-01-01", "--to", "30/06/2024"],
    ["report", "--from", "2024-06-30", "--to", "2024-01-01"],
    ["backfill", "--from", "2024-02-30", "--to", "2024-03-31"],
    ["backfill", "--from", "2024-03-01", "--to", "2024-01-31"],
])
def test_bad_dates_exit_2(args, dvc_env, tmp_path):
    dvc_env(DVC_SOURCE_URL="http://127.0.0.1:9", DVC_WAREHOUSE_URL=f"duckdb:///{tmp_path / 'wh.duckdb'}")
    res = CliRunner().invoke(app, args)
    assert res.exit_code == EXIT_USAGE, res.output
    assert "YYYY-MM-DD" in res.output or "before" in res.output
    assert not (tmp_path / "wh.duckdb").exists()  # nothing ran


def test_run_without_source_url_exits_2_naming_the_setting(dvc_env, monkeypatch, tmp_path):
    dvc_env(DVC_WAREHOUSE_URL=f"duckdb:///{tmp_path / 'wh.duckdb'}")
    monkeypatch.delenv("DVC_SOURCE_URL", raising=False)
    res = CliRunner().invoke(app, ["run"])
    assert res.exit_code == EXIT_USAGE
    assert "DVC_SOURCE_URL" in res.output


def test_status_prints_its_sections(dvc_env, tmp_path):
    dvc_env(DVC_WAREHOUSE_URL=f"duckdb:///{tmp_path / 'wh.duckdb'}")
    res = CliRunner().invoke(app, ["status"])
    assert res.exit_code == 0, res.output
    for section in ("Last runs", "Watermarks", "Open quarantine", "Current publications"):
        assert section in res.output
    assert "(none)" in res.output


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def _run_in_pty(args: list[str], env: dict[str, str], timeout: float = 180) -> tuple[int, str]:
    """Run ``dvc-etl`` with its stdout and stderr on a pseudo-terminal, as an operator sees it."""
    code, shown, _ = run_in_pty(args, env, timeout)
    return code, shown


@pytest.mark.slow
def test_run_on_a_terminal_shows_progress_bars_and_run_ids_and_no_secret(prefect_harness, tmp_path):
    from prefect.settings import PREFECT_API_URL

    ds = generate(seed=3, n_dossiers=600)
    with start_server(ds, token=SECRET) as sim:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
        env.update(PREFECT_API_URL=str(PREFECT_API_URL.value()), DVC_SOURCE_URL=sim.url, DVC_SOURCE_TOKEN=SECRET,
                   DVC_WAREHOUSE_URL=f"duckdb:///{tmp_path / 'wh.duckdb'}", DVC_REPORTS_DIR=str(tmp_path / "reports"),
                   DVC_PAGE_SIZE="100", DVC_HASH_KEY="cli-test-key-of-at-least-32-bytes-0001", PREFECT_LOGGING_LEVEL="INFO",
                   COLUMNS="120", DO_NOT_TRACK="1")
        code, shown = _run_in_pty(["run", "--no-publish"], env)
        assert code == 0, shown[-3000:]
        # one bar per extraction and per load, with the counts
        for label in ("dossiers", "dossiers loaded", "payments", "payments loaded"):
            assert f"{label} " in shown, label
        done = re.findall(r"dossiers loaded\s.*?(\d+)/(\d+)", _plain(shown))
        assert done and done[-1][0] == done[-1][1] and int(done[-1][0]) >= 600, done[-3:]
        # log lines carry the run id; the summary names it too
        run_id = shown.split("Run nightly-", 1)[1].split()[0]
        assert f"[nightly-{run_id}] tasks.pipeline" in shown
        assert SECRET not in shown

        # --quiet: no bars, only warnings and the final line
        code, quiet = _run_in_pty(["run", "--no-publish", "-q"], env)
        assert code == 0, quiet[-3000:]
        assert "dossiers loaded" not in quiet and "━" not in quiet
        assert "rows read" in quiet and SECRET not in quiet


def test_run_with_stdout_not_a_terminal_has_no_bars(prefect_harness, dvc_env, tmp_path):
    ds = generate(seed=4, n_dossiers=300)
    with start_server(ds, token=SECRET) as sim:
        dvc_env(DVC_SOURCE_URL=sim.url, DVC_SOURCE_TOKEN=SECRET, DVC_WAREHOUSE_URL=f"duckdb:///{tmp_path / 'wh.duckdb'}")
        res = CliRunner().invoke(app, ["run", "--no-publish"])
    assert res.exit_code == 0, res.output
    assert "dossiers loaded" not in res.output
    assert "Run nightly-" in res.output and "rows read" in res.output
    assert SECRET not in res.output


# ----------------------------------------------------------------------------------------------
# report --period, DVC_PERIOD_CUT, the headline summary
# ----------------------------------------------------------------------------------------------
def _counts(url: str) -> tuple[int, int]:
    """(publications, runs) in the warehouse."""
    from tasks.warehouse import connect

    engine = connect(url)
    try:
        with engine.connect() as c:
            return (c.exec_driver_sql("SELECT count(*) FROM mart.publications").scalar(),
                    c.exec_driver_sql("SELECT count(*) FROM dq.runs").scalar())
    finally:
        engine.dispose()


def _error_lines(res: Any) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("period", ["2024-13", "2024-Q5", "2024-H3", "June", "2024-6", "30/06/2024", "[bold]2024"])
def test_report_bad_period_exits_2_with_one_line_and_publishes_nothing(period, dvc_env, duckdb_url):
    url = duckdb_url
    dvc_env(DVC_WAREHOUSE_URL=url, DVC_PERIOD_CUT="decree-09")
    res = CliRunner().invoke(app, ["report", "--period", period])
    assert res.exit_code == EXIT_USAGE, res.output
    lines = _error_lines(res)
    assert len(lines) == 1, lines
    assert "--period" in lines[0] and repr(period) in lines[0]
    assert "YYYY-MM" in lines[0] and "YYYY-Qn" in lines[0] and "YYYY-H1" in lines[0]
    assert _counts(url) == (0, 0)  # nothing published, no run started


@pytest.mark.parametrize("args", [
    ["report", "--period", "2024-06"],
    ["report", "--from", "2024-06-01", "--to", "2024-06-30"],
    ["status"],
    ["db", "upgrade"],
])
@pytest.mark.parametrize("cut", ["monthly", "Decree 09", ""])
def test_a_bad_period_cut_setting_exits_2_naming_it(args, cut, dvc_env, duckdb_url):
    url = duckdb_url
    dvc_env(DVC_WAREHOUSE_URL=url, DVC_PERIOD_CUT=cut)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == EXIT_USAGE, res.output
    lines = _error_lines(res)
    assert len(lines) == 1, lines
    assert "DVC_PERIOD_CUT" in lines[0] and "calendar" in lines[0] and "decree-09" in lines[0]
    assert "Traceback" not in res.output
    assert _counts(url) == (0, 0)


@pytest.mark.parametrize(("args", "says"), [
    (["report", "--period", "2024-06", "--from", "2024-06-01"], "exclude"),
    (["report", "--period", "2024-06", "--from", "2024-06-01", "--to", "2024-06-30"], "exclude"),
    (["report", "--period", "2024-06", "--to", "2024-06-30"], "exclude"),
    (["report"], "--period"),
    (["report", "--from", "2024-06-01"], "--from and --to"),
    (["report", "--to", "2024-06-30"], "--from and --to"),
])
def test_report_needs_a_period_or_a_range(args, says, dvc_env, duckdb_url):
    url = duckdb_url
    dvc_env(DVC_WAREHOUSE_URL=url)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == EXIT_USAGE, res.output
    assert len(_error_lines(res)) == 1 and says in res.stderr
    assert _counts(url) == (0, 0)


HEADLINE_NEW = {
    "received": 12_345, "resolved": 11_000, "late": 8, "sentence": "08/11.000 hồ sơ trễ hạn, trong đó cấp huyện 05, cấp xã 03",
    "on_time_rate_system": 0.99927, "on_time_rate_paid_only": 0.9995,
    "online_payment_rate_system": 0.5, "online_payment_rate_paid_only": 0.75,
    "indicators": {
        code: {"rate_system": r, "rate_paid_only": None if r is None else min(1.0, r + 0.01), "label": f"label {code}"}
        for code, r in (("on_time", 0.99927), ("online_submission", 0.8), ("online_payment", 0.5),
                        ("e_result", 0.25), ("digitised", 0.123456), ("reuse", None),
                        ("from_national_store", 0.0), ("online_service_uptake", 1.0),
                        ("online_payment_uptake", 0.3333))
    },
}
HEADLINE_OLD = {k: v for k, v in HEADLINE_NEW.items() if k != "indicators"}  # two flat indicators
#: the shape reports.headline has now: <code>_rate_system / <code>_rate_paid_only for the nine codes
HEADLINE_FLAT = {**HEADLINE_OLD, **{f"{code}_rate_{kind}": v[f"rate_{kind}"]
                                    for code, v in HEADLINE_NEW["indicators"].items()
                                    for kind in ("system", "paid_only")}}


@pytest.fixture
def fake_report_flow(monkeypatch):
    """flows.nightly.report and reports.headline replaced by recorders: the CLI's side only (the
    publication is tested in test_reports_publication / end to end)."""
    import flows.nightly
    import tasks.reports

    calls: list[tuple] = []

    def fake_flow(start, end, settings_overrides=None, period_cut=None, period_label=None):
        calls.append((start, end, period_cut, period_label))
        return {"period": [str(start), str(end)], "publication_id": "p1", "as_of": "2024-07-01 00:00:00",
                "workbook": "reports/x.xlsx", "period_cut": period_cut, "period_label": period_label}

    monkeypatch.setattr(flows.nightly, "report", fake_flow)
    monkeypatch.setattr(tasks.reports, "headline", lambda engine, pub: HEADLINE_NEW)
    return calls


@pytest.mark.parametrize(("cut", "period", "start", "end", "label"), [
    ("calendar", "2024-06", "2024-06-01", "2024-06-30", "2024-06"),
    ("decree-09", "2024-06", "2024-05-15", "2024-06-14", "2024-06"),
    ("decree-09", "2025-01", "2024-12-15", "2025-01-14", "2025-01"),
    ("decree-09", "2024-q1", "2023-12-15", "2024-03-14", "2024-Q1"),
    ("calendar", "2024-H2", "2024-07-01", "2024-12-31", "2024-H2"),
    ("decree-09", "2024", "2023-12-15", "2024-12-14", "2024"),
    (None, "2024-H1", "2024-01-01", "2024-06-30", "2024-H1"),  # DVC_PERIOD_CUT unset: calendar
])
def test_report_period_resolves_under_the_configured_cut(cut, period, start, end, label, fake_report_flow, dvc_env,
                                                         monkeypatch, duckdb_url):
    from datetime import date

    dvc_env(DVC_WAREHOUSE_URL=duckdb_url, **({"DVC_PERIOD_CUT": cut} if cut else {}))
    if cut is None:
        monkeypatch.delenv("DVC_PERIOD_CUT", raising=False)
    res = CliRunner().invoke(app, ["report", "--period", period])
    assert res.exit_code == 0, res.output
    assert fake_report_flow == [(date.fromisoformat(start), date.fromisoformat(end), cut or "calendar", label)]
    assert f"Published {label} ({cut or 'calendar'} cut) {start} .. {end}" in res.output


def test_report_from_to_passes_no_period_name(fake_report_flow, dvc_env, duckdb_url):
    from datetime import date

    dvc_env(DVC_WAREHOUSE_URL=duckdb_url, DVC_PERIOD_CUT="decree-09")
    res = CliRunner().invoke(app, ["report", "--from", "2024-06-01", "--to", "2024-06-30"])
    assert res.exit_code == 0, res.output
    assert fake_report_flow == [(date(2024, 6, 1), date(2024, 6, 30), None, None)]
    assert "Published 2024-06-01 .. 2024-06-30" in res.output


def test_the_summary_prints_the_nine_766_rates_system_and_paid_only(fake_report_flow, dvc_env, duckdb_url):
    dvc_env(DVC_WAREHOUSE_URL=duckdb_url)
    res = CliRunner().invoke(app, ["report", "--period", "2024-H1"])
    assert res.exit_code == 0, res.output
    rate_lines = [line for line in res.output.splitlines() if "system" in line and "paid-only" in line]
    assert len(rate_lines) == 9, res.output
    assert "2.1 Tỷ lệ hồ sơ xử lý trước hạn, đúng hạn" in rate_lines[0]
    assert "system  99,93%, paid-only 100,00%" in rate_lines[0]  # paid-only capped at 1.0 by the fixture
    assert "4.2 " in rate_lines[4] and "system  12,35%" in rate_lines[4]
    assert "4.3 " in rate_lines[5] and "system     N/A" in rate_lines[5]
    assert "received 12,345, resolved 11,000" in res.output
    assert "08/11.000 hồ sơ trễ hạn" in res.output


def test_headline_lines_fall_back_to_the_older_headline_keys():
    from tasks.cli import headline_lines

    lines = headline_lines(HEADLINE_OLD)
    rates = [line for line in lines if "paid-only" in line]
    assert len(rates) == 2
    assert rates[0].startswith("2.1 Tỷ lệ hồ sơ xử lý trước hạn, đúng hạn") and "99,93%" in rates[0] and "99,95%" in rates[0]
    assert rates[1].startswith("3.6 Tỷ lệ hồ sơ thanh toán trực tuyến") and "50,00%" in rates[1] and "75,00%" in rates[1]


def test_headline_lines_read_the_flat_keys_of_all_nine_indicators():
    from tasks.cli import headline_lines

    flat = [line for line in headline_lines(HEADLINE_FLAT) if "paid-only" in line]
    nested = [line for line in headline_lines(HEADLINE_NEW) if "paid-only" in line]
    assert len(flat) == 9 and flat == nested


def test_headline_rows_keep_their_labels_for_the_artifact():
    from flows.steps import headline_rows

    for head in (HEADLINE_OLD, HEADLINE_NEW, HEADLINE_FLAT):
        rows = {r["indicator"]: r for r in headline_rows(head)}
        assert rows["Tỷ lệ hồ sơ thanh toán trực tuyến"]["system"] == 0.5
        assert rows["Tỷ lệ hồ sơ thanh toán trực tuyến"]["paid_only"] in (0.75, 0.51)
        assert rows["Hồ sơ tiếp nhận"]["system"] == 12_345
    assert len(headline_rows(HEADLINE_NEW)) == len(headline_rows(HEADLINE_FLAT)) == 9 + 3


def test_settings_errors_never_show_a_secret_value():
    import pydantic

    from tasks.cli import settings_error_lines
    from tasks.settings import Settings

    class Strict(Settings):
        @pydantic.field_validator("smtp_password")
        @classmethod
        def _refuse(cls, v):  # noqa: ANN001, ANN206
            raise ValueError("refused")

    with pytest.raises(pydantic.ValidationError) as info:
        Strict(smtp_password="pw-must-not-print", period_cut="monthly")
    lines = settings_error_lines(info.value)
    assert any(line.startswith("DVC_SMTP_PASSWORD: refused") for line in lines)
    assert any(line.startswith("DVC_PERIOD_CUT:") and "'monthly'" in line for line in lines)
    assert "pw-must-not-print" not in " ".join(lines)


def test_report_period_publishes_the_named_period(prefect_harness, dvc_env, duckdb_url):
    """End to end on an empty warehouse: the publication records the cut and the label."""
    import sqlalchemy as sa

    from tasks.warehouse import connect

    url = duckdb_url
    dvc_env(DVC_WAREHOUSE_URL=url, DVC_PERIOD_CUT="decree-09")
    res = CliRunner().invoke(app, ["report", "--period", "2025-01"])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    assert res.exit_code == 0, res.output
    engine = connect(url)
    try:
        with engine.connect() as c:
            row = c.execute(sa.text("SELECT period_start, period_end, period_cut, period_label, is_current "
                                    "FROM mart.publications")).one()
    finally:
        engine.dispose()
    assert [str(row[0])[:10], str(row[1])[:10], *row[2:]] == ["2024-12-15", "2025-01-14", "decree-09", "2025-01", True]
    assert "Published 2025-01 (decree-09 cut)" in res.output
