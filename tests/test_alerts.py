"""Alerts reach a real local webhook receiver and a real local SMTP server, say what failed, carry
no secret, and never raise when a channel is down. The one alert decision the flows call,
``alerts_for_run`` over a run's record (``tasks.runs.RunResult``), is tested on records built from
real check outcomes, as the pipeline builds them; so is the checks artifact's markdown."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import SecretStr

from tasks.alerts import (
    Alert,
    alerts_for_run,
    failure_alert,
    flow_run_link,
    send_alert,
    slack_payload,
    top_rules,
)
from tasks.alerts import render_text as alert_text
from tasks.quality import CheckOutcome, check
from tasks.runs import EntityResult, FailingRecord, RunResult, checks_markdown, scrub_personal
from tasks.settings import Settings
from tests.loopback import LoopbackServer, free_port
from tests.test_quality import context, good_dossiers, planted_dossiers

TOKEN = "tok-SECRET-source-7f3a"
SMTP_PASSWORD = "pw-SECRET-smtp-91bc"
HASH_KEY = "hk-SECRET-hash-55de"
HOOK_PATH = "/services/T000/B000/SECRETPATHxyz"
SECRETS = (TOKEN, SMTP_PASSWORD, HASH_KEY, HOOK_PATH, "SECRETPATHxyz")


# ---------------------------------------------------------------------------------------------
# Real local receivers
# ---------------------------------------------------------------------------------------------
class WebhookReceiver(LoopbackServer):
    """An http.server on 127.0.0.1 that records POSTed JSON; can fail the first N requests."""

    path = HOOK_PATH

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.fail_first = fail_first
        super().__init__()

    def answer(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, bytes, str | None]:
        self.paths.append(path)
        if self.fail_first > 0:
            self.fail_first -= 1
            return 503, b"", None
        self.bodies.append(json.loads(body))
        return 200, b"ok", None


class MailSink:
    """aiosmtpd handler that keeps every message and the logins it saw."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
        self.messages.append((list(envelope.rcpt_tos), envelope.original_content or envelope.content))
        return "250 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            self.logins.append((auth_data.login.decode(), auth_data.password.decode()))
            return AuthResult(success=auth_data.password.decode() == SMTP_PASSWORD)
        return AuthResult(success=False)


@pytest.fixture
def smtp_server() -> Iterator[tuple[MailSink, int]]:
    sink = MailSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, authenticator=sink.authenticate,
                            auth_require_tls=False)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


def make_settings(**over: Any) -> Settings:
    base: dict[str, Any] = dict(
        source_token=SecretStr(TOKEN), smtp_password=SecretStr(SMTP_PASSWORD), hash_key=SecretStr(HASH_KEY),
        smtp_user="etl", smtp_from="dvc-etl@example.gov.vn", alert_email_to="a@example.gov.vn, b@example.gov.vn",
        warning_alert_threshold=100, critical_threshold=0,
    )
    base.update(over)
    return Settings(_env_file=None, **base)


@pytest.fixture(scope="module")
def outcomes() -> list[CheckOutcome]:
    frame, _ = planted_dossiers()
    return [check("dossiers", frame, context())]


def _assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, secret


def _body(msg: Message) -> str:
    payload = msg.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode(msg.get_content_charset() or "utf-8")


# ---------------------------------------------------------------------------------------------
# Deciding: one function over one run's record
# ---------------------------------------------------------------------------------------------
DOCS = "/reports/data-docs/run-42/index.html"


def run_result(outcomes: dict[str, CheckOutcome], *, blocked: bool = False, run_id: str = "run-42",
               docs: str | None = DOCS) -> RunResult:
    """A run's record from real check outcomes, counted as ``tasks.pipeline.process_records`` does."""
    entities = {}
    for name, o in outcomes.items():
        e = EntityResult(name, rows_read=o.rows, rows_loaded=o.loaded_count, rows_quarantined=o.quarantined_count,
                         warnings=o.warning_count, data_docs=docs)
        e.add_checks(o.results)
        entities[name] = e
    return RunResult(run_id, "binh-dinh", entities, blocked=blocked)


