"""The suites: ``expectations/<entity>.json`` read, validated and typed.

The suite JSON files are the single source of truth for the rules of the data-quality gate and
their severities, the normaliser's own rules included. Each expectation carries ``meta.rule`` (a
stable snake_case name, used in ``dq.quarantine`` and ``dq.check_results``), ``meta.severity``
(``critical``: the row is quarantined; ``warning``: the row is loaded and the finding reported)
and ``meta.description`` (the human reason). Three families of types:

* ``expect_*`` (:data:`GX_NATIVE_TYPES`): GX Core expectations, evaluated by the vectorised
  masks (``tasks.quality_rules``) and validated by Great Expectations too (``tasks.gx``);
* ``dvc_expect_*`` (:data:`PROJECT_TYPES`): project rules GX has no expectation for, evaluated by
  the masks only;
* ``dvc_parse`` (:data:`PARSE_TYPE`): rules the normaliser evaluates while it parses records
  (``parse_<field>``, missing required fields); declared here for their name, severity and
  description, skipped by the masks and by GX.

Row conditions are GX 1.x Condition dicts (``comparison``, ``nullity``, ``and``, ``or``); this
module also holds their pandas semantics, shared by the evaluators.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.entities import ENTITIES
from tasks.settings import EXPECTATIONS_DIR

SEVERITIES: tuple[str, ...] = ("critical", "warning")
#: Expectation types evaluated by both engines (GX Core names).
GX_NATIVE_TYPES: frozenset[str] = frozenset({
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_null",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_match_regex",
    "expect_column_values_to_be_unique",
    "expect_column_values_to_be_between",
    "expect_column_pair_values_a_to_be_greater_than_b",
    "expect_compound_columns_to_be_unique",
})
#: Project expectation types, evaluated by the masks only (``expectations/README.md`` lists them).
PROJECT_TYPES: frozenset[str] = frozenset({
    "dvc_expect_column_pair_dates_in_order",
    "dvc_expect_column_values_to_be_plausible_dates",
    "dvc_expect_column_to_equal_sum_of_columns",
    "dvc_expect_column_values_to_exist_in_reference",
    "dvc_expect_unit_valid_at_date",
    "dvc_expect_due_date_to_match_processing_time",
    "dvc_expect_batch_volume_within_recent_range",
    "dvc_expect_batch_freshness",
    "dvc_expect_intervals_not_to_overlap",
})
#: A rule the normaliser evaluates on the records it parses.
PARSE_TYPE = "dvc_parse"
#: The columns of an issues frame, one row per failing row and rule: what the normaliser and the
#: checks return, and the loader writes to ``dq.quarantine`` (critical) or ``dq.warnings``.
ISSUE_COLUMNS: list[str] = ["record_key", "rule", "severity", "detail"]
_FRAME_COLUMN_KWARGS = ("column", "column_A", "column_B", "column_earlier", "column_later", "date_column",
                        "procedure_column", "received_column", "due_column", "supplements_column",
                        "group_column", "start_column", "end_column")


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

    @property
    def is_parse(self) -> bool:
        """True for a ``dvc_parse`` rule: evaluated by the normaliser, not by the masks or GX."""
        return self.type == PARSE_TYPE

    @property
    def issue_rules(self) -> tuple[str, ...]:
        """The rule names its failures are reported under: for a ``dvc_parse`` rule, its
        ``issue_rule`` (``parse_{column}`` per one of its ``columns``, or a fixed name); else its own."""
        template = self.kwargs.get("issue_rule") if self.is_parse else None
        if not template:
            return (self.rule,)
        if "{column}" in template:
            return tuple(template.format(column=c) for c in self.kwargs.get("columns", ()))
        return (template,)

    def columns(self) -> set[str]:
        """The frame columns this rule reads (none for a ``dvc_parse`` rule: it reads records)."""
        if self.is_parse:
            return set()
        kw = self.kwargs
        cols = {kw[name] for name in _FRAME_COLUMN_KWARGS if name in kw}
        cols.update(kw.get("column_list", []))
        cols.update(kw.get("sum_of", []))
        cols.update(condition_columns(kw.get("row_condition")))
        return cols


@dataclass(frozen=True)
class Suite:
    """An entity's suite: its key columns and rules, in file order."""

    name: str
    key: tuple[str, ...]
    rules: tuple[Rule, ...]
    document: dict[str, Any]

    def columns(self) -> set[str]:
        """Every frame column the suite's expectations read."""
        return set(self.key).union(*(r.columns() for r in self.rules))

    @property
    def checked(self) -> tuple[Rule, ...]:
        """The rules the masks evaluate (every rule but the normaliser's ``dvc_parse`` ones)."""
        return tuple(r for r in self.rules if not r.is_parse)

    @property
    def gx_native(self) -> tuple[Rule, ...]:
        """The rules Great Expectations validates."""
        return tuple(r for r in self.rules if r.is_gx_native)

    def rule(self, name: str) -> Rule | None:
        """The rule called ``name`` or reporting its failures under that name (a ``dvc_parse``
        rule's ``parse_<column>``), or None."""
        return next((r for r in self.rules if r.rule == name), None) or next(
            (r for r in self.rules if name in r.issue_rules), None)


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
        if exp["type"] not in GX_NATIVE_TYPES | PROJECT_TYPES | {PARSE_TYPE}:
            raise ValueError(f"{path}: rule {name} has unsupported type {exp['type']}")
        seen.add(name)
        rules.append(Rule(exp["type"], dict(exp.get("kwargs") or {}), name, severity, meta.get("description", ""),
                          meta))
    key = tuple(doc.get("meta", {}).get("key") or ())
    if not key:
        raise ValueError(f"{path}: meta.key (the entity key columns) is missing")
    return Suite(doc["name"], key, tuple(rules), doc)


