"""The data-quality gate: the suites of ``expectations/<entity>.json`` applied to core-shaped frames.

:func:`check` evaluates every rule of an entity's suite (``tasks.suites``) over one chunk with
vectorised pandas masks (``tasks.quality_rules``, one evaluator per expectation type) and decides
quarantine: a row failing a ``critical`` rule is quarantined, a row failing only ``warning`` rules
is loaded and reported. It returns one issue per failing row and rule, and one
:class:`CheckResult` per rule, batch-level ones (volume, freshness) included. ``dvc_parse`` rules
are the normaliser's: it evaluates them as it parses the records, and ``check`` skips them.

Great Expectations is the gate's record, never the gate (its result lists are truncated, the
masks are not): ``tasks.gx`` validates the GX-native rules (types ``expect_*``) of every chunk of
a run, in full up to ``DVC_GX_ROW_BUDGET`` rows per entity and on a deterministic sample of the
rows beyond (``DVC_GX_SAMPLE_FRACTION``), writes the data docs, and records how many of the rows
the masks checked it saw. A test shows that both engines count the same failing rows. This module
never imports Great Expectations (it costs seconds).

Record keys: the entity key (``ma_don_vi|hieu_luc_tu`` for units, the date as ``yyyy-mm-dd``);
``#<row position>`` (0-based position in the frame) when the key is missing or repeated within
the batch, so every issue points at exactly one row.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import sqlalchemy as sa

from tasks.quality_rules import EVALUATORS, Batch, CheckContext
from tasks.suites import (
    ENTITIES,
    GX_NATIVE_TYPES,
    ISSUE_COLUMNS,
    PARSE_TYPE,
    SEVERITIES,
    Rule,
    Suite,
    load_suite,
    rule_severity,
)

__all__ = [
    "ENTITIES", "GX_NATIVE_TYPES", "PARSE_TYPE", "SEVERITIES", "CheckContext", "CheckOutcome", "CheckResult", "Rule",
    "Suite", "check", "load_suite", "record_keys", "rule_severity",
]

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from tasks.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one expectation over a batch (a row of ``dq.check_results``).

    For batch-level rules ``element_count`` is the batch size and ``unexpected_count`` is 1
    when the batch failed, 0 otherwise.
    """

    rule: str
    severity: str
    success: bool
    element_count: int
    unexpected_count: int
    detail: str


