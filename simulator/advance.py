"""Day-to-day activity on existing dossiers (used by `Dataset.advance`).

Each chosen dossier moves one step along its life: intake (1 -> 2 or 3), processing (2 -> 4),
result (4 -> 9 or 10), supplement received (5 -> 4, due date moved by the pause), fee paid
(6 -> 4), hand-over with payment (9 -> 10), a late payment of a result already handed over, or
a minor edit (another official takes the dossier).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from simulator import catalog as C
from simulator.state import State, due_times, proc_arrays


class _Payments:
    """Payment rows of each dossier, for quick lookup."""

    def __init__(self, p: dict[str, np.ndarray]) -> None:
        self.order = np.argsort(p["dossier"], kind="stable")
        self.sorted = p["dossier"][self.order]

    def of(self, i: int) -> np.ndarray:
        lo, hi = np.searchsorted(self.sorted, [i, i + 1])
        return self.order[lo:hi]


def _candidates(ds: State, rng: np.random.Generator, n: int) -> np.ndarray:
    d, p = ds._d, ds._p
    open_pay = np.isin(p["status"], (C.PAY_UNPAID, C.PAY_WAITING))
    cand = np.union1d(np.flatnonzero(np.isin(d["status"], (1, 2, 4, 5, 6, 9))), p["dossier"][open_pay])
    if len(cand) >= n:
        return rng.choice(cand, n, replace=False)
    rest = np.setdiff1d(np.arange(len(d["status"])), cand)
    extra = rng.choice(rest, min(len(rest), n - len(cand)), replace=False)
    return np.concatenate([cand, extra])


def update_existing(ds: State, rng: np.random.Generator, n: int, t_lo: int, t_hi: int) -> dict[str, Any]:
    """Apply `n` one-step changes with times in (t_lo, t_hi]; returns counts and changed rows."""
    stats: dict[str, Any] = {"updated_dossiers": 0, "payments_paid": 0}
    if n <= 0 or ds.count("dossiers") == 0:
        stats["_changed_d"] = np.zeros(0, dtype=np.int64)
        stats["_changed_p"] = np.zeros(0, dtype=np.int64)
        return stats
    chosen = _candidates(ds, rng, n)
    times = np.sort(rng.integers(t_lo + 1, t_hi + 1, len(chosen)))
    pays = _Payments(ds._p)
    changed_p: list[int] = []
    for i, t in zip(chosen.tolist(), times.tolist(), strict=True):
        step = _step(ds, rng, i, t, pays.of(i), changed_p)
        stats[step] = stats.get(step, 0) + 1
        ds._d["capnhat"][i] = t
    stats["updated_dossiers"] = len(chosen)
    stats["payments_paid"] = len(changed_p)
    stats["_changed_d"] = chosen.astype(np.int64)
    stats["_changed_p"] = np.array(sorted(set(changed_p)), dtype=np.int64)
    return stats


def _step(ds: State, rng: np.random.Generator, i: int, t: int, pay_rows: np.ndarray,
          changed_p: list[int]) -> str:
    d = ds._d
    s = int(d["status"][i])
    open_rows = [int(r) for r in pay_rows if ds._p["status"][r] in (C.PAY_UNPAID, C.PAY_WAITING)]
    if s == 1:
        return _intake(ds, rng, i, t)
    if s == 2:
        d["status"][i] = 4
        return "processing"
    if s == 4:
        return _resolve(ds, rng, i, t, open_rows, changed_p)
    if s == 5:
        return _supplement_received(ds, i, t)
    if s == 6:
        _pay(ds, rng, i, open_rows, t, changed_p)
        d["status"][i] = 4
        return "fee_paid"
    if s == 9:
        d["status"][i], d["tra"][i] = 10, t
        _pay(ds, rng, i, open_rows, t, changed_p)
        return "handed_over"
    if open_rows and s == 10:
        _pay(ds, rng, i, open_rows, t, changed_p)
        return "late_payment"
    lo, hi = ds._ctx.officials.ranges[list(ds._ctx.unit_index)[int(d["unit"][i])]]
    d["official"][i] = lo + int(rng.integers(0, hi - lo))
    return "minor_edit"


def _intake(ds: State, rng: np.random.Generator, i: int, t: int) -> str:
    d = ds._d
    if rng.random() < 0.15:
        d["status"][i], d["tuchoi"][i] = 3, t
        return "rejected"
    pa = proc_arrays(ds._ctx.procs)
    pi = int(d["proc"][i])
    due = due_times(ds._ctx, pa["time"][[pi]], pa["unit"][[pi]], np.array([t], dtype=np.int64))
    d["status"][i], d["tiepnhan"][i], d["hentra"][i] = 2, t, int(due[0])
    return "received"


def _resolve(ds: State, rng: np.random.Generator, i: int, t: int, open_rows: list[int],
             changed_p: list[int]) -> str:
    d = ds._d
    d["ketthuc"][i] = t
    paper = C.PROCEDURES[int(d["proc"][i])].paper_result
    d["eresult"][i] = 2 if rng.random() < (0.45 if paper else 0.2) else 1
    if rng.random() < 0.5:
        d["status"][i], d["tra"][i] = 10, t
        _pay(ds, rng, i, open_rows, t, changed_p)
        return "resolved_handed_over"
    d["status"][i] = 9
    return "resolved"


def _supplement_received(ds: State, i: int, t: int) -> str:
    d, cal = ds._d, ds._ctx.cal
    k = int(d["nsupp"][i])
    req = int(d[f"s{k}_req"][i])
    prev_due = int(d["due0"][i] if k == 1 else d["due1"][i])
    pause = int(cal.to_work(np.array([t]))[0] - cal.to_work(np.array([req]))[0])
    new_due = int(cal.from_work(cal.to_work(np.array([prev_due])) + pause)[0])
    d[f"s{k}_recv"][i], d[f"due{k}"][i], d["hentra"][i] = t, new_due, new_due
    d["status"][i] = 4
    return "supplement_received"


def _pay(ds: State, rng: np.random.Generator, i: int, rows: list[int], t: int, changed_p: list[int]) -> None:
    p = ds._p
    for r in rows:
        if p["thu"][r] == C.THU_MIEN:
            continue
        online = p["method"][r] == 1 or rng.random() < 0.3
        p["status"][r], p["thuphi"][r], p["capnhat"][r] = C.PAY_PAID, t, t
        p["method"][r] = 1 if online else 2
        p["kenh"][r] = 2 if online else 0
        if online:
            ds._d["tttt"][i] = 2
        changed_p.append(r)
