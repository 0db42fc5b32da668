"""The data-docs site: one index of every run kept, newest first, the older runs deleted, and the
link alerts carry. Real files; the Great Expectations pages themselves are built in
``test_gx_deferred.py``."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from tasks.data_docs import data_docs_link, list_runs, record_validation, site_link, update_index
from tasks.settings import Settings


def _run(root: Path, run_id: str, day: int, *, failed: list[str] | None = None) -> Path:
    folder = root / run_id
    folder.mkdir(parents=True)
    (folder / "index.html").write_text("<html>GX</html>", encoding="utf-8")
    for part, rows in enumerate((100 * day, 7)):  # two parts of one entity (e.g. backfill partitions)
        record_validation(folder, run_id, f"dossiers@{part}", {
            "entity": "dossiers", "success": not failed or part == 1, "failed_rules": failed if part == 0 else [],
            "rows_checked": rows + 5, "rows_validated": rows, "rows_in_full": rows, "rows_beyond_budget": 5,
            "rows_sampled": 0, "chunks": 1, "chunks_validated": 1}, datetime(2024, 7, day, 2, 0, 5))
    record_validation(folder, run_id, "units@0", {
        "entity": "units", "success": True, "failed_rules": [], "rows_checked": 3, "rows_validated": 3,
        "chunks": 1, "chunks_validated": 1}, datetime(2024, 7, day, 2, 0, 0))
    return folder


def test_index_lists_every_run_newest_first_and_keeps_the_last_n(tmp_path: Path) -> None:
    root = tmp_path / "data-docs"
    for day in (3, 1, 5, 2, 4):  # written out of order
        _run(root, f"nightly-2024070{day}", day, failed=["dossier_status_in_code_list"] if day == 4 else None)
    legacy = root / "nightly-old"  # an older version's folder: pages, no record
    legacy.mkdir()
    (legacy / "index.html").write_text("<html>GX</html>", encoding="utf-8")
    os.utime(legacy, (datetime(2023, 1, 1).timestamp(),) * 2)
    (root / "notes").mkdir()  # not a run's folder: never listed, never deleted
    assert [r.run_id for r in list_runs(root)] == [f"nightly-2024070{d}" for d in (5, 4, 3, 2, 1)] + ["nightly-old"]

    kept = update_index(root, 3)

    assert [r.run_id for r in kept] == ["nightly-20240705", "nightly-20240704", "nightly-20240703"]
    assert sorted(p.name for p in root.iterdir()) == [
        "index.html", "nightly-20240703", "nightly-20240704", "nightly-20240705", "notes"]
    page = (root / "index.html").read_text(encoding="utf-8")
    rows = [page.index(f'href="nightly-2024070{d}/index.html"') for d in (5, 4, 3)]
    assert rows == sorted(rows) and "nightly-20240702" not in page
    assert "2024-07-05 02:00:00" in page  # the run's first validation
    # the entity's parts add up: 500 + 7 of 505 + 12 rows; units on its own line
    assert "dossiers: GX validated 507 of 517 rows (2 of 2 chunks)" in page
    assert "units: GX validated 3 of 3 rows (1 of 1 chunks)" in page
    assert "failed (1 rules): dossiers.dossier_status_in_code_list" in page and page.count(">passed<") == 2
    assert oct((root / "index.html").stat().st_mode & 0o777) == "0o600"


def test_the_run_writing_now_is_never_deleted_and_text_is_escaped(tmp_path: Path) -> None:
    root = tmp_path / "data-docs"
    _run(root, "nightly-b", 2)
    folder = _run(root, "nightly-a", 1)  # the current run, with a clock set back
    record_validation(folder, "<script>x</script>", "units@1", {
        "entity": "<b>units</b>", "success": True, "failed_rules": [], "rows_checked": 1, "rows_validated": 1},
        datetime(2024, 7, 1))
    kept = update_index(root, 1, current="nightly-a")
    assert [r.folder.name for r in kept] == ["nightly-b", "nightly-a"] and folder.is_dir()
    page = (root / "index.html").read_text(encoding="utf-8")
    assert "<b>units" not in page and "&lt;b&gt;units&lt;/b&gt;" in page
    assert update_index(root, 0)  # 0 keeps every run
    assert {r.folder.name for r in list_runs(root)} == {"nightly-a", "nightly-b"}


def test_data_docs_link_is_the_url_when_set_else_the_file(tmp_path: Path) -> None:
    settings = Settings(hash_key="k", reports_dir=tmp_path / "reports")
    root = tmp_path / "reports" / "data-docs"
    assert data_docs_link(settings, "nightly-20240701020000-abc123") is None  # no docs (yet)
    _run(root, "nightly-20240701020000-abc123", 1)
    page = root / "nightly-20240701020000-abc123" / "index.html"
    assert data_docs_link(settings, "nightly-20240701020000-abc123") == str(page.resolve())
    assert site_link(settings) == str((root / "index.html").resolve())
    web = Settings(hash_key="k", reports_dir=tmp_path / "reports", data_docs_url="https://dq.example.gov.vn/docs/")
    assert data_docs_link(web, "nightly-20240701020000-abc123") == \
        "https://dq.example.gov.vn/docs/nightly-20240701020000-abc123/index.html"
    assert site_link(web) == "https://dq.example.gov.vn/docs/index.html"


def test_importing_gx_ahead_runs_no_collection():
    """``preload_gx`` imports GX (seconds, in the GX host) with the cyclic collector paused: the
    import's objects are never garbage, and collecting them repeatedly cost a tenth of it."""
    import subprocess
    import sys

    code = ("import gc\nfrom tasks.data_docs import preload_gx\nruns = []\n"
            "gc.callbacks.append(lambda phase, info: phase == 'start' and runs.append(info['generation']))\n"
            "preload_gx()\nassert gc.isenabled()\nprint(runs)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    # at most the young generation's, due when the collector is enabled again (hundreds without the pause)
    assert out.stdout.strip() in ("[]", "[0]"), out.stdout + out.stderr


def test_what_gx_imports_for_unused_expectations_loads_when_used():
    """``defer_unused_gx_modules``: GX imported without SciPy's statistics and Altair (its import a
    third faster), and an expectation that needs them validates and renders as it does with a plain
    import: the Kullback-Leibler divergence (``scipy.stats``; its renderers import Altair)."""
    import subprocess
    import sys

    code = """
import json, sys
import pandas as pd
from tasks.data_docs import _Deferred, defer_unused_gx_modules
if sys.argv[1] == "deferred":
    defer_unused_gx_modules()
import great_expectations as gx
names = ("scipy.stats", "altair")
before = [isinstance(sys.modules.get(n), _Deferred) for n in names]
ctx = gx.get_context(mode="ephemeral")
batch = (ctx.data_sources.add_pandas("p").add_dataframe_asset("a").add_batch_definition_whole_dataframe("b")
         .get_batch(batch_parameters={"dataframe": pd.DataFrame({"x": [1, 2, 2, 3, 3, 3, 9]})}))
res = batch.validate(gx.expectations.ExpectColumnKLDivergenceToBeLessThan(
    column="x", partition_object={"values": [1, 2, 3, 9], "weights": [0.25] * 4}, threshold=0.05))
res.render()
from scipy import stats
print(json.dumps({"before": before, "after": [isinstance(sys.modules.get(n), _Deferred) for n in names],
                  "result": res.to_json_dict(), "expected": stats.entropy([1 / 7, 2 / 7, 3 / 7, 1 / 7], [0.25] * 4)},
                 default=str))
"""
    got = {}
    for how in ("deferred", "plain"):
        out = subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-3000:]
        got[how] = json.loads(out.stdout.strip().splitlines()[-1])
    deferred, plain = got["deferred"], got["plain"]
    assert deferred["before"] == [True, True] and deferred["after"] == [False, False]  # loaded when used
    assert plain["before"] == [False, False]
    assert deferred["result"]["success"] is False
    assert abs(deferred["result"]["result"]["observed_value"] - deferred["expected"]) < 1e-9
    assert deferred["result"]["rendered_content"] and deferred["result"] == plain["result"]
