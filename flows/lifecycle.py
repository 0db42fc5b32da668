"""The lifecycle every warehouse-writing flow shares: its settings, its run, its alerts.

- :func:`run_settings`: the worker's settings with a deployment's ``settings_overrides`` applied,
  refusing any override outside ``tasks.settings.SAFE_OVERRIDES`` (:func:`check_overrides`).
- :func:`tracked_run`: a run id, the warehouse's writer lock (waiting up to
  ``DVC_LOCK_WAIT_SECONDS``), pending migrations, and the run's ``dq.runs`` row from 'running' to
  the status the flow set, or 'failed' with the (scrubbed) error.
- :func:`send_alerts`: the alerts a finished run calls for (``tasks.alerts.alerts_for_run``).
- :func:`alert_on_failure`: the Prefect state hook that alerts on a failed flow run (and on a
  crashed one outside a deployment), the one alert such a run gets.
- Named final states (:func:`named_state`): a run that did its job but needs a look ends
  ``Completed`` under another name ops filter on in the UI (``prefect flow-run ls --state ...``)
  and in automations (event ``prefect.flow-run.<name>``): :data:`BLOCKED` (the data-quality gate
  closed), :data:`FILES_REJECTED` (inbox files moved to ``failed/``), :data:`SKIPPED` (nothing to
  do: the warehouse busy for the inbox, another period cut's schedule).
- :func:`route_project_logs`: the project's loggers (``tasks.*``, ``flows.*``) in each flow run's
  log in the Prefect UI, when ``PREFECT_LOGGING_EXTRA_LOGGERS`` names them (prefect.yaml does).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from prefect.states import Completed, State
from sqlalchemy.engine import Engine

from flows import CURRENT_RUN_ID
from tasks import pipeline
from tasks.alerts import alerts_for_run, failure_alert, send_alert
from tasks.gx import settle_gx
from tasks.runs import RunResult, finish_run, start_run
from tasks.scrub import scrub_for
from tasks.settings import SAFE_OVERRIDES, Settings, get_settings, require_run_settings
from tasks.warehouse import WarehouseBusy, dialect_name, open_warehouse, upgrade, writer_lock

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
    route_project_logs()
    base = require_run_settings(get_settings())  # DVC_HASH_KEY fit for real data; logs scrubbed
    if not overrides:
        return base
    return Settings(**{**{k: getattr(base, k) for k in Settings.model_fields}, **overrides})


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------
@contextmanager
def run_writer_lock(engine: Engine, settings: Settings, run_id: str, logger: Any = None, *,
                    wait: bool = True) -> Iterator[None]:
    """Hold the warehouse's writer lock for a run. When another run holds it (another source's
    nightly on the shared PostgreSQL, a backfill), wait up to ``DVC_LOCK_WAIT_SECONDS``, saying so
    in the log; past it raise :class:`WarehouseBusy` naming the setting. ``wait=False``: raise
    :class:`WarehouseBusy` at once (the inbox skips instead, :func:`lock_holder` names the run)."""
    logger = logger or log
    stack = ExitStack()
    try:
        stack.enter_context(writer_lock(engine, wait_seconds=0, holder=run_id))
    except WarehouseBusy as busy:
        if not wait:
            raise
        seconds = settings.lock_wait_seconds
        if seconds <= 0:
            raise WarehouseBusy(f"{busy} (DVC_LOCK_WAIT_SECONDS=0: not waiting)") from None
        logger.warning("%s; run %s waits up to %.0f s for it (DVC_LOCK_WAIT_SECONDS)", busy, run_id, seconds)
        t0 = time.monotonic()
        try:
            stack.enter_context(writer_lock(engine, wait_seconds=seconds, holder=run_id))
        except WarehouseBusy as exc:
            raise WarehouseBusy(
                f"{exc}; gave up after waiting {seconds:.0f} s (raise DVC_LOCK_WAIT_SECONDS to wait longer)"
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
def tracked_run(settings: Settings, flow_name: str, prefix: str, logger: Any = None, *,
                wait_for_lock: bool = True) -> Iterator[TrackedRun]:
    """One warehouse-writing run: a run id (also on every log line), the writer lock (waiting up
    to DVC_LOCK_WAIT_SECONDS; ``wait_for_lock=False``: :class:`WarehouseBusy` at once, before
    anything is recorded), pending migrations, and its dq.runs row: 'running' at the start, then
    the status the body set, or 'failed' with the error when the body raises."""
    engine = open_warehouse(settings)
    run = TrackedRun(engine, pipeline.new_run_id(prefix))
    CURRENT_RUN_ID.set(run.run_id)
    with run_writer_lock(engine, settings, run.run_id, logger, wait=wait_for_lock):
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


def lock_holder(engine: Engine) -> str | None:
    """The run holding the warehouse's writer lock, as far as it can be told without waiting:
    DuckDB: the holder the lock file names (the run id); PostgreSQL: the latest 'running' run of
    ``dq.runs``. None when unknown."""
    try:
        if dialect_name(engine) == "duckdb":
            from pathlib import Path

            db = Path(engine.url.database or "")
            text = db.with_suffix(db.suffix + ".lock").read_text(encoding="utf-8", errors="replace").strip()
            return text.splitlines()[0][:200] if text else None
        import sqlalchemy as sa

        with engine.connect() as c:
            return c.execute(sa.text("SELECT run_id FROM dq.runs WHERE status = 'running' "
                                     "ORDER BY started_at DESC LIMIT 1")).scalar()
    except Exception:  # noqa: BLE001 - only a name for a log line
        return None


# ----------------------------------------------------------------------------------------------
# named final states
# ----------------------------------------------------------------------------------------------
#: The data-quality gate closed: data loaded, reports not published (the nightly's data-quality
#: alert says so; no failure alert).
BLOCKED = "Blocked"
#: The inbox moved files it could not read to ``failed/`` (the inbox's alert names them).
FILES_REJECTED = "FilesRejected"
#: The run had nothing to do: the warehouse was busy for the inbox, or a monthly schedule of the
#: other period cut.
SKIPPED = "Skipped"


def named_state(name: str, message: str, data: Any) -> State:
    """The final state of a run that did its job but needs a look: ``Completed`` named ``name``
    (Prefect shows the name and the message; an automation matches ``prefect.flow-run.<name>``).
    ``data`` is what the flow returns to a caller in the same process (the CLI, the tests): the
    same as a plain return, so ``dvc-etl`` and its exit codes see no difference. Not ``Failed``:
    a failed state raises in such a caller, and the failure hook would alert a second time."""
    return Completed(name=name, message=message[:1000], data=data)


# ----------------------------------------------------------------------------------------------
# logs in the Prefect UI
# ----------------------------------------------------------------------------------------------
def route_project_logs() -> None:
    """Give the loggers ``PREFECT_LOGGING_EXTRA_LOGGERS`` names (prefect.yaml sets ``tasks,flows``
    on every deployment) the level of Prefect's ``prefect.extra`` logger (``PREFECT_LOGGING_LEVEL``,
    INFO by default) when they have none of their own. Prefect adds its API handler to those
    loggers, so their lines (migrations, per-chunk progress, retries, the gate) reach the flow
    run's log in the UI, but leaves their level unset: they would inherit the root logger's
    WARNING and their INFO lines would never be sent. Without the setting this does nothing."""
    try:
        from prefect.settings import PREFECT_LOGGING_EXTRA_LOGGERS

        names = PREFECT_LOGGING_EXTRA_LOGGERS.value()
    except Exception:  # noqa: BLE001 - logging must never stop a run
        return
    level = logging.getLogger("prefect.extra").level or logging.INFO
    for name in names:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(level)


# ----------------------------------------------------------------------------------------------
# alerts
# ----------------------------------------------------------------------------------------------
def send_alerts(result: RunResult, settings: Settings, engine: Engine | None = None) -> None:
    """Send the alerts a finished run calls for (``tasks.alerts.alerts_for_run``: data-quality
    failures and warnings, inbox files that could not be read). With the run's ``engine``, the
    alert names the first records the run quarantined. Never raises."""
    try:
        if engine is not None:
            result.read_failing_records(engine)
        for alert in alerts_for_run(result, settings):
            send_alert(alert, settings)
    except Exception:  # noqa: BLE001 - an alert must never fail the run
        log.exception("could not send the alerts of run %s", result.run_id)


def alert_on_failure(flow_obj: Any, flow_run: Any, state: Any) -> None:
    """Prefect state hook (``on_failure``, ``on_crashed``): a failed run alerts the ops team once,
    naming its dq.runs run id once the flow has set one (never raises). A crashed run of a
    deployment is left to the Prefect automation ``dvc-etl: flow run crashed`` (``make deploy``),
    which also sees the crashes no hook survives (out-of-memory kill, lost worker): one alert per
    crash. A crash outside a deployment (``dvc-etl run``) is alerted here. A closed gate is not a
    failure (:data:`BLOCKED`): the nightly's data-quality alert is its one alert."""
    if state.is_crashed() and getattr(flow_run, "deployment_id", None):
        log.info("flow run %s crashed: the dvc-etl crash automation alerts it", flow_run.name)
        return
    try:
        settings = get_settings()
        alert = failure_alert(CURRENT_RUN_ID.get() or str(flow_run.id), settings.source_name,
                              str(state.message or "")[:500], run_name=flow_run.name, state=state.name,
                              lines=[f"Prefect flow run {flow_run.id}"], flow_run_id=str(flow_run.id),
                              settings=settings)
        send_alert(alert, settings)
    except Exception:  # noqa: BLE001 - an alert must never mask the failure
        log.exception("could not send the failure alert")
