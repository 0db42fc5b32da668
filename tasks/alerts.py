"""Alerts: a Slack-compatible webhook and an e-mail, for data-quality findings and failed runs.

* :func:`alerts_for_run` is the one decision on which alerts a finished run
  (:class:`tasks.runs.RunResult`) deserves: one data-quality alert when rows were quarantined,
  when warnings exceed ``settings.warning_alert_threshold``, or when a batch-level rule marked
  ``meta.alert = "always"`` in the suites (volume, freshness) failed, whose failure touches no
  row but means the source may be broken; one more when inbox files could not be read.
* :func:`failure_alert` builds the alert for a run that failed outright (the flows' state hook).
* :func:`send_alert` delivers one alert to every configured channel. It never raises: a channel
  that cannot be reached is logged at WARNING and reported in the returned :class:`AlertDelivery`.

What every alert carries (:func:`send_alert` completes what its builder left out):

* a link to the flow run in the Prefect UI (:func:`flow_run_link`: Prefect's ``PREFECT_UI_URL``
  and the flow run in progress or ``RunResult.flow_run_id``; none outside a flow run);
* a link to the run's data docs and to the site's index (``tasks.data_docs``: under
  ``DVC_DATA_DOCS_URL``, else the file path);
* a data-quality alert: the top failing rules with their counts (:data:`TOP_RULES`), and the first
  records the run quarantined (:data:`FIRST_RECORDS`), by their codes (``MaHoSo``; a payment's
  ``Ma`` and ``MaHoSo``) and rules, with the checks' details scrubbed of personal values
  (``tasks.runs.first_failing_records``). Never the applicant's name, ID or phone number, never
  the raw record.

No secret reaches an alert body or a log line: bodies carry only run ids, codes, rule names,
counts and links, and every text that leaves this module (bodies, error messages, logs) is
scrubbed of the settings' secret values, of the warehouse URL's password, of any
``scheme://user:password@`` and of the webhook URL (whose path is a credential on Slack-style
services). ``tasks.scrub.install_log_scrubber`` does the same for every log record of the process. In the
webhook's Block Kit text, ``& < >`` are escaped, so a value in a record cannot mention
``@channel`` or forge a link; every block stays under Slack's limits.

E-mail uses STARTTLS (certificate verified) unless ``DVC_SMTP_HOST`` is loopback, or as
``DVC_SMTP_STARTTLS`` forces (``tasks.settings.smtp_use_starttls``).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

from tasks.scrub import (
    _scrub,
    _ScrubFilter,
    _secrets,
)
from tasks.settings import Settings, smtp_use_starttls

if TYPE_CHECKING:
    from tasks.runs import RunResult


log = logging.getLogger(__name__)

ALERT_SEVERITIES: tuple[str, ...] = ("critical", "warning", "failure")
HTTP_TIMEOUT_SECONDS = 10.0
SMTP_TIMEOUT_SECONDS = 10.0
RETRIES = 2  # after the first attempt
MAX_LINES = 25
TOP_RULES = 5  # failing rules an alert names, most rows first (the data docs list them all)
FIRST_RECORDS = 10  # quarantined records an alert names (``dvc-etl quarantine list`` has them all)
SLACK_TEXT_LIMIT = 2900  # characters of a Block Kit section's text (Slack's limit: 3000)
_EMOJI = {"critical": ":rotating_light:", "warning": ":warning:", "failure": ":x:"}


@dataclass(frozen=True)
class Alert:
    """One notification: what happened in which run, in a few lines and counts, with its links."""

    title: str
    severity: str
    run_id: str
    source: str
    lines: list[str] = field(default_factory=list)  # under ``heading``: the top rules, or the error
    counts: dict[str, int] = field(default_factory=dict)
    docs_path: str | None = None  # the run's data docs (URL or file path)
    heading: str = "Findings"
    records: list[str] = field(default_factory=list)  # the first quarantined records: codes and reasons
    flow_run_url: str | None = None  # the flow run in the Prefect UI
    site_url: str | None = None  # the data docs' index of every run

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


def _links(alert: Alert) -> list[tuple[str, str]]:
    """(label, link) of the alert's links, as far as known."""
    links = [("Flow run", alert.flow_run_url), ("Data docs", alert.docs_path), ("All runs", alert.site_url)]
    return [(label, url) for label, url in links if url]


