"""The Prefect API is a door into the workers: who may open it, and what a flow run may change.

1. ``settings_overrides`` (a flow-run parameter anyone with API access can set) may change only
   ``tasks.settings.SAFE_OVERRIDES``. A run asking for ``source_url`` (which would send the
   worker's bearer token to that host), ``warehouse_url``, ``inbox_dir``, a webhook, a secret or a
   Secret-block name fails before it touches anything: a real "attacker" HTTP server receives
   nothing, the real source receives nothing, no warehouse file is created, the inbox is left
   alone, and the ops team's (real) webhook gets the failure alert naming the setting.
2. A real ``prefect server start`` on loopback with ``PREFECT_SERVER_API_AUTH_STRING`` refuses
   every API call without the string (401) and serves clients that have it in
   ``PREFECT_API_AUTH_STRING``: the fast test (default suite) checks raw requests and a real
   ``prefect`` CLI client; the slow one deploys a flow and has a worker with the string run it.
"""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from flows.lifecycle import UnsafeOverride, check_overrides, run_settings
from tasks.settings import SAFE_OVERRIDES, Settings
from tests.loopback import LoopbackServer
from tests.prefect_db import seed
from tests.test_alerts import WebhookReceiver
from tests.test_prefect_server import BIN, Processes, _clean_env, _tail, start_prefect_server

#: long enough for any minimum-length rule on the hash key
HASH_KEY = "prefect-auth-test-hash-key-0123456789abcdef"
TOKEN = "tok-Prefect-auth-test-never-leak"

#: settings that must never be overridable from a flow run, whatever is added to SAFE_OVERRIDES
NEVER_OVERRIDABLE = {
    "source_url", "source_token", "warehouse_url", "reports_dir", "reference_dir", "inbox_dir",
    "alert_webhook_url", "smtp_host", "smtp_port", "smtp_user", "smtp_password", "smtp_starttls", "smtp_from",
    "alert_email_to", "hash_key", "source_token_block", "smtp_password_block", "hash_key_block",
}


# ----------------------------------------------------------------------------------------------
# 1. settings_overrides: an allow-list
# ----------------------------------------------------------------------------------------------
class Recorder(LoopbackServer):
    """An HTTP server on 127.0.0.1 that answers anything with 200 and records every request
    (the attacker's host)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []
        super().__init__()

    def answer(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, bytes, str | None]:
        self.requests.append((method, path, headers.get("Authorization")))
        return 200, b'{"data": [], "total": 0}', "application/json"


def test_allow_list_holds_only_harmless_settings() -> None:
    assert SAFE_OVERRIDES <= set(Settings.model_fields)
    assert not SAFE_OVERRIDES & NEVER_OVERRIDABLE, SAFE_OVERRIDES & NEVER_OVERRIDABLE
    assert {"source_name", "page_size", "critical_threshold", "overlap_minutes", "period_cut"} <= SAFE_OVERRIDES


@pytest.mark.parametrize("name", sorted(set(Settings.model_fields) - SAFE_OVERRIDES))
def test_every_setting_outside_the_allow_list_is_refused(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every setting not in SAFE_OVERRIDES (a new one too) is refused, naming it and where it
    must come from, never echoing the value."""
    from tasks.settings import get_settings

    monkeypatch.setenv("DVC_HASH_KEY", HASH_KEY)
    get_settings.cache_clear()
    with pytest.raises(UnsafeOverride) as err:
        run_settings({name: "value-Never-Echoed", "page_size": 10})
    text = str(err.value)
    assert name in text and f"DVC_{name.upper()}" in text
    assert "worker's environment" in text and "Prefect Secret block" in text
    assert "value-Never-Echoed" not in text
    get_settings.cache_clear()


def test_malformed_and_unknown_overrides_are_refused() -> None:
    for bad in ("source_url=http://evil.example", ["source_url"], {1: "x"}):
        with pytest.raises(UnsafeOverride, match="must map setting names"):
            check_overrides(bad)
    with pytest.raises(UnsafeOverride, match="unknown settings in settings_overrides: sourceurl"):
        check_overrides({"sourceurl": "http://evil.example"})
    check_overrides(None)
    check_overrides({})
    check_overrides({k: None for k in SAFE_OVERRIDES})  # names only: values are validated by Settings