@dataclass
class CheckOutcome:
    """Everything :func:`check` found in one batch of one entity."""

    entity: str
    rows: int
    issues: pd.DataFrame
    results: list[CheckResult]
    critical_keys: set[str]
    row_keys: pd.Series
    critical_mask: pd.Series

    @property
    def quarantined_count(self) -> int:
        """Rows with at least one critical issue (never loaded)."""
        return int(self.critical_mask.sum())

    @property
    def loaded_count(self) -> int:
        """Rows free of critical issues."""
        return self.rows - self.quarantined_count

    @property
    def warning_count(self) -> int:
        """Warning-level failures on rows that are still loaded (``dq.run_summary.warnings``)."""
        w = self.issues[self.issues["severity"] == "warning"]
        return int((~w["record_key"].isin(self.critical_keys)).sum())

    def loadable(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``frame`` (the checked frame) that may be loaded."""
        return frame[~self.critical_mask.to_numpy()]

    def quarantined(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``frame`` to quarantine, with their ``record_key`` as first column."""
        mask = self.critical_mask.to_numpy()
        out = frame[mask].copy()
        out.insert(0, "record_key", self.row_keys.to_numpy()[mask])
        return out

    def failed_results(self, severity: str | None = None) -> list[CheckResult]:
        """Results that failed, optionally of one severity."""
        return [r for r in self.results if not r.success and (severity is None or r.severity == severity)]


def record_keys(suite: Suite, frame: pd.DataFrame) -> pd.Series:
    """The record key of every row (see the module docstring), as an object Series."""
    n = len(frame)
    parts = []
    for col in suite.key:
        s = frame[col]
        if pd.api.types.is_datetime64_any_dtype(s):
            s = s.dt.strftime("%Y-%m-%d")
        parts.append(s.astype("string"))
    missing = np.logical_or.reduce([p.isna().to_numpy() for p in parts])
    key = parts[0]
    for p in parts[1:]:
        key = key + "|" + p
    key_obj = key.astype(object).to_numpy(copy=True)
    dup = pd.Series(key_obj).duplicated(keep=False).to_numpy() & ~missing
    bad = missing | dup
    key_obj[bad] = np.char.add("#", np.arange(n)[bad].astype(str)).astype(object)
    return pd.Series(key_obj, index=frame.index, dtype=object)


def check(entity: str, frame: pd.DataFrame, context: CheckContext | None = None,
          *, expectations_dir: Path | None = None) -> CheckOutcome:
    """Apply the suite of ``entity`` to a core-shaped ``frame``.

    Raises ``ValueError`` when the frame lacks a column the suite reads (format drift fails here,
    with the list of missing columns). For ``dossiers``, the loadable keys are added to
    ``context.known_dossier_keys`` (when that is a set).
    """
    context = context or CheckContext()
    suite = load_suite(entity, expectations_dir)
    missing = sorted(suite.columns() - set(frame.columns))
    if missing:
        raise ValueError(f"{entity}: frame lacks columns {missing} that expectations/{entity}.json reads")
    started = time.perf_counter()
    env = Batch(entity, frame, context)
    keys = record_keys(suite, frame)
    key_arr = keys.to_numpy()
    n = len(frame)
    critical = np.zeros(n, dtype=bool)
    results: list[CheckResult] = []
    issue_parts: list[pd.DataFrame] = []
    for rule in suite.checked:  # the normaliser evaluates the dvc_parse rules
        ev = EVALUATORS[rule.type](rule, env)
        if ev.mask is None:
            ok = bool(ev.success)
            results.append(CheckResult(rule.rule, rule.severity, ok, ev.element_count, 0 if ok else 1,
                                       ev.note or rule.description))
            continue
        pos = np.flatnonzero(ev.mask)
        detail = ev.note
        if len(pos):
            if rule.severity == "critical":
                critical[pos] = True
            raw = ev.details(pos) if ev.details else rule.description
            texts = (pd.Series([raw] * len(pos), dtype=object) if isinstance(raw, str)
                     else pd.Series(list(raw), dtype=object))
            issue_parts.append(pd.DataFrame({
                "record_key": key_arr[pos], "rule": rule.rule, "severity": rule.severity,
                "detail": texts.to_numpy()}))
            detail = f"{len(pos)} of {ev.element_count} rows failed, e.g. {texts.iloc[0]}"
        results.append(CheckResult(rule.rule, rule.severity, len(pos) == 0, ev.element_count, len(pos),
                                   detail or rule.description))
    issues = (pd.concat(issue_parts, ignore_index=True) if issue_parts
              else pd.DataFrame({c: pd.Series(dtype=object) for c in ISSUE_COLUMNS}))
    issues = issues.astype({c: "string" for c in ISSUE_COLUMNS})
    critical_mask = pd.Series(critical, index=frame.index)
    critical_keys = set(key_arr[critical].tolist())
    if entity == "dossiers" and context.known_dossier_keys is not None:
        good = frame["ma_ho_so"][~critical].dropna()
        context.known_dossier_keys.update(good.tolist())
    log.info("checked %s: %d rows, %d quarantined, %d issues in %.2fs", entity, n, int(critical.sum()),
             len(issues), time.perf_counter() - started)
    return CheckOutcome(entity, n, issues, results, critical_keys, keys, critical_mask)


# ----------------------------------------------------------------------------------------------
# what the checks need from the warehouse
# ----------------------------------------------------------------------------------------------
def check_context(engine: Engine, source: str, entity: str, settings: Settings, now: datetime) -> CheckContext:
    """What the checks need from the warehouse: catalogues, calendar, recent volumes, freshness."""
    with engine.connect() as c:
        procs = pd.read_sql(sa.text("SELECT * FROM core.procedures WHERE source = :s"), c, params={"s": source})
        units = pd.read_sql(sa.text("SELECT * FROM core.units WHERE source = :s"), c, params={"s": source})
        cal = pd.read_sql(sa.text("SELECT day, is_working_day FROM core.calendar"), c)
        vols = [
            int(v)
            for (v,) in c.execute(
                sa.text(
                    "SELECT rows_read FROM dq.run_summary WHERE source = :s AND entity = :e "
                    "ORDER BY recorded_at DESC LIMIT 14"
                ),
                {"s": source, "e": entity},
            )
        ]
        last = c.execute(
            sa.text("SELECT max(_loaded_at) FROM core.dossiers WHERE source = :s"), {"s": source}
        ).scalar()
    if len(cal):
        cal["day"] = pd.to_datetime(cal["day"]).astype("datetime64[us]")
        cal["is_working_day"] = cal["is_working_day"].astype(bool)
    return CheckContext(
        known_procedures=procs if len(procs) else None,
        known_units=units if len(units) else None,
        known_dossier_keys=None,
        calendar=cal if len(cal) else None,
        recent_volumes=vols,
        last_arrival=last,
        now=now,
        freshness_days=settings.freshness_days,
    )


def known_dossiers(engine: Engine, source: str, keys: pd.Series) -> set[str]:
    """Which of ``keys`` (a payment batch's dossier keys) the warehouse already holds."""
    from tasks.bulk import stage

    wanted = pd.DataFrame({"ma_ho_so": keys.dropna().astype("string").unique()})
    if wanted.empty:
        return set()
    with engine.begin() as c:
        stage(c, "stg_pkeys", wanted, "(SELECT ma_ho_so FROM core.dossiers) AS d")
        rows = c.execute(
            sa.text("SELECT s.ma_ho_so FROM stg_pkeys s JOIN core.dossiers d ON d.ma_ho_so = s.ma_ho_so "
                    "AND d.source = :src"),
            {"src": source},
        )
        return {k for (k,) in rows.fetchall()}  # one fetch, not duckdb_engine's fetchone per row