def render_text(alert: Alert) -> str:
    """The alert as plain text (the e-mail body)."""
    out = [f"[{alert.severity.upper()}] {alert.title}", "", f"Run id: {alert.run_id}", f"Source: {alert.source}"]
    out += [f"{label}: {url}" for label, url in _links(alert)]
    if not alert.docs_path:
        out.append("Data docs: not built for this run")
    if alert.counts:
        out += ["", "Counts:"] + [f"  {k}: {v}" for k, v in alert.counts.items()]
    if alert.lines:
        out += ["", f"{alert.heading}:"] + [f"  - {line}" for line in _shown_lines(alert)]
    if alert.records:
        out += ["", "First quarantined records (codes and reasons, no personal data):"]
        out += [f"  - {line}" for line in alert.records]
    return "\n".join(out) + "\n"


def _mrkdwn(text: str) -> str:
    """``text`` safe in Slack mrkdwn: ``& < >`` escaped (no mention, no forged link)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _bounded(title: str, lines: list[str], limit: int = SLACK_TEXT_LIMIT) -> str:
    """``*title*`` and the lines as bullets, as many as fit in ``limit`` characters."""
    out = f"*{title}*"
    for i, line in enumerate(lines):
        bullet = "\n• " + _mrkdwn(line)[:600]
        if len(out) + len(bullet) > limit - 40:
            return out + f"\n• ... and {len(lines) - i} more"
        out += bullet
    return out


def _slack_link(label: str, url: str) -> str:
    if url.startswith(("http://", "https://")) and not any(c in url for c in "<>| "):
        return f"*{label}*: <{url}|{_mrkdwn(url)}>"
    return f"*{label}*: `{_mrkdwn(url)}`"  # a file path: shown, to be opened on the server


def slack_payload(alert: Alert) -> dict[str, Any]:
    """Slack-compatible JSON: a ``text`` fallback and Block Kit ``blocks`` (header, run and counts,
    links, the findings, the first quarantined records), each within Slack's limits."""
    headline = f"{_EMOJI[alert.severity]} [{alert.severity.upper()}] {alert.title}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": headline[:150], "emoji": True}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*Run id*\n`{_mrkdwn(alert.run_id)[:200]}`"},
            {"type": "mrkdwn", "text": f"*Source*\n{_mrkdwn(alert.source)[:200]}"},
            *({"type": "mrkdwn", "text": f"*{_mrkdwn(k)[:100]}*\n{v}"} for k, v in list(alert.counts.items())[:8]),
        ]},
    ]
    links = [_slack_link(label, url)[:1000] for label, url in _links(alert)]
    if not alert.docs_path:
        links.append("*Data docs*: not built for this run")
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(links)}})
    if alert.lines:
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": _bounded(alert.heading, _shown_lines(alert))}})
    if alert.records:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _bounded(
            "First quarantined records (codes and reasons, no personal data)", alert.records)}})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"dvc-etl · run `{_mrkdwn(alert.run_id)[:200]}`"}]})
    counts = ", ".join(f"{k}={v}" for k, v in alert.counts.items())
    text = f"[{alert.severity.upper()}] {alert.title} (run {alert.run_id}, source {alert.source}; {counts})"
    if alert.flow_run_url:
        text += f" {alert.flow_run_url}"
    return {"text": _mrkdwn(text)[:3000], "blocks": blocks}


def _scrub_payload(obj: Any, secrets: list[str]) -> Any:
    if isinstance(obj, str):
        return _scrub(obj, secrets)
    if isinstance(obj, list):
        return [_scrub_payload(x, secrets) for x in obj]
    if isinstance(obj, dict):
        return {k: _scrub_payload(v, secrets) for k, v in obj.items()}
    return obj