def _flow_calls(evil: Recorder, tmp: Path) -> dict[str, tuple[str, Any, dict[str, Any]]]:
    """id -> (flow, its keyword arguments, the override under test)."""
    from flows.nightly import nightly, report
    from flows.ops import backfill, inbox, monthly_report, reference_sync

    return {
        "nightly-source_url": (nightly, {}, {"source_url": evil.url, "source_name": "tinh-x"}),
        "reference_sync-source_url": (reference_sync, {}, {"source_url": evil.url}),
        "backfill-warehouse_url": (backfill, {"start": date(2024, 1, 1), "end": date(2024, 1, 31)},
                                   {"warehouse_url": f"duckdb:///{tmp / 'evil.duckdb'}"}),
        "inbox-inbox_dir": (inbox, {}, {"inbox_dir": str(tmp / "evil-inbox")}),
        "monthly_report-alert_webhook_url": (monthly_report, {"month": "2024-01"},
                                             {"alert_webhook_url": f"{evil.url}/hook"}),
        "report-smtp_host": (report, {"period_start": date(2024, 1, 1), "period_end": date(2024, 1, 31)},
                             {"smtp_host": "127.0.0.1", "smtp_port": evil.server.server_address[1]}),
        "nightly-hash_key": (nightly, {}, {"hash_key": "attacker-chosen-key-0123456789abcdef"}),
        "nightly-source_token_block": (nightly, {}, {"source_token_block": "attackers-block"}),
    }


CASES = ["nightly-source_url", "reference_sync-source_url", "backfill-warehouse_url", "inbox-inbox_dir",
         "monthly_report-alert_webhook_url", "report-smtp_host", "nightly-hash_key", "nightly-source_token_block"]


@pytest.mark.parametrize("case", CASES)
def test_a_flow_run_with_an_unsafe_override_fails_before_touching_anything(
    case: str, prefect_harness: None, dvc_env: Any, tmp_path: Path,
) -> None:
    from simulator.server import start_server
    from tests.reliability_support import small_dataset

    wh = tmp_path / "wh.duckdb"
    evil_inbox = tmp_path / "evil-inbox"
    evil_inbox.mkdir()
    (evil_inbox / "ho-so.csv").write_text("MaHoSo\nH1\n", encoding="utf-8")
    with start_server(small_dataset(n_dossiers=50), token=TOKEN) as sim, Recorder() as evil, \
            WebhookReceiver() as hook:
        dvc_env(DVC_WAREHOUSE_URL=f"duckdb:///{wh}", DVC_SOURCE_URL=sim.url, DVC_SOURCE_TOKEN=TOKEN,
                DVC_HASH_KEY=HASH_KEY, DVC_ALERT_WEBHOOK_URL=hook.url)
        flow, kwargs, overrides = _flow_calls(evil, tmp_path)[case]
        refused = case.split("-", 1)[1]
        with pytest.raises(UnsafeOverride, match=rf"may not set {refused} \(DVC_{refused.upper()}\)"):
            flow(**kwargs, settings_overrides=overrides)
        served = sim.stats()
        bodies = list(hook.bodies)
    assert evil.requests == [], f"the attacker's host was contacted: {evil.requests}"
    assert sum(served.values()) == 0, f"the real source was called: {served}"
    assert not wh.exists() and not (tmp_path / "evil.duckdb").exists(), "a warehouse was opened"
    assert [p.name for p in evil_inbox.iterdir()] == ["ho-so.csv"], "the inbox was touched"
    assert not (tmp_path / "reports").exists()
    if flow.name != "dvc-report":  # dvc-report has no failure hook; the others alert the ops team
        assert len(bodies) == 1, bodies
        assert refused in str(bodies[0]) and TOKEN not in str(bodies[0])
        assert "attacker" not in str(bodies[0]) and evil.url not in str(bodies[0])


