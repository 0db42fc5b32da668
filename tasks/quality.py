"""Data-quality gate: the rules of ``expectations/<entity>.json`` applied to core-shaped frames.

The suite JSON files are the single source of truth for rules and severities. Each expectation
carries ``meta.rule`` (a stable snake_case name, used in ``dq.quarantine`` and
``dq.check_results``), ``meta.severity`` (``critical``: the row is quarantined; ``warning``: the
row is loaded and the finding reported) and ``meta.description`` (the human reason).

Two engines read the same suites:

* :func:`check` evaluates **every** expectation with vectorised pandas code (one evaluator per
  expectation type) and decides quarantine. It returns one issue per failing row and rule, and
  one :class:`CheckResult` per expectation, batch-level ones (volume, freshness) included.
* :func:`validate_with_gx` runs the GX-native expectations (types ``expect_*``) through Great
  Expectations on the same frame and builds data docs: the gate's record, readable by humans. GX
  validates the whole frame up to :data:`GX_FULL_FRAME_MAX_ROWS` rows and a deterministic sample
  beyond; it never decides quarantine (GX's result lists are truncated, the masks are not). A
  test shows both engines count the same unexpected rows for every GX-native expectation.

Project rules (types ``dvc_*``) cover what GX has no expectation for: date order by calendar
date, sums, references to catalogues, the working-day calendar, volume and freshness.

Record keys: the entity key (``ma_don_vi|hieu_luc_tu`` for units, the date as ``yyyy-mm-dd``);
``#<row position>`` (0-based position in the frame) when the key is missing or repeated within
the batch, so every issue points at exactly one row.

Great Expectations is imported lazily (it costs seconds): :func:`check` never imports it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.settings import EXPECTATIONS_DIR

log = logging.getLogger(__name__)

ENTITIES: tuple[str, ...] = ("dossiers", "payments", "procedures", "units")
SEVERITIES: tuple[str, ...] = ("critical", "warning")
#: GX validates the full frame up to this many rows, a deterministic sample beyond.
GX_FULL_FRAME_MAX_ROWS = 200_000
GX_SAMPLE_SEED = 20240101
ISSUE_COLUMNS: list[str] = ["record_key", "rule", "severity", "detail"]
#: Expectation types evaluated by both engines (GX Core names).
GX_NATIVE_TYPES: frozenset[str] = frozenset(
    {
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_null",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_match_regex",
        "expect_column_values_to_be_unique",
        "expect_column_values_to_be_between",
        "expect_column_pair_values_a_to_be_greater_than_b",
        "expect_compound_columns_to_be_unique",
    }
)


# ---------------------------------------------------------------------------------------------
# Suites
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """One expectation of a suite, as read from its JSON."""

    type: str
    kwargs: dict[str, Any]
    rule: str
    severity: str
    description: str
    meta: dict[str, Any]

    @property
    def is_gx_native(self) -> bool:
        """True when GX Core knows this expectation type (it is validated by GX too)."""
        return self.type in GX_NATIVE_TYPES

    @property
    def is_batch_level(self) -> bool:
        """True for rules about the whole batch (volume, freshness), which fail no row."""
        return bool(self.meta.get("batch"))


@dataclass(frozen=True)
class Suite:
    """An entity's suite: its key columns and rules, in file order."""

    name: str
    key: tuple[str, ...]
    rules: tuple[Rule, ...]
    document: dict[str, Any]

    def columns(self) -> set[str]:
        """Every frame column the suite's expectations read."""
        cols: set[str] = set(self.key)
        for r in self.rules:
            kw = r.kwargs
            for name in ("column", "column_A", "column_B", "column_earlier", "column_later", "date_column",
                         "procedure_column", "received_column", "due_column", "supplements_column",
                         "group_column", "start_column", "end_column"):
                if name in kw:
                    cols.add(kw[name])
            cols.update(kw.get("column_list", []))
            cols.update(kw.get("sum_of", []))
            cols.update(_condition_columns(kw.get("row_condition")))
        return cols


def load_suite(entity: str, expectations_dir: Path | None = None) -> Suite:
    """Read and validate ``<expectations_dir>/<entity>.json`` (cached per path and mtime)."""
    if entity not in ENTITIES:
        raise ValueError(f"unknown entity {entity!r}; expected one of {ENTITIES}")
    path = (expectations_dir or EXPECTATIONS_DIR) / f"{entity}.json"
    return _load_suite_cached(str(path), path.stat().st_mtime_ns)


