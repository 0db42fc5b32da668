"""Secrets never leave the process: the values to scrub from any text (alert bodies, errors,
``dq.runs`` messages) and a log-record factory that scrubs every log line of the process.

Kept apart from :mod:`tasks.alerts` so that :mod:`tasks.settings` can install the scrubber
without importing the alerting code (and everything it imports).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import urlsplit


class Settings(Protocol):
    """What is read here of :class:`tasks.settings.Settings` (a protocol, so that the settings
    module, which installs the scrubber, is not imported back)."""

    source_token: Any
    smtp_password: Any
    hash_key: Any
    alert_webhook_url: str | None
    warehouse_url: str


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
