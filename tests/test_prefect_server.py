"""Operations on a real Prefect server: the deployments of prefect.yaml, process workers, schedules.

Everything here is a real process: ``prefect server start`` (SQLite in its own PREFECT_HOME), the
commands of ``make deploy`` (read from the Makefile's ``deploy`` recipe, without its ``install``
prerequisite), ``prefect deploy --all`` run from the project folder (so ``prefect.yaml`` is what is
tested), ``prefect worker start --pool dvc-process`` workers, and ``dvc-etl simulate serve``
simulators. The nightly deployment is triggered through the server's API, the worker runs it in
a subprocess from the deploy-time working directory, and the warehouse is read back.

The server's scheduler service is off: the cron schedules are stored and checked, but no
scheduled run (the inbox runs every 30 minutes in office hours) may start in the middle of a test.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
import yaml

from tasks.settings import PROJECT_ROOT
from tasks.warehouse import connect

pytestmark = [pytest.mark.prefect_server, pytest.mark.timeout(420)]

BIN = Path(sys.executable).parent
TZ = "Asia/Ho_Chi_Minh"
#: deployment name -> (cron, parameters that must be set); the contract of prefect.yaml
EXPECTED_SCHEDULES = {
    "nightly": "30 1 * * *",
    "monthly-report": "0 7 1 * *",
    "monthly-report-decree-09": "0 7 15 * *",
    "reference-sync": "0 2 * * 0",
    "inbox": "*/30 7-17 * * 1-5",
    "backfill": None,
}


# ----------------------------------------------------------------------------------------------
# processes
# ----------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clean_env() -> dict[str, str]:
    """The test process's environment without any PREFECT_* or DVC_* setting of its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DVC_", "GX_"))}


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process started with start_new_session=True, and everything it started."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children (flow-run subprocesses) too
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(timeout=10)


def _tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