@lru_cache(maxsize=16)
def _load_suite_cached(path: str, _mtime: int) -> Suite:
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, exp in enumerate(doc["expectations"]):
        meta = dict(exp.get("meta") or {})
        name, severity = meta.get("rule"), meta.get("severity")
        if not name or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"{path}: expectation {i} has no snake_case meta.rule")
        if severity not in SEVERITIES:
            raise ValueError(f"{path}: rule {name} has severity {severity!r}, not critical/warning")
        if name in seen:
            raise ValueError(f"{path}: rule {name} appears twice")
        if exp["type"] not in _EVALUATORS:
            raise ValueError(f"{path}: rule {name} has unsupported type {exp['type']}")
        seen.add(name)
        rules.append(Rule(exp["type"], dict(exp["kwargs"]), name, severity, meta.get("description", ""), meta))
    key = tuple(doc.get("meta", {}).get("key") or ())
    if not key:
        raise ValueError(f"{path}: meta.key (the entity key columns) is missing")
    return Suite(doc["name"], key, tuple(rules), doc)


# ---------------------------------------------------------------------------------------------
# Public data types
# ---------------------------------------------------------------------------------------------
@dataclass
class CheckContext:
    """What the checks know beyond the batch itself.

    ``None`` for a reference means "unknown": the rules needing it are reported as skipped
    (success, nothing checked). ``known_dossier_keys`` is extended with the loadable keys of a
    dossier batch by :func:`check`, so a payment batch checked next sees this run's dossiers.
    """

    known_procedures: pd.DataFrame | None = None
    known_units: pd.DataFrame | None = None
    known_dossier_keys: set[str] | None = None
    calendar: pd.DataFrame | None = None
    recent_volumes: list[int] = field(default_factory=list)
    last_arrival: datetime | None = None
    now: datetime = field(default_factory=datetime.now)
    freshness_days: int = 3


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


# ---------------------------------------------------------------------------------------------
# Row conditions (GX 1.x Condition dicts: comparison, nullity, and, or)
# ---------------------------------------------------------------------------------------------
def _condition_columns(cond: Any) -> set[str]:
    if not cond:
        return set()
    if isinstance(cond, str):
        raise ValueError("string row_conditions are not supported; use GX Condition dicts")
    if cond["type"] in ("and", "or"):
        return set().union(*(_condition_columns(c) for c in cond["conditions"]))
    return {cond["column"]["name"]}


def _condition_mask(cond: Mapping[str, Any] | None, frame: pd.DataFrame) -> np.ndarray:
    """Rows a GX Condition dict selects, with the pandas engine's null semantics.

    GX's pandas engine filters with ``DataFrame.query``: a comparison with a null is not
    selected, except ``not in`` which selects nulls.
    """
    n = len(frame)
    if not cond:
        return np.ones(n, dtype=bool)
    kind = cond["type"]
    if kind == "and":
        return np.logical_and.reduce([_condition_mask(c, frame) for c in cond["conditions"]])
    if kind == "or":
        return np.logical_or.reduce([_condition_mask(c, frame) for c in cond["conditions"]])
    col = frame[cond["column"]["name"]]
    if kind == "nullity":
        isna = col.isna().to_numpy()
        return isna if cond["is_null"] else ~isna
    if kind != "comparison":
        raise ValueError(f"unsupported row_condition type {kind!r}")
    op, param = cond["operator"], cond["parameter"]
    if op == "IN":
        return col.isin(param).to_numpy(dtype=bool)
    if op == "NOT_IN":
        return ~col.isin(param).to_numpy(dtype=bool)
    ops: dict[str, Callable[[pd.Series, Any], pd.Series]] = {
        "==": lambda s, p: s == p, "!=": lambda s, p: s != p, "<": lambda s, p: s < p,
        "<=": lambda s, p: s <= p, ">": lambda s, p: s > p, ">=": lambda s, p: s >= p,
    }
    if op not in ops:
        raise ValueError(f"unsupported row_condition operator {op!r}")
    res = ops[op](col, param)
    return res.fillna(False).to_numpy(dtype=bool) if hasattr(res, "fillna") else np.asarray(res, dtype=bool)


def _condition_text(cond: Mapping[str, Any] | None) -> str:
    if not cond:
        return ""
    kind = cond["type"]
    if kind in ("and", "or"):
        return f" {kind} ".join(_condition_text(c) for c in cond["conditions"])
    name = cond["column"]["name"]
    if kind == "nullity":
        return f"{name} is {'empty' if cond['is_null'] else 'set'}"
    op, param = cond["operator"], cond["parameter"]
    if op in ("IN", "NOT_IN"):
        return f"{name} {'in' if op == 'IN' else 'not in'} ({', '.join(map(str, param))})"
    return f"{name} {op} {param!r}"


