"""The inbox: the clerk's Excel/CSV exports, dropped in a folder on the nights the API is down.

A folder with good exports, the same export twice under two names, an export with bad values and
broken files goes through the ``dvc-inbox`` flow (Prefect): good files load and move to
``processed/``, the duplicate is recognised by its content and not loaded twice, broken files move
to ``failed/`` with a ``.error.txt`` sidecar that names the problem, and per file rows read =
rows loaded + rows quarantined. Then ``dvc-etl ingest-files`` (the CLI app): exit 0 on good
files, 1 with the message when one is broken.
"""

from __future__ import annotations

import csv
import shutil
import unicodedata
from pathlib import Path

import pytest
import sqlalchemy as sa

from simulator.dataset import generate
from simulator.export import export_files
from tasks.warehouse import connect

FIXTURES = Path(__file__).parent / "fixtures" / "files"
N_DOSSIERS = 300

# name in the inbox -> (expected status, where it comes from)
GOOD_DOSSIERS = "a_so_theo_doi_ho_so.xlsx"
DUPLICATE = "b_so_theo_doi_ho_so (1).xlsx"  # the same file, saved twice by the clerk
GOOD_PAYMENTS = "c_thanh_toan.csv"  # three mistyped rows: quarantined, the rest loads
BAD_VALUES = "d_ho_so_gia_tri_loi.xlsx"  # every row unreadable: all quarantined, the file is not "broken"
BROKEN = {  # name -> (fixture, what the error must say)
    "e_hong.xlsx": ("broken_corrupt.xlsx", "not a readable .xlsx workbook"),
    "f_thieu_cot.xlsx": ("broken_missing_ma_ho_so.xlsx", "missing required column 'Mã hồ sơ'"),
    "g_excel_cu.xls": ("broken_legacy.xls", "Excel 97-2003"),
    "h_van_ban_hong.csv": ("broken_cp1258.csv", "not UTF-8 text"),  # cp1258 with '?' for letters it lacks
}
NOT_AN_EXPORT = "ghi_chu.txt"


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    ds = generate(seed=3, n_dossiers=N_DOSSIERS)
    out = tmp_path_factory.mktemp("exports")
    return {p.name: p for p in export_files(ds, out, layouts=("ugly",), formats=("xlsx", "csv"))}


def _norm(label: str) -> str:
    return " ".join(unicodedata.normalize("NFC", label).replace("\u00a0", " ").split()).casefold()


def with_bad_values(src: Path, dst: Path) -> None:
    """The payment export with three rows a clerk mistyped: two with a status that is not a payment
    status, one with 31 February as its update date. Those rows are quarantined, the rest loads."""
    with src.open(encoding="utf-8-sig", newline="") as f:
        grid = list(csv.reader(f, delimiter=";"))
    head = next(i for i, r in enumerate(grid) if any(_norm(v) == "mã thanh toán" for v in r))
    col = {_norm(v): j for j, v in enumerate(grid[head]) if v}
    data = [r for r in grid[head + 2:] if len(r) > col["mã thanh toán"] and r[col["mã thanh toán"]].strip()
            and not r[0].startswith("Tổng")]
    data[0][col["trạng thái"]] = data[5][col["trạng thái"]] = "Đang xử lý"
    data[9][col["ngày cập nhật"]] = "31/02/2024"
    with dst.open("w", encoding="utf-8-sig", newline="") as f:
        csv.writer(f, delimiter=";").writerows(grid)


def fill_inbox(inbox: Path, exports: dict[str, Path]) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    shutil.copy(exports["dossiers_ugly.xlsx"], inbox / GOOD_DOSSIERS)
    shutil.copy(exports["dossiers_ugly.xlsx"], inbox / DUPLICATE)
    with_bad_values(exports["payments_ugly.csv"], inbox / GOOD_PAYMENTS)
    shutil.copy(FIXTURES / "04_dossiers_bad_values.xlsx", inbox / BAD_VALUES)
    for name, (fixture, _) in BROKEN.items():
        shutil.copy(FIXTURES / fixture, inbox / name)
    (inbox / NOT_AN_EXPORT).write_text("Gửi anh Tuấn: file tháng 1\n", encoding="utf-8")