def _scrub_alert(alert: Alert, secrets: list[str]) -> Alert:
    """``alert`` with every text scrubbed of ``secrets``."""
    texts = {k: _scrub_payload(getattr(alert, k), secrets) for k in (
        "title", "run_id", "source", "lines", "docs_path", "records", "flow_run_url", "site_url")}
    return replace(alert, **texts, counts={_scrub(k, secrets): v for k, v in alert.counts.items()})


def email_message(alert: Alert, settings: Settings) -> EmailMessage:
    """The alert as an e-mail to ``settings.alert_email_to``."""
    msg = EmailMessage()
    msg["Subject"] = _scrub(f"[dvc-etl] {alert.severity.upper()}: {alert.title} (run {alert.run_id})",
                            _secrets(settings))
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
    """Send ``alert`` to the webhook and by e-mail, as configured, with the links its builder left
    out (:func:`with_links`). Never raises."""
    secrets = _secrets(settings)
    try:
        alert = with_links(alert, settings)
    except Exception:  # noqa: BLE001 - an alert goes out without its links rather than not at all
        log.exception("alert %r: could not work out its links", alert.title)
    errors: list[str] = []
    webhook = email = "disabled"
    if settings.alert_webhook_url:
        label = _webhook_label(settings.alert_webhook_url)
        try:
            # scrubbed before Slack's escaping (a secret holding & < > would not match after it), and after
            payload = _scrub_payload(slack_payload(_scrub_alert(alert, secrets)), secrets)
            _post_webhook(settings.alert_webhook_url, payload, retry_delay, secrets)
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
# Links
# ---------------------------------------------------------------------------------------------
def flow_run_link(flow_run_id: str | None = None) -> str | None:
    """``{PREFECT_UI_URL}/runs/flow-run/{id}`` of ``flow_run_id`` or else the flow run in progress
    (``prefect.runtime.flow_run.id``); None outside a flow run or when Prefect has no UI URL
    (``PREFECT_UI_URL``, which Prefect derives from ``PREFECT_API_URL`` when unset, as for its
    own links)."""
    if "prefect" not in sys.modules:  # no flow run in this process; importing Prefect costs a second
        return None
    try:
        from prefect.runtime import flow_run
        from prefect.settings import get_current_settings

        ui = get_current_settings().ui_url
        run = flow_run_id or flow_run.id
    except Exception:  # noqa: BLE001 - a link is a convenience
        return None
    return f"{str(ui).rstrip('/')}/runs/flow-run/{run}" if ui and run else None


def docs_links(settings: Settings, run_id: str) -> tuple[str | None, str | None]:
    """(the run's data docs, the site's index of every run): URLs under ``DVC_DATA_DOCS_URL``, else
    file paths; None for a run without pages, and for an index that was never written."""
    from tasks.data_docs import INDEX, data_docs_link, docs_root, site_link

    site = site_link(settings) if settings.data_docs_url or (docs_root(settings) / INDEX).is_file() else None
    return data_docs_link(settings, run_id), site


def with_links(alert: Alert, settings: Settings) -> Alert:
    """``alert`` with the links it lacks: the flow run in the Prefect UI, the run's data docs and
    the data docs' index."""
    docs, site = docs_links(settings, alert.run_id) if not (alert.docs_path and alert.site_url) else (None, None)
    return replace(alert, flow_run_url=alert.flow_run_url or flow_run_link(), docs_path=alert.docs_path or docs,
                   site_url=alert.site_url or site)


