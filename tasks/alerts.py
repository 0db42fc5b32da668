"""Alerts: a Slack-compatible webhook and an e-mail, for data-quality findings and failed runs.

* :func:`alerts_for_run` is the one decision on which alerts a finished run
  (:class:`tasks.runs.RunResult`) deserves: one data-quality alert when rows were quarantined,
  when warnings exceed ``settings.warning_alert_threshold``, or when a batch-level rule marked
  ``meta.alert = "always"`` in the suites (volume, freshness) failed, whose failure touches no
  row but means the source may be broken; one more when inbox files could not be read.
* :func:`failure_alert` builds the alert for a run that failed outright (the flows' state hook).
* :func:`send_alert` delivers one alert to every configured channel. It never raises: a channel
  that cannot be reached is logged at WARNING and reported in the returned :class:`AlertDelivery`.

No secret reaches an alert body or a log line: bodies carry only run ids, rule names, counts and
the data-docs path, and every text that leaves this module (bodies, error messages, logs) is
scrubbed of the settings' secret values, of the warehouse URL's password, of any
``scheme://user:password@`` and of the webhook URL (whose path is a credential on Slack-style
services). :func:`install_log_scrubber` does the same for every log record of the process.

E-mail uses STARTTLS (certificate verified) unless ``DVC_SMTP_HOST`` is loopback, or as
``DVC_SMTP_STARTTLS`` forces (``tasks.settings.smtp_use_starttls``).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

from tasks.scrub import (  # scrub_text, scrub_for, url_passwords, install_log_scrubber: used from here too
    _scrub,
    _ScrubFilter,
    _secrets,
    install_log_scrubber,
    scrub_for,
    scrub_text,
    url_passwords,
)
from tasks.settings import Settings, smtp_use_starttls

if TYPE_CHECKING:
    from tasks.runs import RunResult

__all__ = ["install_log_scrubber", "scrub_for", "scrub_text", "url_passwords"]  # re-exported

log = logging.getLogger(__name__)

ALERT_SEVERITIES: tuple[str, ...] = ("critical", "warning", "failure")
HTTP_TIMEOUT_SECONDS = 10.0
SMTP_TIMEOUT_SECONDS = 10.0
RETRIES = 2  # after the first attempt
MAX_LINES = 25
_EMOJI = {"critical": ":rotating_light:", "warning": ":warning:", "failure": ":x:"}


@dataclass(frozen=True)
class Alert:
    """One notification: what happened in which run, in a few lines and counts."""

    title: str
    severity: str
    run_id: str
    source: str
    lines: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    docs_path: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in ALERT_SEVERITIES:
            raise ValueError(f"alert severity {self.severity!r} not in {ALERT_SEVERITIES}")


@dataclass(frozen=True)
class AlertDelivery:
    """What happened to an alert. Channel status: ``sent``, ``failed`` or ``disabled``.

    ``delivered`` is True when at least one channel took the alert.
    """

    delivered: bool
    webhook: str
    email: str
    errors: list[str] = field(default_factory=list)


def _webhook_label(url: str) -> str:
    """The webhook as it may be logged: scheme, host and port only."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}/***"


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
def _shown_lines(alert: Alert) -> list[str]:
    lines = list(alert.lines[:MAX_LINES])
    if len(alert.lines) > MAX_LINES:
        lines.append(f"... and {len(alert.lines) - MAX_LINES} more")
    return lines


def render_text(alert: Alert) -> str:
    """The alert as plain text (the e-mail body)."""
    out = [f"[{alert.severity.upper()}] {alert.title}", "", f"Run id: {alert.run_id}", f"Source: {alert.source}"]
    if alert.counts:
        out += ["", "Counts:"] + [f"  {k}: {v}" for k, v in alert.counts.items()]
    if alert.lines:
        out += ["", "Findings:"] + [f"  - {line}" for line in _shown_lines(alert)]
    out += ["", f"Data docs: {alert.docs_path or 'not built'}"]
    return "\n".join(out) + "\n"