class Processes:
    """Every subprocess a test starts; :meth:`stop_all` kills them all (called in ``finally``)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[subprocess.Popen, Path]:
        log = self.logdir / f"{name}.log"
        fh = log.open("w")
        proc = subprocess.Popen([str(c) for c in cmd], env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True, text=True)
        fh.close()
        self.procs.append(proc)
        return proc, log

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)
        self.procs.clear()


@dataclass
class Sim:
    url: str
    token: str

    def counts(self) -> dict[str, int]:
        r = requests.get(f"{self.url}/_sim/stats", headers={"Authorization": f"Bearer {self.token}"}, timeout=10)
        r.raise_for_status()
        return r.json()["counts"]


def start_simulator(procs: Processes, name: str, *, seed: int, dossiers: int, token: str) -> Sim:
    """``dvc-etl simulate serve --port 0`` as a subprocess; the URL is read from its first line."""
    proc, log = procs.start(name, [BIN / "dvc-etl", "simulate", "serve", "--port", "0", "--dossiers", str(dossiers),
                                   "--seed", str(seed), "--token", token], _clean_env())
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        text = log.read_text()
        if "listening on" in text:
            return Sim(text.split("listening on", 1)[1].split()[0].strip(), token)
        if proc.poll() is not None:
            pytest.fail(f"simulator {name} exited:\n{_tail(log)}")
        time.sleep(0.2)
    pytest.fail(f"simulator {name} did not start:\n{_tail(log)}")


@dataclass
class Server:
    api: str
    env: dict[str, str]
    procs: Processes

    def call(self, method: str, path: str, body: Any = None) -> Any:
        user, _, password = self.env["PREFECT_API_AUTH_STRING"].partition(":")
        r = requests.request(method, f"{self.api}{path}", json=body, auth=(user, password), timeout=30)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text[:500]}"
        return r.json() if r.content else None

    def deployments(self) -> dict[str, dict[str, Any]]:
        return {d["name"]: d for d in self.call("POST", "/deployments/filter", {})}

    def run_deployment(self, deployment_id: str, parameters: dict[str, Any] | None = None) -> str:
        return self.call("POST", f"/deployments/{deployment_id}/create_flow_run", {"parameters": parameters or {}})["id"]

    def run_logs(self, flow_run_id: str) -> list[str]:
        return [e["message"] for e in self.call("POST", "/logs/filter",
                                                  {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})]

    def wait_final(self, flow_run_ids: list[str], timeout: float, logs: list[Path]) -> dict[str, dict[str, Any]]:
        """Poll until every flow run is in a final state; fail with the worker logs and the run's
        own logs otherwise."""
        deadline = time.monotonic() + timeout
        runs: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            runs = {i: self.call("GET", f"/flow_runs/{i}") for i in flow_run_ids}
            if all(r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for r in runs.values()):
                break
            time.sleep(1)
        bad = {i: r["state"] for i, r in runs.items() if r["state"]["type"] != "COMPLETED"}
        if bad:
            run_logs = [m[:2000] for i in bad for m in self.run_logs(i)]
            workers = "\n\n".join(f"--- {p.name}\n{_tail(p)}" for p in logs)
            pytest.fail(f"flow runs not completed: {bad}\n--- run logs:\n" + "\n".join(run_logs[-60:]) + f"\n{workers}")
        return runs

    def start_worker(self, procs: Processes, name: str, extra_env: dict[str, str], queue: str | None = None) -> Path:
        """``prefect worker start --pool dvc-process`` with the DVC_* settings in its environment
        (the flow-run subprocesses it starts inherit them)."""
        env = {**self.env, **extra_env}
        cmd = [BIN / "prefect", "worker", "start", "--pool", "dvc-process", "--name", name]
        if queue:
            cmd += ["--work-queue", queue]
        _, log = procs.start(name, cmd, env, cwd=PROJECT_ROOT)
        return log

    def prefect(self, *args: str, cwd: Path = PROJECT_ROOT) -> str:
        out = subprocess.run([str(BIN / "prefect"), *args], env=self.env, cwd=cwd, capture_output=True, text=True,
                             timeout=180)
        assert out.returncode == 0, f"prefect {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        return out.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real ``prefect server start`` on a free port, SQLite in its own PREFECT_HOME, with the
    dvc-etl deployments deployed by the commands of ``make deploy``. API authentication is on, as
    docs/operations.md says: the server has PREFECT_SERVER_API_AUTH_STRING, every client (deploy,
    workers, their flow runs, these requests) PREFECT_API_AUTH_STRING."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    auth = f"admin:{secrets.token_urlsafe(24)}"
    env = {
        **_clean_env(),
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_API_AUTH_STRING": auth,
        "PREFECT_API_AUTH_STRING": auth,
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "GX_ANALYTICS_ENABLED": "false",
    }
    procs = Processes(home)
    try:
        proc, log = procs.start("server", [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                env)
        srv = Server(env["PREFECT_API_URL"], env, procs)
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{srv.api}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Prefect server did not start:\n{_tail(log)}")
            time.sleep(0.5)
        _make_deploy(srv)
        yield srv
    finally:
        procs.stop_all()


def _make_deploy(srv: Server) -> None:
    """Run the recipe of the Makefile's ``deploy`` target line by line, as make would (its
    ``install`` prerequisite excepted: the venv is the one running the tests)."""
    lines = (PROJECT_ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("deploy:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line[1:].lstrip("@").replace("$(BIN)", str(BIN)).replace("$$", "$"))
    assert any("deploy --all" in r for r in recipe) and any("work-pool create dvc-process" in r for r in recipe)
    for cmd in recipe:
        out = subprocess.run(["bash", "-c", cmd], env=srv.env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=180)
        assert out.returncode == 0, f"make deploy step failed: {cmd}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"


def _worker_env(warehouse_url: str, tmp: Path, **extra: str) -> dict[str, str]:
    return {
        "DVC_WAREHOUSE_URL": warehouse_url,
        "DVC_REPORTS_DIR": str(tmp / "reports"),
        "DVC_INBOX_DIR": str(tmp / "inbox"),
        "DVC_HASH_KEY": "prefect-server-test-key-of-at-least-32-bytes",
        "DVC_LOCK_WAIT_SECONDS": "300",
        **extra,
    }


def _scalar(engine: sa.Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as c:
        return c.execute(sa.text(sql), params).scalar()


# ----------------------------------------------------------------------------------------------
# tests
# ----------------------------------------------------------------------------------------------
def test_prefect_yaml_deploys_schedules_in_local_time_with_concurrency_one(server: Server) -> None:
    deps = server.deployments()
    assert set(EXPECTED_SCHEDULES) <= set(deps), sorted(deps)
    for name, cron in EXPECTED_SCHEDULES.items():
        d = deps[name]
        assert d["work_pool_name"] == "dvc-process"
        scheds = [s["schedule"] for s in d["schedules"]]
        if cron is None:
            assert scheds == [], f"{name} must only run on demand"
        else:
            assert scheds == [{"cron": cron, "timezone": TZ, "day_or": True}], f"{name}: {scheds}"
        limit = (d.get("global_concurrency_limit") or {}).get("limit", d.get("concurrency_limit"))
        assert limit == 1, f"{name}: concurrency limit {limit}"
        # the worker runs the flow from the folder it was deployed from
        assert d["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_ROOT)}}]
    assert deps["nightly"]["entrypoint"] == "flows/nightly.py:nightly"
    pool = server.call("GET", "/work_pools/dvc-process")
    assert pool["type"] == "process"


def _rows(engine: sa.Engine, sql: str, **params: Any) -> list[tuple]:
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(sa.text(sql), params)]


@pytest.mark.slow  # ~50 s; the deployment and auth tests stay in make test
def test_workers_run_the_nightly_of_two_sources_into_one_postgresql(server: Server, pg_url: str, tmp_path: Path) -> None:
    """The multi-province topology on real processes. Source ``default`` is prefect.yaml's own
    ``nightly`` deployment (work queue ``default``), its URL and token in its worker's environment;
    source ``tinh-b`` is a copy of it, as prefect.yaml's header describes, with
    ``settings_overrides: {source_name: tinh-b}`` (the only kind of setting a parameter may change)
    and its URL and token in ``job_variables.env`` (not in the parameters, which anyone with API
    access can set and the server shows), on its own work queue and worker. Both are triggered at once into one
    PostgreSQL warehouse: the writer lock serialises the runs (the second waits, bounded by
    DVC_LOCK_WAIT_SECONDS) and both land completely and separately."""
    procs = Processes(tmp_path)
    try:
        sims = {
            "default": start_simulator(procs, "sim-default", seed=42, dossiers=1500, token="tok-a-secret"),
            "tinh-b": start_simulator(procs, "sim-b", seed=8, dossiers=700, token="tok-b-secret"),
        }
        spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
        base = next(d for d in spec["deployments"] if d["name"] == "nightly")
        copy = {k: v for k, v in base.items() if k != "schedules"}
        copy["name"] = "nightly-tinh-b"
        copy["parameters"] = {"settings_overrides": {"source_name": "tinh-b"}}
        copy["work_pool"] = {**base["work_pool"], "work_queue_name": "tinh-b",
                             "job_variables": {"env": {"DVC_SOURCE_URL": sims["tinh-b"].url,
                                                       "DVC_SOURCE_TOKEN": sims["tinh-b"].token}}}
        prefect_file = tmp_path / "prefect.sources.yaml"
        prefect_file.write_text(yaml.safe_dump({"name": spec["name"], "prefect-version": spec["prefect-version"],
                                                "deployments": [copy]}))
        server.prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file))
        deps = server.deployments()
        names = {"default": "nightly", "tinh-b": "nightly-tinh-b"}
        b = deps["nightly-tinh-b"]
        assert "tok-b-secret" not in str(b["parameters"]), "the token must not be a parameter"
        assert b["job_variables"]["env"]["DVC_SOURCE_TOKEN"] == "tok-b-secret"
        assert (deps["nightly"]["work_queue_name"], b["work_queue_name"]) == ("default", "tinh-b")

        logs = [
            server.start_worker(procs, "worker-default", _worker_env(pg_url, tmp_path, DVC_SOURCE_URL=sims["default"].url,
                                                                     DVC_SOURCE_TOKEN=sims["default"].token),
                                queue="default"),
            server.start_worker(procs, "worker-tinh-b", _worker_env(pg_url, tmp_path), queue="tinh-b"),
        ]
        ids = {s: server.run_deployment(deps[names[s]]["id"]) for s in sims}
        runs = server.wait_final(list(ids.values()), 300, logs)
        counts = {s: sim.counts() for s, sim in sims.items()}
        logged = {s: "\n".join(server.run_logs(i)) for s, i in ids.items()}
    finally:
        procs.stop_all()

    engine = connect(pg_url)
    try:
        for source in sims:
            assert runs[ids[source]]["parameters"]["settings_overrides"]["source_name"] == source
            for entity in ("dossiers", "payments", "units", "procedures"):
                got = _scalar(engine, f"SELECT count(*) FROM core.{entity} WHERE source = :s", s=source)  # noqa: S608
                assert got == counts[source][entity], f"{source} core.{entity}: {got} != {counts[source][entity]}"
            wms = _rows(engine, "SELECT entity, watermark FROM dq.watermarks WHERE source = :s ORDER BY entity",
                        s=source)
            assert [e for e, _ in wms] == ["dossiers", "payments"] and all(w is not None for _, w in wms)
            assert _scalar(engine, "SELECT max(ngay_cap_nhat) FROM core.dossiers WHERE source = :s", s=source) == wms[0][1]
        assert _scalar(engine, "SELECT count(*) FROM core.dossiers") == sum(c["dossiers"] for c in counts.values())
        runs_db = _rows(engine, "SELECT source, status, started_at, finished_at FROM dq.runs WHERE flow = 'nightly' "
                                "ORDER BY started_at")
        assert sorted((s, st) for s, st, _, _ in runs_db) == [("default", "success"), ("tinh-b", "success")]
        assert _scalar(engine, "SELECT count(*) FROM mart.publications WHERE is_current") >= 1
        # one writer at a time: the second run started after the first had finished
        assert runs_db[1][2] >= runs_db[0][3], runs_db
        first, second = (runs[ids[s]] for s, *_ in runs_db)
        if second["start_time"] < first["end_time"]:  # the flow runs overlapped: the second one waited
            assert "DVC_LOCK_WAIT_SECONDS" in logged[runs_db[1][0]], logged[runs_db[1][0]][-2000:]
    finally:
        engine.dispose()