def warnings_only() -> CheckOutcome:
    """The planted dossiers without those that fail a critical rule: warnings, nothing quarantined."""
    frame, expected = planted_dossiers()
    critical = {k for k, rules in expected.items() if any(sev == "critical" for _, sev in rules)}
    keep = [i for i, key in enumerate(frame["ma_ho_so"]) if f"#{i}" not in critical and key not in critical]
    out = check("dossiers", frame.iloc[keep].reset_index(drop=True), context())
    assert out.quarantined_count == 0 and out.warning_count >= 5
    return out


def test_a_run_with_critical_failures_gets_one_critical_alert(outcomes: list[CheckOutcome]) -> None:
    o = outcomes[0]
    alerts = alerts_for_run(run_result({"dossiers": o}, blocked=True), make_settings(warning_alert_threshold=5))
    assert len(alerts) == 1  # critical failures and warnings above the threshold: one alert, critical
    alert = alerts[0]
    assert (alert.severity, alert.title) == ("critical", "Critical data-quality failures - reports not published")
    assert alert.counts == {"quarantined": o.quarantined_count, "warnings": o.warning_count} and o.quarantined_count
    # the top 5 failing rules, critical first, most rows first, with their counts; then how many more
    failing = {r.rule: (r.severity, r.unexpected_count) for r in o.results if r.unexpected_count}
    assert alert.heading == "Top failing rules" and len(alert.lines) == 6 and len(failing) > 5
    assert alert.lines[5] == f"... and {len(failing) - 5} more failing rules (see the data docs)"
    shown = []
    for line in alert.lines[:5]:
        rule, _, rest = line.removeprefix("dossiers.").partition(": ")
        severity, n = failing[rule]
        assert rest == f"{n} {'row' if n == 1 else 'rows'} (critical)" and severity == "critical", line
        shown.append(n)
    critical = sorted((n for sev, n in failing.values() if sev == "critical"), reverse=True)
    assert shown == critical[:5] and shown[0] >= 2  # the most rows first
    assert (alert.run_id, alert.source, alert.docs_path) == ("run-42", "binh-dinh", DOCS)
    # every rule, with a higher limit: warnings after the critical ones, with their counts
    every = top_rules(run_result({"dossiers": o}), limit=100)
    assert len(every) == len(failing)
    assert "dossiers.dossier_due_date_matches_processing_time: 1 row (warning)" in every
    assert [line.endswith("(critical)") for line in every] == sorted((line.endswith("(critical)") for line in every),
                                                                      reverse=True)
    # the gate open (quarantine within the threshold): the same alert, without "not published"
    alerts = alerts_for_run(run_result({"dossiers": o}), make_settings())
    assert [a.title for a in alerts] == ["Critical data-quality failures"]


def test_warnings_alert_above_their_threshold_only() -> None:
    result = run_result({"dossiers": warnings_only()})
    assert alerts_for_run(result, make_settings(warning_alert_threshold=100)) == []
    alerts = alerts_for_run(result, make_settings(warning_alert_threshold=result.warnings - 1))
    assert [(a.severity, a.title) for a in alerts] == [("warning", "Data-quality warnings")]
    assert alerts[0].counts == {"quarantined": 0, "warnings": result.warnings}


def test_no_alert_for_a_clean_run_but_always_for_stale_source() -> None:
    assert alerts_for_run(run_result({"dossiers": check("dossiers", good_dossiers(20), context())}),
                          make_settings()) == []
    stale = check("dossiers", good_dossiers(0), context(last_arrival=datetime(2024, 6, 1)))
    alerts = alerts_for_run(run_result({"dossiers": stale}), make_settings())
    assert [(a.severity, a.title) for a in alerts] == [("warning", "Data-quality warnings")]
    assert len(alerts[0].lines) == 1  # the rule and its detail: how stale
    assert alerts[0].lines[0].startswith("dossiers.dossier_freshness: failed (warning, batch check): newest ")


def test_inbox_files_that_could_not_be_read_alert() -> None:
    result = RunResult("inbox-1", "binh-dinh", failed_files=[("'a\\nb.xlsx'", "not an Excel workbook")])
    alerts = alerts_for_run(result, make_settings())
    assert [(a.severity, a.title, a.lines, a.counts) for a in alerts] == [
        ("warning", "1 inbox file(s) could not be read", ["'a\\nb.xlsx': not an Excel workbook"], {"failed_files": 1})]
    assert alerts_for_run(RunResult("inbox-2", "binh-dinh"), make_settings()) == []


