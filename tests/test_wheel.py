"""``pip install .`` (not editable) gives a working ``dvc-etl`` (issue "Install like a Python
package").

A wheel is built from a copy of the checkout and installed into a fresh virtual environment; from
an empty folder elsewhere, ``dvc-etl --version`` and ``dvc-etl demo`` run and the demo writes its
DuckDB file and workbook. The SQL, the expectation suites, the reference files and the simulator
come from the wheel, never from the checkout.

To stay fast, the fresh environment reaches the dependencies already installed in the project's
virtual environment through a ``.pth`` line; only the wheel itself is installed. Lines of a
``.pth`` file only extend ``sys.path``: the project's editable install (an import hook run by its
own ``.pth``) is not active there, and the test checks that every ``tasks``/``flows``/
``simulator`` module and data folder in use lies inside the fresh environment. The demo starts its
own temporary Prefect server, as a user's would; its database in the test's PREFECT_HOME is a copy
of the session's already migrated empty one (tests/prefect_db.py), so that start does not spend
~10 s running Prefect's migrations (Prefect's, not the wheel's).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import duckdb
import pytest

from tasks.settings import PROJECT_ROOT
from tests.prefect_db import seed

#: What the build reads: the project's metadata, its packages and the folders shipped as data.
BUILD_INPUTS = ("pyproject.toml", "README.md", "tasks", "flows", "simulator", "sql", "expectations", "reference")
PACKAGES = ("tasks", "flows", "simulator")
#: Top-level folders of the repository -> where the wheel carries them, and what they hold.
SHIPPED = {"sql": "*.sql", "expectations": "*.json", "reference": "*.csv"}

PROBE = """
import json, sys, sysconfig
import flows, simulator.dataset, tasks, tasks.cli
from tasks.settings import EXPECTATIONS_DIR, REFERENCE_DIR, SQL_DIR, Settings
print(json.dumps({
    "purelib": sysconfig.get_path("purelib"),
    "files": [tasks.__file__, flows.__file__, simulator.dataset.__file__, tasks.cli.__file__],
    "dirs": [str(SQL_DIR), str(EXPECTATIONS_DIR), str(REFERENCE_DIR), str(Settings(_env_file=None).reference_dir)],
    "finders": [type(f).__name__ for f in sys.meta_path],
}))
"""


def _version() -> str:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip wheel .` builds, from a copy of the checkout (setuptools writes build/ and
    *.egg-info beside the sources: never in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        path = PROJECT_ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    dist = tmp_path_factory.mktemp("dist")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (whl,) = dist.glob("dvc_etl-*.whl")
    return whl


def test_the_wheel_holds_every_module_and_shipped_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(PROJECT_ROOT).as_posix() for pkg in PACKAGES for p in (PROJECT_ROOT / pkg).rglob("*.py")
               if "__pycache__" not in p.parts}
    assert modules and not modules - names, f"modules missing from the wheel: {sorted(modules - names)}"
    for folder, pattern in SHIPPED.items():
        files = {f"tasks/shipped/{p.relative_to(PROJECT_ROOT).as_posix()}" for p in (PROJECT_ROOT / folder).rglob(pattern)}
        assert files and not files - names, f"{folder}/ files missing from the wheel: {sorted(files - names)}"
    stray = sorted(n for n in names if n.split("/")[0] not in PACKAGES and not n.split("/")[0].endswith(".dist-info"))
    assert not stray, f"files outside the packages: {stray}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "dvc-etl = tasks.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_runs_the_demo_from_an_empty_folder(wheel: Path, tmp_path: Path,
                                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies (not this project) from the project's environment
    (purelib / "_dvc_etl_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
                          "--quiet", str(wheel)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    work = tmp_path / "elsewhere"  # an empty folder, far from the checkout
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DVC_") and k not in ("PYTHONPATH", "PREFECT_API_URL", "VIRTUAL_ENV")}
    seed(tmp_path_factory, tmp_path / "prefect-home" / "prefect.db")  # the temporary server's database
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               GX_ANALYTICS_ENABLED="false", PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")

    probe = subprocess.run([py, "-c", PROBE], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout)
    assert Path(seen["purelib"]) == purelib
    for path in seen["files"] + seen["dirs"]:
        assert Path(path).is_relative_to(purelib), f"{path} is not the installed copy (in {purelib})"
    assert not [f for f in seen["finders"] if "Editable" in f], seen["finders"]

    version = subprocess.run([venv / "bin" / "dvc-etl", "--version"], cwd=work, env=env, capture_output=True,
                             text=True, timeout=120)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"dvc-etl {_version()}"

    demo = subprocess.run([venv / "bin" / "dvc-etl", "demo", "--dossiers", "600", "-q"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "1 period(s) published" in demo.stdout, demo.stdout
    assert sorted(p.name for p in work.iterdir()) == ["demo"]  # the demo's folder, nothing else
    workbook = work / "demo" / "reports" / "bao-cao-20240101-20240630.xlsx"
    assert workbook.is_file() and workbook.stat().st_size > 10_000
    db = work / "demo" / "dvc.duckdb"
    con = duckdb.connect(str(db), read_only=True)
    try:
        (published,) = con.execute("SELECT count(*) FROM mart.publications WHERE is_current").fetchone()
        (dossiers,) = con.execute("SELECT count(*) FROM core.dossiers").fetchone()
    finally:
        con.close()
    assert published == 1 and dossiers >= 500
