"""Operations on a real Prefect server: the deployments of prefect.yaml, process workers, schedules,
the automations, and what a flow run shows in the UI (its log, its final state).

Everything here is a real process: ``prefect server start`` (SQLite in its own PREFECT_HOME), the
commands of ``make deploy`` (read from the Makefile's ``deploy`` recipe, without its ``install``
prerequisite), ``prefect deploy --all`` run from the project folder (so ``prefect.yaml`` is what is
tested), ``deploy/automations.py`` (the automations, alerting through a notification block that
posts to a real webhook receiver on 127.0.0.1), ``prefect worker start --pool dvc-process``
workers, and ``dvc-etl simulate serve`` simulators. Deployments are triggered through the server's
API, the worker runs them in a subprocess from the deploy-time working directory with the
deployment's environment, and the warehouse, the run's logs and states are read back.

The server's scheduler service is off: the cron schedules are stored and checked, but no
scheduled run (the inbox runs every 30 minutes in office hours) may start in the middle of a test.
Its late-runs and proactive-automation services run every second, so that a missed run is
noticed within seconds instead of minutes.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
import yaml

from tasks.settings import PROJECT_ROOT
from tasks.warehouse import connect, writer_lock
from tests.loopback import free_port
from tests.prefect_db import seed
from tests.test_alerts import WebhookReceiver

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
    "quarantine-export": "30 6 * * 1",
    "backfill": None,
}
#: The automations deploy/automations.py creates (``make deploy``).
CRASHED = "dvc-etl: flow run crashed"
MISSED_NIGHT = "dvc-etl: nightly not finished by 06:00"
FINAL_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


# ----------------------------------------------------------------------------------------------
# processes
# ----------------------------------------------------------------------------------------------
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


def start_prefect_server(procs: Processes, home: Path, timeout: float, **extra_env: str) -> dict[str, str]:
    """``prefect server start --host 127.0.0.1`` on a free port, SQLite in ``home``, API
    authentication on (``PREFECT_SERVER_API_AUTH_STRING=admin:<random>``, as docs/operations.md
    says; the server's own clients authenticate too); returns the clients' environment once its
    health endpoint answers (which needs no auth) or fails the test within ``timeout`` seconds.
    A server that lost its port to another process between :func:`free_port` and its bind is
    started again on another port (twice at most)."""
    auth = f"admin:{secrets.token_urlsafe(24)}"
    deadline = time.monotonic() + timeout
    for attempt in range(3):
        port = free_port()
        env = {
            **_clean_env(),
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_API_AUTH_STRING": auth,
            "PREFECT_API_AUTH_STRING": auth,
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            **extra_env,
        }
        proc, log = procs.start(f"server-{attempt}" if attempt else "server",
                                [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)], env)
        while True:
            if proc.poll() is None:  # a health answer from a port our server does not hold is not ours
                try:
                    if requests.get(f"{env['PREFECT_API_URL']}/health", timeout=2).ok and proc.poll() is None:
                        return env
                except requests.RequestException:
                    pass
            if proc.poll() is not None:
                if "already in use" in log.read_text(errors="replace") and attempt < 2:  # uvicorn or Prefect says so
                    break
                pytest.fail(f"the Prefect server did not start:\n{_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"the Prefect server did not start within {timeout} s:\n{_tail(log)}")
            time.sleep(0.5)
    raise AssertionError("unreachable")


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
    hook: WebhookReceiver  # the automations' notification block posts here

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One API call; a 503 (the server's SQLite busy under a worker's writes) is tried again, as
        Prefect's own client does."""
        user, _, password = self.env["PREFECT_API_AUTH_STRING"].partition(":")
        for attempt in range(5):
            r = requests.request(method, f"{self.api}{path}", json=body, auth=(user, password), timeout=30)
            if r.status_code != 503:
                break
            time.sleep(0.5 * 2 ** attempt)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text[:500]}"
        return r.json() if r.content else None

    def deployments(self) -> dict[str, dict[str, Any]]:
        return {d["name"]: d for d in self.call("POST", "/deployments/filter", {})}

    def run_deployment(self, deployment_id: str, parameters: dict[str, Any] | None = None) -> str:
        return self.call("POST", f"/deployments/{deployment_id}/create_flow_run", {"parameters": parameters or {}})["id"]

    def run_logs(self, flow_run_id: str) -> list[str]:
        return [e["message"] for e in self.run_log_records(flow_run_id)]

    def run_log_records(self, flow_run_id: str) -> list[dict[str, Any]]:
        """The flow run's log as the UI shows it: every record sent to the API (``name``: the logger)."""
        return self.call("POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200,
                                                  "sort": "TIMESTAMP_ASC"})

    def wait_logs(self, flow_run_id: str, expect: Any, timeout: float = 30) -> list[dict[str, Any]]:
        """The flow run's log once ``expect(records)`` holds (or the timeout passes): a flow run
        sends its log in batches, the last ones as its process exits, after its final state."""
        deadline = time.monotonic() + timeout
        while not expect(records := self.run_log_records(flow_run_id)) and time.monotonic() < deadline:
            time.sleep(0.5)
        return records

    def automations(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.call("POST", "/automations/filter", {}) if a["name"] == name]

    def wait_states(self, flow_run_ids: list[str], timeout: float, logs: list[Path]) -> dict[str, dict[str, Any]]:
        """Poll until every flow run is in a final state (any); fail with the worker logs otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            runs = {i: self.call("GET", f"/flow_runs/{i}") for i in flow_run_ids}
            if all(r["state"]["type"] in FINAL_STATES for r in runs.values()):
                return runs
            if time.monotonic() > deadline:
                workers = "\n\n".join(f"--- {p.name}\n{_tail(p)}" for p in logs)
                pytest.fail(f"flow runs not final: {[r['state'] for r in runs.values()]}\n{workers}")
            time.sleep(0.5)

    def wait_final(self, flow_run_ids: list[str], timeout: float, logs: list[Path]) -> dict[str, dict[str, Any]]:
        """:meth:`wait_states`, then every flow run must be COMPLETED; fail with the worker logs and
        the run's own logs otherwise."""
        runs = self.wait_states(flow_run_ids, timeout, logs)
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
    seed(tmp_path_factory, home / "prefect.db")  # the server's SQLite file in its PREFECT_HOME, migrated
    procs = Processes(home)
    hook = WebhookReceiver().__enter__()
    try:
        env = start_prefect_server(
            procs, home, 120,
            PREFECT_WORKER_QUERY_SECONDS="1",
            PREFECT_WORKER_PREFETCH_SECONDS="5",
            PREFECT_SERVER_SERVICES_LATE_RUNS_LOOP_SECONDS="1",
            PREFECT_SERVER_EVENTS_PROACTIVE_GRANULARITY="PT1S",
            GX_ANALYTICS_ENABLED="false",
        )
        srv = Server(env["PREFECT_API_URL"], env, procs, hook)
        _make_deploy(srv)
        yield srv
    finally:
        procs.stop_all()
        hook.__exit__()


