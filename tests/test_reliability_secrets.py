"""Secrets: the source token, SMTP password and hash key never appear in any output of a run.

A real ``dvc-etl run`` (DEBUG logging) with recognisable secret values, a real SMTP server (the
password is really used to log in) and a real webhook; then a run with a wrong token (401). Every
output is grepped: stdout/stderr, every file written (data docs, workbooks unzipped, Prefect home),
every table of the warehouse, the Prefect artifacts and logs read back from the API, the e-mails
and webhook bodies. Settings also read secrets from Prefect Secret blocks.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from simulator.server import start_server
from tests.loopback import free_port
from tests.reliability_support import cli_env, run_cli, small_dataset
from tests.test_alerts import MailSink, WebhookReceiver

TOKEN = "tok-Zq81-never-print"
WRONG_TOKEN = "tok-Wr0ng-never-print"
SMTP_PASSWORD = "smtp-Pw77-never-print"
HASH_KEY = "hash-Key42-never-print-of-at-least-32-bytes"
SECRETS = (TOKEN, WRONG_TOKEN, SMTP_PASSWORD, HASH_KEY)


class _Sink(MailSink):
    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            self.logins.append((auth_data.login.decode(), auth_data.password.decode()))
            return AuthResult(success=auth_data.password.decode() == SMTP_PASSWORD)
        return AuthResult(success=False)


def _texts_of_files(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in root.rglob("*"):
        if not path.is_file() or path.suffix in (".duckdb", ".wal") or path.name.endswith(".duckdb.wal"):
            continue
        data = path.read_bytes()
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                for name in z.namelist():
                    out[f"{path}!{name}"] = z.read(name).decode("utf-8", "replace")
        else:
            out[str(path)] = data.decode("utf-8", "replace")
    return out


def _warehouse_text(url: str) -> dict[str, str]:
    import pandas as pd

    engine = sa.create_engine(url)
    out = {}
    with engine.connect() as c:
        tables = c.execute(sa.text("SELECT table_schema, table_name FROM information_schema.tables "
                                   "WHERE table_schema IN ('raw', 'core', 'mart', 'dq')")).fetchall()
        for schema, table in tables:
            out[f"{schema}.{table}"] = pd.read_sql(sa.text(f"SELECT * FROM {schema}.{table}"), c).to_csv()
    engine.dispose()
    return out


def _prefect_text() -> dict[str, str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
        logs = client.read_logs()
        runs = client.read_flow_runs()
    out = {f"artifact {a.key}": str(a.data) + str(a.description) for a in artifacts}
    out["prefect logs"] = "\n".join(str(x.message) for x in logs)
    out["flow run states"] = "\n".join(f"{r.name} {r.state}" for r in runs)
    return out


def test_secrets_never_appear_in_any_output(prefect_harness, tmp_path):
    sink = _Sink()
    port = free_port()
    smtp = Controller(sink, hostname="127.0.0.1", port=port, authenticator=sink.authenticate, auth_require_tls=False)
    smtp.start()
    outputs: dict[str, str] = {}
    url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    try:
        with start_server(small_dataset(n_dossiers=300), token=TOKEN) as sim, WebhookReceiver() as hook:
            common = dict(
                DVC_HASH_KEY=HASH_KEY, DVC_SMTP_HOST="127.0.0.1", DVC_SMTP_PORT=str(port), DVC_SMTP_USER="etl",
                DVC_SMTP_PASSWORD=SMTP_PASSWORD, DVC_ALERT_EMAIL_TO="ops@example.gov.vn",
                DVC_ALERT_WEBHOOK_URL=hook.url, DVC_WARNING_ALERT_THRESHOLD="0", PREFECT_LOGGING_LEVEL="DEBUG",
            )
            ok = run_cli(["run"], cli_env(tmp_path, url, sim.url, TOKEN, **common), tmp_path)
            assert ok.returncode in (0, 3), ok.stderr[-3000:]
            bad = run_cli(["run"], cli_env(tmp_path, url, sim.url, WRONG_TOKEN, **common), tmp_path)
            assert bad.returncode == 1, bad.stderr[-3000:]
            assert "401" in bad.stderr or "token" in bad.stderr.lower(), bad.stderr[-2000:]
            outputs.update({"run stdout": ok.stdout, "run stderr": ok.stderr,
                            "401 run stdout": bad.stdout, "401 run stderr": bad.stderr})
            outputs.update({f"webhook {i}": str(b) for i, b in enumerate(hook.bodies)})
    finally:
        smtp.stop()
    assert sink.logins and sink.logins[0][1] == SMTP_PASSWORD, "the SMTP password was never used: test proves nothing"
    assert sink.messages, "no alert e-mail was sent"
    outputs.update({f"e-mail {i}": m.decode("utf-8", "replace") for i, (_, m) in enumerate(sink.messages)})
    files = _texts_of_files(tmp_path)
    assert any(k.endswith(".xlsx!xl/sharedStrings.xml") or ".xlsx!" in k for k in files), "no workbook written"
    assert any("data-docs" in k for k in files), "no data docs written"
    outputs.update(files)
    outputs.update(_warehouse_text(url))
    prefect = _prefect_text()
    assert any(k.startswith("artifact") for k in prefect) and prefect["prefect logs"], "nothing read back from Prefect"
    outputs.update(prefect)
    leaks = [(where, s) for where, text in outputs.items() for s in SECRETS if s in text]
    assert not leaks, f"secrets leaked into: {leaks[:10]}"
    print("secrets-outputs-grepped", len(outputs), "bytes", sum(len(t) for t in outputs.values()))


def test_secrets_from_prefect_secret_blocks(prefect_harness, monkeypatch):
    from prefect.blocks.system import Secret

    from tasks.settings import Settings

    Secret(value="blk-token-value").save("dvc-rel-token", overwrite=True)
    Secret(value="blk-hash-value").save("dvc-rel-hash", overwrite=True)
    for name in ("DVC_SOURCE_TOKEN", "DVC_HASH_KEY", "DVC_SMTP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DVC_SOURCE_TOKEN_BLOCK", "dvc-rel-token")
    monkeypatch.setenv("DVC_HASH_KEY_BLOCK", "dvc-rel-hash")
    s = Settings(_env_file=None)
    assert s.source_token.get_secret_value() == "blk-token-value"
    assert s.hash_key.get_secret_value() == "blk-hash-value"
    assert s.smtp_password is None
    assert "blk-token-value" not in repr(s) + str(s.model_dump())
    monkeypatch.setenv("DVC_SOURCE_TOKEN", "env-wins")  # the environment wins over the block
    assert Settings(_env_file=None).source_token.get_secret_value() == "env-wins"
    monkeypatch.setenv("DVC_SMTP_PASSWORD_BLOCK", "no-such-block")
    with pytest.raises(ValueError, match="DVC_SMTP_PASSWORD_BLOCK.*no-such-block"):
        Settings(_env_file=None)


# ---------------------------------------------------------------------------------------------
# Issue 14: the warehouse URL's password never appears in alerts, logs, CLI output or dq.runs
# ---------------------------------------------------------------------------------------------
WH_PASSWORD = "WhPass-Mark3r-never-print"


def _pg_url_with_password(database: str, port: int = 5432) -> str:
    """A PostgreSQL URL carrying the marker password (the test server's trust auth ignores it)."""
    return f"postgresql+psycopg://postgres:{WH_PASSWORD}@127.0.0.1:{port}/{database}"


def _dsn_error(url: str) -> Exception:
    """An error whose text embeds the DSN, as some drivers' and libraries' errors do."""
    return sa.exc.OperationalError("connect", {}, RuntimeError(f"could not connect using {url}: connection refused"))


@pytest.mark.slow  # a real failing run; the scrubbing itself is tested in tests/test_hardening_keys.py
def test_a_failing_run_never_shows_the_warehouse_password(prefect_harness, pg_url, tmp_path):
    """Real `dvc-etl run` subprocesses (DEBUG logs, a real SMTP server and webhook): the warehouse
    on a refused port, a missing database, and a reachable warehouse whose run fails (the source
    refuses connections). The marker password appears nowhere: CLI output, alerts, dq.runs,
    Prefect logs and states."""
    import uuid

    sink = _Sink()
    port = free_port()
    smtp = Controller(sink, hostname="127.0.0.1", port=port, authenticator=sink.authenticate, auth_require_tls=False)
    smtp.start()
    outputs: dict[str, str] = {}
    good = _pg_url_with_password(sa.engine.make_url(pg_url).database)
    try:
        with WebhookReceiver() as hook:
            common = dict(DVC_HASH_KEY=HASH_KEY, DVC_SMTP_HOST="127.0.0.1", DVC_SMTP_PORT=str(port),
                          DVC_SMTP_USER="etl", DVC_SMTP_PASSWORD=SMTP_PASSWORD, DVC_ALERT_EMAIL_TO="ops@example.gov.vn",
                          DVC_ALERT_WEBHOOK_URL=hook.url, PREFECT_LOGGING_LEVEL="DEBUG", DVC_HTTP_MAX_RETRIES="0",
                          DVC_HTTP_RETRY_BUDGET="0")
            dead_source = f"http://127.0.0.1:{free_port()}"
            cases = {"refused port": _pg_url_with_password("dvc", port=free_port()),
                     "missing database": _pg_url_with_password(f"dvc_missing_{uuid.uuid4().hex[:8]}"),
                     "source down": good}
            for name, url in cases.items():
                p = run_cli(["run"], cli_env(tmp_path / name.replace(" ", "_"), url, dead_source, TOKEN, **common),
                            tmp_path / name.replace(" ", "_"))
                assert p.returncode == 1, (name, p.stdout[-2000:], p.stderr[-3000:])
                assert "error:" in p.stderr, (name, p.stderr[-3000:])  # the CLI's one clear line
                outputs[f"{name} stdout"], outputs[f"{name} stderr"] = p.stdout, p.stderr
            outputs.update({f"webhook {i}": str(b) for i, b in enumerate(hook.bodies)})
            assert len(hook.bodies) >= 3, "a failed run alerts: test proves nothing without the alerts"
    finally:
        smtp.stop()
    assert len(sink.messages) >= 3
    outputs.update({f"e-mail {i}": m.decode("utf-8", "replace") for i, (_, m) in enumerate(sink.messages)})
    engine = sa.create_engine(pg_url)
    with engine.connect() as c:
        runs = c.execute(sa.text("SELECT status, message FROM dq.runs")).fetchall()
    engine.dispose()
    assert runs and runs[0].status == "failed" and runs[0].message
    outputs["dq.runs"] = "\n".join(f"{r.status} {r.message}" for r in runs)
    outputs.update(_prefect_text())
    leaks = [where for where, text in outputs.items() if WH_PASSWORD in text]
    assert not leaks, f"the warehouse password leaked into: {leaks}"


def test_an_error_embedding_the_dsn_is_scrubbed_in_dq_runs_alerts_and_logs(pg_url, tmp_path):
    """Where an exception's text embeds the DSN (scheme://user:password@host), the password is
    scrubbed before it reaches dq.runs (tracked_run, a real PostgreSQL), an alert (a real webhook
    and SMTP server) or a log line (the process's log records)."""
    import io
    import json
    import logging

    from flows.lifecycle import tracked_run
    from tasks.alerts import failure_alert, send_alert
    from tasks.scrub import install_log_scrubber
    from tasks.settings import Settings

    url = _pg_url_with_password(sa.engine.make_url(pg_url).database)
    sink = _Sink()
    port = free_port()
    smtp = Controller(sink, hostname="127.0.0.1", port=port, authenticator=sink.authenticate, auth_require_tls=False)
    smtp.start()
    try:
        with WebhookReceiver() as hook:
            settings = Settings(_env_file=None, warehouse_url=url, hash_key=HASH_KEY, alert_webhook_url=hook.url,
                                smtp_host="127.0.0.1", smtp_port=port, alert_email_to="ops@example.gov.vn",
                                reports_dir=tmp_path / "reports")
            error = _dsn_error(url)
            with pytest.raises(sa.exc.OperationalError), tracked_run(settings, "nightly", "test"):
                raise error
            delivery = send_alert(failure_alert("run-1", "default", error), settings, retry_delay=0)
            assert delivery.delivered
            bodies = json.dumps(hook.bodies)
    finally:
        smtp.stop()
    engine = sa.create_engine(pg_url)
    with engine.connect() as c:
        message = c.execute(sa.text("SELECT message FROM dq.runs")).scalar_one()
    engine.dispose()
    assert "could not connect using postgresql+psycopg://postgres:***@127.0.0.1" in message, message
    mail = sink.messages[0][1].decode("utf-8", "replace")
    assert "could not connect" in bodies and "could not connect" in mail
    install_log_scrubber(settings)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)  # a plain handler: it formats the traceback itself
    logger = logging.getLogger("tasks.test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("password alone %s, in a url %s", WH_PASSWORD, "https://u:x9Secret@h/")
        try:
            raise error
        except sa.exc.OperationalError:
            logger.exception("the run failed")
    finally:
        logger.removeHandler(handler)
    logs = stream.getvalue()
    assert "could not connect using postgresql+psycopg://postgres:***@" in logs, logs
    assert "the run failed" in logs and "x9Secret" not in logs
    for where, text in {"dq.runs": message, "webhook": bodies, "e-mail": mail, "logs": logs}.items():
        assert WH_PASSWORD not in text, where


def test_cli_errors_never_show_the_warehouse_password(dvc_env, monkeypatch, tmp_path):
    """A flow failing with a driver error that embeds the DSN: one line, exit 1, no password."""
    from typer.testing import CliRunner

    import flows.nightly
    from tasks.cli import EXIT_FAILED, app

    url = _pg_url_with_password("dvc", port=free_port())
    dvc_env(DVC_WAREHOUSE_URL=url)

    def failing_report(*_a: Any, **_k: Any) -> None:
        raise _dsn_error(url)

    monkeypatch.setattr(flows.nightly, "report", failing_report)
    res = CliRunner().invoke(app, ["report", "--from", "2024-06-01", "--to", "2024-06-30"])
    assert res.exit_code == EXIT_FAILED, (res.output, res.exception)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "could not connect using postgresql+psycopg://postgres:***@" in lines[0], lines
    assert WH_PASSWORD not in res.output


def test_settings_errors_never_echo_the_other_settings():
    """A settings error (here a model-level one: an http:// source URL) must not quote the input,
    which holds every setting, the warehouse URL included."""
    from pydantic import ValidationError

    from tasks.settings import Settings

    with pytest.raises(ValidationError) as err:
        Settings(_env_file=None, source_url="http://dvc.example.gov.vn", warehouse_url=_pg_url_with_password("x"))
    text = str(err.value)
    assert "DVC_SOURCE_URL" in text
    assert not any(WH_PASSWORD[i:i + 6] in text for i in range(len(WH_PASSWORD) - 5)), text