def test_failure_alert_names_the_flow_run_and_its_state() -> None:
    alert = failure_alert("nightly-1", "binh-dinh", "SourceAuthError: 401", run_name="calm-heron", state="Crashed",
                          lines=["Prefect flow run 1234"])
    assert (alert.severity, alert.title) == ("failure", "dvc-etl run calm-heron Crashed")
    assert alert.lines == ["SourceAuthError: 401", "Prefect flow run 1234"] and alert.run_id == "nightly-1"


def test_checks_markdown_lists_counts_failures_docs_and_the_gate(outcomes: list[CheckOutcome]) -> None:
    o = outcomes[0]
    md = checks_markdown(run_result({"dossiers": o}, blocked=True, run_id="run-2024-07-01"))
    assert md.startswith("# dvc-etl run `run-2024-07-01`")
    assert (f"| dossiers | {o.rows} | {o.loaded_count} | {o.quarantined_count} | {o.warning_count} | yes |"
            in md.splitlines())
    assert "| dossiers | dossier_status_in_code_list | critical | 1 | 60 |" in md.splitlines()
    assert "| dossiers | dossier_due_date_matches_processing_time | warning | 1 | 42 |" in md.splitlines()
    assert "dossier_key_present | critical | 0" not in md  # rules that passed are not listed
    assert f"Data docs: `{DOCS}`" in md and "Reports not published" in md
    clean = checks_markdown(run_result({"dossiers": check("dossiers", good_dossiers(20), context())}, docs=None))
    assert "Reports not published" not in clean and "Data docs" not in clean
    assert clean.splitlines()[-1] == "|---|---|---|---:|---:|"  # no failing rule


# ---------------------------------------------------------------------------------------------
# Delivering
# ---------------------------------------------------------------------------------------------
def test_alert_reaches_webhook_and_smtp_without_secrets(
        outcomes: list[CheckOutcome], smtp_server: tuple[MailSink, int], caplog: pytest.LogCaptureFixture) -> None:
    sink, port = smtp_server
    caplog.set_level(logging.DEBUG)
    with WebhookReceiver() as hook:
        settings = make_settings(alert_webhook_url=hook.url, smtp_host="127.0.0.1", smtp_port=port)
        alert = alerts_for_run(run_result({"dossiers": outcomes[0]}, run_id="run-2024-07-01-nightly",
                                          docs="reports/dq/run-2024-07-01-nightly/index.html"), settings)[0]
        delivery = send_alert(alert, settings, retry_delay=0)
    assert delivery.delivered and delivery.webhook == "sent" and delivery.email == "sent", delivery
    # Webhook: Slack-compatible JSON with the run id, the failing rules and the counts.
    assert len(hook.bodies) == 1 and hook.paths == [HOOK_PATH]
    body = hook.bodies[0]
    assert set(body) == {"text", "blocks"} and body["blocks"][0]["type"] == "header"
    raw = json.dumps(body, ensure_ascii=False)
    assert "run-2024-07-01-nightly" in raw and "dossier_channel_in_code_list: 2 rows (critical)" in raw
    assert f"quarantined={outcomes[0].quarantined_count}" in body["text"]
    assert "reports/dq/run-2024-07-01-nightly/index.html" in raw
    # E-mail: to both recipients, logged in with the password, which the message never shows.
    assert sink.logins == [("etl", SMTP_PASSWORD)]
    assert len(sink.messages) == 1
    rcpts, data = sink.messages[0]
    assert rcpts == ["a@example.gov.vn", "b@example.gov.vn"]
    msg = message_from_bytes(data)
    assert "run-2024-07-01-nightly" in msg["Subject"] and "CRITICAL" in msg["Subject"]
    text = _body(msg)
    assert "  - dossiers.dossier_channel_in_code_list: 2 rows (critical)" in text.splitlines()
    assert f"quarantined: {outcomes[0].quarantined_count}" in text
    assert "Data docs: reports/dq/run-2024-07-01-nightly/index.html" in text
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name != "mail.log")  # not the test server's
    assert "127.0.0.1" in ours  # urllib3's DEBUG request lines are there, scrubbed
    for blob in (raw, data.decode("utf-8", "replace"), text, ours):
        _assert_no_secret(blob)


