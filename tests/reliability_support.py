"""Shared helpers of the reliability tests (tests/test_reliability_*.py).

Real processes, real warehouses: ``dvc-etl run`` is started as a subprocess (so SIGKILL is a real
kill), pointed at a simulator served from the test process and at the session's Prefect test
server (so a run does not spend ~10 s starting its own temporary server).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tasks.reports import REPORT_TABLES, UNPERIODED_TABLES
from tasks.warehouse import connect
from tests.warehouse_state import FINGERPRINT_TABLES, fingerprint

DVC_ETL = str(Path(sys.executable).with_name("dvc-etl"))
#: The warehouse tables compared after a crash and a rerun: raw, core, dq (tests.warehouse_state) and
#: the current report tables (publication ids and timestamps left out).
COMPARED_TABLES = [*FINGERPRINT_TABLES, *(f"mart.{t}" for t in REPORT_TABLES)]


def prefect_api_url() -> str:
    """The API URL of the Prefect server of the ``prefect_harness`` fixture (call inside it)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "no Prefect API URL: use the prefect_harness fixture"
    return url


def cli_env(workdir: Path, warehouse_url: str, source_url: str, token: str, **extra: str) -> dict[str, str]:
    """Environment of a ``dvc-etl`` subprocess: no inherited DVC_* values, small retry budgets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    env.update(
        PREFECT_HOME=str(workdir / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        GX_ANALYTICS_ENABLED="false",
        PYTHONUNBUFFERED="1",
        DVC_SOURCE_URL=source_url,
        DVC_SOURCE_TOKEN=token,
        DVC_WAREHOUSE_URL=warehouse_url,
        DVC_REPORTS_DIR=str(workdir / "reports"),
        DVC_INBOX_DIR=str(workdir / "inbox"),
        DVC_HASH_KEY="reliability-hash-key-of-at-least-32-bytes",
        DVC_HTTP_MAX_RETRIES="2",
        DVC_HTTP_RETRY_BUDGET="10",
        DVC_HTTP_BACKOFF_MAX="0.5",
        DVC_HTTP_CONNECT_TIMEOUT="3",
        DVC_HTTP_READ_TIMEOUT="20",
    )
    try:
        env["PREFECT_API_URL"] = prefect_api_url()
    except Exception:  # noqa: BLE001 - outside the harness the run starts its own server
        pass
    env.update(extra)
    return env


def start_cli(args: list[str], env: Mapping[str, str], cwd: Path) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([DVC_ETL, *args], env=dict(env), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run_cli(args: list[str], env: Mapping[str, str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([DVC_ETL, *args], env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout)


def warehouse_state(url: str) -> dict[str, str]:
    """Fingerprint of raw/core/dq and of the current report tables."""
    engine = connect(url)
    try:
        return fingerprint(engine, COMPARED_TABLES)
    finally:
        engine.dispose()


def current_periods(url: str) -> list[tuple[Any, Any]]:
    engine = connect(url)
    try:
        with engine.connect() as c:
            return sorted(tuple(r) for r in c.execute(sa.text(
                "SELECT period_start, period_end FROM mart.publications WHERE is_current")))
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------------------------
# "never a half-published period"
# ----------------------------------------------------------------------------------------------
def mart_problems(conn: sa.Connection) -> list[str]:
    """Every way ``mart`` could show a half-published period, checked on one snapshot.

    - at most one current publication per period;
    - every row of a current report table belongs to the current publication of its period
      (the work lists without a period: to the latest current publication), and the current table holds
      exactly that publication's history rows;
    - no history row belongs to a publication that ``mart.publications`` does not record.
    """
    problems: list[str] = []
    pubs = conn.execute(sa.text(
        "SELECT publication_id, period_start, period_end, is_current, published_at FROM mart.publications")).fetchall()
    known = {p.publication_id for p in pubs}
    current: dict[tuple, str] = {}
    for p in pubs:
        if p.is_current:
            key = (p.period_start, p.period_end)
            if key in current:
                problems.append(f"two current publications of {key}")
            current[key] = p.publication_id
    current_ids = set(current.values())
    for table in REPORT_TABLES:
        hist = dict(conn.execute(sa.text(
            f"SELECT publication_id, count(*) FROM mart.{table}_history GROUP BY publication_id")).fetchall())
        orphans = set(hist) - known
        if orphans:
            problems.append(f"{table}_history has rows of unrecorded publications {sorted(orphans)}")
        if table in UNPERIODED_TABLES:
            rows = dict(conn.execute(sa.text(
                f"SELECT publication_id, count(*) FROM mart.{table} GROUP BY publication_id")).fetchall())
            if len(rows) > 1:
                problems.append(f"{table} mixes publications {sorted(rows)}")
            for pid, n in rows.items():
                if pid not in current_ids:
                    problems.append(f"{table} shows publication {pid} that is not current")
                elif n != hist.get(pid, 0):
                    problems.append(f"{table} shows {n} rows of {pid}, its history has {hist.get(pid, 0)}")
            continue
        rows = conn.execute(sa.text(
            f"SELECT period_start, period_end, publication_id, count(*) FROM mart.{table} "
            "GROUP BY period_start, period_end, publication_id")).fetchall()
        seen: dict[tuple, list[str]] = {}
        for ps, pe, pid, n in rows:
            key = (ps, pe)
            seen.setdefault(key, []).append(pid)
            if current.get(key) != pid:
                problems.append(f"{table} shows {pid} for {key}, the current publication is {current.get(key)}")
            elif n != hist.get(pid, 0):
                problems.append(f"{table} shows {n} rows of {pid}, its history has {hist.get(pid, 0)}")
        for key, pid in current.items():
            if hist.get(pid, 0) and key not in seen:
                problems.append(f"{table} lacks the rows of current publication {pid}")
    return problems


class MartPoller:
    """A reader that checks :func:`mart_problems` on a fresh REPEATABLE READ snapshot of a
    PostgreSQL warehouse as often as it can, while a run writes (and gets killed)."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url, isolation_level="REPEATABLE READ")
        self.snapshots = 0
        self.snapshots_with_publications = 0
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self.engine.connect() as c:
                    if not c.execute(sa.text(
                            "SELECT 1 FROM information_schema.tables WHERE table_schema = 'mart' "
                            "AND table_name = 'rpt_unpaid_results_history'")).first():
                        c.rollback()
                        time.sleep(0.05)
                        continue
                    found = mart_problems(c)
                    n = c.execute(sa.text("SELECT count(*) FROM mart.publications")).scalar_one()
                    c.rollback()
            except sa.exc.DBAPIError:  # a migration in flight: schema not complete yet
                time.sleep(0.05)
                continue
            self.snapshots += 1
            self.snapshots_with_publications += bool(n)
            self.problems.extend(found)
            time.sleep(0.02)

    def __enter__(self) -> MartPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.engine.dispose()