@pytest.fixture(params=["duckdb", pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.slow])])
def wh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Like ``warehouse_url``, for the heavier tests: the PostgreSQL variant runs with ``make test-all``."""
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'wh.duckdb'}"
    return request.getfixturevalue("pg_url")


def rows(url: str, sql: str, **params) -> list[tuple]:
    engine = connect(url)
    try:
        with engine.connect() as c:
            return [tuple(r) for r in c.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def test_inbox_flow_loads_good_files_once_and_parks_broken_ones(
    prefect_harness, exports: dict[str, Path], wh_url: str, dvc_env, tmp_path: Path
) -> None:
    from flows.ops import inbox as inbox_flow

    inbox = tmp_path / "inbox"
    dvc_env(DVC_WAREHOUSE_URL=wh_url, DVC_INBOX_DIR=str(inbox))
    fill_inbox(inbox, exports)

    outcomes = {Path(o["path"]).name: o for o in inbox_flow()}

    assert set(outcomes) == {GOOD_DOSSIERS, DUPLICATE, GOOD_PAYMENTS, BAD_VALUES, *BROKEN}  # not the .txt
    assert {n: o["status"] for n, o in outcomes.items()} == {
        GOOD_DOSSIERS: "loaded", DUPLICATE: "duplicate", GOOD_PAYMENTS: "loaded", BAD_VALUES: "loaded",
        **{n: "failed" for n in BROKEN},
    }
    good, pay, bad = outcomes[GOOD_DOSSIERS], outcomes[GOOD_PAYMENTS], outcomes[BAD_VALUES]
    assert good["entity"] == "dossiers" and good["rows_read"] == N_DOSSIERS
    assert good["rows_quarantined"] == 0
    assert pay["entity"] == "payments" and pay["rows_quarantined"] == 3 and pay["rows_loaded"] > 100
    assert bad["entity"] == "dossiers" and bad["rows_read"] == bad["rows_quarantined"] == 3
    for o in (good, pay, bad):
        assert o["rows_read"] == o["rows_loaded"] + o["rows_quarantined"], o
    assert outcomes[DUPLICATE]["rows_read"] == 0

    # where the files went
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == [NOT_AN_EXPORT]
    processed = inbox / "processed"
    assert sorted(p.name for p in processed.iterdir()) == sorted([GOOD_DOSSIERS, DUPLICATE, GOOD_PAYMENTS, BAD_VALUES])
    failed = inbox / "failed"
    assert sorted(p.name for p in failed.iterdir()) == sorted([*BROKEN, *(f"{n}.error.txt" for n in BROKEN)])
    for name, (_, problem) in BROKEN.items():
        sidecar = (failed / f"{name}.error.txt").read_text(encoding="utf-8")
        assert problem in sidecar and name in sidecar, sidecar
        assert problem in outcomes[name]["message"]

    # the duplicate was not loaded twice: one file_loads row per content, counts as reported
    loads = rows(wh_url, "SELECT file_name, entity, rows_read, rows_loaded, rows_quarantined FROM dq.file_loads")
    assert sorted(loads) == sorted(
        (o["path"].rsplit("/", 1)[-1], o["entity"], o["rows_read"], o["rows_loaded"], o["rows_quarantined"])
        for o in (good, pay, bad)
    )
    (run_id, status, message), = rows(wh_url, "SELECT run_id, status, message FROM dq.runs")
    assert status == "failed" and all(name in message for name in BROKEN), message
    summary = dict(rows(wh_url, "SELECT entity, rows_read FROM dq.run_summary WHERE run_id = :r", r=run_id))
    assert summary == {"dossiers": good["rows_read"] + bad["rows_read"], "payments": pay["rows_read"]}
    assert rows(wh_url, "SELECT count(*) FROM core.dossiers") == [(good["rows_loaded"] + bad["rows_loaded"],)]
    assert rows(wh_url, "SELECT count(*) FROM core.payments") == [(pay["rows_loaded"],)]
    quarantined = dict(rows(wh_url, "SELECT entity, count(DISTINCT record_key) FROM dq.quarantine "
                                           "GROUP BY entity"))
    assert quarantined == {"dossiers": bad["rows_quarantined"], "payments": pay["rows_quarantined"]}

    # the clerk drops the same export again next week: recognised, not loaded, filed away
    shutil.copy(exports["dossiers_ugly.xlsx"], inbox / GOOD_DOSSIERS)
    again = inbox_flow()
    assert [(Path(o["path"]).name, o["status"]) for o in again] == [(GOOD_DOSSIERS, "duplicate")]
    assert (processed / "a_so_theo_doi_ho_so.1.xlsx").exists()
    assert len(rows(wh_url, "SELECT * FROM dq.file_loads")) == 3
    assert rows(wh_url, "SELECT count(*) FROM core.dossiers") == [(good["rows_loaded"] + bad["rows_loaded"],)]


def test_cli_ingest_files_exit_codes_and_messages(exports: dict[str, Path], duckdb_url: str, dvc_env,
                                                   tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tasks.cli import app

    dvc_env(DVC_WAREHOUSE_URL=duckdb_url)
    good, pay = exports["dossiers_ugly.xlsx"], exports["payments_ugly.csv"]
    broken = tmp_path / "thieu_cot.xlsx"
    shutil.copy(FIXTURES / "broken_missing_ma_ho_so.xlsx", broken)
    runner = CliRunner()

    ok = runner.invoke(app, ["ingest-files", str(good), str(pay)])
    assert ok.exit_code == 0, ok.output
    assert f"loaded dossiers read {N_DOSSIERS:,} = loaded" in ok.output
    assert "loaded payments read" in ok.output
    assert good.exists() and pay.exists()  # the command leaves the files where they are

    bad = runner.invoke(app, ["ingest-files", str(good), str(broken)])
    assert bad.exit_code == 1, bad.output
    assert "missing required column 'Mã hồ sơ'" in bad.output and "thieu_cot.xlsx" in bad.output
    assert f"{good}: duplicate" in bad.output  # already loaded by the first call: not loaded twice

    missing = runner.invoke(app, ["ingest-files", str(tmp_path / "khong_co.xlsx")])
    assert missing.exit_code == 2  # bad usage: the path does not exist

    assert len(rows(duckdb_url, "SELECT * FROM dq.file_loads")) == 2
    assert [r[0] for r in rows(duckdb_url, "SELECT status FROM dq.runs ORDER BY started_at")] == ["success", "failed"]


# --- the clerks' real files (issue 16) --------------------------------------------------------


def test_inbox_loads_xls_html_and_windows_1258_and_parks_a_wrong_format(duckdb_url: str, tmp_path: Path) -> None:
    """One dossier list as a real .xls (made by LibreOffice), as an HTML table saved as .xls and
    as a CSV, both in Windows-1258: each loads through the inbox (parsed in the child process)
    with the rows of the .xlsx. An Excel 2003 XML spreadsheet and a CSV in no encoding that reads
    go to failed/ with their reason. (Every format and encoding is parsed in test_source_files.)"""
    from tasks.inbox import process_inbox
    from tasks.settings import Settings
    from tasks.warehouse import upgrade
    from tests.test_source_files import REAL_ROWS, to_xls, write_real_files

    made = write_real_files(tmp_path / "made")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(to_xls([made["so_theo_doi.xlsx"]], tmp_path / "xls")["so_theo_doi"], inbox / "a_so_theo_doi.xls")
    shutil.copy(made["so_theo_doi_1258.html.xls"], inbox / "b_so_theo_doi_web.xls")
    shutil.copy(made["so_theo_doi_1258.csv"], inbox / "c_so_theo_doi.csv")
    wrong = {"x_excel_2003.xls": (b'<?xml version="1.0"?>\n<Workbook xmlns="urn:schemas-microsoft-com:office:'
                                  b'spreadsheet"/>', "an Excel 2003 XML spreadsheet"),
             "y_ma_hong.csv": (b"M\x81 h\x81 s\x81;Tr\x81ng th\x81i\n", "not UTF-8 text")}
    for name, (content, _) in wrong.items():
        (inbox / name).write_bytes(content)
    settings = Settings(warehouse_url=duckdb_url, inbox_dir=inbox, hash_key="test-hash-key",
                        reports_dir=tmp_path / "reports")
    engine = connect(duckdb_url)
    upgrade(engine)
    try:
        outcomes = {Path(o.path).name: o for o in process_inbox(engine, settings, "real-files")}
    finally:
        engine.dispose()

    good = {n: o for n, o in outcomes.items() if n not in wrong}
    assert sorted(good) == ["a_so_theo_doi.xls", "b_so_theo_doi_web.xls", "c_so_theo_doi.csv"]
    assert {(o.status, o.entity, o.rows_read, o.rows_loaded, o.rows_quarantined) for o in good.values()} == {
        ("loaded", "dossiers", len(REAL_ROWS), len(REAL_ROWS), 0)}, outcomes
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == sorted(good)
    for name, (_, reason) in wrong.items():
        assert outcomes[name].status == "failed" and reason in outcomes[name].message
        note = (inbox / "failed" / f"{name}.error.txt").read_text(encoding="utf-8")
        assert reason in note and name in note
    assert rows(duckdb_url, "SELECT count(*), count(DISTINCT content_hash) FROM dq.file_loads") == [(3, 3)]
    assert sorted(rows(duckdb_url, "SELECT ma_ho_so FROM core.dossiers")) == sorted(
        (cells[0],) for cells, _ in REAL_ROWS)


# --- hostile files (issue 14): a bad file never blocks the inbox or kills the run -------------


def _mode(path: Path) -> int:
    import stat

    return stat.S_IMODE(path.lstat().st_mode)


def test_inbox_flow_parks_each_hostile_file_with_its_reason_and_loads_the_good_ones(
    prefect_harness, dvc_env, tmp_path: Path
) -> None:
    import os

    from flows.ops import inbox as inbox_flow
    from tests.test_source_files import big_csv, good_rows, hostile_files, make_xlsx, rezip, xfd_padded_xlsx

    inbox = tmp_path / "inbox"
    wh = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    dvc_env(DVC_WAREHOUSE_URL=wh, DVC_INBOX_DIR=str(inbox), DVC_FILE_PARSE_MEMORY_MB="256",
            DVC_FILE_MAX_UNPACKED_BYTES=str(4 * 2**20))
    reasons = {n: r for n, (_, r) in hostile_files(inbox).items()}
    # the good ones, among them a sheet padded to column XFD (read cheaply, loads)
    shutil.copy(FIXTURES / "01_dossiers_titles_sections.xlsx", inbox / "a_good.xlsx")
    xfd_padded_xlsx(inbox / "b_good_xfd_padded.xlsx", good_rows("PAD", 50))
    # over the child's memory limit; over the unpacked limit (8 MiB of zeros in 10 kB)
    big_csv(inbox / "n_memory.csv")
    reasons["n_memory.csv"] = "DVC_FILE_PARSE_MEMORY_MB"
    make_xlsx(tmp_path / "base.xlsx", good_rows("BOMB"))
    rezip(tmp_path / "base.xlsx", inbox / "n_bomb.xlsx", {"xl/media/zeros.bin": b"\0" * (8 * 2**20)})
    reasons["n_bomb.xlsx"] = "DVC_FILE_MAX_UNPACKED_BYTES"
    # a link to a readable export outside the inbox: refused, never followed, never loaded
    outside = tmp_path / "outside.csv"
    outside.write_text("Mã hồ sơ,Trạng thái\nSECRET-1,Đang xử lý\n", encoding="utf-8")
    (inbox / "s_link.csv").symlink_to(outside)
    reasons["s_link.csv"] = "symbolic link"
    # a name that would forge a log line
    forged = "0_bad\nERROR all files loaded.csv"  # sorts first: the head of the run's message
    (inbox / forged).write_bytes(b"M\xe3 h\xf4 s\xf4\n")
    reasons[forged] = "not UTF-8 text"
    # failed/ made by someone else, world-readable, with a note name planted as a link to a victim
    failed = inbox / "failed"
    failed.mkdir(mode=0o755)
    os.chmod(failed, 0o755)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me", encoding="utf-8")
    (failed / "m11_cp1258.csv.error.txt").symlink_to(victim)

    outcomes = {Path(o["path"]).name: o for o in inbox_flow()}

    assert {n: o["status"] for n, o in outcomes.items()} == {
        "a_good.xlsx": "loaded", "b_good_xfd_padded.xlsx": "loaded", **{n: "failed" for n in reasons}}
    assert outcomes["a_good.xlsx"]["rows_read"] == 3 and outcomes["b_good_xfd_padded.xlsx"]["rows_read"] == 50
    assert [p.name for p in inbox.iterdir() if not p.is_dir()] == []
    processed = inbox / "processed"
    assert sorted(p.name for p in processed.iterdir()) == ["a_good.xlsx", "b_good_xfd_padded.xlsx"]
    assert _mode(processed) == _mode(failed) == 0o700  # created or tightened: owner only
    assert all(_mode(p) == 0o600 for p in processed.iterdir())
    for name, reason in reasons.items():
        moved = failed / ("m11_cp1258.1.csv" if name == "m11_cp1258.csv" else name)
        assert os.path.lexists(moved), name
        note = moved.with_name(moved.name + ".error.txt")
        text = note.read_text(encoding="utf-8")
        assert reason in text and reason in outcomes[name]["message"], (name, text)
        assert _mode(note) == 0o600 and not note.is_symlink()
        if name != "s_link.csv":
            assert _mode(moved) == 0o600
    # the link moved as a link; its target neither moved, changed nor loaded
    assert (failed / "s_link.csv").is_symlink() and os.readlink(failed / "s_link.csv") == str(outside)
    assert outside.read_text(encoding="utf-8").startswith("Mã hồ sơ")
    # the planted link was not written through
    assert victim.read_text(encoding="utf-8") == "keep me" and (failed / "m11_cp1258.csv.error.txt").is_symlink()
    # the forged name is quoted in the messages: no line starts with the forged text
    (run_status, message), = rows(wh, "SELECT status, message FROM dq.runs")
    assert run_status == "failed" and "\nERROR" not in message and repr(str(inbox / forged)) in message
    assert "\nERROR" not in outcomes[forged]["message"] and "0_bad\\nERROR" in outcomes[forged]["message"]
    # what loaded: exactly the two good files
    keys = [r[0] for r in rows(wh, "SELECT ma_ho_so FROM core.dossiers")]
    assert len(keys) == 3 + 50 - outcomes["b_good_xfd_padded.xlsx"]["rows_quarantined"]
    assert not [k for k in keys if "SECRET" in k or "HOSTILE" in k or "BOMB" in k]


def test_cli_ingest_files_reports_hostile_files_and_loads_the_good_one(dvc_env, tmp_path: Path) -> None:
    """``dvc-etl ingest-files good hostile...``: the good file loads, each hostile one is named with
    its reason, exit code 1 (some files failed); files stay where they are."""
    from typer.testing import CliRunner

    from tasks.cli import app
    from tests.test_source_files import hostile_files

    wh = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    dvc_env(DVC_WAREHOUSE_URL=wh)
    folder = tmp_path / "files"
    reasons = {n: r for n, (_, r) in hostile_files(folder).items()
               if n.startswith(("m3_", "m5_", "m6_", "m7_", "m8_", "m10_", "m11_"))}
    forged = folder / "bad\n[bold]name[red].csv"
    forged.write_bytes(b"\xff\xfe\x00")
    good = folder / "good.xlsx"
    shutil.copy(FIXTURES / "01_dossiers_titles_sections.xlsx", good)

    result = CliRunner().invoke(app, ["ingest-files", *(str(folder / n) for n in reasons), str(good), str(forged)])

    assert result.exit_code == 1, result.output
    assert f"{good}: loaded dossiers read 3 = loaded" in result.output
    for name, reason in reasons.items():
        assert name in result.output and reason in result.output, name
    assert repr(str(forged)) in result.output and "UTF-16" in result.output
    assert all((folder / n).exists() for n in reasons) and forged.exists()
    assert rows(wh, "SELECT count(*) FROM core.dossiers") == [(3,)]
    assert rows(wh, "SELECT status FROM dq.runs") == [("failed",)]


def test_inbox_flow_skips_at_once_while_another_run_holds_the_warehouse(
    prefect_harness, warehouse_url: str, dvc_env, tmp_path: Path
) -> None:
    """A long backfill holds the warehouse's writer lock (a real lock: the DuckDB file's flock, the
    PostgreSQL advisory lock, and its 'running' dq.runs row). The inbox run does not wait
    DVC_LOCK_WAIT_SECONDS (30 minutes): it ends at once in the state ``Skipped`` naming that run,
    every file where the clerk left it and nothing recorded. Once the lock is free the next run
    takes the files and, as one could not be read, ends ``FilesRejected`` (Prefect's API says so)."""
    import time

    from prefect.client.orchestration import get_client

    from flows.ops import inbox as inbox_flow
    from tasks.runs import start_run
    from tasks.warehouse import upgrade, writer_lock

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(FIXTURES / "05_dossiers_bom_semicolon.csv", inbox / "a_ho_so.csv")
    shutil.copy(FIXTURES / "broken_corrupt.xlsx", inbox / "b_hong.xlsx")
    before = {p.name: p.read_bytes() for p in inbox.iterdir()}
    # a run that waited would fail after a minute with "warehouse busy" (the default is 30 minutes)
    dvc_env(DVC_WAREHOUSE_URL=warehouse_url, DVC_INBOX_DIR=str(inbox), DVC_LOCK_WAIT_SECONDS="60")
    engine = connect(warehouse_url)
    upgrade(engine)
    holder = "backfill-20240701000000-0busy0"
    with writer_lock(engine, holder=holder):
        start_run(engine, holder, "backfill", "default")
        t0 = time.monotonic()
        skipped = inbox_flow(return_state=True)
        took = time.monotonic() - t0
    assert (skipped.type.value, skipped.name) == ("COMPLETED", "Skipped") and skipped.result() == []
    assert skipped.message == f"warehouse busy with run {holder}; files stay in the inbox for the next run (2 waiting)"
    assert took < 30, took
    assert {p.name: p.read_bytes() for p in inbox.iterdir()} == before  # untouched, no processed/ or failed/
    assert rows(warehouse_url, "SELECT run_id FROM dq.runs") == [(holder,)]

    done = inbox_flow(return_state=True)
    assert (done.type.value, done.name) == ("COMPLETED", "FilesRejected")
    assert {Path(o["path"]).name: o["status"] for o in done.result()} == {"a_ho_so.csv": "loaded",
                                                                          "b_hong.xlsx": "failed"}
    assert done.message.endswith("1 of 2 files moved to failed/: b_hong.xlsx")
    with get_client(sync_client=True) as client:  # what the UI and the automations see
        states = [client.read_flow_run(s.state_details.flow_run_id).state for s in (skipped, done)]
    assert [(s.type.value, s.name) for s in states] == [("COMPLETED", "Skipped"), ("COMPLETED", "FilesRejected")]
    engine.dispose()