def test_webhook_retries_server_errors() -> None:
    with WebhookReceiver(fail_first=2) as hook:
        delivery = send_alert(Alert("t", "warning", "r1", "s"), make_settings(alert_webhook_url=hook.url,
                                                                                alert_email_to=None),
                              retry_delay=0)
    assert delivery.delivered and len(hook.paths) == 3 and len(hook.bodies) == 1


def test_secret_in_failure_text_is_scrubbed(smtp_server: tuple[MailSink, int]) -> None:
    sink, port = smtp_server
    with WebhookReceiver() as hook:
        settings = make_settings(alert_webhook_url=hook.url, smtp_host="127.0.0.1", smtp_port=port)
        alert = failure_alert("run-9", "binh-dinh", RuntimeError(f"GET failed with token {TOKEN} key {HASH_KEY}"))
        assert send_alert(alert, settings, retry_delay=0).delivered
    _assert_no_secret(json.dumps(hook.bodies))
    _assert_no_secret(sink.messages[0][1].decode("utf-8", "replace"))
    assert "RuntimeError: GET failed with token *** key ***" in json.dumps(hook.bodies, ensure_ascii=False)


def test_a_secret_with_slack_special_characters_is_scrubbed_before_escaping(
        smtp_server: tuple[MailSink, int]) -> None:
    sink, port = smtp_server
    odd = "pw&<SECRET>odd"
    with WebhookReceiver() as hook:
        settings = make_settings(alert_webhook_url=hook.url, smtp_host="127.0.0.1", smtp_port=port,
                                 smtp_password=SecretStr(odd), smtp_user=None)
        alert = failure_alert("run-9", "binh-dinh", f"login with {odd} refused", run_name=f"run {odd}",
                              lines=[f"again {odd}"])
        assert send_alert(alert, settings, retry_delay=0).delivered
    raw = json.dumps(hook.bodies, ensure_ascii=False)
    mail = sink.messages[0][1].decode("utf-8", "replace")
    for blob in (raw, mail):
        assert "SECRET" not in blob
    assert "login with *** refused" in raw and "again ***" in raw


def test_unreachable_channels_do_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    dead = free_port()
    settings = make_settings(alert_webhook_url=f"http://127.0.0.1:{dead}{HOOK_PATH}", smtp_host="127.0.0.1",
                             smtp_port=free_port())
    delivery = send_alert(Alert("Something broke", "failure", "run-x", "s", ["line"]), settings, retry_delay=0)
    assert not delivery.delivered and delivery.webhook == "failed" and delivery.email == "failed"
    assert len(delivery.errors) == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "tasks.alerts"]
    assert len(warnings) == 2 and "not delivered" in warnings[0].getMessage()
    _assert_no_secret(caplog.text)
    _assert_no_secret(" ".join(delivery.errors))


def test_no_channel_configured_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    delivery = send_alert(Alert("t", "critical", "r", "s"), make_settings(alert_email_to=None))
    assert not delivery.delivered and delivery.webhook == delivery.email == "disabled"
    assert "no alert channel configured" in caplog.text


def test_slack_payload_is_bounded() -> None:
    alert = Alert("x" * 300, "warning", "r", "s", [f"line {i}" for i in range(100)], {"rows": 1})
    payload = slack_payload(alert)
    assert len(payload["blocks"][0]["text"]["text"]) <= 150
    assert "and 75 more" in payload["blocks"][3]["text"]["text"]
    # long findings and records: every section within Slack's 3000 characters, the rest counted
    long = Alert("t", "critical", "r", "s", ["y" * 900] * 20, records=[f"MaHoSo K{i}: " + "z" * 700 for i in range(10)])
    payload = slack_payload(long)
    sections = [b["text"]["text"] for b in payload["blocks"] if b["type"] == "section" and "text" in b]
    assert all(len(t) <= 3000 for t in sections) and len(json.dumps(payload)) < 16_000
    assert sections[1].endswith("more") and sections[2].endswith("more") and "MaHoSo K0" in sections[2]
    with pytest.raises(ValueError):
        Alert("t", "info", "r", "s")