def small_dataset(seed: int = 11, n_dossiers: int = 600):
    from simulator.dataset import generate

    return generate(seed=seed, n_dossiers=n_dossiers, start=date(2024, 1, 1), end=date(2024, 3, 31))


# ----------------------------------------------------------------------------------------------
# One simulator and one baseline (uninterrupted run) per backend for the whole session
# ----------------------------------------------------------------------------------------------
TOKEN = "reliability-token"
PAGE_SIZE = "100"
_SIM: list[Any] = []
_BASELINES: dict[str, tuple[dict[str, str], list]] = {}


def shared_simulator():
    """The simulator every reliability test reads (started once, stopped at interpreter exit)."""
    if not _SIM:
        import atexit

        from simulator.server import start_server

        server = start_server(small_dataset(), token=TOKEN)
        atexit.register(server.stop)
        _SIM.append(server)
    return _SIM[0]


def new_warehouse(backend: str, work: Path) -> str:
    """A fresh warehouse URL (DuckDB file in ``work``, or a new PostgreSQL database: drop it with
    ``tests.conftest.drop_pg_database``)."""
    if backend == "duckdb":
        return f"duckdb:///{work / 'wh.duckdb'}"
    from tests.conftest import create_pg_database

    return create_pg_database("dvc_rel")


def drop_warehouse(url: str) -> None:
    if url.startswith("postgresql"):
        from tests.conftest import drop_pg_database

        drop_pg_database(url)


def sim_env(work: Path, url: str, **extra: str) -> dict[str, str]:
    return cli_env(work, url, shared_simulator().url, TOKEN, DVC_PAGE_SIZE=PAGE_SIZE, **extra)


def baseline(backend: str, work: Path, tmp_path_factory: Any = None) -> tuple[dict[str, str], list]:
    """(warehouse_state, current periods) after ONE uninterrupted ``dvc-etl run`` of the shared
    simulator's data (call inside the prefect_harness fixture); computed once per backend.

    With ``tmp_path_factory``, once per backend for the whole test session: the first xdist worker
    to ask computes it (under a lock) and leaves it in the session's temporary folder for the
    others. Every worker's shared simulator serves the same data (``small_dataset()``: a fixed seed),
    and nothing changes it, so the uninterrupted run of one worker is that of every worker."""
    if backend in _BASELINES:
        return _BASELINES[backend]
    if tmp_path_factory is None:
        _BASELINES[backend] = _baseline_run(backend, work)
        return _BASELINES[backend]
    import pickle

    from tests.session_files import built_once

    def build(folder: Path) -> Path:
        out = folder / "baseline.pickle"
        out.write_bytes(pickle.dumps(_baseline_run(backend, work)))
        return out

    cached = built_once(tmp_path_factory, f"reliability-baseline-{backend}.pickle", build)
    _BASELINES[backend] = pickle.loads(cached.read_bytes())  # noqa: S301 - written by this session
    return _BASELINES[backend]


def _baseline_run(backend: str, work: Path) -> tuple[dict[str, str], list]:
    url = new_warehouse(backend, work)
    try:
        p = run_cli(["run", "-q"], sim_env(work, url), work)
        assert p.returncode == 0, p.stderr[-3000:]
        return warehouse_state(url), current_periods(url)
    finally:
        drop_warehouse(url)