def test_safe_overrides_apply(prefect_harness: None, dvc_env: Any, tmp_path: Path) -> None:
    """source_name, page_size and period_cut from settings_overrides reach the run."""
    from flows.ops import monthly_report, reference_sync
    from simulator.server import start_server
    from tests.reliability_support import small_dataset

    wh = tmp_path / "wh.duckdb"
    with start_server(small_dataset(n_dossiers=50), token=TOKEN) as sim:
        dvc_env(DVC_WAREHOUSE_URL=f"duckdb:///{wh}", DVC_SOURCE_URL=sim.url, DVC_SOURCE_TOKEN=TOKEN,
                DVC_HASH_KEY=HASH_KEY)
        out = reference_sync(settings_overrides={"source_name": "tinh-x", "page_size": 7})
        units, pages = len(sim.dataset.units), sim.stats().get("ok_units", 0)
    assert out["units"]["rows_read"] == units > 7
    assert pages >= math.ceil(units / 7), f"{pages} pages of units: page_size 7 was not applied"
    engine = sa.create_engine(f"duckdb:///{wh}")
    try:
        with engine.connect() as c:
            assert c.execute(sa.text("SELECT DISTINCT source FROM core.units")).scalars().all() == ["tinh-x"]
            assert c.execute(sa.text("SELECT source, status FROM dq.runs")).all() == [("tinh-x", "success")]
    finally:
        engine.dispose()
    # the cut: a decree-09 override makes the calendar schedule skip, without opening the warehouse
    wh.unlink()
    skipped = monthly_report(only_for_cut="calendar", settings_overrides={"period_cut": "decree-09"})
    assert skipped["skipped"] and skipped["period_cut"] == "decree-09"
    assert not wh.exists()
    with pytest.raises(Exception, match="period_cut"):  # validated like the environment's values
        run_settings({"period_cut": "monthly"})


# ----------------------------------------------------------------------------------------------
# 2. A real Prefect server with API authentication, on loopback
# ----------------------------------------------------------------------------------------------
@dataclass
class AuthServer:
    api: str
    auth: str
    home: Path
    procs: Processes

    def client_env(self, home: Path, with_auth: bool = True, **extra: str) -> dict[str, str]:
        home.mkdir(parents=True, exist_ok=True)
        env = {**_clean_env(), "PREFECT_HOME": str(home), "PREFECT_API_URL": self.api,
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "1",
               "PREFECT_WORKER_PREFETCH_SECONDS": "5", **extra}
        if with_auth:
            env["PREFECT_API_AUTH_STRING"] = self.auth
        return env

    def call(self, method: str, path: str, body: Any = None, auth: tuple[str, str] | None | str = "ok") -> requests.Response:
        creds = tuple(self.auth.split(":", 1)) if auth == "ok" else auth
        return requests.request(method, f"{self.api}{path}", json=body, auth=creds, timeout=30)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        r = self.call(method, path, body)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text[:500]}"
        return r.json() if r.content else None

    def prefect(self, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "prefect"), *args], env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=180)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """``prefect server start --host 127.0.0.1`` on a free port, its own PREFECT_HOME (SQLite),
    with ``PREFECT_SERVER_API_AUTH_STRING=admin:<random>`` as docs/operations.md says."""
    home = tmp_path_factory.mktemp("prefect-auth-server")
    seed(tmp_path_factory, home / "prefect.db")  # the server's SQLite file in its PREFECT_HOME, migrated
    procs = Processes(home)
    try:
        env = start_prefect_server(procs, home, 150)
        srv = AuthServer(env["PREFECT_API_URL"], env["PREFECT_API_AUTH_STRING"], home, procs)
        yield srv
    finally:
        procs.stop_all()


