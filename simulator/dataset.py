"""Deterministic, realistic dataset of the provincial one-stop system (source contract section 1).

Dossiers and payments are stored column-wise in numpy arrays (one array element a field, no
Python object per record) and rendered to the API's dicts on demand, so a province-scale dataset
fits in memory (what the bench's sizes take: ``bench/README.md``). Procedures and units are small
lists of dicts.

    ds = generate(seed=42, n_dossiers=3000)
    ds.dossiers[0]            # one API dict (canonical: ints are ints, missing timestamps are None)
    list(ds.payments)         # every payment request
    ds.render("dossiers", idx, quirks=True)   # API form as served (some ints as strings, "" for missing)
    ds.advance(100, now=datetime(2024, 7, 2, 2, 0))

Same seed and parameters give byte-identical records.

Besides the common case (most dossiers resolved on time, fees paid, results collected) the data
carries the cases the official rules must handle, a few dozen of each in 3000 dossiers: supplement
rounds (two rounds, answered, still open in status 5 because the applicant never came back, and
first requests made after the due date), documents never digitised or taken from the national
store, zero-price fee lines of exempt applicants, resolved dossiers without a result document or
without a link to an electronic one, results never collected (status 9; often for the
foreign-element marriage registration), online dossiers accepted more than 8 working hours after
submission or never accepted (status 1), and dossiers rejected at intake (status 3).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta
from typing import Any, overload

import numpy as np
import orjson

from simulator import advance, render
from simulator import catalog as C
from simulator.state import Ctx, State, ascii_fold, due_times, local_code, proc_arrays
from simulator.workcal import DAY, WORKDAY, WorkCalendar, day_number, from_ts, to_ts


def _build_officials(rng: np.random.Generator, codes: list[str]) -> C.OfficialPool:
    pool = C.OfficialPool()
    for code in codes:
        lo = len(pool.officials)
        for _ in range(int(rng.integers(3, 8))):
            name = " ".join((C.FAMILY_NAMES[rng.integers(len(C.FAMILY_NAMES))],
                             C.MIDDLE_NAMES[rng.integers(len(C.MIDDLE_NAMES))],
                             C.GIVEN_NAMES[rng.integers(len(C.GIVEN_NAMES))]))
            login = f"{code.split('.')[2]}.{ascii_fold(name).replace(' ', '')}{len(pool.officials) % 97:02d}"
            pool.officials.append(C.Official(login, name, code))
        pool.ranges[code] = (lo, len(pool.officials))
    return pool


def _make_ctx(seed: int, start: date, end: date, last_day: date, source_code: str) -> Ctx:
    rng = np.random.default_rng([seed, 7])
    units = C.unit_rows(start, end)
    codes = list(dict.fromkeys(u.code for u in units))
    return Ctx(
        seed=seed, start=start, end=end, source_code=source_code, units=units, procs=C.PROCEDURES,
        unit_index={c: i for i, c in enumerate(codes)},
        unit_names=[next(u.name for u in units if u.code == c) for c in codes],
        officials=_build_officials(rng, codes),
        cal=WorkCalendar(start - timedelta(days=120), last_day + timedelta(days=400)),
    )


# ----------------------------------------------------------------------------------------------
# generation of a block of dossiers (vectorised)
# ----------------------------------------------------------------------------------------------

def _period_handlers(ctx: Ctx, proc: C.Procedure, post: bool) -> tuple[list[int], np.ndarray]:
    """Candidate handling units (indices) and weights for a procedure before/after 2025-07-01."""
    if post and proc.handler != C.SO_TU_PHAP:
        codes = [c for c, _n, _o in C.NEW_COMMUNES]
        weights = np.ones(len(codes))
    elif proc.handler == "xa":
        codes = [c for c, _n, _w in C.COMMUNES]
        weights = np.array([w for _c, _n, w in C.COMMUNES])
    else:
        codes, weights = [proc.handler], np.ones(1)
    return [ctx.unit_index[c] for c in codes], weights / weights.sum()


def _desk(ctx: Ctx, unit_idx: np.ndarray) -> np.ndarray:
    """The one-stop desk whose code prefixes MaHoSo: district departments use the district desk."""
    district_depts = [ctx.unit_index[c] for c in (C.P_TUPHAP, C.P_VHTT, C.P_KTHT, C.P_TCKH, C.VP_UBND)]
    return np.where(np.isin(unit_idx, district_depts), ctx.unit_index[C.DISTRICT], unit_idx)


def _receipt_times(ctx: Ctx, rng: np.random.Generator, n: int, t_lo: int, t_hi: int) -> np.ndarray:
    days = np.arange(t_lo // DAY, t_hi // DAY + 1)
    work = days[ctx.cal.is_working(days)]
    pool = work if len(work) else days
    d = rng.choice(pool, n)
    u = rng.random(n)
    tod = np.where(u < 0.58, rng.integers(7 * 3600 + 600, 11 * 3600 + 1500, n),
                   np.where(u < 0.98, rng.integers(13 * 3600 + 2100, 16 * 3600 + 3300, n),
                            rng.integers(17 * 3600 + 300, 20 * 3600, n)))
    return np.clip(d * DAY + tod, t_lo, t_hi)


def _supplements(ctx: Ctx, rng: np.random.Generator, b: dict[str, np.ndarray], w_recv: np.ndarray,
                 w_end: np.ndarray, w_due: np.ndarray, eligible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw up to two supplement rounds; move the due date and planned end by each pause.

    A share of first requests come only after the due date had passed (the office was already
    late when it asked, `late_req`); such a dossier then ends a while after the supplement."""
    cal, n = ctx.cal, len(w_recv)
    r1 = eligible & (rng.random(n) < 0.12)
    r2 = r1 & (rng.random(n) < 0.3)
    late = r1 & (rng.random(n) < 0.25)
    b["late_req"] = late
    b["due0"] = np.where(r1, cal.from_work(w_due), 0)
    prev = w_recv
    for k, mask in ((1, r1), (2, r2)):
        req = prev + ((rng.random(n) * 0.6 + 0.05) * np.maximum(w_end - prev, 600)).astype(np.int64)
        if k == 1:
            after_due = w_due + rng.integers(1, 6, n) * WORKDAY + rng.integers(0, WORKDAY, n)
            req = np.where(late, after_due, req)
        pause = rng.integers(1, 11, n) * WORKDAY + rng.integers(0, 4 * 3600, n)
        rec = req + pause
        b[f"s{k}_req"] = np.where(mask, cal.from_work(req, prefer_end=False), 0)
        b[f"s{k}_recv"] = np.where(mask, cal.from_work(rec, prefer_end=False), 0)
        w_due = np.where(mask, w_due + pause, w_due)
        w_end = np.where(mask, w_end + pause, w_end)
        if k == 1:
            w_end = np.where(late, np.maximum(w_end, rec + rng.integers(WORKDAY // 2, 4 * WORKDAY, n)), w_end)
        b[f"due{k}"] = np.where(mask, cal.from_work(w_due), 0)
        prev = np.where(mask, rec, prev)
    b["nsupp"] = r1.astype(np.int8) + r2.astype(np.int8)
    return w_end, w_due


def _abandoned_supplements(rng: np.random.Generator, b: dict[str, np.ndarray], end: np.ndarray,
                           now: int) -> np.ndarray:
    """Applicants who never come back with the supplement: the last round already requested stays
    open (status 5 at `now`, whenever it was asked), more often when the office asked late."""
    n = len(end)
    last_req = np.where(b["nsupp"] == 2, b["s2_req"], b["s1_req"])
    gone = (b["nsupp"] > 0) & (last_req <= now) & (rng.random(n) < np.where(b["late_req"], 0.7, 0.15))
    for k in (1, 2):
        b[f"s{k}_recv"] = np.where(gone & (b["nsupp"] == k), now + DAY, b[f"s{k}_recv"])
    return np.where(gone, np.maximum(end, now + DAY), end)


def _planned_end(rng: np.random.Generator, w_recv: np.ndarray, w_due: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Planned end (work position) and class: 0 before due, 1 on the due day (later time), 2 late."""
    n = len(w_recv)
    u = rng.random(n)
    cls = np.where(u < 0.008, 2, np.where(u < 0.06, 1, 0))
    due_day_start = (w_due // WORKDAY) * WORKDAY
    limit = np.where(due_day_start > w_recv, due_day_start, w_due)
    f = rng.random(n) ** 1.6 * 0.93 + 0.02
    early = w_recv + (f * np.maximum(limit - w_recv, 60)).astype(np.int64)
    late = w_due + rng.integers(1, 7, n) * WORKDAY + rng.integers(0, WORKDAY, n)
    return np.where(cls == 2, late, np.where(cls == 1, w_due, early)), cls


def _people(rng: np.random.Generator, b: dict[str, np.ndarray], business: np.ndarray) -> None:
    n = len(business)
    b["loai"] = np.where(business, np.where(rng.random(n) < 0.85, 2, 4),
                         np.where(rng.random(n) < 0.97, 1, np.where(rng.random(n) < 0.5, 3, 4))).astype(np.int8)
    b["nf"] = rng.integers(0, len(C.FAMILY_NAMES), n).astype(np.int16)
    b["nm"] = rng.integers(0, len(C.MIDDLE_NAMES), n).astype(np.int16)
    b["ng"] = rng.integers(0, len(C.GIVEN_NAMES), n).astype(np.int16)
    b["nb"] = rng.integers(0, len(C.BUSINESS_PREFIXES) * len(C.BUSINESS_WORDS), n).astype(np.int16)
    century = rng.integers(0, 4, n)
    yy = np.where(century < 2, rng.integers(40, 100, n), rng.integers(0, 7, n))
    cccd = 52 * 10**9 + century * 10**8 + yy * 10**6 + rng.integers(0, 10**6, n)
    cmnd = 21 * 10**7 + rng.integers(0, 10**7, n)
    b["cmnd"] = rng.random(n) < 0.12
    b["idno"] = np.where(b["cmnd"], cmnd, cccd).astype(np.int64)
    pref = np.array(C.PHONE_PREFIXES)[rng.integers(0, len(C.PHONE_PREFIXES), n)]
    b["phone"] = (pref * 10**7 + rng.integers(0, 10**7, n)).astype(np.int64)


def _channels(rng: np.random.Generator, mucdo: np.ndarray) -> np.ndarray:
    n = len(mucdo)
    p_online = np.select([mucdo == 4, mucdo == 3], [0.8, 0.55], 0.0)
    u = rng.random(n)
    kenh = np.where(u < p_online, 2, np.where(u < p_online + 0.03, 3, 1))
    return np.where((kenh == 1) & (rng.random(n) < 0.015), 0, kenh).astype(np.int8)


def _submission(ctx: Ctx, rng: np.random.Generator, kenh: np.ndarray, recv: np.ndarray) -> np.ndarray:
    """NgayNopHoSo. Online: most are accepted within a few working hours (often the morning after an
    evening or weekend submission); about one in ten waits more than 8 working hours."""
    n, cal = len(kenh), ctx.cal
    slow = rng.random(n) < 0.1
    wait = np.where(slow, rng.integers(8 * 3600 + 600, 5 * WORKDAY, n), rng.integers(60, 6 * 3600, n))
    online = cal.from_work(np.maximum(cal.to_work(recv) - wait, 0), prefer_end=False)
    off_hours = online - rng.integers(60, 14 * 3600, n)
    online = np.where((rng.random(n) < 0.35) & (cal.to_work(off_hours) == cal.to_work(online)), off_hours, online)
    postal = recv - rng.integers(DAY, 3 * DAY, n)
    desk = recv - rng.integers(0, 1200, n)
    return np.where(kenh == 2, online, np.where(kenh == 3, postal, desk))


def _assign_units(ctx: Ctx, rng: np.random.Generator, proc: np.ndarray, recv: np.ndarray) -> np.ndarray:
    unit = np.zeros(len(proc), dtype=np.int16)
    post = recv >= day_number(C.RESTRUCTURE_DAY) * DAY
    for p_i, p in enumerate(ctx.procs):
        for is_post in (False, True):
            m = np.flatnonzero((proc == p_i) & (post == is_post))
            if len(m):
                cands, w = _period_handlers(ctx, p, is_post)
                unit[m] = np.array(cands)[rng.choice(len(cands), len(m), p=w)]
    return unit


def _assign_officials(ctx: Ctx, rng: np.random.Generator, unit: np.ndarray) -> np.ndarray:
    codes = list(ctx.unit_index)
    lo = np.array([ctx.officials.ranges[c][0] for c in codes])
    hi = np.array([ctx.officials.ranges[c][1] for c in codes])
    return (lo[unit] + (rng.random(len(unit)) * (hi[unit] - lo[unit])).astype(np.int64)).astype(np.int16)


def _status(ctx: Ctx, rng: np.random.Generator, b: dict[str, np.ndarray], end: np.ndarray,
            now: int, has_fee: np.ndarray, thu: np.ndarray, uncollected: np.ndarray) -> None:
    """Status codes and the timestamps that go with them, as of `now`."""
    n, recv = len(end), b["tiepnhan"]
    st = np.zeros(n, dtype=np.int8)
    new = (b["kenh"] == 2) & (rng.random(n) < 0.015)
    rejected = ~new & (rng.random(n) < 0.012)
    b["tuchoi"] = np.where(rejected, recv + rng.integers(600, 6 * 3600, n), 0)
    b["tuchoi"] = np.where(rejected & (b["tuchoi"] > now), now, b["tuchoi"])
    st[new], st[rejected] = 1, 3
    live = ~new & ~rejected
    progress = live & (end > now)
    _open_supplements(b, progress, now)
    waiting = progress & (b["nsupp"] > 0) & (b["st5"] == 1)
    fee_wait = progress & ~waiting & has_fee & (thu != C.THU_MIEN) & (rng.random(n) < 0.35)
    just_in = progress & (ctx.cal.to_work(np.full(n, now)) - ctx.cal.to_work(recv) < WORKDAY)
    st[progress] = 4
    st[progress & just_in & (rng.random(n) < 0.6)] = 2
    st[fee_wait] = 6
    st[waiting] = 5
    done = live & ~progress
    u = rng.random(n)
    st[done & (u < 0.012)] = 7
    st[done & (u >= 0.012) & (u < 0.017)] = 8
    res = done & (u >= 0.017)
    never = res & (((thu == C.THU_SAU) & (rng.random(n) < 0.06)) | (rng.random(n) < uncollected))
    tra = _return_times(ctx, rng, end, thu)
    handed = res & ~never & (tra <= now)
    st[res] = 9
    st[handed] = 10
    b["status"] = st
    b["ketthuc"] = np.where(done, end, 0)
    b["tra"] = np.where(handed, tra, 0)
    for col in ("tiepnhan", "hentra"):
        b[col] = np.where(new | (rejected & (rng.random(n) < 0.7)), 0, b[col])
    b["hentra"] = np.where(rejected, 0, b["hentra"])
    recent = new & (rng.random(n) < 0.7)
    b["nop"] = np.where(recent, np.maximum(b["nop"], recv.max() - rng.integers(600, 3 * DAY, n)), b["nop"])
    not_live = ~live
    for col in ("s1_req", "s1_recv", "s2_req", "s2_recv", "due0", "due1", "due2"):
        b[col] = np.where(not_live, 0, b[col])
    b["nsupp"] = np.where(not_live, 0, b["nsupp"]).astype(np.int8)


def _open_supplements(b: dict[str, np.ndarray], progress: np.ndarray, now: int) -> None:
    """Drop future supplement rounds, leave an open one (status 5) blank on the applicant's side."""
    n = len(progress)
    b["st5"] = np.zeros(n, dtype=np.int8)
    for k in (2, 1):
        req, rec = b[f"s{k}_req"], b[f"s{k}_recv"]
        future = progress & (req > now)
        open_ = progress & (req > 0) & (req <= now) & (rec > now)
        for col in (f"s{k}_req", f"s{k}_recv", f"due{k}"):
            b[col] = np.where(future, 0, b[col])
        b[f"s{k}_recv"] = np.where(open_, 0, b[f"s{k}_recv"])
        b[f"due{k}"] = np.where(open_, 0, b[f"due{k}"])
        b["nsupp"] = np.where(future, k - 1, b["nsupp"]).astype(np.int8)
        b["st5"] = np.where(open_, 1, b["st5"]).astype(np.int8)
    moved = np.where(b["due2"] > 0, b["due2"], np.where(b["due1"] > 0, b["due1"], b["due0"]))
    # no round left (the only one lies in the future): the due date is the original one
    b["hentra"] = np.where(b["nsupp"] > 0, moved, np.where(b["due0"] > 0, b["due0"], b["hentra"]))
    b["due0"] = np.where(b["nsupp"] > 0, b["due0"], 0)


def _return_times(ctx: Ctx, rng: np.random.Generator, end: np.ndarray, thu: np.ndarray) -> np.ndarray:
    n = len(end)
    u = rng.random(n)
    sau = thu == C.THU_SAU
    quick = rng.integers(60, 2 * 3600, n)
    days = np.where(sau, np.where(u < 0.45, rng.integers(300, 4 * 3600, n),
                                  np.where(u < 0.75, rng.integers(1, 15, n) * DAY, rng.integers(15, 61, n) * DAY)),
                    np.where(u < 0.7, quick, np.where(u < 0.95, rng.integers(1, 6, n) * DAY,
                                                      rng.integers(6, 21, n) * DAY)))
    return np.maximum(ctx.cal.from_work(ctx.cal.to_work(end + days), prefer_end=False), end + days)


def _documents(rng: np.random.Generator, b: dict[str, np.ndarray], ndoc_base: np.ndarray) -> None:
    n = len(ndoc_base)
    b["ndocs"] = (ndoc_base + (rng.random(n) < 0.2)).astype(np.int8)
    online = b["kenh"] == 2
    bits = np.zeros(n, dtype=np.int16)
    for k in range(4):
        bits |= ((rng.random(n) < np.where(online, 0.6, 0.3)) << k).astype(np.int16)
    reuse = np.where(rng.random(n) < 0.08, 1 << rng.integers(0, 2, n), 0).astype(np.int16)
    full = (1 << b["ndocs"].astype(np.int16)) - 1
    bits &= full
    reuse &= full
    b["m_sohoa"] = (bits | reuse).astype(np.int8)
    b["m_reuse"] = reuse.astype(np.int8)
    b["m_kho"] = np.where(rng.random(n) < 0.03, 1, 0).astype(np.int8) & b["m_sohoa"]


def _results(rng: np.random.Generator, b: dict[str, np.ndarray], paper: np.ndarray) -> None:
    n = len(paper)
    resolved = np.isin(b["status"], (9, 10))
    p_link = np.where(paper == 1, np.where(b["kenh"] == 2, 0.55, 0.3), 0.2)
    link = rng.random(n) < p_link
    no_list = rng.random(n) < 0.12  # no result document recorded at all (an empty list)
    b["eresult"] = np.where(resolved, np.where(link, 2, np.where(no_list, 0, 1)), 0).astype(np.int8)


def _keys(ctx: Ctx, desk: np.ndarray, nop: np.ndarray) -> np.ndarray:
    """MaHoSo `<desk>-<yymmdd>-<seq>`, seq per desk and submission day, continuing across blocks."""
    day = nop // DAY
    order = np.lexsort((nop, day, desk))
    codes = list(ctx.unit_index)
    out = [b""] * len(desk)
    last: tuple[int, int] | None = None
    count = 0
    for i in order.tolist():
        k = (int(desk[i]), int(day[i]))
        if k != last:
            count, last = ctx.seq.get(k, 0), k
        count += 1
        ctx.seq[k] = count
        out[i] = f"{local_code(codes[k[0]], ctx.source_code)}-{_yymmdd(k[1])}-{count:05d}".encode()
    return np.array(out, dtype="S40")


def _yymmdd(dn: int) -> str:
    d = date.fromordinal(dn + date(1970, 1, 1).toordinal())
    return f"{d.year % 100:02d}{d.month:02d}{d.day:02d}"


def _gen_block(ctx: Ctx, rng: np.random.Generator, n: int, t_lo: int, t_hi: int, now: int) -> dict[str, np.ndarray]:
    """Generate `n` dossiers received in [t_lo, t_hi], with statuses as of `now` (no payments yet)."""
    pa = proc_arrays(ctx.procs)
    b: dict[str, np.ndarray] = {}
    proc = rng.choice(len(ctx.procs), n, p=pa["weight"] / pa["weight"].sum()).astype(np.int16)
    recv = _receipt_times(ctx, rng, n, t_lo, t_hi)
    b["proc"], b["tiepnhan"] = proc, recv
    b["unit"] = _assign_units(ctx, rng, proc, recv)
    b["desk"] = _desk(ctx, b["unit"]).astype(np.int16)
    b["kenh"] = _channels(rng, pa["mucdo"][proc])
    b["nop"] = _submission(ctx, rng, b["kenh"], recv)
    b["hinhthuc"] = np.where(b["kenh"] == 3, 1, (rng.random(n) < 0.02).astype(np.int8)).astype(np.int8)
    _people(rng, b, pa["business"][proc])
    due = due_times(ctx, pa["time"][proc], pa["unit"][proc], recv)
    w_recv, w_due = ctx.cal.to_work(recv), ctx.cal.to_work(due)
    w_end, cls = _planned_end(rng, w_recv, w_due)
    eligible = (pa["unit"][proc] != 2) & (pa["time"][proc] >= 2)
    for k in ("due1", "due2", "s2_req", "s2_recv"):
        b[k] = np.zeros(n, dtype=np.int64)
    w_end, w_due = _supplements(ctx, rng, b, w_recv, w_end, w_due, eligible)
    end = ctx.cal.from_work(w_end)
    due = np.where(b["nsupp"] > 0, ctx.cal.from_work(w_due), due)
    end = np.where((cls == 1) & ~b["late_req"], due + rng.integers(60, 5400, n), end)
    b["hentra"] = due
    end = _abandoned_supplements(rng, b, end, now)
    has_fee = pa["fee"][proc]
    u = rng.random(n)
    thu = np.where(~has_fee, C.THU_NONE, np.where(u < 0.06, C.THU_MIEN,
                                                   np.where(u < 0.06 + 0.94 * pa["sau"][proc], C.THU_SAU,
                                                            C.THU_TRUOC)))
    b["thu"] = thu.astype(np.int8)
    # exempt applicants: the fee lines are declared at price 0 (most of them) or at the list price
    b["fee0"] = ((thu == C.THU_MIEN) & (rng.random(n) < 0.8)).astype(np.int8)
    mult = 1 + (rng.random(n) * pa["mult"][proc]).astype(np.int64)
    b["phi"] = (pa["phi"][proc] * mult).astype(np.int32)
    b["lephi"] = (pa["lephi"][proc] * mult).astype(np.int32)
    _status(ctx, rng, b, end, now, has_fee, thu, pa["uncollected"][proc])
    not_received = b["tiepnhan"] == 0
    b["nop"] = np.where(not_received, np.maximum(b["nop"], t_lo), b["nop"])
    _documents(rng, b, pa["ndocs"][proc])
    _results(rng, b, pa["paper"][proc])
    b["official"] = _assign_officials(ctx, rng, b["unit"])
    b["tttt"] = np.zeros(n, dtype=np.int8)
    b["key"] = _keys(ctx, b["desk"], b["nop"])
    b.pop("st5", None)
    b.pop("late_req", None)
    return b


# ----------------------------------------------------------------------------------------------
# payments (vectorised)
# ----------------------------------------------------------------------------------------------

def _gen_payments(ctx: Ctx, rng: np.random.Generator, d: dict[str, np.ndarray], first: int,
                  online_pay: np.ndarray, now: int, first_payment: int) -> dict[str, np.ndarray]:
    """Payment requests for dossiers d[first:] (fee-bearing, not status 1)."""
    rows = np.flatnonzero((d["thu"][first:] != C.THU_NONE) & (d["status"][first:] != 1)) + first
    rows = rows[rng.random(len(rows)) >= 0.03]  # a few dossiers whose requests never synced
    extra = rows[(rng.random(len(rows)) < 0.04) & (d["thu"][rows] != C.THU_MIEN)]
    main = _main_payments(ctx, rng, d, rows, online_pay, now)
    cancelled = _cancelled_payments(rng, d, extra, now)
    p = {k: np.concatenate([cancelled[k], main[k]]) for k in main}
    order = np.lexsort((p["yeucau"], p["dossier"]))
    p = {k: v[order] for k, v in p.items()}
    m = len(p["dossier"])
    up = np.maximum.reduce([p["yeucau"], p["thuphi"], p["hoanphi"], p["huy"]])
    p["capnhat"] = np.minimum(up + rng.integers(0, 600, m), now)
    ids = np.arange(first_payment, first_payment + m)
    p["key"] = np.array([f"YC{_yymmdd(int(t) // DAY)}{i + 1:08d}".encode()
                         for t, i in zip(p["yeucau"].tolist(), ids.tolist(), strict=True)], dtype="S24")
    return p


def _empty_payments(n: int) -> dict[str, np.ndarray]:
    z = np.zeros(n, dtype=np.int64)
    return {"dossier": z.copy(), "phi": z.astype(np.int32), "lephi": z.astype(np.int32),
            "status": z.astype(np.int8), "method": z.astype(np.int8), "thu": z.astype(np.int8),
            "kenh": z.astype(np.int8), "yeucau": z.copy(), "thuphi": z.copy(), "hoanphi": z.copy(),
            "huy": z.copy()}


def _main_payments(ctx: Ctx, rng: np.random.Generator, d: dict[str, np.ndarray], rows: np.ndarray,
                   online_pay: np.ndarray, now: int) -> dict[str, np.ndarray]:
    n = len(rows)
    p = _empty_payments(n)
    st, thu, kenh = d["status"][rows], d["thu"][rows], d["kenh"][rows]
    recv = np.where(d["tiepnhan"][rows] > 0, d["tiepnhan"][rows], d["nop"][rows])
    exempt = thu == C.THU_MIEN
    p["dossier"] = rows.astype(np.int64)
    p["thu"] = thu
    p["phi"] = np.where(exempt, 0, d["phi"][rows]).astype(np.int32)
    p["lephi"] = np.where(exempt, 0, d["lephi"][rows]).astype(np.int32)
    p["yeucau"] = np.where((kenh == 2) & (thu == C.THU_TRUOC), d["nop"][rows] + rng.integers(60, 1800, n), recv)
    p["yeucau"] = np.minimum(p["yeucau"], now)
    end, tra, tuchoi = d["ketthuc"][rows], d["tra"][rows], d["tuchoi"][rows]
    u = rng.random(n)
    status = np.full(n, C.PAY_PAID, dtype=np.int8)
    thuphi = np.minimum(p["yeucau"] + rng.integers(60, 6 * 3600, n), now)
    truoc, sau = thu == C.THU_TRUOC, thu == C.THU_SAU
    # collected before processing
    status[truoc & (st == 6)] = C.PAY_WAITING
    status[truoc & (st == 3)] = np.where(u[truoc & (st == 3)] < 0.5, C.PAY_REFUNDED, C.PAY_CANCELLED)
    status[truoc & (st == 7) & (u < 0.5)] = C.PAY_REFUNDED
    # collected at hand-over: paid when the result is handed over, often weeks after it was ready
    e_unpaid = sau & (st == 10) & (d["eresult"][rows] == 2) & (u < 0.12)
    status[sau & (st == 10)] = C.PAY_PAID
    thuphi = np.where(sau & (st == 10), tra, thuphi)
    status[e_unpaid] = C.PAY_UNPAID
    status[sau & (st == 9)] = np.where(u[sau & (st == 9)] < 0.7, C.PAY_UNPAID, C.PAY_WAITING)
    status[sau & np.isin(st, (2, 4, 5))] = C.PAY_UNPAID
    status[sau & (st == 6)] = C.PAY_WAITING
    status[sau & np.isin(st, (3, 7, 8))] = C.PAY_CANCELLED
    status[truoc & (st == 8) & (u < 0.3)] = C.PAY_CANCELLED
    status[exempt] = C.PAY_PAID
    paid_like = np.isin(status, (C.PAY_PAID, C.PAY_REFUNDED)) & ~exempt
    p["status"] = status
    p["thuphi"] = np.where(paid_like | exempt, thuphi, 0)
    stop = np.where(tuchoi > 0, tuchoi, end)
    p["hoanphi"] = np.where(status == C.PAY_REFUNDED, np.minimum(stop + rng.integers(3600, 5 * DAY, n), now), 0)
    p["hoanphi"] = np.where(status == C.PAY_REFUNDED, np.maximum(p["hoanphi"], p["thuphi"]), 0)
    p["huy"] = np.where(status == C.PAY_CANCELLED, np.maximum(stop, p["yeucau"]), 0)
    method = _methods(rng, kenh, online_pay[d["proc"][rows]])
    waiting_link = (status == C.PAY_WAITING) & (online_pay[d["proc"][rows]] == 1) & (rng.random(n) < 0.6)
    p["method"] = np.where(paid_like, method, np.where(waiting_link, 1, 0)).astype(np.int8)
    p["kenh"] = np.where(p["method"] == 1, np.where(rng.random(n) < 0.4, 1, 2), 0).astype(np.int8)
    paid_online = (status == C.PAY_PAID) & (p["method"] == 1)
    d["tttt"][rows] = np.where(paid_online, p["kenh"], d["tttt"][rows])
    return p


def _methods(rng: np.random.Generator, kenh: np.ndarray, online_ok: np.ndarray) -> np.ndarray:
    n = len(kenh)
    u = rng.random(n)
    online = np.where(u < 0.7, 1, np.where(u < 0.85, 3, 2))
    desk = np.where(u < 0.65, 2, np.where(u < 0.85, 1, 3))
    m = np.where(kenh == 2, online, desk)
    return np.where((m == 1) & (online_ok == 0), 2, m)


def _cancelled_payments(rng: np.random.Generator, d: dict[str, np.ndarray], rows: np.ndarray,
                        now: int) -> dict[str, np.ndarray]:
    n = len(rows)
    p = _empty_payments(n)
    p["dossier"] = rows.astype(np.int64)
    p["thu"] = d["thu"][rows]
    exempt = p["thu"] == C.THU_MIEN
    p["phi"] = np.where(exempt, 0, d["phi"][rows]).astype(np.int32)
    p["lephi"] = np.where(exempt, 0, d["lephi"][rows]).astype(np.int32)
    recv = np.where(d["tiepnhan"][rows] > 0, d["tiepnhan"][rows], d["nop"][rows])
    p["yeucau"] = np.minimum(recv - rng.integers(60, 1200, n), now)
    p["huy"] = np.minimum(p["yeucau"] + rng.integers(600, DAY, n), now)
    p["status"] = np.full(n, C.PAY_CANCELLED, dtype=np.int8)
    p["method"] = np.where(rng.random(n) < 0.5, 1, 0).astype(np.int8)
    p["kenh"] = np.where(p["method"] == 1, 2, 0).astype(np.int8)
    return p


def _dossier_updated(rng: np.random.Generator, d: dict[str, np.ndarray], p: dict[str, np.ndarray],
                     first: int, now: int) -> None:
    """NgayCapNhat of dossiers d[first:]: the last event (incl. their payments) plus a little."""
    sl = slice(first, None)
    last = np.maximum.reduce([d[c][sl] for c in ("nop", "tiepnhan", "ketthuc", "tra", "tuchoi",
                                                 "s1_req", "s1_recv", "s2_req", "s2_recv")])
    pay_last = np.zeros(len(d["nop"]), dtype=np.int64)
    np.maximum.at(pay_last, p["dossier"], np.maximum(p["thuphi"], p["hoanphi"]))
    last = np.maximum(last, pay_last[sl])
    n = len(last)
    st = d["status"][sl]
    in_progress = np.isin(st, (1, 2, 4, 5, 6))
    late_edit = rng.random(n) < 0.03
    frac = np.where(in_progress, rng.random(n) * 0.5, np.where(late_edit, rng.random(n), 0.0))
    up = last + (frac * (now - last)).astype(np.int64) + rng.integers(0, 1800, n)
    d["capnhat"][sl] = np.clip(up, last, now)


# ----------------------------------------------------------------------------------------------
# the dataset
# ----------------------------------------------------------------------------------------------

class RecordView(Sequence[dict[str, Any]]):
    """A read-only list-like view of one entity's records as canonical API dicts."""

    def __init__(self, ds: Dataset, entity: str) -> None:
        self._ds, self._entity = ds, entity

    def __len__(self) -> int:
        return self._ds.count(self._entity)

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        n = len(self)
        if isinstance(i, slice):
            return self._ds.render(self._entity, np.arange(n)[i])
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        return self._ds.render(self._entity, np.array([i]))[0]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        n = len(self)
        for lo in range(0, n, 2000):
            yield from self._ds.render(self._entity, np.arange(lo, min(n, lo + 2000)))


class Dataset(State):
    """The simulated one-stop system's data. Build it with `generate()`.

    Row indices are stable: records are only appended (by `advance`), never removed.
    """

    def __init__(self, ctx: Ctx, d: dict[str, np.ndarray], p: dict[str, np.ndarray], now: int) -> None:
        super().__init__(ctx, d, p, now)
        self.version = 0
        self._order: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._json_cache: dict[str, tuple[int, np.ndarray]] = {}
        self._reindex("dossiers", None)
        self._reindex("payments", None)

    # -- public views -----------------------------------------------------------------------
    @property
    def seed(self) -> int:
        """The seed the dataset was generated with."""
        return self._ctx.seed

    @property
    def now(self) -> datetime:
        """The simulated current time: every NgayCapNhat is at or before it."""
        return from_ts(self.now_ts)

    @property
    def dossiers(self) -> RecordView:
        """All dossiers as canonical API dicts (list-like)."""
        return RecordView(self, "dossiers")

    @property
    def payments(self) -> RecordView:
        """All payment requests as canonical API dicts (list-like)."""
        return RecordView(self, "payments")

    def records(self, entity: str, quirks: bool = False) -> list[dict[str, Any]]:
        """Every record of an entity (for small datasets; use `render` on slices for big ones)."""
        return self.render(entity, np.arange(self.count(entity)), quirks=quirks)

    def render(self, entity: str, idx: np.ndarray, quirks: bool = False) -> list[dict[str, Any]]:
        """Records at row indices `idx` as API dicts.

        With `quirks`, a deterministic ~8 % of records carry integers as numeric strings and
        missing timestamps as "" (both allowed by the contract), as the server sends them.
        """
        if entity == "dossiers":
            recs = render.render_dossiers(self, np.asarray(idx, dtype=np.int64))
        elif entity == "payments":
            recs = render.render_payments(self, np.asarray(idx, dtype=np.int64))
        else:
            src = self.procedures if entity == "procedures" else self.units
            return [dict(src[int(i)]) for i in idx]
        if quirks:
            for i, r in zip(np.asarray(idx).tolist(), recs, strict=True):
                if _quirky(i, entity):
                    _apply_quirks(r)
        return recs

    def render_json(self, entity: str, idx: np.ndarray) -> bytes:
        """Records at `idx` as a JSON array, exactly as the server sends them (quirks applied).

        Equal to `orjson.dumps(self.render(entity, idx, quirks=True))` byte for byte; dossiers and
        payments take the column-wise text path (`render.record_texts`).
        """
        idx = np.asarray(idx, dtype=np.int64)
        if entity not in ("dossiers", "payments"):
            return orjson.dumps(self.render(entity, idx))
        return b"[" + b",".join(self.record_texts(entity, idx)) + b"]"

    def record_texts(self, entity: str, idx: np.ndarray) -> list[bytes]:
        """One JSON object text per record at `idx` (dossiers or payments, quirks applied).

        Texts are cached per record, so a page asked again (seek paging re-reads windows, the
        server prefetches the next page) or a record read by several pages is rendered once;
        the cache is dropped whenever the dataset changes (`version`)."""
        idx = np.asarray(idx, dtype=np.int64)
        n = self.count(entity)
        cache = self._json_cache.get(entity)
        if cache is None or cache[0] != self.version or len(cache[1]) != n:
            cache = (self.version, np.full(n, None, dtype=object))
            self._json_cache[entity] = cache
        texts = cache[1]
        got = texts[idx]
        missing = np.flatnonzero(np.equal(got, None))
        if len(missing):
            rows = idx[missing]
            new = self._render_texts(entity, rows)
            texts[rows] = new
            got[missing] = new
        return got.tolist()

    def prerender(self, entities: tuple[str, ...] = ("dossiers", "payments"), block: int = 20_000) -> None:
        """Render and cache every record's JSON text now (a server about to be read in full)."""
        for entity in entities:
            n = self.count(entity)
            for a in range(0, n, block):
                self.record_texts(entity, np.arange(a, min(n, a + block)))

    def _render_texts(self, entity: str, idx: np.ndarray) -> list[bytes]:
        return render.record_texts(self, entity, idx)

    def page_json(self, entity: str, idx: np.ndarray, head: bytes = b"", tail: bytes = b"") -> bytes:
        """`head` + the records at `idx` as a JSON array + `tail`, rendered now from the columns
        and kept nowhere (the streaming server's pages); the array equals `render_json`'s."""
        idx = np.asarray(idx, dtype=np.int64)
        if entity not in ("dossiers", "payments"):
            return head + orjson.dumps(self.render(entity, idx)) + tail
        return render.page_json(self, entity, idx, head, tail)

    # -- ordering and windows (used by the server) ---------------------------------------------
    def ordered(self, entity: str) -> tuple[np.ndarray, np.ndarray]:
        """(row indices ordered by (NgayCapNhat, key), NgayCapNhat in that order)."""
        return self._order[entity]

    def window(self, entity: str, upd_from: int | None, upd_to: int | None) -> tuple[int, int]:
        """Positions [lo, hi) in `ordered(entity)` with from <= NgayCapNhat < to."""
        _order, upd = self._order[entity]
        lo = 0 if upd_from is None else int(np.searchsorted(upd, upd_from, "left"))
        hi = len(upd) if upd_to is None else int(np.searchsorted(upd, upd_to, "left"))
        return lo, max(lo, hi)

    def touch(self, entity: str, idx: np.ndarray) -> int:
        """Mark records as changed now: the clock ticks one second and NgayCapNhat moves to it."""
        idx = np.unique(np.asarray(idx, dtype=np.int64))
        if len(idx) == 0:
            return self.now_ts
        self.now_ts += 1
        cols = self._d if entity == "dossiers" else self._p
        cols["capnhat"][idx] = self.now_ts
        self._reindex(entity, idx)
        return self.now_ts

    # -- incremental activity -----------------------------------------------------------------
    def advance(self, n_changes: int, now: datetime, seed: int = 0, new_fraction: float = 0.3) -> dict[str, int]:
        """Simulate activity up to `now`: `n_changes` dossiers change or appear.

        About `new_fraction` of the changes are new dossiers (with their payment requests); the
        rest update existing dossiers: intake, processing, results, supplements received,
        hand-over, and late payments of results issued earlier. Every changed record gets a
        NgayCapNhat in (previous now, now]. Returns counts of what happened.
        """
        now_ts = to_ts(now)
        if now_ts <= self.now_ts:
            raise ValueError(f"now must be after the dataset's current time {self.now}")
        self._ensure_calendar(now_ts)
        rng = np.random.default_rng([self._ctx.seed, seed, now_ts])
        n_new = int(round(n_changes * new_fraction)) if n_changes > 1 else 0
        n_upd = n_changes - n_new
        old_now = self.now_ts
        stats = advance.update_existing(self, rng, n_upd, old_now, now_ts)
        first_d, first_p = self.count("dossiers"), self.count("payments")
        if n_new:
            self._append_new(rng, n_new, old_now + 1, now_ts)
        self.now_ts = now_ts
        self._reindex("dossiers", np.concatenate([stats.pop("_changed_d"), np.arange(first_d, self.count("dossiers"))]))
        self._reindex("payments", np.concatenate([stats.pop("_changed_p"), np.arange(first_p, self.count("payments"))]))
        stats["new_dossiers"] = self.count("dossiers") - first_d
        stats["new_payments"] = self.count("payments") - first_p
        return stats

    def _ensure_calendar(self, ts: int) -> None:
        if not self._ctx.cal.covers(self._ctx.cal.d0, ts // DAY + 200):
            self._ctx.cal = WorkCalendar(self._ctx.cal.first, from_ts(ts).date() + timedelta(days=400))

    def _append_new(self, rng: np.random.Generator, n: int, t_lo: int, t_hi: int) -> None:
        b = _gen_block(self._ctx, rng, n, t_lo, t_hi, t_hi)
        first = self.count("dossiers")
        b["capnhat"] = np.zeros(n, dtype=np.int64)
        self._d = {k: np.concatenate([self._d[k], b[k].astype(self._d[k].dtype)]) for k in self._d}
        p = _gen_payments(self._ctx, rng, self._d, first, self._pa["online_pay"], t_hi, self.count("payments"))
        _dossier_updated(rng, self._d, p, first, t_hi)
        self._d["capnhat"][first:] = np.maximum(self._d["capnhat"][first:], t_lo)
        p["capnhat"] = np.maximum(p["capnhat"], t_lo)
        self._p = {k: np.concatenate([self._p[k], p[k].astype(self._p[k].dtype)]) for k in self._p}

    def _reindex(self, entity: str, changed: np.ndarray | None) -> None:
        cols = self._d if entity == "dossiers" else self._p
        upd, keys = cols["capnhat"], cols["key"]
        self.version += 1
        if changed is None or entity not in self._order:
            order = np.lexsort((keys, upd))
        else:
            changed = np.unique(changed)
            old, _ = self._order[entity]
            mask = np.zeros(len(upd), dtype=bool)
            mask[changed] = True
            keep = old[~mask[old]]
            tail = changed[np.lexsort((keys[changed], upd[changed]))]
            if len(keep) and len(tail) and upd[tail[0]] < upd[keep[-1]]:
                order = np.lexsort((keys, upd))
            else:
                order = np.concatenate([keep, tail])
        self._order[entity] = (order, upd[order])

def _quirky(i: int, entity: str) -> bool:
    salt = 17 if entity == "dossiers" else 91
    return ((i * 2654435761 + salt) >> 5) % 100 < 8


_INT_FIELDS = ("KenhThucHien", "LoaiDoiTuong", "TrangThaiHoSo", "HinhThuc", "DuocThanhToanTrucTuyen",
               "HoSoCoThanhPhanSoHoa", "SoTien", "Phi", "LePhi", "KenhThanhToan")
_TS_FIELDS = ("NgayNopHoSo", "NgayTiepNhan", "NgayHenTra", "NgayKetThucXuLy", "NgayTra", "NgayTuChoi",
              "NgayYeuCau", "NgayThuPhi", "NgayHoanPhi", "NgayHuy")


def _apply_quirks(r: dict[str, Any]) -> None:
    for k in _INT_FIELDS:
        if isinstance(r.get(k), int):
            r[k] = str(r[k])
    for k in _TS_FIELDS:
        if k in r and r[k] is None:
            r[k] = ""


def generate(seed: int = 42, n_dossiers: int = 3000, start: date = date(2024, 1, 1),
             end: date = date(2024, 6, 30), now: datetime | None = None, source_code: str = "H08") -> Dataset:
    """Generate a deterministic dataset of `n_dossiers` dossiers received in [start, end].

    `now` (default: the day after `end`, 02:00) is the simulated time of the first extraction:
    statuses, payments and NgayCapNhat are as of `now`.
    """
    if end < start:
        raise ValueError("end must not be before start")
    now = now or datetime.combine(end + timedelta(days=1), datetime.min.time()).replace(hour=2)
    now_ts = to_ts(now)
    t_lo = day_number(start) * DAY
    t_hi = min(day_number(end) * DAY + DAY - 1, now_ts - 1)
    if t_hi < t_lo:
        raise ValueError("now must be after start")
    ctx = _make_ctx(seed, start, end, max(end, now.date()), source_code)
    rng = np.random.default_rng([seed, 1])
    d = _gen_block(ctx, rng, n_dossiers, t_lo, t_hi, now_ts)
    d["capnhat"] = np.zeros(n_dossiers, dtype=np.int64)
    pa = proc_arrays(ctx.procs)
    p = _gen_payments(ctx, rng, d, 0, pa["online_pay"], now_ts, 0)
    _dossier_updated(rng, d, p, 0, now_ts)
    return Dataset(ctx, d, p, now_ts)
