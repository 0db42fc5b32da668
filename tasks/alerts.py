"""Alerts: a Slack-compatible webhook and an e-mail, for data-quality findings and failed runs.

* :func:`alerts_for_run` decides which alerts a run's check outcomes deserve: any critical
  failure (rows quarantined); warnings above ``settings.warning_alert_threshold``; and batch-level
  rules marked ``meta.alert = "always"`` in the suites (volume, freshness), whose failure touches
  no row but means the source may be broken.
* :func:`failure_alert` builds the alert for a run that failed outright.
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
import re
import smtplib
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

from tasks.settings import Settings, smtp_use_starttls

if TYPE_CHECKING:
    from tasks.quality import CheckOutcome

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


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------
def _secrets(settings: Settings) -> list[str]:
    """Every value that must never appear in an alert or a log line, longest first."""
    values: list[str] = []
    for secret in (settings.source_token, settings.smtp_password, settings.hash_key):
        if secret is not None and secret.get_secret_value():
            values.append(secret.get_secret_value())
    url = settings.alert_webhook_url
    if url:
        values.append(url)
        parts = urlsplit(url)
        if parts.path.strip("/"):
            values.append(parts.path)
        if parts.query:
            values.append(parts.query)
        if parts.password:
            values.append(parts.password)
    values += url_passwords(settings.warehouse_url)
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


#: ``scheme://user:password@`` in any text (a DSN in a driver's exception, a URL in a log line):
#: the password part is replaced by ``***``.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*:)(?P<pw>[^\s@'\"]+)@")
#: ``password=...`` in a libpq-style conninfo string (``host=... password=secret``).
_CONNINFO_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|[^\s'\"]+)", re.I)


def url_passwords(url: str | None) -> list[str]:
    """The password of a URL such as DVC_WAREHOUSE_URL, as given and percent-decoded (empty list
    when it has none)."""
    if not url:
        return []
    try:
        import sqlalchemy as sa

        pw = sa.engine.make_url(url).password
    except Exception:  # noqa: BLE001 - not a SQLAlchemy URL: try a plain split
        pw = None
    out = {str(pw)} if pw else set()
    try:
        raw = urlsplit(url).password
    except ValueError:
        raw = None
    if raw:
        out.add(raw)
    return [v for v in out if v]


def scrub_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the given secret values and without the password of any
    ``scheme://user:password@`` URL or ``password=`` conninfo pair."""
    text = _replace(text, secrets)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}***@", text)
    return _CONNINFO_PASSWORD.sub(lambda m: f"{m['head']}***", text)


def _replace(text: str, secrets: Iterable[str]) -> str:
    for value in secrets:
        text = text.replace(value, "***")
    return text


_scrub = scrub_text


def scrub_for(settings: Settings, text: str) -> str:
    """``text`` scrubbed of the settings' secrets (warehouse password included) and of URL passwords."""
    return scrub_text(text, _secrets(settings))


# ---------------------------------------------------------------------------------------------
# Log lines: every record of the process, however it is emitted (our loggers, Prefect's, SQLAlchemy's)
# ---------------------------------------------------------------------------------------------
_log_secrets: set[str] = set()
_base_factory: Any = None


def install_log_scrubber(settings: Settings | None = None) -> None:
    """From now on, every log record of the process is scrubbed (:func:`scrub_text`) before any
    handler sees it: message and formatted traceback. Adds the settings' secret values (the
    warehouse URL's password included) to what is scrubbed. Idempotent."""
    global _base_factory
    if settings is not None:
        _log_secrets.update(_secrets(settings))
    if _base_factory is not None:
        return
    _base_factory = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = _base_factory(*args, **kwargs)
        try:
            secrets = sorted(_log_secrets, key=len, reverse=True)
            message = record.getMessage()
            scrubbed = scrub_text(message, secrets)
            if scrubbed != message:
                record.msg, record.args = scrubbed, ()
            if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
                record.exc_text = scrub_text(logging.Formatter().formatException(record.exc_info), secrets)
        except Exception:  # noqa: BLE001 - a log line must never fail; the record goes as it is
            pass
        return record

    logging.setLogRecordFactory(factory)


class _ScrubFilter(logging.Filter):
    """Redacts secrets from records of a library logger (urllib3 logs request paths at DEBUG)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = _scrub(message, self.secrets)
        if scrubbed != message:
            record.msg, record.args = scrubbed, ()
        return True


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


def alerts_for_run(outcomes: Iterable[CheckOutcome] | Mapping[str, CheckOutcome], settings: Settings,
                   run_id: str, source: str, docs_path: str | None = None) -> list[Alert]:
    """The alerts a run's check outcomes call for (possibly none), critical first."""
    items = list(outcomes.values()) if isinstance(outcomes, Mapping) else list(outcomes)
    rows = sum(o.rows for o in items)
    quarantined = sum(o.quarantined_count for o in items)
    warnings = sum(o.warning_count for o in items)
    counts = {"rows": rows, "loaded": rows - quarantined, "quarantined": quarantined, "warnings": warnings}
    alerts: list[Alert] = []

    critical_lines = [f"{o.entity}.{r.rule}: {r.unexpected_count} of {r.element_count} rows failed"
                      for o in items for r in o.failed_results("critical")]
    if critical_lines:
        blocked = quarantined > settings.critical_threshold
        lines = [f"{quarantined} rows quarantined (critical_threshold {settings.critical_threshold}): "
                 + ("above the threshold, reports are not published" if blocked else "within the threshold"),
                 *critical_lines]
        alerts.append(Alert(f"{quarantined} rows quarantined by critical checks", "critical", run_id, source,
                            lines, dict(counts), docs_path))

    failed_warnings = [(o.entity, r) for o in items for r in o.failed_results("warning")]
    always = [(e, r) for e, r in failed_warnings if r.rule in _always_alert_rules(e)]
    if warnings > settings.warning_alert_threshold or always:
        lines = [f"{e}.{r.rule}: {r.detail}" for e, r in always]
        lines += [f"{e}.{r.rule}: {r.unexpected_count} of {r.element_count} rows"
                  for e, r in failed_warnings if (e, r) not in always]
        title = (f"{warnings} data-quality warnings (threshold {settings.warning_alert_threshold})"
                 if warnings > settings.warning_alert_threshold else "Batch-level data-quality warning")
        alerts.append(Alert(title, "warning", run_id, source, lines, dict(counts), docs_path))
    return alerts


def failure_alert(run_id: str, source: str, error: BaseException | str, *, flow: str = "nightly",
                  docs_path: str | None = None) -> Alert:
    """The alert for a run that failed (the error text is scrubbed of secrets when sent)."""
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    return Alert(f"Flow {flow} failed", "failure", run_id, source, [text[:1000]], {}, docs_path)