def slack_payload(alert: Alert) -> dict[str, Any]:
    """Slack-compatible JSON: a ``text`` fallback and Block Kit ``blocks``."""
    headline = f"{_EMOJI[alert.severity]} [{alert.severity.upper()}] {alert.title}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": headline[:150], "emoji": True}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*Run id*\n`{alert.run_id}`"},
            {"type": "mrkdwn", "text": f"*Source*\n{alert.source}"},
            *({"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in list(alert.counts.items())[:8]),
        ]},
    ]
    if alert.lines:
        body = "\n".join(f"• {line}" for line in _shown_lines(alert))
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": body[:2990]}})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"Data docs: {alert.docs_path or 'not built'}"}]})
    counts = ", ".join(f"{k}={v}" for k, v in alert.counts.items())
    text = f"[{alert.severity.upper()}] {alert.title} (run {alert.run_id}, source {alert.source}; {counts})"
    return {"text": text, "blocks": blocks}


def _scrub_payload(obj: Any, secrets: list[str]) -> Any:
    if isinstance(obj, str):
        return _scrub(obj, secrets)
    if isinstance(obj, list):
        return [_scrub_payload(x, secrets) for x in obj]
    if isinstance(obj, dict):
        return {k: _scrub_payload(v, secrets) for k, v in obj.items()}
    return obj


def email_message(alert: Alert, settings: Settings) -> EmailMessage:
    """The alert as an e-mail to ``settings.alert_email_to``."""
    msg = EmailMessage()
    msg["Subject"] = f"[dvc-etl] {alert.severity.upper()}: {alert.title} (run {alert.run_id})"
    msg["From"] = settings.smtp_from
    msg["To"] = ", ".join(_recipients(settings))
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain="dvc-etl")
    msg.set_content(_scrub(render_text(alert), _secrets(settings)))
    return msg


def _recipients(settings: Settings) -> list[str]:
    return [a.strip() for a in (settings.alert_email_to or "").split(",") if a.strip()]


# ---------------------------------------------------------------------------------------------
# Delivery
# ---------------------------------------------------------------------------------------------
def _post_webhook(url: str, payload: dict[str, Any], retry_delay: float, secrets: list[str]) -> None:
    """POST with a 10 s timeout; retry connection errors, 429 and 5xx twice; raise on failure."""
    urllib3_log = logging.getLogger("urllib3.connectionpool")
    scrubber = _ScrubFilter(secrets)
    urllib3_log.addFilter(scrubber)
    try:
        _post_with_retries(url, payload, retry_delay)
    finally:
        urllib3_log.removeFilter(scrubber)


def _post_with_retries(url: str, payload: dict[str, Any], retry_delay: float) -> None:
    last: Exception | None = None
    for attempt in range(RETRIES + 1):
        if attempt:
            time.sleep(retry_delay * 2 ** (attempt - 1))
        try:
            resp = requests.post(url, json=payload, timeout=HTTP_TIMEOUT_SECONDS)
        except requests.RequestException as exc:
            last = exc
            continue
        if resp.status_code < 300:
            return
        last = RuntimeError(f"webhook answered HTTP {resp.status_code}")
        if resp.status_code != 429 and resp.status_code < 500:
            break  # a 4xx other than 429 will not get better by retrying
    assert last is not None
    raise last


def _send_email(msg: EmailMessage, settings: Settings, retry_delay: float) -> None:
    """Send through ``settings.smtp_host`` with a 10 s timeout, retrying twice; raise on failure."""
    assert settings.smtp_host
    last: Exception | None = None
    for attempt in range(RETRIES + 1):
        if attempt:
            time.sleep(retry_delay * 2 ** (attempt - 1))
        try:
            with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT_SECONDS) as smtp:
                smtp.ehlo()
                if smtp_use_starttls(settings):  # DVC_SMTP_STARTTLS; unset: on unless the host is loopback
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                if settings.smtp_user:
                    password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
                    smtp.login(settings.smtp_user, password)
                smtp.send_message(msg)
            return
        except smtplib.SMTPAuthenticationError as exc:
            raise RuntimeError(f"SMTP login refused (code {exc.smtp_code})") from None
        except (OSError, smtplib.SMTPException) as exc:
            last = exc
    assert last is not None
    raise last