# ---------------------------------------------------------------------------------------------
# Evaluators: one per expectation type. Each returns an _Eval; masks are numpy bool arrays.
# ---------------------------------------------------------------------------------------------
@dataclass
class _Eval:
    mask: np.ndarray | None  # failing rows; None for batch-level rules
    element_count: int
    details: Callable[[np.ndarray], Iterable[str]] | None = None  # positions -> detail strings
    success: bool | None = None  # batch-level outcome
    note: str = ""  # result detail (skips, batch findings)


@dataclass
class _Env:
    entity: str
    frame: pd.DataFrame
    context: CheckContext
    cache: dict[str, Any] = field(default_factory=dict)


def _fmt(values: pd.Series) -> pd.Series:
    """Values as display strings (dates without a midnight time, nulls as 'empty')."""
    if pd.api.types.is_datetime64_any_dtype(values):
        out = values.dt.strftime("%Y-%m-%d %H:%M:%S").str.replace(" 00:00:00", "", regex=False)
    else:
        out = values.astype("string")
    return out.fillna("empty").astype(object)


def _pick(frame: pd.DataFrame, col: str, pos: np.ndarray) -> pd.Series:
    return _fmt(frame[col].iloc[pos]).reset_index(drop=True)


def _cond_suffix(rule: Rule, frame: pd.DataFrame, pos: np.ndarray) -> pd.Series | str:
    cond = rule.kwargs.get("row_condition")
    if not cond:
        return ""
    cols = sorted(_condition_columns(cond))
    vals = pd.Series([""] * len(pos), dtype=object)
    for c in cols:
        vals = vals + (c + " = ") + _pick(frame, c, pos) + "; "
    return " (rule applies when " + _condition_text(cond) + "; here " + vals.str.rstrip("; ") + ")"


def _eval_not_null(rule: Rule, env: _Env) -> _Eval:
    f, col = env.frame, rule.kwargs["column"]
    dom = _condition_mask(rule.kwargs.get("row_condition"), f)
    mask = dom & f[col].isna().to_numpy()
    return _Eval(mask, int(dom.sum()), lambda pos: (col + " is empty") + _cond_suffix(rule, f, pos))


def _eval_null(rule: Rule, env: _Env) -> _Eval:
    f, col = env.frame, rule.kwargs["column"]
    dom = _condition_mask(rule.kwargs.get("row_condition"), f)
    mask = dom & f[col].notna().to_numpy()
    return _Eval(mask, int(dom.sum()),
                 lambda pos: col + " = " + _pick(f, col, pos) + " should be empty" + _cond_suffix(rule, f, pos))


def _domain_values(rule: Rule, env: _Env) -> tuple[np.ndarray, pd.Series]:
    """Rows in the rule's domain with a value (GX map expectations ignore nulls)."""
    f, col = env.frame, rule.kwargs["column"]
    dom = _condition_mask(rule.kwargs.get("row_condition"), f) & f[col].notna().to_numpy()
    return dom, f[col]


def _eval_in_set(rule: Rule, env: _Env) -> _Eval:
    dom, s = _domain_values(rule, env)
    allowed = rule.kwargs["value_set"]
    mask = dom & ~s.isin(allowed).to_numpy(dtype=bool)
    col = rule.kwargs["column"]
    shown = ", ".join(map(str, allowed))
    return _Eval(mask, _element_count(rule, env),
                 lambda pos: col + " = " + _pick(env.frame, col, pos) + f" not in ({shown})")


def _element_count(rule: Rule, env: _Env) -> int:
    return int(_condition_mask(rule.kwargs.get("row_condition"), env.frame).sum())


def _eval_regex(rule: Rule, env: _Env) -> _Eval:
    dom, s = _domain_values(rule, env)
    regex = rule.kwargs["regex"]
    # Low-cardinality columns: match each distinct value once, then broadcast.
    codes, uniques = pd.factorize(s.astype("string"))
    pattern = re.compile(regex)  # re.search, as GX's pandas engine (Series.str.contains)
    ok_unique = np.fromiter((pattern.search(str(u)) is not None for u in uniques), dtype=bool, count=len(uniques))
    ok = np.zeros(len(s), dtype=bool)
    has = codes >= 0
    ok[has] = ok_unique[codes[has]]
    mask = dom & ~ok
    col = rule.kwargs["column"]
    return _Eval(mask, _element_count(rule, env),
                 lambda pos: col + " = " + _pick(env.frame, col, pos) + f" does not match {regex}")


