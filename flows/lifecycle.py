"""The lifecycle every warehouse-writing flow shares: its settings, its run, its alerts.

- :func:`run_settings`: the worker's settings with a deployment's ``settings_overrides`` applied,
  refusing any override outside ``tasks.settings.SAFE_OVERRIDES`` (:func:`check_overrides`).
- :func:`tracked_run`: a run id, the warehouse's writer lock (waiting up to
  ``DVC_LOCK_WAIT_SECONDS``), pending migrations, and the run's ``dq.runs`` row from 'running' to
  the status the flow set, or 'failed' with the (scrubbed) error.
- :func:`send_alerts`: the alerts a finished run calls for (``tasks.alerts.alerts_for_run``).
- :func:`alert_on_failure`: the Prefect state hook that alerts on a failed or crashed flow run,
  the one alert such a run gets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from flows import CURRENT_RUN_ID
from tasks import pipeline
from tasks.alerts import alerts_for_run, failure_alert, scrub_for, send_alert
from tasks.gx import settle_gx
from tasks.runs import RunResult, finish_run, start_run
from tasks.settings import SAFE_OVERRIDES, Settings, get_settings, require_run_settings
from tasks.warehouse import WarehouseBusy, open_warehouse, upgrade, writer_lock

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# settings
# ----------------------------------------------------------------------------------------------
class UnsafeOverride(ValueError):
    """A ``settings_overrides`` parameter tried to set a setting outside ``SAFE_OVERRIDES``."""


def check_overrides(overrides: Any) -> None:
    """Refuse ``settings_overrides`` that are not a mapping of :data:`tasks.settings.SAFE_OVERRIDES`
    (sizes, thresholds, windows, the source name, the period cut). Anyone who can reach the
    Prefect API can set a flow run's parameters; a ``source_url`` there would send the worker's
    bearer token to any host, a ``warehouse_url``, ``smtp_host`` or ``inbox_dir`` would redirect
    data. The message names the settings, never their values."""
    if overrides is None:
        return
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise UnsafeOverride("settings_overrides must map setting names to values")
    unknown = sorted(set(overrides) - set(Settings.model_fields))
    if unknown:
        raise UnsafeOverride(f"unknown settings in settings_overrides: {', '.join(unknown)}")
    refused = sorted(set(overrides) - SAFE_OVERRIDES)
    if refused:
        names = ", ".join(f"{k} (DVC_{k.upper()})" for k in refused)
        raise UnsafeOverride(
            f"settings_overrides may not set {names}: connection targets, folders and secrets must come from "
            f"the worker's environment (or its .env) or a Prefect Secret block, never from flow-run parameters; "
            f"allowed overrides: {', '.join(sorted(SAFE_OVERRIDES))}")


def run_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """The settings of the environment with a deployment's ``settings_overrides`` applied. Only
    :data:`tasks.settings.SAFE_OVERRIDES` may be overridden (:func:`check_overrides`, before
    anything else runs); values are validated like the environment's, so a typo or a bad value
    fails the run at once. Connection targets and secrets (source URL and token, warehouse URL,
    SMTP, webhook, folders, hash key) come only from the worker's environment or a Prefect Secret
    block, never from parameters, which anyone with API access can set and the server shows."""
    check_overrides(overrides)
    base = require_run_settings(get_settings())  # DVC_HASH_KEY fit for real data; logs scrubbed
    if not overrides:
        return base
    return Settings(**{**{k: getattr(base, k) for k in Settings.model_fields}, **overrides})


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------
@contextmanager
def run_writer_lock(engine: Engine, settings: Settings, run_id: str, logger: Any = None) -> Iterator[None]:
    """Hold the warehouse's writer lock for a run. When another run holds it (another source's
    nightly on the shared PostgreSQL, a backfill), wait up to ``DVC_LOCK_WAIT_SECONDS``, saying so
    in the log; past it raise :class:`WarehouseBusy` naming the setting."""
    logger = logger or log
    stack = ExitStack()
    try:
        stack.enter_context(writer_lock(engine, wait_seconds=0, holder=run_id))
    except WarehouseBusy as busy:
        wait = settings.lock_wait_seconds
        if wait <= 0:
            raise WarehouseBusy(f"{busy} (DVC_LOCK_WAIT_SECONDS=0: not waiting)") from None
        logger.warning("%s; run %s waits up to %.0f s for it (DVC_LOCK_WAIT_SECONDS)", busy, run_id, wait)
        t0 = time.monotonic()
        try:
            stack.enter_context(writer_lock(engine, wait_seconds=wait, holder=run_id))
        except WarehouseBusy as exc:
            raise WarehouseBusy(
                f"{exc}; gave up after waiting {wait:.0f} s (raise DVC_LOCK_WAIT_SECONDS to wait longer)"
            ) from None
        logger.info("run %s got the writer lock after waiting %.1f s", run_id, time.monotonic() - t0)
    with stack:
        yield


@dataclass
class TrackedRun:
    """A warehouse-writing run in progress; the body sets how it ends (default: success)."""

    engine: Engine
    run_id: str
    status: str = "success"
    published: bool | None = None
    message: str = ""


@contextmanager
def tracked_run(settings: Settings, flow_name: str, prefix: str, logger: Any = None) -> Iterator[TrackedRun]:
    """One warehouse-writing run: a run id (also on every log line), the writer lock (waiting up
    to DVC_LOCK_WAIT_SECONDS), pending migrations, and its dq.runs row: 'running' at the start,
    then the status the body set, or 'failed' with the error when the body raises."""
    engine = open_warehouse(settings)
    run = TrackedRun(engine, pipeline.new_run_id(prefix))
    CURRENT_RUN_ID.set(run.run_id)
    with run_writer_lock(engine, settings, run.run_id, logger):
        upgrade(engine)
        start_run(engine, run.run_id, flow_name, settings.source_name)
        try:
            yield run
        except BaseException as exc:
            settle_gx(run.run_id)  # a failed run's deferred validations still finish their record
            message = scrub_for(settings, f"{type(exc).__name__}: {exc}")  # no DSN password in dq.runs
            if "Out of Memory Error" in message:  # DuckDB's; say which setting to change
                hint = (f"the DuckDB warehouse ran out of its memory limit (DVC_DUCKDB_MEMORY_LIMIT="
                        f"{settings.duckdb_memory_limit or 'DuckDB default'}): raise it")
                (logger or log).error("run %s: %s", run.run_id, hint)
                message = f"{hint}. {message}"
            finish_run(engine, run.run_id, "failed", False, message)
            raise
        finish_run(engine, run.run_id, run.status, run.published, run.message)


# ----------------------------------------------------------------------------------------------
# alerts
# ----------------------------------------------------------------------------------------------
def send_alerts(result: RunResult, settings: Settings) -> None:
    """Send the alerts a finished run calls for (``tasks.alerts.alerts_for_run``: data-quality
    failures and warnings, inbox files that could not be read). Never raises."""
    try:
        for alert in alerts_for_run(result, settings):
            send_alert(alert, settings)
    except Exception:  # noqa: BLE001 - an alert must never fail the run
        log.exception("could not send the alerts of run %s", result.run_id)


def alert_on_failure(flow_obj: Any, flow_run: Any, state: Any) -> None:
    """Prefect state hook (``on_failure``, ``on_crashed``): a failed or crashed run alerts the ops
    team once, naming its dq.runs run id once the flow has set one (never raises)."""
    try:
        settings = get_settings()
        alert = failure_alert(CURRENT_RUN_ID.get() or str(flow_run.id), settings.source_name,
                              str(state.message or "")[:500], run_name=flow_run.name, state=state.name,
                              lines=[f"Prefect flow run {flow_run.id}"])
        send_alert(alert, settings)
    except Exception:  # noqa: BLE001 - an alert must never mask the failure
        log.exception("could not send the failure alert")