# ---------------------------------------------------------------------------------------------
# Deciding
# ---------------------------------------------------------------------------------------------
def _rule_meta(entity: str) -> dict[str, dict[str, Any]]:
    """The suite's ``meta`` of each rule of ``entity`` (empty for an entity without a suite)."""
    from tasks.quality import load_suite

    try:
        return {r.rule: r.meta for r in load_suite(entity).rules}
    except (ValueError, OSError):
        return {}


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def top_rules(result: RunResult, limit: int = TOP_RULES) -> list[str]:
    """The run's failing rules, the ``limit`` most important first: critical ones, then those the
    suites mark ``alert: always`` (volume, freshness: shown even beyond ``limit``), then warnings;
    by rows failed. A row rule reads ``dossiers.dossier_status_in_code_list: 12 rows (critical)``;
    a batch-level rule gives its detail instead of a count."""
    found = []
    for name, e in result.entities.items():
        meta = _rule_meta(name)
        for rule, v in e.failing().items():
            m = meta.get(rule, {})
            always = m.get("alert") == "always"
            found.append(((v["severity"] != "critical", not always, -v["unexpected_count"], name, rule), name, rule,
                          v, bool(m.get("batch")), always))
    found.sort(key=lambda f: f[0])
    shown = found[:limit] + [f for f in found[limit:] if f[5]]
    lines = []
    for _, name, rule, v, batch, _always in shown:
        if batch:
            detail = " ".join(str(v.get("detail") or "").split())[:300]
            lines.append(f"{name}.{rule}: failed ({v['severity']}, batch check): {detail}")
        else:
            lines.append(f"{name}.{rule}: {_plural(v['unexpected_count'], 'row')} ({v['severity']})")
    if len(found) > len(shown):
        lines.append(f"... and {len(found) - len(shown)} more failing rules (see the data docs)")
    return lines


def first_records(result: RunResult, limit: int = FIRST_RECORDS) -> list[str]:
    """The first quarantined records of the run (``RunResult.failing_records``) as lines, and how
    many more there are."""
    lines = [r.text() for r in result.failing_records[:limit]]
    more = max(result.failing_records_total, result.rows_quarantined) - len(lines)
    if lines and more > 0:
        lines.append(f"... and {_plural(more, 'more record')} (dvc-etl quarantine list)")
    return lines


def alerts_for_run(result: RunResult, settings: Settings) -> list[Alert]:
    """The alerts a finished run calls for (possibly none): its data-quality findings, then the
    inbox files it could not read. Each carries the run's links (:func:`with_links`)."""
    alerts: list[Alert] = []
    quarantined, warnings = result.rows_quarantined, result.warnings
    always = any(rule for name, e in result.entities.items() for rule in e.failing()
                 if _rule_meta(name).get(rule, {}).get("alert") == "always")
    docs, site = docs_links(settings, result.run_id)
    links = dict(flow_run_url=flow_run_link(result.flow_run_id), docs_path=docs or result.data_docs, site_url=site)
    if quarantined or warnings > settings.warning_alert_threshold or always:
        alerts.append(Alert(
            title=("Critical data-quality failures" if quarantined else "Data-quality warnings")
            + (" - reports not published" if result.blocked else ""),
            severity="critical" if quarantined else "warning", run_id=result.run_id, source=result.source,
            lines=top_rules(result), counts={"quarantined": quarantined, "warnings": warnings},
            heading="Top failing rules", records=first_records(result), **links))
    if result.failed_files:
        alerts.append(Alert(
            title=f"{len(result.failed_files)} inbox file(s) could not be read", severity="warning",
            run_id=result.run_id, source=result.source, lines=[f"{path}: {why}" for path, why in result.failed_files],
            counts={"failed_files": len(result.failed_files)}, heading="Files not read", **links))
    return alerts


def failure_alert(run_id: str, source: str, error: BaseException | str, *, run_name: str | None = None,
                  state: str = "Failed", lines: Iterable[str] = (), docs_path: str | None = None,
                  flow_run_id: str | None = None, settings: Settings | None = None) -> Alert:
    """The alert for a run that failed (``state``: Failed, Crashed), with the error first; the
    error text is scrubbed of secrets when sent. ``run_name``: the Prefect flow run's name;
    ``flow_run_id``: its id (default: the flow run in progress). With ``settings``, the data docs
    links are filled in now; else :func:`send_alert` fills them in."""
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    docs, site = docs_links(settings, run_id) if settings is not None else (None, None)
    return Alert(f"dvc-etl run {run_name or run_id} {state}", "failure", run_id, source, [text[:1000], *lines], {},
                 docs_path or docs, heading="Error", flow_run_url=flow_run_link(flow_run_id), site_url=site)