def _eval_unique(rule: Rule, env: _Env) -> _Eval:
    dom, s = _domain_values(rule, env)
    col = rule.kwargs["column"]
    dup = np.zeros(len(s), dtype=bool)
    dup[dom] = s[dom].duplicated(keep=False).to_numpy()

    def details(pos: np.ndarray) -> pd.Series:
        vals = s.iloc[pos]
        counts = vals.map(vals.value_counts()).astype("string").reset_index(drop=True)
        return col + " = " + _pick(env.frame, col, pos) + " occurs " + counts + " times in the batch"

    return _Eval(dup, _element_count(rule, env), details)


def _eval_compound_unique(rule: Rule, env: _Env) -> _Eval:
    f, cols = env.frame, rule.kwargs["column_list"]
    dom = _condition_mask(rule.kwargs.get("row_condition"), f) & ~f[cols].isna().all(axis=1).to_numpy()
    dup = np.zeros(len(f), dtype=bool)
    dup[dom] = f.loc[dom, cols].duplicated(keep=False).to_numpy()

    def details(pos: np.ndarray) -> pd.Series:
        shown = pd.Series([""] * len(pos), dtype=object)
        for c in cols:
            shown = shown + c + " = " + _pick(f, c, pos) + ", "
        return shown.str.rstrip(", ") + " occurs more than once in the batch"

    return _Eval(dup, int(dom.sum()), details)


def _eval_between(rule: Rule, env: _Env) -> _Eval:
    dom, s = _domain_values(rule, env)
    lo, hi = rule.kwargs.get("min_value"), rule.kwargs.get("max_value")
    bad = np.zeros(len(s), dtype=bool)
    if lo is not None:
        bad |= (s < lo).fillna(False).to_numpy(dtype=bool)
    if hi is not None:
        bad |= (s > hi).fillna(False).to_numpy(dtype=bool)
    col = rule.kwargs["column"]
    rng = f"[{'' if lo is None else lo}, {'' if hi is None else hi}]"
    return _Eval(dom & bad, _element_count(rule, env),
                 lambda pos: col + " = " + _pick(env.frame, col, pos) + f" outside {rng}")


def _eval_pair_greater(rule: Rule, env: _Env) -> _Eval:
    f, kw = env.frame, rule.kwargs
    a, b = f[kw["column_A"]], f[kw["column_B"]]
    dom = _condition_mask(kw.get("row_condition"), f)
    ignore = kw.get("ignore_row_if", "both_values_are_missing")
    a_na, b_na = a.isna().to_numpy(), b.isna().to_numpy()
    if ignore == "either_value_is_missing":
        dom = dom & ~a_na & ~b_na
    elif ignore == "both_values_are_missing":
        dom = dom & ~(a_na & b_na)
    else:
        raise ValueError(f"{rule.rule}: unsupported ignore_row_if {ignore!r}")
    ok = (a >= b) if kw.get("or_equal") else (a > b)
    mask = dom & ~ok.fillna(False).to_numpy(dtype=bool)
    op = "<" if kw.get("or_equal") else "<="
    return _Eval(mask, _element_count(rule, env), lambda pos: (
        kw["column_A"] + " = " + _pick(f, kw["column_A"], pos) + f" {op} " + kw["column_B"] + " = "
        + _pick(f, kw["column_B"], pos)))


def _days(s: pd.Series) -> np.ndarray:
    """Calendar day numbers (days since epoch) as float, NaN for nulls."""
    if not pd.api.types.is_datetime64_any_dtype(s):  # e.g. datetime.date objects read from a DATE column
        s = pd.to_datetime(s, errors="coerce")
    v = s.to_numpy(dtype="datetime64[us]")
    out = v.astype("datetime64[D]").astype("int64").astype("float64")
    out[np.isnat(v)] = np.nan
    return out


def _eval_dates_in_order(rule: Rule, env: _Env) -> _Eval:
    f, kw = env.frame, rule.kwargs
    early, late = kw["column_earlier"], kw["column_later"]
    de, dl = _days(f[early]), _days(f[late])
    dom = _condition_mask(kw.get("row_condition"), f) & ~np.isnan(de) & ~np.isnan(dl)
    mask = dom & (dl < de)
    return _Eval(mask, int(dom.sum()), lambda pos: (
        "date(" + late + ") " + _pick(f, late, pos) + " is before date(" + early + ") " + _pick(f, early, pos)))