def send_alert(alert: Alert, settings: Settings, *, retry_delay: float = 1.0) -> AlertDelivery:
    """Send ``alert`` to the webhook and by e-mail, as configured. Never raises."""
    secrets = _secrets(settings)
    errors: list[str] = []
    webhook = email = "disabled"
    if settings.alert_webhook_url:
        label = _webhook_label(settings.alert_webhook_url)
        try:
            _post_webhook(settings.alert_webhook_url, _scrub_payload(slack_payload(alert), secrets), retry_delay,
                          secrets)
            webhook = "sent"
            log.info("alert %r sent to webhook %s", alert.title, label)
        except Exception as exc:  # noqa: BLE001 - an alert must never break the run
            webhook = "failed"
            errors.append(_scrub(f"webhook {label}: {type(exc).__name__}: {exc}", secrets))
    recipients = _recipients(settings)
    if settings.smtp_host and recipients:
        try:
            _send_email(email_message(alert, settings), settings, retry_delay)
            email = "sent"
            log.info("alert %r e-mailed to %d recipients via %s", alert.title, len(recipients), settings.smtp_host)
        except Exception as exc:  # noqa: BLE001 - an alert must never break the run
            email = "failed"
            errors.append(_scrub(f"smtp {settings.smtp_host}:{settings.smtp_port}: {type(exc).__name__}: {exc}",
                                 secrets))
    delivered = "sent" in (webhook, email)
    for err in errors:
        log.warning("alert %r (run %s) not delivered: %s", alert.title, alert.run_id, err)
    if webhook == email == "disabled":
        log.warning("alert %r (run %s) not delivered: no alert channel configured "
                    "(DVC_ALERT_WEBHOOK_URL, DVC_SMTP_HOST + DVC_ALERT_EMAIL_TO)", alert.title, alert.run_id)
    return AlertDelivery(delivered, webhook, email, errors)


# ---------------------------------------------------------------------------------------------
# Deciding
# ---------------------------------------------------------------------------------------------
def _always_alert_rules(entity: str) -> set[str]:
    from tasks.quality import load_suite

    return {r.rule for r in load_suite(entity).rules if r.meta.get("alert") == "always"}


def alerts_for_run(result: RunResult, settings: Settings) -> list[Alert]:
    """The alerts a finished run calls for (possibly none): its data-quality findings, then the
    inbox files it could not read."""
    alerts: list[Alert] = []
    quarantined, warnings = result.rows_quarantined, result.warnings
    always = [f"{name}.{rule}: {v.get('detail')}" for name, e in result.entities.items()
              for rule, v in e.failing().items() if rule in _always_alert_rules(name)]
    if quarantined or warnings > settings.warning_alert_threshold or always:
        lines = [f"{name}: " + ", ".join(f"{rule}={v['unexpected_count']}" for rule, v in sorted(failing.items()))
                 for name, e in result.entities.items() if (failing := e.failing())]
        alerts.append(Alert(
            title=("Critical data-quality failures" if quarantined else "Data-quality warnings")
            + (" - reports not published" if result.blocked else ""),
            severity="critical" if quarantined else "warning", run_id=result.run_id, source=result.source,
            lines=lines + always, counts={"quarantined": quarantined, "warnings": warnings},
            docs_path=result.data_docs))
    if result.failed_files:
        alerts.append(Alert(
            title=f"{len(result.failed_files)} inbox file(s) could not be read", severity="warning",
            run_id=result.run_id, source=result.source, lines=[f"{path}: {why}" for path, why in result.failed_files],
            counts={"failed_files": len(result.failed_files)}))
    return alerts


def failure_alert(run_id: str, source: str, error: BaseException | str, *, run_name: str | None = None,
                  state: str = "Failed", lines: Iterable[str] = (), docs_path: str | None = None) -> Alert:
    """The alert for a run that failed (``state``: Failed, Crashed), with the error first; the
    error text is scrubbed of secrets when sent. ``run_name``: the Prefect flow run's name."""
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    return Alert(f"dvc-etl run {run_name or run_id} {state}", "failure", run_id, source, [text[:1000], *lines], {},
                 docs_path)
