"""The ``dvc-etl`` command line: help everywhere, exit codes, status, progress bars on a terminal
only, run ids in the log lines, no secrets in the output."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tasks.cli import EXIT_USAGE, app
from tasks.simulator.dataset import generate
from tasks.simulator.server import start_server

BIN = Path(sys.executable).parent
SECRET = "tok-do-not-print-5f3a9"


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
            out += _commands(cmd, (*path, name))
        else:
            out.append((*path, name))
    return out


def test_every_command_has_help():
    runner = CliRunner()
    paths = _commands(typer.main.get_command(app))
    names = {" ".join(p) for p in paths}
    assert {"run", "report", "demo", "backfill", "status", "ingest-files", "db upgrade", "simulate serve"} <= names
    for path in paths:
        res = runner.invoke(app, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        assert "Usage" in res.output and "--help" in res.output, path


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
    main, secondary = pty.openpty()
    proc = subprocess.Popen([str(BIN / "dvc-etl"), *args], stdin=subprocess.DEVNULL, stdout=secondary,
                            stderr=secondary, env=env, start_new_session=True)
    os.close(secondary)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    data = os.read(main, 65536)
                except OSError:  # the child closed the terminal
                    data = b""
                if not data and proc.poll() is not None:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            pytest.fail("dvc-etl did not finish in time:\n" + b"".join(chunks).decode(errors="replace")[-3000:])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        os.close(main)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_run_on_a_terminal_shows_progress_bars_and_run_ids_and_no_secret(prefect_harness, tmp_path):
    from prefect.settings import PREFECT_API_URL

    ds = generate(seed=3, n_dossiers=600)
    with start_server(ds, token=SECRET) as sim:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
        env.update(PREFECT_API_URL=str(PREFECT_API_URL.value()), DVC_SOURCE_URL=sim.url, DVC_SOURCE_TOKEN=SECRET,
                   DVC_WAREHOUSE_URL=f"duckdb:///{tmp_path / 'wh.duckdb'}", DVC_REPORTS_DIR=str(tmp_path / "reports"),
                   DVC_PAGE_SIZE="100", DVC_HASH_KEY="cli-test-key", PREFECT_LOGGING_LEVEL="INFO",
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