# ---------------------------------------------------------------------------------------------
# What every alert carries (issue 16): links, the top rules, the first records, no personal data
# ---------------------------------------------------------------------------------------------
UI = "https://prefect.example.gov.vn"
FLOW_RUN = "0b6c2a9e-5d1f-4c3e-9a7b-2f1e8d3c4b5a"


def test_flow_run_link_needs_a_ui_url_and_a_flow_run() -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    with temporary_settings(updates={PREFECT_UI_URL: UI + "/"}):
        assert flow_run_link(FLOW_RUN) == f"{UI}/runs/flow-run/{FLOW_RUN}"
        assert flow_run_link() is None  # outside a flow run: no id, no link
    with temporary_settings(restore_defaults={PREFECT_UI_URL, PREFECT_API_URL}):
        assert flow_run_link(FLOW_RUN) is None  # Prefect knows no UI


def test_personal_values_are_scrubbed_from_details() -> None:
    record = {"ChuHoSo": "Trần Văn Bí", "SoGiayToChuHoSo": "A-77/19", "SoDienThoai": "0912 345 678",
              "DiaChiChuHoSo": "12 Lê Lợi", "MaHoSo": "H-1"}
    text = ("TrangThaiHoSo = 'Trần Văn Bí' is not a valid int; KenhThucHien = '0912 345 678'; id A-77/19; "
            "at 12 Lê Lợi; phone 0987654321, +84987654321; CCCD 079203001234, CMND 123456789; "
            "kept: H-1, 20240620080000, 000.15.41.H08-240326-00001, SoTien = 12000")
    out = scrub_personal(text, record)
    for value in ("Trần Văn Bí", "0912 345 678", "A-77/19", "12 Lê Lợi", "0987654321", "84987654321",
                  "079203001234", "123456789"):
        assert value not in out, value
    assert "kept: H-1, 20240620080000, 000.15.41.H08-240326-00001, SoTien = 12000" in out
    assert scrub_personal("phone 0987654321") == "phone ***"  # without the record (purged), by shape


