"""The simulated system's state, and what every part of the simulator shares.

The simulator's modules depend one way: ``catalog`` and ``workcal`` (static data, working-time
arithmetic) -> ``state`` (this module: the column store and the helpers both generation and
activity need) -> ``render`` (rows -> API dicts and JSON) and ``advance`` (day-to-day activity)
-> ``dataset`` (generation and the ``Dataset`` with its public views) -> ``export``, ``inject``,
``server`` -> ``cli``. ``render`` and ``advance`` take a :class:`State`, so they never import
``dataset``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

from simulator import catalog as C
from simulator.workcal import DAY, WorkCalendar

ENTITIES = ("dossiers", "payments", "procedures", "units")
#: timestamp columns (0: no value)
DOSSIER_TS = ("nop", "tiepnhan", "hentra", "ketthuc", "tra", "tuchoi", "capnhat",
              "s1_req", "s1_recv", "s2_req", "s2_recv", "due0", "due1", "due2")
PAYMENT_TS = ("yeucau", "thuphi", "hoanphi", "huy", "capnhat")
_TOD = [f"{s // 3600:02d}{s // 60 % 60:02d}{s % 60:02d}" for s in range(DAY)]


@dataclass
class Ctx:
    """Everything the generators need besides the random stream."""

    seed: int
    start: date
    end: date
    source_code: str
    units: list[C.UnitRow]
    procs: tuple[C.Procedure, ...]
    unit_index: dict[str, int]
    unit_names: list[str]
    officials: C.OfficialPool
    cal: WorkCalendar
    seq: dict[tuple[int, int], int] = field(default_factory=dict)


def local_code(s: str, source_code: str) -> str:
    """A catalogue code (written for source H08) as the source ``source_code`` spells it."""
    return s if source_code == "H08" else s.replace(".H08", f".{source_code}")


def ascii_fold(s: str) -> str:
    """Vietnamese text without its diacritics, lower case (logins, file names)."""
    s = s.replace("đ", "d").replace("Đ", "D")
    return "".join(ch for ch in unicodedata.normalize("NFD", s) if not unicodedata.combining(ch)).lower()


def due_times(ctx: Ctx, proc_time: np.ndarray, proc_unit: np.ndarray, recv: np.ndarray) -> np.ndarray:
    """Due timestamps: working hours for `ngay-lam-viec`/`gio`, calendar days for `ngay`."""
    cal = ctx.cal
    hours = np.where(proc_unit == 2, proc_time, proc_time * 8)
    due = cal.from_work(cal.to_work(recv) + hours * 3600)
    cal_day = proc_unit == 1
    if cal_day.any():
        r = recv[cal_day]
        tod = np.minimum(r % DAY, 17 * 3600)
        due[cal_day] = cal.next_working(r // DAY + proc_time[cal_day]) * DAY + tod
    return due


def proc_arrays(procs: Sequence[C.Procedure]) -> dict[str, np.ndarray]:
    """The procedures' knobs as arrays indexed by procedure number."""
    unit_code = {"ngay-lam-viec": 0, "ngay": 1, "gio": 2}
    return {
        "time": np.array([p.time for p in procs]),
        "unit": np.array([unit_code[p.time_unit] for p in procs]),
        "mucdo": np.array([p.mucdo for p in procs]),
        "fee": np.array([p.has_fee for p in procs]),
        "phi": np.array([p.phi for p in procs]),
        "lephi": np.array([p.lephi for p in procs]),
        "mult": np.array([p.multiplier_max for p in procs]),
        "sau": np.array([p.thu_sau_share for p in procs]),
        "ndocs": np.array([len(p.documents) for p in procs]),
        "paper": np.array([p.paper_result for p in procs]),
        "uncollected": np.array([p.uncollected_share for p in procs]),
        "business": np.array([p.documents[0] == "Giấy đề nghị" for p in procs]),
        "online_pay": np.array([p.online_payment for p in procs]),
        "weight": np.array([p.weight for p in procs], dtype=float),
    }


class State:
    """The column store of a simulated system: dossiers (``_d``) and payments (``_p``) as numpy
    columns, the catalogue rows as API dicts, the simulated clock (``now_ts``). ``Dataset`` builds
    on it; ``render`` and ``advance`` read and change it."""

    def __init__(self, ctx: Ctx, d: dict[str, np.ndarray], p: dict[str, np.ndarray], now: int) -> None:
        self._ctx, self._d, self._p, self.now_ts = ctx, d, p, now
        self._pa = proc_arrays(ctx.procs)
        self.procedures: list[dict[str, Any]] = [self._procedure_dict(p) for p in ctx.procs]
        self.units: list[dict[str, Any]] = [self._unit_dict(u) for u in ctx.units]

    def count(self, entity: str) -> int:
        """Number of records of an entity."""
        if entity == "dossiers":
            return len(self._d["key"])
        if entity == "payments":
            return len(self._p["key"])
        return len(self.procedures if entity == "procedures" else self.units)

    def _ts_strings(self, arr: np.ndarray) -> list[str | None]:
        d0 = self._ctx.cal.d0
        days = self._day_strings()
        out: list[str | None] = []
        for v in arr.tolist():
            out.append(days[v // DAY - d0] + _TOD[v % DAY] if v else None)
        return out

    def _day_strings(self) -> list[str]:
        cal = self._ctx.cal
        cache = getattr(self, "_days_cache", None)
        if cache is None or cache[0] != (cal.d0, len(cal.is_work)):
            base = date(1970, 1, 1).toordinal()
            strs = [date.fromordinal(base + cal.d0 + k).strftime("%Y%m%d") for k in range(len(cal.is_work))]
            cache = ((cal.d0, len(cal.is_work)), strs)
            self._days_cache = cache
        return cache[1]

    def _procedure_dict(self, p: C.Procedure) -> dict[str, Any]:
        sc = self._ctx.source_code
        return {
            "MaTTHC": local_code(p.code, sc), "TenTTHC": p.name, "MaLinhVuc": p.sector_code,
            "TenLinhVuc": p.sector_name, "CapThucHien": list(p.levels), "ThoiHanGiaiQuyet": p.time,
            "DonViThoiHan": p.time_unit, "MucDoDVC": p.mucdo, "CoPhiLePhi": int(p.has_fee),
            "CoThanhToanTrucTuyen": p.online_payment, "KetQuaGiay": p.paper_result,
        }

    def _unit_dict(self, u: C.UnitRow) -> dict[str, Any]:
        sc = self._ctx.source_code
        return {
            "MaDonVi": local_code(u.code, sc), "TenDonVi": u.name, "CapDonVi": u.level,
            "MaDonViCha": local_code(u.parent, sc) if u.parent else None,
            "HieuLucTu": u.valid_from.strftime("%Y%m%d"),
            "HieuLucDen": u.valid_to.strftime("%Y%m%d") if u.valid_to else None,
            "MaDonViKeNhiem": local_code(u.successor, sc) if u.successor else None,
        }