def _eval_plausible_dates(rule: Rule, env: _Env) -> _Eval:
    f, kw = env.frame, rule.kwargs
    col = kw["column"]
    d = _days(f[col])
    lo = pd.Timestamp(kw["min_value"])
    hi = pd.Timestamp(env.context.now).normalize() + pd.Timedelta(days=int(kw["max_days_after_now"]))
    lo_d, hi_d = _days(pd.Series([lo, hi]))
    dom = _condition_mask(kw.get("row_condition"), f) & ~np.isnan(d)
    mask = dom & ((d < lo_d) | (d > hi_d))
    return _Eval(mask, _element_count(rule, env), lambda pos: (
        col + " = " + _pick(f, col, pos) + f" outside {lo:%Y-%m-%d}..{hi:%Y-%m-%d}"))


def _eval_sum(rule: Rule, env: _Env) -> _Eval:
    f, kw = env.frame, rule.kwargs
    col, parts = kw["column"], kw["sum_of"]
    cols = [col, *parts]
    dom = _condition_mask(kw.get("row_condition"), f) & f[cols].notna().all(axis=1).to_numpy()
    total = f[parts[0]].astype("Int64")
    for p in parts[1:]:
        total = total + f[p].astype("Int64")
    mask = dom & (f[col].astype("Int64") != total).fillna(False).to_numpy(dtype=bool)

    def details(pos: np.ndarray) -> pd.Series:
        rhs = " + ".join(parts)
        shown = pd.Series([""] * len(pos), dtype=object)
        for p in parts:
            shown = shown + _pick(f, p, pos) + " + "
        return col + " = " + _pick(f, col, pos) + f" but {rhs} = " + shown.str.rstrip("+ ")

    return _Eval(mask, int(dom.sum()), details)


def _reference_values(name: str, env: _Env) -> tuple[set[str] | None, str]:
    """Keys of a reference entity: the warehouse's (context) plus the batch's own for its entity."""
    ctx, f = env.context, env.frame
    own: set[str] = set()
    if name == "procedures":
        known = None if ctx.known_procedures is None else set(ctx.known_procedures["ma_tthc"].dropna())
        if env.entity == "procedures":
            own = set(f["ma_tthc"].dropna())
    elif name == "units":
        known = None if ctx.known_units is None else set(ctx.known_units["ma_don_vi"].dropna())
        if env.entity == "units":
            own = set(f["ma_don_vi"].dropna())
    elif name == "dossiers":
        known = ctx.known_dossier_keys
        if env.entity == "dossiers":
            own = set(f["ma_ho_so"].dropna())
    else:
        raise ValueError(f"unknown reference {name!r}")
    if known is None and env.entity != name:
        return None, f"skipped: no {name} reference in the context"
    return (known or set()) | own, ""


def _eval_reference(rule: Rule, env: _Env) -> _Eval:
    kw = rule.kwargs
    col, ref = kw["column"], kw["reference"]
    values, note = _reference_values(ref, env)
    if values is None:
        return _Eval(np.zeros(len(env.frame), dtype=bool), 0, note=note)
    dom, s = _domain_values(rule, env)
    mask = dom & ~s.isin(values).to_numpy(dtype=bool)
    return _Eval(mask, int(dom.sum()),
                 lambda pos: col + " = " + _pick(env.frame, col, pos) + f" not found in {ref}")


def _eval_unit_valid_at(rule: Rule, env: _Env) -> _Eval:
    f, kw, units = env.frame, rule.kwargs, env.context.known_units
    if units is None:
        return _Eval(np.zeros(len(f), dtype=bool), 0, note="skipped: no unit catalogue in the context")
    col, dcol = kw["column"], kw["date_column"]
    known = units["ma_don_vi"].dropna()
    dom = (f[col].isin(set(known)).to_numpy(dtype=bool) & f[dcol].notna().to_numpy()
           & _condition_mask(kw.get("row_condition"), f))
    pos = np.flatnonzero(dom)
    left = pd.DataFrame({"_pos": pos, "ma_don_vi": f[col].to_numpy()[pos],
                         "_day": _days(f[dcol])[pos]})
    right = pd.DataFrame({"ma_don_vi": units["ma_don_vi"].to_numpy(),
                          "_from": _days(units["hieu_luc_tu"]), "_to": _days(units["hieu_luc_den"])})
    m = left.merge(right, on="ma_don_vi", how="inner")
    covered = (m["_from"].isna() | (m["_from"] <= m["_day"])) & (m["_to"].isna() | (m["_day"] <= m["_to"]))
    mask = dom.copy()
    mask[m.loc[covered, "_pos"].to_numpy()] = False
    return _Eval(mask, int(dom.sum()), lambda p: (
        col + " = " + _pick(f, col, p) + " has no validity interval covering " + dcol + " " + _pick(f, dcol, p)))