def test_an_alert_names_the_first_records_and_links_in_both_channels(
        tmp_path, smtp_server: tuple[MailSink, int]) -> None:
    from prefect.settings import PREFECT_UI_URL, temporary_settings

    sink, port = smtp_server
    page = tmp_path / "data-docs" / "run-7" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text("<html></html>")
    (tmp_path / "data-docs" / "index.html").write_text("<html></html>")
    records = [FailingRecord("dossiers", f"H-{i}", f"H-{i}", (("dossier_status_in_code_list", f"TrangThaiHoSo = {i}"),))
               for i in range(9)]
    records += [FailingRecord("dossiers", "#ab12cd34ef56ab78", "", (("required_ma_ho_so", "MaHoSo is missing"),
                                                                     ("dossier_key_present", ""))),
                FailingRecord("payments", "YC-1", "H-0", (("payment_status_in_code_list", "TrangThai = '<!channel>'"),))]
    entity = EntityResult("dossiers", rows_read=30, rows_loaded=17, rows_quarantined=13)
    entity.checks = {"dossier_status_in_code_list": {"severity": "critical", "element_count": 30,
                                                     "unexpected_count": 12, "detail": "x"}}
    result = RunResult("run-7", "binh-dinh", {"dossiers": entity}, flow_run_id=FLOW_RUN, failing_records=records,
                       failing_records_total=13)
    with WebhookReceiver() as hook, temporary_settings(updates={PREFECT_UI_URL: UI}):
        settings = make_settings(alert_webhook_url=hook.url, smtp_host="127.0.0.1", smtp_port=port,
                                 reports_dir=str(tmp_path), data_docs_url="https://docs.example.gov.vn/dq/")
        alert = alerts_for_run(result, settings)[0]
        assert send_alert(alert, settings, retry_delay=0).delivered
        # a file path when DVC_DATA_DOCS_URL is unset
        assert alerts_for_run(result, make_settings(reports_dir=str(tmp_path)))[0].docs_path == str(page.resolve())
    assert alert.flow_run_url == f"{UI}/runs/flow-run/{FLOW_RUN}"
    assert alert.docs_path == "https://docs.example.gov.vn/dq/run-7/index.html"
    assert alert.site_url == "https://docs.example.gov.vn/dq/index.html"
    assert alert.lines == ["dossiers.dossier_status_in_code_list: 12 rows (critical)"]
    assert alert.records == [*(f"MaHoSo H-{i}: dossier_status_in_code_list (TrangThaiHoSo = {i})" for i in range(9)),
                             "dossiers record #ab12cd34ef56ab78 without MaHoSo: required_ma_ho_so (MaHoSo is missing); "
                             "dossier_key_present",
                             "... and 3 more records (dvc-etl quarantine list)"]  # 13 in all, 10 shown
    text = _body(message_from_bytes(sink.messages[0][1]))
    for line in (f"Flow run: {UI}/runs/flow-run/{FLOW_RUN}", "Data docs: https://docs.example.gov.vn/dq/run-7/index.html",
                 "All runs: https://docs.example.gov.vn/dq/index.html", "Top failing rules:",
                 "  - dossiers.dossier_status_in_code_list: 12 rows (critical)",
                 "First quarantined records (codes and reasons, no personal data):",
                 "  - MaHoSo H-0: dossier_status_in_code_list (TrangThaiHoSo = 0)",
                 "  - ... and 3 more records (dvc-etl quarantine list)"):
        assert line in text.splitlines(), line
    body = hook.bodies[0]
    links = body["blocks"][2]["text"]["text"]
    assert f"*Flow run*: <{UI}/runs/flow-run/{FLOW_RUN}|" in links and "<https://docs.example.gov.vn/dq/run-7/index" in links
    assert "MaHoSo H-8: dossier_status_in_code_list" in body["blocks"][4]["text"]["text"]
    assert f"{UI}/runs/flow-run/{FLOW_RUN}" in body["text"]
    # a value of a record cannot mention @channel or forge a link in Slack
    payment = FailingRecord("payments", "YC-1", "H-0", (("payment_status_in_code_list", "TrangThai = '<!channel>'"),))
    blocks = json.dumps(slack_payload(Alert("t", "critical", "r", "s", records=[payment.text()])))
    assert "<!channel>" not in blocks and "&lt;!channel&gt;" in blocks
    assert payment.text() == "Ma YC-1 (MaHoSo H-0): payment_status_in_code_list (TrangThai = '<!channel>')"


def test_failure_alert_carries_the_links(tmp_path) -> None:
    from prefect.settings import PREFECT_UI_URL, temporary_settings

    (tmp_path / "data-docs").mkdir()
    (tmp_path / "data-docs" / "index.html").write_text("<html></html>")
    settings = make_settings(reports_dir=str(tmp_path))
    with temporary_settings(updates={PREFECT_UI_URL: UI}):
        alert = failure_alert("run-8", "binh-dinh", "boom", flow_run_id=FLOW_RUN, settings=settings)
        bare = failure_alert("run-8", "binh-dinh", "boom")  # the links come when it is sent
        assert (bare.flow_run_url, bare.docs_path, bare.site_url) == (None, None, None)
    assert alert.flow_run_url == f"{UI}/runs/flow-run/{FLOW_RUN}" and alert.heading == "Error"
    assert alert.docs_path is None and alert.site_url == str((tmp_path / "data-docs" / "index.html").resolve())
    text = alert_text(alert)
    assert f"Flow run: {UI}/runs/flow-run/{FLOW_RUN}" in text and "Data docs: not built for this run" in text
    assert f"All runs: {alert.site_url}" in text


