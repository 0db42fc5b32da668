"""The evaluators of the quality gate: one vectorised function per expectation type of the suites.

Each evaluator reads one :class:`~tasks.suites.Rule` over a core-shaped frame (a :class:`Batch`)
and returns an :class:`Evaluation`: the rows that fail it as a numpy mask, with a detail text per
failing row built only for those rows, or, for a batch-level rule (volume, freshness), the batch's
outcome. :func:`tasks.quality.check` runs them and decides quarantine; this module knows nothing
of severities or loading.

Types ``expect_*`` follow GX Core's semantics (nulls, ``row_condition``), so Great Expectations
counts the same rows (``tasks.gx``; a test compares them). Types ``dvc_expect_*`` are project
rules GX has no expectation for: date order by calendar date, sums, references to catalogues, the
working-day calendar, volume and freshness. ``dvc_parse`` rules have no evaluator: the normaliser
evaluates them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tasks.clock import now_local
from tasks.suites import (
    GX_NATIVE_TYPES,
    PROJECT_TYPES,
    Rule,
    condition_columns,
    condition_mask,
    condition_text,
)


@dataclass
class CheckContext:
    """What the checks know beyond the batch itself.

    ``None`` for a reference means "unknown": the rules needing it are reported as skipped
    (success, nothing checked). ``known_dossier_keys`` is extended with the loadable keys of a
    dossier batch by :func:`tasks.quality.check`, so a payment batch checked next sees this run's
    dossiers.
    """

    known_procedures: pd.DataFrame | None = None
    known_units: pd.DataFrame | None = None
    known_dossier_keys: set[str] | None = None
    calendar: pd.DataFrame | None = None
    recent_volumes: list[int] = field(default_factory=list)
    last_arrival: datetime | None = None
    now: datetime = field(default_factory=now_local)
    freshness_days: int = 3


# ---------------------------------------------------------------------------------------------
# Evaluators: one per expectation type. Each returns an Evaluation; masks are numpy bool arrays.
# ---------------------------------------------------------------------------------------------
@dataclass
class Evaluation:
    """One rule over one batch: its failing rows (or, batch-level, its outcome)."""

    mask: np.ndarray | None  # failing rows; None for batch-level rules
    element_count: int
    details: Callable[[np.ndarray], Iterable[str]] | None = None  # positions -> detail strings
    success: bool | None = None  # batch-level outcome
    note: str = ""  # result detail (skips, batch findings)


@dataclass
class Batch:
    """What an evaluator reads: the entity, its core-shaped frame and the check context."""

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
    cols = sorted(condition_columns(cond))
    vals = pd.Series([""] * len(pos), dtype=object)
    for c in cols:
        vals = vals + (c + " = ") + _pick(frame, c, pos) + "; "
    return " (rule applies when " + condition_text(cond) + "; here " + vals.str.rstrip("; ") + ")"


def _eval_not_null(rule: Rule, env: Batch) -> Evaluation:
    f, col = env.frame, rule.kwargs["column"]
    dom = condition_mask(rule.kwargs.get("row_condition"), f)
    mask = dom & f[col].isna().to_numpy()
    return Evaluation(mask, int(dom.sum()), lambda pos: (col + " is empty") + _cond_suffix(rule, f, pos))


def _eval_null(rule: Rule, env: Batch) -> Evaluation:
    f, col = env.frame, rule.kwargs["column"]
    dom = condition_mask(rule.kwargs.get("row_condition"), f)
    mask = dom & f[col].notna().to_numpy()
    return Evaluation(mask, int(dom.sum()),
                 lambda pos: col + " = " + _pick(f, col, pos) + " should be empty" + _cond_suffix(rule, f, pos))


def _isin(s: pd.Series, values: Iterable[Any]) -> np.ndarray:
    """``s.isin(values)`` as a numpy mask. For Arrow-backed strings against string values, one
    ``pyarrow.compute.is_in`` (pandas converts each value to an Arrow scalar in a Python loop: a
    payment chunk's ~50,000 known dossier keys cost 0.1 s a chunk there); otherwise pandas'."""
    if isinstance(s.array, pd.arrays.ArrowStringArray):
        vals = values if isinstance(values, (list, set, frozenset, tuple)) else list(values)
        if vals and all(type(v) is str for v in vals):
            arr = pa.array(s.array)
            found = pc.is_in(arr, value_set=pa.array(list(vals), type=arr.type))
            return found.fill_null(False).to_numpy(zero_copy_only=False)
    return s.isin(values).to_numpy(dtype=bool)


def _domain_values(rule: Rule, env: Batch) -> tuple[np.ndarray, pd.Series]:
    """Rows in the rule's domain with a value (GX map expectations ignore nulls)."""
    f, col = env.frame, rule.kwargs["column"]
    dom = condition_mask(rule.kwargs.get("row_condition"), f) & f[col].notna().to_numpy()
    return dom, f[col]


def _eval_in_set(rule: Rule, env: Batch) -> Evaluation:
    dom, s = _domain_values(rule, env)
    allowed = rule.kwargs["value_set"]
    mask = dom & ~_isin(s, allowed)
    col = rule.kwargs["column"]
    shown = ", ".join(map(str, allowed))
    return Evaluation(mask, _element_count(rule, env),
                 lambda pos: col + " = " + _pick(env.frame, col, pos) + f" not in ({shown})")


def _element_count(rule: Rule, env: Batch) -> int:
    return int(condition_mask(rule.kwargs.get("row_condition"), env.frame).sum())


def _eval_regex(rule: Rule, env: Batch) -> Evaluation:
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
    return Evaluation(mask, _element_count(rule, env),
                 lambda pos: col + " = " + _pick(env.frame, col, pos) + f" does not match {regex}")


def _eval_unique(rule: Rule, env: Batch) -> Evaluation:
    dom, s = _domain_values(rule, env)
    col = rule.kwargs["column"]
    dup = np.zeros(len(s), dtype=bool)
    dup[dom] = s[dom].duplicated(keep=False).to_numpy()

    def details(pos: np.ndarray) -> pd.Series:
        vals = s.iloc[pos]
        counts = vals.map(vals.value_counts()).astype("string").reset_index(drop=True)
        return col + " = " + _pick(env.frame, col, pos) + " occurs " + counts + " times in the batch"

    return Evaluation(dup, _element_count(rule, env), details)


def _eval_compound_unique(rule: Rule, env: Batch) -> Evaluation:
    f, cols = env.frame, rule.kwargs["column_list"]
    dom = condition_mask(rule.kwargs.get("row_condition"), f) & ~f[cols].isna().all(axis=1).to_numpy()
    dup = np.zeros(len(f), dtype=bool)
    dup[dom] = f.loc[dom, cols].duplicated(keep=False).to_numpy()

    def details(pos: np.ndarray) -> pd.Series:
        shown = pd.Series([""] * len(pos), dtype=object)
        for c in cols:
            shown = shown + c + " = " + _pick(f, c, pos) + ", "
        return shown.str.rstrip(", ") + " occurs more than once in the batch"

    return Evaluation(dup, int(dom.sum()), details)


def _eval_between(rule: Rule, env: Batch) -> Evaluation:
    dom, s = _domain_values(rule, env)
    lo, hi = rule.kwargs.get("min_value"), rule.kwargs.get("max_value")
    bad = np.zeros(len(s), dtype=bool)
    if lo is not None:
        bad |= (s < lo).fillna(False).to_numpy(dtype=bool)
    if hi is not None:
        bad |= (s > hi).fillna(False).to_numpy(dtype=bool)
    col = rule.kwargs["column"]
    rng = f"[{'' if lo is None else lo}, {'' if hi is None else hi}]"
    return Evaluation(dom & bad, _element_count(rule, env),
                 lambda pos: col + " = " + _pick(env.frame, col, pos) + f" outside {rng}")


def _eval_pair_greater(rule: Rule, env: Batch) -> Evaluation:
    f, kw = env.frame, rule.kwargs
    a, b = f[kw["column_A"]], f[kw["column_B"]]
    dom = condition_mask(kw.get("row_condition"), f)
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
    return Evaluation(mask, _element_count(rule, env), lambda pos: (
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


def _eval_dates_in_order(rule: Rule, env: Batch) -> Evaluation:
    f, kw = env.frame, rule.kwargs
    early, late = kw["column_earlier"], kw["column_later"]
    de, dl = _days(f[early]), _days(f[late])
    dom = condition_mask(kw.get("row_condition"), f) & ~np.isnan(de) & ~np.isnan(dl)
    mask = dom & (dl < de)
    return Evaluation(mask, int(dom.sum()), lambda pos: (
        "date(" + late + ") " + _pick(f, late, pos) + " is before date(" + early + ") " + _pick(f, early, pos)))


def _eval_plausible_dates(rule: Rule, env: Batch) -> Evaluation:
    f, kw = env.frame, rule.kwargs
    col = kw["column"]
    d = _days(f[col])
    lo = pd.Timestamp(kw["min_value"])
    hi = pd.Timestamp(env.context.now).normalize() + pd.Timedelta(days=int(kw["max_days_after_now"]))
    lo_d, hi_d = _days(pd.Series([lo, hi]))
    dom = condition_mask(kw.get("row_condition"), f) & ~np.isnan(d)
    mask = dom & ((d < lo_d) | (d > hi_d))
    return Evaluation(mask, _element_count(rule, env), lambda pos: (
        col + " = " + _pick(f, col, pos) + f" outside {lo:%Y-%m-%d}..{hi:%Y-%m-%d}"))


def _eval_sum(rule: Rule, env: Batch) -> Evaluation:
    f, kw = env.frame, rule.kwargs
    col, parts = kw["column"], kw["sum_of"]
    cols = [col, *parts]
    dom = condition_mask(kw.get("row_condition"), f) & f[cols].notna().all(axis=1).to_numpy()
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

    return Evaluation(mask, int(dom.sum()), details)


def _reference_values(name: str, env: Batch) -> tuple[set[str] | None, str]:
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


def _eval_reference(rule: Rule, env: Batch) -> Evaluation:
    kw = rule.kwargs
    col, ref = kw["column"], kw["reference"]
    values, note = _reference_values(ref, env)
    if values is None:
        return Evaluation(np.zeros(len(env.frame), dtype=bool), 0, note=note)
    dom, s = _domain_values(rule, env)
    mask = dom & ~_isin(s, values)
    return Evaluation(mask, int(dom.sum()),
                 lambda pos: col + " = " + _pick(env.frame, col, pos) + f" not found in {ref}")


def _eval_unit_valid_at(rule: Rule, env: Batch) -> Evaluation:
    f, kw, units = env.frame, rule.kwargs, env.context.known_units
    if units is None:
        return Evaluation(np.zeros(len(f), dtype=bool), 0, note="skipped: no unit catalogue in the context")
    col, dcol = kw["column"], kw["date_column"]
    known = units["ma_don_vi"].dropna()
    dom = (_isin(f[col], set(known)) & f[dcol].notna().to_numpy()
           & condition_mask(kw.get("row_condition"), f))
    pos = np.flatnonzero(dom)
    left = pd.DataFrame({"_pos": pos, "ma_don_vi": f[col].to_numpy()[pos],
                         "_day": _days(f[dcol])[pos]})
    right = pd.DataFrame({"ma_don_vi": units["ma_don_vi"].to_numpy(),
                          "_from": _days(units["hieu_luc_tu"]), "_to": _days(units["hieu_luc_den"])})
    m = left.merge(right, on="ma_don_vi", how="inner")
    covered = (m["_from"].isna() | (m["_from"] <= m["_day"])) & (m["_to"].isna() | (m["_day"] <= m["_to"]))
    mask = dom.copy()
    mask[m.loc[covered, "_pos"].to_numpy()] = False
    return Evaluation(mask, int(dom.sum()), lambda p: (
        col + " = " + _pick(f, col, p) + " has no validity interval covering " + dcol + " " + _pick(f, dcol, p)))


def _eval_due_date(rule: Rule, env: Batch) -> Evaluation:
    f, kw, ctx = env.frame, rule.kwargs, env.context
    n = len(f)
    if ctx.known_procedures is None or ctx.calendar is None or ctx.calendar.empty:
        what = "procedure catalogue" if ctx.known_procedures is None else "calendar"
        return Evaluation(np.zeros(n, dtype=bool), 0, note=f"skipped: no {what} in the context")
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
        condition_mask(kw.get("row_condition"), f)
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

    return Evaluation(mask, int(dom.sum()), details)


def _eval_volume(rule: Rule, env: Batch) -> Evaluation:
    kw, hist, n = rule.kwargs, list(env.context.recent_volumes), len(env.frame)
    if len(hist) < int(kw["min_history"]):
        return Evaluation(None, n, success=True,
                     note=f"skipped: {len(hist)} earlier runs known, {kw['min_history']} needed")
    median = float(np.median(hist))
    if median <= 0:
        return Evaluation(None, n, success=True, note="skipped: recent median volume is 0")
    ratio = n / median
    ok = kw["min_ratio"] <= ratio <= kw["max_ratio"]
    return Evaluation(None, n, success=ok, note=(
        f"{n} rows vs median {median:g} of the last {len(hist)} runs ({ratio:.0%}; "
        f"allowed {kw['min_ratio']:.0%}..{kw['max_ratio']:.0%})"))


def _eval_freshness(rule: Rule, env: Batch) -> Evaluation:
    ctx, n = env.context, len(env.frame)
    newest = env.frame[rule.kwargs["column"]].max() if n else None
    stamps = [pd.Timestamp(t) for t in (ctx.last_arrival, newest) if t is not None and not pd.isna(t)]
    if not stamps:
        return Evaluation(None, n, success=False, note="no dossier has ever arrived from this source")
    latest = max(stamps)
    age = pd.Timestamp(ctx.now) - latest
    ok = age <= timedelta(days=ctx.freshness_days)
    return Evaluation(None, n, success=ok, note=(
        f"newest dossier update {latest:%Y-%m-%d %H:%M}, {age.days} days before {pd.Timestamp(ctx.now):%Y-%m-%d %H:%M} "
        f"(limit {ctx.freshness_days} days)"))


def _eval_overlap(rule: Rule, env: Batch) -> Evaluation:
    f, kw = env.frame, rule.kwargs
    g, s, e = kw["group_column"], kw["start_column"], kw["end_column"]
    start, end = _days(f[s]), _days(f[e])
    dom = f[g].notna().to_numpy() & ~np.isnan(start) & condition_mask(kw.get("row_condition"), f)
    idx = np.flatnonzero(dom)
    work = pd.DataFrame({"_pos": idx, "_g": f[g].to_numpy()[idx], "_s": start[idx],
                         "_e": np.where(np.isnan(end[idx]), np.inf, end[idx])})
    work = work.sort_values(["_g", "_s", "_pos"], kind="stable")
    prev_end = work.groupby("_g", sort=False)["_e"].cummax()
    prev_end = prev_end.groupby(work["_g"], sort=False).shift(1)
    overlap = (prev_end >= work["_s"]).to_numpy(dtype=bool)
    mask = np.zeros(len(f), dtype=bool)
    mask[work["_pos"].to_numpy()[overlap]] = True
    return Evaluation(mask, int(dom.sum()), lambda pos: (
        g + " = " + _pick(f, g, pos) + ": interval from " + _pick(f, s, pos)
        + " overlaps an earlier interval of the same unit"))


EVALUATORS: dict[str, Callable[[Rule, Batch], Evaluation]] = {
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
assert set(EVALUATORS) == GX_NATIVE_TYPES | PROJECT_TYPES, "an expectation type without its evaluator"