def _eval_due_date(rule: Rule, env: _Env) -> _Eval:
    f, kw, ctx = env.frame, rule.kwargs, env.context
    n = len(f)
    if ctx.known_procedures is None or ctx.calendar is None or ctx.calendar.empty:
        what = "procedure catalogue" if ctx.known_procedures is None else "calendar"
        return _Eval(np.zeros(n, dtype=bool), 0, note=f"skipped: no {what} in the context")
    procs = ctx.known_procedures.drop_duplicates("ma_tthc", keep="last").set_index("ma_tthc")
    codes = f[kw["procedure_column"]]
    unit_ok = (codes.map(procs["don_vi_thoi_han"]) == kw["time_unit"]).fillna(False).to_numpy(dtype=bool)
    limit = pd.to_numeric(codes.map(procs["thoi_han_giai_quyet"]), errors="coerce").to_numpy(dtype="float64")
    cal = ctx.calendar.sort_values("day")
    cal_days = _days(cal["day"]).astype("int64")
    ordinal = np.cumsum(cal["is_working_day"].fillna(False).to_numpy(dtype=bool))
    recv, due = _days(f[kw["received_column"]]), _days(f[kw["due_column"]])
    supplements = f[kw["supplements_column"]]
    in_cal = ((recv >= cal_days[0]) & (recv <= cal_days[-1]) & (due >= cal_days[0]) & (due <= cal_days[-1]))
    dom = (
        _condition_mask(kw.get("row_condition"), f)
        & unit_ok & ~np.isnan(limit) & ~np.isnan(recv) & ~np.isnan(due) & (due >= recv)
        & (supplements == 0).fillna(False).to_numpy(dtype=bool) & in_cal
    )
    measured = np.full(n, np.nan)
    idx = np.flatnonzero(dom)
    pos_r = np.searchsorted(cal_days, recv[idx].astype("int64"))
    pos_d = np.searchsorted(cal_days, due[idx].astype("int64"))
    measured[idx] = ordinal[pos_d] - ordinal[pos_r]
    tol = float(kw["tolerance_working_days"])
    mask = dom & (np.abs(measured - limit) > tol)

    def details(pos: np.ndarray) -> pd.Series:
        got = pd.Series(measured[pos]).astype("int64").astype(str)
        want = pd.Series(limit[pos]).map(lambda x: f"{x:g}")
        return ("NgayHenTra is " + got + " working days after receipt; the procedure allows " + want
                + " " + kw["time_unit"] + " (tolerance " + f"{tol:g})")

    return _Eval(mask, int(dom.sum()), details)


def _eval_volume(rule: Rule, env: _Env) -> _Eval:
    kw, hist, n = rule.kwargs, list(env.context.recent_volumes), len(env.frame)
    if len(hist) < int(kw["min_history"]):
        return _Eval(None, n, success=True,
                     note=f"skipped: {len(hist)} earlier runs known, {kw['min_history']} needed")
    median = float(np.median(hist))
    if median <= 0:
        return _Eval(None, n, success=True, note="skipped: recent median volume is 0")
    ratio = n / median
    ok = kw["min_ratio"] <= ratio <= kw["max_ratio"]
    return _Eval(None, n, success=ok, note=(
        f"{n} rows vs median {median:g} of the last {len(hist)} runs ({ratio:.0%}; "
        f"allowed {kw['min_ratio']:.0%}..{kw['max_ratio']:.0%})"))


def _eval_freshness(rule: Rule, env: _Env) -> _Eval:
    ctx, n = env.context, len(env.frame)
    newest = env.frame[rule.kwargs["column"]].max() if n else None
    stamps = [pd.Timestamp(t) for t in (ctx.last_arrival, newest) if t is not None and not pd.isna(t)]
    if not stamps:
        return _Eval(None, n, success=False, note="no dossier has ever arrived from this source")
    latest = max(stamps)
    age = pd.Timestamp(ctx.now) - latest
    ok = age <= timedelta(days=ctx.freshness_days)
    return _Eval(None, n, success=ok, note=(
        f"newest dossier update {latest:%Y-%m-%d %H:%M}, {age.days} days before {pd.Timestamp(ctx.now):%Y-%m-%d %H:%M} "
        f"(limit {ctx.freshness_days} days)"))


