"""Great Expectations' suite results of several batches, added up into one (``tasks.gx``).

GX validates a run's rows of an entity batch by batch; the run's record is one suite result whose
counts are the batches' sums (:func:`add_up`), whose percentages are recomputed from those sums and
whose success and statistics say what every batch said (:func:`settle`). :func:`counts_by_rule`
reads the result back as counts per rule. Pure functions over GX's result objects: nothing here
imports ``great_expectations``.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

#: Unexpected values kept per rule in the data docs (GX's ``partial_unexpected_list``).
PARTIAL = 20


def add_up(total: Any, part: Any) -> Any:
    """``part`` (one batch's suite result) added into ``total``: counts summed, success when every
    batch succeeded, the first :data:`PARTIAL` unexpected values kept."""
    by_rule = {r.expectation_config.meta["rule"]: r for r in part.results}
    for t in total.results:
        p = by_rule[t.expectation_config.meta["rule"]]
        t.success = bool(t.success) and bool(p.success)
        if p.exception_info and p.exception_info.get("raised_exception") and not (
                t.exception_info or {}).get("raised_exception"):
            t.exception_info = p.exception_info
        tr, pr = t.result, p.result or {}
        for k in ("element_count", "unexpected_count", "missing_count"):
            if k in pr:
                tr[k] = int(tr.get(k) or 0) + int(pr[k] or 0)
        if "partial_unexpected_list" in pr:
            tr["partial_unexpected_list"] = [*(tr.get("partial_unexpected_list") or []),
                                             *pr["partial_unexpected_list"]][:PARTIAL]
        if "partial_unexpected_counts" in pr:
            counts: dict[str, dict[str, Any]] = {}
            for c in [*(tr.get("partial_unexpected_counts") or []), *pr["partial_unexpected_counts"]]:
                slot = counts.setdefault(repr(c["value"]), {"value": c["value"], "count": 0})
                slot["count"] += int(c["count"])
            tr["partial_unexpected_counts"] = sorted(counts.values(), key=lambda c: -c["count"])[:PARTIAL]
        tr.pop("partial_unexpected_index_list", None)  # positions within one chunk: meaningless added up
    return total


def percentages(r: dict[str, Any]) -> None:
    """GX's percentages of a result dict, recomputed from its summed counts."""
    n, missing, bad = int(r.get("element_count") or 0), int(r.get("missing_count") or 0), r.get("unexpected_count")
    present = n - missing

    def pct(a: int, b: int) -> float | None:
        return 100.0 * a / b if b else None

    if "missing_percent" in r:
        r["missing_percent"] = pct(missing, n)
    if bad is not None:
        for key, base in (("unexpected_percent", present), ("unexpected_percent_nonmissing", present),
                          ("unexpected_percent_total", n)):
            if key in r:
                r[key] = pct(int(bad), base)


def settle(merged: Any) -> bool:
    """The added-up result's percentages, success and statistics, as GX would give them for one
    validation of all the batches' rows; returns its success."""
    for r in merged.results:
        percentages(r.result)
    ok = sum(bool(r.success) for r in merged.results)
    merged.success = ok == len(merged.results)
    merged.statistics = {"evaluated_expectations": len(merged.results), "successful_expectations": ok,
                         "unsuccessful_expectations": len(merged.results) - ok,
                         "success_percent": 100.0 * ok / len(merged.results) if merged.results else None}
    return merged.success


def counts_by_rule(merged: Any | None, entity: str) -> dict[str, dict[str, Any]]:
    """``{"success", "unexpected", "elements"}``, each by rule, of an added-up result (None: no
    batch was validated). A rule whose expectation raised is unsuccessful (and logged)."""
    counts: dict[str, dict[str, Any]] = {"unexpected": {}, "elements": {}, "success": {}}
    for er in merged.results if merged is not None else []:
        rule = er.expectation_config.meta["rule"]
        raised = bool(er.exception_info and er.exception_info.get("raised_exception"))
        if raised:
            log.warning("GX raised on %s.%s: %s", entity, rule, er.exception_info.get("exception_message"))
        counts["success"][rule] = bool(er.success) and not raised
        counts["unexpected"][rule] = int(er.result.get("unexpected_count") or 0)
        counts["elements"][rule] = int(er.result.get("element_count") or 0)
    return counts