@pytest.mark.prefect_server
@pytest.mark.timeout(420)
def test_server_refuses_api_calls_without_the_auth_string(auth_server: AuthServer, tmp_path: Path) -> None:
    user, password = auth_server.auth.split(":", 1)
    for method, path, body in [("POST", "/flows/filter", {}), ("POST", "/work_pools/filter", {}),
                               ("POST", "/flow_runs/filter", {}), ("GET", "/admin/version", None),
                               ("POST", "/work_pools/", {"name": "sneaky", "type": "process"})]:
        for creds in (None, (user, "wrong-password"), ("root", password), (user, password + "x")):
            r = auth_server.call(method, path, body, auth=creds)
            assert r.status_code == 401, f"{method} {path} with {creds and creds[0]}: {r.status_code} {r.text[:200]}"
        bearer = requests.request(method, f"{auth_server.api}{path}", json=body, timeout=30,
                                  headers={"Authorization": f"Bearer {password}"})
        assert bearer.status_code == 401
    assert "sneaky" not in [p["name"] for p in auth_server.ok("POST", "/work_pools/filter", {})]

    # a real client: the prefect CLI with the string works, without it is refused with 401
    cli = auth_server.prefect(["work-pool", "create", "auth-pool", "--type", "process"],
                              auth_server.client_env(tmp_path / "client"), tmp_path)
    assert cli.returncode == 0, cli.stdout[-2000:] + cli.stderr[-2000:]
    assert "auth-pool" in [p["name"] for p in auth_server.ok("POST", "/work_pools/filter", {})]
    anon = auth_server.prefect(["work-pool", "inspect", "auth-pool"],
                               auth_server.client_env(tmp_path / "anon", with_auth=False), tmp_path)
    assert anon.returncode != 0
    assert "401" in anon.stdout + anon.stderr, anon.stdout[-2000:] + anon.stderr[-2000:]
    assert password not in anon.stdout + anon.stderr


TINY_FLOW = '''
from prefect import flow, get_run_logger


@flow(name="tiny")
def tiny(word: str = "hello") -> str:
    get_run_logger().info("tiny flow says %s", word)
    return word.upper()
'''

TINY_PREFECT_YAML = '''
name: tiny
prefect-version: 3.9.1
deployments:
  - name: tiny
    entrypoint: tiny.py:tiny
    work_pool: {name: tiny-pool, work_queue_name: default}
'''


@pytest.mark.prefect_server
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_worker_with_the_auth_string_runs_a_deployment(auth_server: AuthServer, tmp_path: Path) -> None:
    """``prefect work-pool create`` and ``prefect deploy`` with the string, a ``prefect worker``
    with it runs a flow run created through the API; the same call without it is refused and
    creates nothing."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "tiny.py").write_text(TINY_FLOW)
    (project / "prefect.yaml").write_text(TINY_PREFECT_YAML)
    env = auth_server.client_env(tmp_path / "deployer")
    for args in (["work-pool", "create", "tiny-pool", "--type", "process"], ["--no-prompt", "deploy", "--all"]):
        out = auth_server.prefect(args, env, project)
        assert out.returncode == 0, f"prefect {args}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    dep = next(d for d in auth_server.ok("POST", "/deployments/filter", {}) if d["name"] == "tiny")

    refused = auth_server.call("POST", f"/deployments/{dep['id']}/create_flow_run",
                               {"parameters": {"word": "anonymous"}}, auth=None)
    assert refused.status_code == 401
    assert auth_server.ok("POST", "/flow_runs/filter", {}) == []

    procs = Processes(tmp_path)
    try:
        _, worker_log = procs.start("worker", [BIN / "prefect", "worker", "start", "--pool", "tiny-pool",
                                               "--name", "authed-worker"],
                                    auth_server.client_env(tmp_path / "worker"), cwd=project)
        run_id = auth_server.ok("POST", f"/deployments/{dep['id']}/create_flow_run",
                                {"parameters": {"word": "authenticated"}})["id"]
        deadline = time.monotonic() + 240
        state = None
        while time.monotonic() < deadline:
            state = auth_server.ok("GET", f"/flow_runs/{run_id}")["state"]["type"]
            if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(1)
        assert state == "COMPLETED", f"flow run {state}:\n{_tail(worker_log)}"
        deadline = time.monotonic() + 60  # the run's logs reach the server in batches, maybe after its state
        while True:
            logs = [e["message"] for e in auth_server.ok("POST", "/logs/filter",
                                                         {"logs": {"flow_run_id": {"any_": [run_id]}}})]
            if "tiny flow says authenticated" in logs or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert "tiny flow says authenticated" in logs, logs
        assert "401" not in worker_log.read_text()
    finally:
        procs.stop_all()
    assert [r["id"] for r in auth_server.ok("POST", "/flow_runs/filter", {})] == [run_id]