def _eval_overlap(rule: Rule, env: _Env) -> _Eval:
    f, kw = env.frame, rule.kwargs
    g, s, e = kw["group_column"], kw["start_column"], kw["end_column"]
    start, end = _days(f[s]), _days(f[e])
    dom = f[g].notna().to_numpy() & ~np.isnan(start) & _condition_mask(kw.get("row_condition"), f)
    idx = np.flatnonzero(dom)
    work = pd.DataFrame({"_pos": idx, "_g": f[g].to_numpy()[idx], "_s": start[idx],
                         "_e": np.where(np.isnan(end[idx]), np.inf, end[idx])})
    work = work.sort_values(["_g", "_s", "_pos"], kind="stable")
    prev_end = work.groupby("_g", sort=False)["_e"].cummax()
    prev_end = prev_end.groupby(work["_g"], sort=False).shift(1)
    overlap = (prev_end >= work["_s"]).to_numpy(dtype=bool)
    mask = np.zeros(len(f), dtype=bool)
    mask[work["_pos"].to_numpy()[overlap]] = True
    return _Eval(mask, int(dom.sum()), lambda pos: (
        g + " = " + _pick(f, g, pos) + ": interval from " + _pick(f, s, pos)
        + " overlaps an earlier interval of the same unit"))


_EVALUATORS: dict[str, Callable[[Rule, _Env], _Eval]] = {
    "expect_column_values_to_not_be_null": _eval_not_null,
    "expect_column_values_to_be_null": _eval_null,
    "expect_column_values_to_be_in_set": _eval_in_set,
    "expect_column_values_to_match_regex": _eval_regex,
    "expect_column_values_to_be_unique": _eval_unique,
    "expect_column_values_to_be_between": _eval_between,
    "expect_column_pair_values_a_to_be_greater_than_b": _eval_pair_greater,
    "expect_compound_columns_to_be_unique": _eval_compound_unique,
    "dvc_expect_column_pair_dates_in_order": _eval_dates_in_order,
    "dvc_expect_column_values_to_be_plausible_dates": _eval_plausible_dates,
    "dvc_expect_column_to_equal_sum_of_columns": _eval_sum,
    "dvc_expect_column_values_to_exist_in_reference": _eval_reference,
    "dvc_expect_unit_valid_at_date": _eval_unit_valid_at,
    "dvc_expect_due_date_to_match_processing_time": _eval_due_date,
    "dvc_expect_batch_volume_within_recent_range": _eval_volume,
    "dvc_expect_batch_freshness": _eval_freshness,
    "dvc_expect_intervals_not_to_overlap": _eval_overlap,
}


# ---------------------------------------------------------------------------------------------
# check()
# ---------------------------------------------------------------------------------------------
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
    env = _Env(entity, frame, context)
    keys = record_keys(suite, frame)
    key_arr = keys.to_numpy()
    n = len(frame)
    critical = np.zeros(n, dtype=bool)
    results: list[CheckResult] = []
    issue_parts: list[pd.DataFrame] = []
    for rule in suite.rules:
        ev = _EVALUATORS[rule.type](rule, env)
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


# ---------------------------------------------------------------------------------------------
# Great Expectations: the gate's record and data docs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GxRecord:
    """The result of validating one entity's batch with Great Expectations."""

    entity: str
    run_id: str
    success: bool
    rows_validated: int
    sampled: bool
    unexpected_counts: dict[str, int]
    element_counts: dict[str, int]
    successes: dict[str, bool]
    docs_index: str
    seconds: float


_HTML_SPECIAL = re.compile(r"[<>&\"']")