def _make_deploy(srv: Server) -> None:
    """Run the recipe of the Makefile's ``deploy`` target line by line, as make would (its
    ``install`` prerequisite excepted: the venv is the one running the tests), with the alert
    webhook of the flows in DVC_ALERT_WEBHOOK_URL (the automations' notification block posts to
    it; the workers do not get it: no flow of these tests alerts)."""
    lines = (PROJECT_ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("deploy:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line[1:].lstrip("@").replace("$(BIN)", str(BIN)).replace("$$", "$"))
    assert any("deploy --all" in r for r in recipe) and any("work-pool create dvc-process" in r for r in recipe)
    assert any("deploy/automations.py" in r for r in recipe)
    env = {**srv.env, "DVC_ALERT_WEBHOOK_URL": srv.hook.url}
    for cmd in recipe:
        out = subprocess.run(["bash", "-c", cmd], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
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
        # the project's loggers reach the flow run's log in the UI
        assert d["job_variables"]["env"]["PREFECT_LOGGING_EXTRA_LOGGERS"] == "tasks,flows", name
    assert deps["nightly"]["entrypoint"] == "flows/nightly.py:nightly"
    assert deps["quarantine-export"]["entrypoint"] == "flows/ops.py:quarantine_export"
    pool = server.call("GET", "/work_pools/dvc-process")
    assert pool["type"] == "process"


def _automation_body(automation: dict[str, Any], name: str) -> dict[str, Any]:
    """An automation as read from the API, as a body to create another one named ``name``."""
    trigger = {k: v for k, v in automation["trigger"].items() if k != "id"}
    return {"name": name, "description": automation["description"], "enabled": True, "trigger": trigger,
            "actions": automation["actions"]}


def test_make_deploy_creates_or_updates_the_automations_by_name(server: Server) -> None:
    """``make deploy`` (the fixture) created the two automations; a second run of its automations
    step, as the next ``make deploy`` would, updates them in place: one automation per name, with
    the intended triggers, alerting through one notification block whose webhook URL is a secret.
    A duplicate of a name and the retired "failed or crashed" automation of earlier versions (it
    would alert a failed run a second time, after the flows' hook) are deleted."""
    crashed, = server.automations(CRASHED)
    server.call("POST", "/automations/", _automation_body(crashed, CRASHED))  # a duplicate
    server.call("POST", "/automations/", _automation_body(crashed, "dvc-etl: flow run failed or crashed"))
    out = subprocess.run([str(BIN / "python"), "deploy/automations.py"], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=120, env={**server.env, "DVC_ALERT_WEBHOOK_URL": server.hook.url})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "created" not in out.stdout and f"updated automation {CRASHED!r}" in out.stdout, out.stdout
    assert "1 duplicate(s) deleted" in out.stdout and "deleted retired automation" in out.stdout, out.stdout

    assert server.automations("dvc-etl: flow run failed or crashed") == []
    (crashed,), (missed,) = server.automations(CRASHED), server.automations(MISSED_NIGHT)
    nightly_id = server.deployments()["nightly"]["id"]
    # a crashed run of any dvc-etl deployment; failed runs are the flows' failure hook's
    t = crashed["trigger"]
    assert (t["posture"], t["expect"], t["threshold"]) == ("Reactive", ["prefect.flow-run.Crashed"], 1)
    assert t["match"] == {"prefect.resource.id": "prefect.flow-run.*"}
    assert t["match_related"] == {"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.dvc-etl"}
    # the nightly not finished by 06:00: 4 h 30 min after its run became due (Late) or started
    t = missed["trigger"]
    assert (t["posture"], float(t["within"]), t["threshold"]) == ("Proactive", 4.5 * 3600, 1)
    assert datetime(2024, 7, 1, 1, 30) + timedelta(seconds=float(t["within"])) == datetime(2024, 7, 1, 6, 0)
    assert set(t["after"]) == {"prefect.flow-run.Late", "prefect.flow-run.Pending", "prefect.flow-run.Running"}
    assert set(t["expect"]) >= {f"prefect.flow-run.{s}" for s in ("Completed", "Blocked", "Failed", "Crashed",
                                                                     "Cancelled")}
    assert t["match_related"] == {"prefect.resource.role": "deployment",
                                  "prefect.resource.id": f"prefect.deployment.{nightly_id}"}
    assert t["for_each"] == ["prefect.resource.id"]
    # both alert through the block dvc-alerts; the webhook URL (a credential) is not readable back
    blocks = {a["block_document_id"] for x in (crashed, missed) for a in x["actions"]}
    assert len(blocks) == 1 and {a["type"] for x in (crashed, missed) for a in x["actions"]} == {"send-notification"}
    block = server.call("GET", f"/block_documents/{blocks.pop()}")
    assert block["name"] == "dvc-alerts" and block["block_type"]["slug"] == "custom-webhook"
    assert server.hook.url not in str(block)


def test_a_nightly_the_worker_never_picks_up_is_alerted(server: Server) -> None:
    """The missed-night automation, with its window shortened to 10 s (the deployed one waits 4 h
    30 min): two runs of the nightly deployment are due and no worker is up, so the server's
    late-runs service marks them Late. One of them then ends (Blocked: a final state, alerted by
    the flow itself); the other never does and is alerted once, through the notification block,
    to the webhook: its name, its state, what to check."""
    missed, = server.automations(MISSED_NIGHT)
    clone = _automation_body(missed, f"test: {MISSED_NIGHT}")
    clone["trigger"]["within"] = 10
    clone_id = server.call("POST", "/automations/", clone)["id"]
    nightly_id = server.deployments()["nightly"]["id"]
    due = (datetime.now(UTC) - timedelta(seconds=30)).isoformat()
    body = {"state": {"type": "SCHEDULED", "name": "Scheduled", "state_details": {"scheduled_time": due}}}
    dead, done = (server.call("POST", f"/deployments/{nightly_id}/create_flow_run", body) for _ in range(2))
    server.hook.bodies.clear()
    try:
        deadline = time.monotonic() + 30
        while {server.call("GET", f"/flow_runs/{r['id']}")["state"]["name"] for r in (dead, done)} != {"Late"}:
            assert time.monotonic() < deadline, "the late-runs service did not mark the runs Late"
            time.sleep(0.3)
        server.call("POST", f"/flow_runs/{done['id']}/set_state",
                    {"state": {"type": "COMPLETED", "name": "Blocked"}, "force": True})
        deadline = time.monotonic() + 60
        while not server.hook.bodies:
            assert time.monotonic() < deadline, "the missed-night automation did not alert"
            time.sleep(0.3)
        time.sleep(3)  # the run that ended in time is past its window too: still one alert
        texts = [b["text"] for b in server.hook.bodies]
        assert len(texts) == 1, texts
        assert texts[0].startswith(f"[dvc-etl] NIGHTLY NOT FINISHED: run {dead['name']} is still Late"), texts[0]
        assert "the worker is down" in texts[0] and dead["id"] in texts[0] and done["name"] not in texts[0]
    finally:
        server.call("DELETE", f"/automations/{clone_id}")
        for r in (dead, done):  # no worker of a later test may pick them up
            server.call("DELETE", f"/flow_runs/{r['id']}")


def test_inbox_skips_while_the_warehouse_is_busy_and_its_log_shows_the_projects_lines(
    server: Server, tmp_path: Path
) -> None:
    """The ``inbox`` deployment run by a real worker, with the environment prefect.yaml gives it.

    While another process holds the warehouse's writer lock (a long backfill), the run does not
    wait DVC_LOCK_WAIT_SECONDS (30 minutes): it logs one line naming the run that holds the lock,
    leaves the files untouched and ends ``Skipped``. Once the lock is free, the next run takes the
    file, moves the unreadable one to ``failed/`` and ends ``FilesRejected``; its log in the UI
    (read back through the API) has the project's own ``tasks.*`` lines (the warehouse's
    migrations), there thanks to PREFECT_LOGGING_EXTRA_LOGGERS in the deployment's environment."""
    procs = Processes(tmp_path)
    url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(Path(__file__).parent / "fixtures" / "files" / "broken_corrupt.xlsx", inbox / "hong.xlsx")
    before = {p.name: p.read_bytes() for p in inbox.iterdir()}
    engine = connect(url)
    inbox_id = server.deployments()["inbox"]["id"]
    try:
        log = server.start_worker(procs, "worker-inbox", _worker_env(url, tmp_path, DVC_LOCK_WAIT_SECONDS="1800"))
        with writer_lock(engine, holder="backfill-20240701000000-busy01"):
            first = server.run_deployment(inbox_id)
            run1 = server.wait_states([first], 120, [log])[first]
            after_skip = {p.name: p.read_bytes() for p in inbox.iterdir()}
        second = server.run_deployment(inbox_id)
        run2 = server.wait_states([second], 120, [log])[second]
        logs1 = server.wait_logs(first, lambda records: any(r["message"].startswith("warehouse busy") for r in records))
        logs2 = server.wait_logs(second, lambda records: any(r["name"] == "tasks.inbox" for r in records))
    finally:
        procs.stop_all()
        engine.dispose()

    assert (run1["state"]["type"], run1["state"]["name"]) == ("COMPLETED", "Skipped"), run1["state"]
    assert run1["total_run_time"] < 60, run1["total_run_time"]  # not DVC_LOCK_WAIT_SECONDS
    skip = [r["message"] for r in logs1 if r["message"].startswith("warehouse busy")]
    assert skip == ["warehouse busy with run backfill-20240701000000-busy01; files stay in the inbox for the "
                    "next run (1 waiting)"], [r["message"] for r in logs1]
    assert after_skip == before  # nothing moved, nothing written beside them

    assert (run2["state"]["type"], run2["state"]["name"]) == ("COMPLETED", "FilesRejected"), run2["state"]
    assert "1 of 1 files moved to failed/: hong.xlsx" in run2["state"]["message"]
    assert (inbox / "failed" / "hong.xlsx").is_file() and not (inbox / "hong.xlsx").exists()
    project = [(r["name"], r["message"]) for r in logs2 if r["name"].startswith(("tasks.", "flows."))]
    assert any(name == "tasks.warehouse" and msg.startswith("applied migration 0001") for name, msg in project), \
        "\n".join(f"{r['name']}: {r['message'][:150]}" for r in logs2)


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
                             "job_variables": {"env": {**base["work_pool"]["job_variables"]["env"],
                                                       "DVC_SOURCE_URL": sims["tinh-b"].url,
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