def rule_severity(entity: str, rule: str, default: str = "critical", *, expectations_dir: Path | None = None) -> str:
    """The severity the suite of ``entity`` gives ``rule`` (a rule's name, or the name a
    ``dvc_parse`` rule reports under, e.g. ``parse_ngay_tiep_nhan``); ``default`` when undeclared."""
    found = load_suite(entity, expectations_dir).rule(rule)
    return found.severity if found is not None else default

# ---------------------------------------------------------------------------------------------
# Row conditions (GX 1.x Condition dicts: comparison, nullity, and, or)
# ---------------------------------------------------------------------------------------------
def condition_columns(cond: Any) -> set[str]:
    if not cond:
        return set()
    if isinstance(cond, str):
        raise ValueError("string row_conditions are not supported; use GX Condition dicts")
    if cond["type"] in ("and", "or"):
        return set().union(*(condition_columns(c) for c in cond["conditions"]))
    return {cond["column"]["name"]}


def condition_mask(cond: Mapping[str, Any] | None, frame: pd.DataFrame) -> np.ndarray:
    """Rows a GX Condition dict selects, with the pandas engine's null semantics.

    GX's pandas engine filters with ``DataFrame.query``: a comparison with a null is not
    selected, except ``not in`` which selects nulls.
    """
    n = len(frame)
    if not cond:
        return np.ones(n, dtype=bool)
    kind = cond["type"]
    if kind == "and":
        return np.logical_and.reduce([condition_mask(c, frame) for c in cond["conditions"]])
    if kind == "or":
        return np.logical_or.reduce([condition_mask(c, frame) for c in cond["conditions"]])
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


def condition_text(cond: Mapping[str, Any] | None) -> str:
    if not cond:
        return ""
    kind = cond["type"]
    if kind in ("and", "or"):
        return f" {kind} ".join(condition_text(c) for c in cond["conditions"])
    name = cond["column"]["name"]
    if kind == "nullity":
        return f"{name} is {'empty' if cond['is_null'] else 'set'}"
    op, param = cond["operator"], cond["parameter"]
    if op in ("IN", "NOT_IN"):
        return f"{name} {'in' if op == 'IN' else 'not in'} ({', '.join(map(str, param))})"
    return f"{name} {op} {param!r}"