# ---------------------------------------------------------------------------------------------
# STARTTLS (issue 14): on by default unless the SMTP server is on loopback
# ---------------------------------------------------------------------------------------------
def _non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (`hostname -I`), or None."""
    import ipaddress
    import subprocess

    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for word in out.split():
        try:
            ip = ipaddress.ip_address(word)
        except ValueError:
            continue
        if ip.version == 4 and not ip.is_loopback:
            return word
    return None


@pytest.mark.parametrize(("host", "forced", "expected"), [
    ("127.0.0.1", None, False), ("127.8.9.10", None, False), ("localhost", None, False), ("::1", None, False),
    ("[::1]", None, False), ("LOCALHOST.", None, False),
    ("smtp.example.gov.vn", None, True), ("192.0.2.2", None, True), ("10.0.0.5", None, True),
    ("localhost.example.gov.vn", None, True), ("127.0.0.1.example.net", None, True),
    ("smtp.example.gov.vn", False, False), ("127.0.0.1", True, True),
])
def test_starttls_is_on_unless_the_smtp_host_is_loopback(host: str, forced: bool | None, expected: bool) -> None:
    from tasks.settings import smtp_use_starttls

    assert make_settings().smtp_starttls is None  # unset by default: auto
    assert smtp_use_starttls(make_settings(smtp_host=host, smtp_starttls=forced)) is expected


def test_starttls_setting_reads_true_false_and_unset_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, expected in (("true", True), ("false", False), ("1", True), ("0", False)):
        monkeypatch.setenv("DVC_SMTP_STARTTLS", value)
        assert Settings(_env_file=None).smtp_starttls is expected
    monkeypatch.delenv("DVC_SMTP_STARTTLS")
    assert Settings(_env_file=None).smtp_starttls is None


def test_loopback_smtp_server_gets_mail_without_tls(smtp_server: tuple[MailSink, int]) -> None:
    sink, port = smtp_server  # the test server offers no STARTTLS at all
    settings = make_settings(smtp_host="127.0.0.1", smtp_port=port)
    assert settings.smtp_starttls is None
    assert send_alert(Alert("t", "warning", "r", "s"), settings, retry_delay=0).email == "sent"
    assert len(sink.messages) == 1


@pytest.fixture
def non_loopback_smtp() -> Iterator[tuple[MailSink, str, int, int]]:
    """Two real SMTP servers on this machine's non-loopback address: one without STARTTLS, one
    offering STARTTLS with a self-signed certificate."""
    import ssl
    import subprocess
    import tempfile

    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address (hostname -I): the decision is proven by "
                    "test_starttls_is_on_unless_the_smtp_host_is_loopback only")
    sink = MailSink()
    with tempfile.TemporaryDirectory() as tmp:
        key, cert = f"{tmp}/key.pem", f"{tmp}/cert.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", f"/CN={address}"], check=True, capture_output=True, timeout=60)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        plain_port, tls_port = free_port(), free_port()
        plain = Controller(sink, hostname=address, port=plain_port, authenticator=sink.authenticate,
                           auth_require_tls=False)
        tls = Controller(sink, hostname=address, port=tls_port, authenticator=sink.authenticate,
                         auth_require_tls=False, tls_context=context)
        plain.start()
        tls.start()
        try:
            yield sink, address, plain_port, tls_port
        finally:
            plain.stop()
            tls.stop()


def test_a_non_loopback_smtp_server_gets_starttls_by_default(
        non_loopback_smtp: tuple[MailSink, str, int, int], caplog: pytest.LogCaptureFixture) -> None:
    sink, address, plain_port, tls_port = non_loopback_smtp
    caplog.set_level(logging.DEBUG, logger="mail.log")
    alert = Alert("t", "warning", "r", "s")
    # a server that cannot STARTTLS gets nothing (no fall back to clear text)
    delivery = send_alert(alert, make_settings(smtp_host=address, smtp_port=plain_port), retry_delay=0)
    assert delivery.email == "failed" and "STARTTLS" in " ".join(delivery.errors), delivery
    assert sink.messages == [] and sink.logins == []
    # a server offering STARTTLS: the client starts TLS (the handshake is refused here because the
    # test certificate is self-signed and verified: proof that TLS, not clear text, was attempted)
    delivery = send_alert(alert, make_settings(smtp_host=address, smtp_port=tls_port), retry_delay=0)
    assert delivery.email == "failed" and "CERTIFICATE_VERIFY_FAILED" in " ".join(delivery.errors), delivery
    assert any("STARTTLS" in r.getMessage() for r in caplog.records if r.name == "mail.log"), \
        "the server never saw STARTTLS"
    assert sink.messages == [] and sink.logins == []  # the password never crossed in clear
    # forcing DVC_SMTP_STARTTLS=false sends in clear: the same server was reachable all along
    delivery = send_alert(alert, make_settings(smtp_host=address, smtp_port=plain_port, smtp_starttls=False),
                          retry_delay=0)
    assert delivery.email == "sent" and len(sink.messages) == 1