def html_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text value that holds ``< > & " '`` HTML-escaped, for Great
    Expectations: its data docs put unexpected values into the page unescaped, so a record whose
    text holds ``<script>`` would run in the reader's browser. Escaped, it shows as the text it is.
    Only GX's copy is escaped (the quarantine masks of :func:`check` read the original values);
    ``html.escape`` is one-to-one, so uniqueness rules count the same, and no value set or pattern
    of the suites holds those characters, so set and regex rules fail the same rows."""
    import html

    out = None
    for col in frame.columns:
        s = frame[col]
        if not (s.dtype == object or isinstance(s.dtype, pd.StringDtype)):
            continue
        text = s.map(lambda v: isinstance(v, str) and _HTML_SPECIAL.search(v) is not None)
        if not text.any():
            continue
        if out is None:
            out = frame.copy()
        out[col] = s.where(~text, s[text].map(lambda v: html.escape(v, quote=True)))
    return frame if out is None else out


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def _gx_context(run_dir: Path) -> Any:
    """An ephemeral GX context whose stores and data docs live under ``run_dir`` only.

    Suites and validation results are kept in files under ``run_dir/_gx`` so that the data docs
    index lists every entity validated in the run; progress bars are off.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    defaults = InMemoryStoreBackendDefaults()
    stores = dict(defaults.stores)
    for store_name, sub in ((defaults.expectations_store_name, "expectations"),
                            (defaults.validation_results_store_name, "validations")):
        stores[store_name] = {
            **stores[store_name],
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(run_dir / "_gx" / sub)},
        }
    config = DataContextConfig(
        store_backend_defaults=defaults,
        stores=stores,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        data_docs_sites={
            "dvc_docs": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(run_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def validate_with_gx(entity: str, frame: pd.DataFrame, run_id: str, docs_dir: Path | str,
                     *, max_rows: int = GX_FULL_FRAME_MAX_ROWS,
                     expectations_dir: Path | None = None) -> GxRecord:
    """Validate the GX-native expectations of ``entity``'s suite on ``frame`` and build data docs.

    Data docs go to ``<docs_dir>/<run_id>/`` (``index.html`` lists every entity validated under
    that run id). Frames above ``max_rows`` are validated on a deterministic sample of
    ``max_rows`` rows (``sampled=True``); quarantine is decided by :func:`check`, never here.
    """
    import great_expectations as gx
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    from tasks.warehouse import make_private, private_dir

    started = time.perf_counter()
    suite_def = load_suite(entity, expectations_dir)
    native = [r for r in suite_def.rules if r.is_gx_native]
    sampled = len(frame) > max_rows
    data = frame.sample(n=max_rows, random_state=GX_SAMPLE_SEED).sort_index() if sampled else frame
    cols = sorted({c for r in native for c in Suite(entity, suite_def.key, (r,), {}).columns()})
    data = html_safe(data[cols].reset_index(drop=True))

    run_dir = Path(docs_dir).resolve() / _safe_name(run_id)
    private_dir(run_dir)  # data docs show failing values (personal data): 0700 folders, 0600 files
    ctx = _gx_context(run_dir)
    asset = ctx.data_sources.add_pandas(f"{entity}_source").add_dataframe_asset(entity)
    batch_def = asset.add_batch_definition_whole_dataframe("batch")
    suite = ExpectationSuite(name=entity, meta={"entity": entity, "run_id": run_id, "sampled": sampled})
    for r in native:
        suite.add_expectation_configuration(ExpectationConfiguration(type=r.type, kwargs=r.kwargs, meta=r.meta))
    suite = ctx.suites.add_or_update(suite)
    vdef = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{entity}_validation", data=batch_def,
                                                                  suite=suite))
    checkpoint = ctx.checkpoints.add(gx.Checkpoint(
        name=f"{entity}_gate", validation_definitions=[vdef],
        actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
        result_format={"result_format": "SUMMARY"}))
    result = checkpoint.run(batch_parameters={"dataframe": data},
                            run_id=RunIdentifier(run_name=run_id))
    make_private(run_dir, recursive=True)  # whatever the umask GX wrote them under
    unexpected: dict[str, int] = {}
    elements: dict[str, int] = {}
    successes: dict[str, bool] = {}
    for vr in result.run_results.values():
        for er in vr.results:
            rule = er.expectation_config.meta["rule"]
            raised = bool(er.exception_info and er.exception_info.get("raised_exception"))
            if raised:
                log.warning("GX raised on %s.%s: %s", entity, rule, er.exception_info.get("exception_message"))
            successes[rule] = bool(er.success) and not raised
            unexpected[rule] = int(er.result.get("unexpected_count") or 0)
            elements[rule] = int(er.result.get("element_count") or 0)
    return GxRecord(entity, run_id, all(successes.values()), len(data), sampled, unexpected, elements,
                    successes, str(run_dir / "index.html"), time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------
def _as_list(outcomes: Iterable[CheckOutcome] | Mapping[str, CheckOutcome]) -> list[CheckOutcome]:
    return list(outcomes.values()) if isinstance(outcomes, Mapping) else list(outcomes)


def summary_markdown(outcomes: Iterable[CheckOutcome] | Mapping[str, CheckOutcome], run_id: str) -> str:
    """Markdown for a Prefect artifact: totals, then a table per entity (rule, severity, failed, checked)."""
    items = _as_list(outcomes)
    lines = [f"# Data quality, run `{run_id}`", "",
             "| entity | rows | loaded | quarantined | warnings |", "|---|---:|---:|---:|---:|"]
    for o in items:
        lines.append(f"| {o.entity} | {o.rows} | {o.loaded_count} | {o.quarantined_count} | {o.warning_count} |")
    for o in items:
        lines += ["", f"## {o.entity}", "", "| rule | severity | failed | checked | |", "|---|---|---:|---:|---|"]
        for r in o.results:
            mark = "ok" if r.success else ("**FAILED**" if r.severity == "critical" else "warn")
            lines.append(f"| `{r.rule}` | {r.severity} | {r.unexpected_count} | {r.element_count} | {mark} |")
    return "\n".join(lines) + "\n"
