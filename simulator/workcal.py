"""Vectorised working-time arithmetic for the simulator.

Timestamps are int64 seconds since 1970-01-01 of *naive local time* (no time zone maths).
Working days skip weekends and Vietnamese public holidays (the `holidays` package) and count the
make-up Saturdays. Office hours are 07:00-11:30 and 13:30-17:00 (8 working hours a day), so a
"work position" is `rank_of_working_day * 28800 + seconds_into_the_office_day`.
"""

from __future__ import annotations

import re
from datetime import date, datetime

import holidays
import numpy as np

DAY = 86400
AM0, AM1, PM0, PM1 = 7 * 3600, 11 * 3600 + 1800, 13 * 3600 + 1800, 17 * 3600
MORNING = AM1 - AM0  # 16200 s
WORKDAY = MORNING + (PM1 - PM0)  # 28800 s = 8 h
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

# Saturdays worked in exchange for a bridge day off; the package only knows the day off.
MAKEUP_SATURDAYS: frozenset[date] = frozenset({date(2024, 5, 4), date(2025, 4, 26), date(2026, 8, 22)})
_SUBSTITUTED = re.compile(r"substituted from (\d{2})/(\d{2})/(\d{4})")


def day_number(d: date) -> int:
    """Days since 1970-01-01."""
    return d.toordinal() - EPOCH_ORDINAL


def to_ts(dt: datetime) -> int:
    """Naive local datetime -> int seconds."""
    return day_number(dt.date()) * DAY + dt.hour * 3600 + dt.minute * 60 + dt.second


def from_ts(ts: int) -> datetime:
    """Int seconds -> naive local datetime."""
    d = date.fromordinal(int(ts) // DAY + EPOCH_ORDINAL)
    s = int(ts) % DAY
    return datetime(d.year, d.month, d.day, s // 3600, s // 60 % 60, s % 60)


def vietnam_days_off(first: date, last: date) -> tuple[set[date], set[date]]:
    """(public holidays incl. days off in lieu, make-up working Saturdays) between two dates."""
    hol = holidays.country_holidays("VN", years=range(first.year, last.year + 1))
    off = set(hol.keys())
    makeup = {d for d in MAKEUP_SATURDAYS if first <= d <= last}
    for name in hol.values():
        for m in _SUBSTITUTED.finditer(str(name)):
            makeup.add(date(int(m.group(3)), int(m.group(1)), int(m.group(2))))
    return off, makeup


class WorkCalendar:
    """Working days between `first` and `last` (inclusive), with vectorised helpers."""

    def __init__(self, first: date, last: date) -> None:
        self.first, self.last = first, last
        self.d0 = day_number(first)
        days = np.arange(self.d0, day_number(last) + 1, dtype=np.int64)
        weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        off, makeup = vietnam_days_off(first, last)
        off_n = np.array(sorted(day_number(d) for d in off), dtype=np.int64)
        mk_n = np.array(sorted(day_number(d) for d in makeup), dtype=np.int64)
        work = (weekday < 5) & ~np.isin(days, off_n)
        work |= np.isin(days, mk_n)
        self.is_work = work
        self.rank = (np.cumsum(work) - work).astype(np.int64)  # working days strictly before
        self.work_days = days[work]

    def covers(self, day_lo: int, day_hi: int) -> bool:
        """True when [day_lo, day_hi] (day numbers) lies inside the calendar with margin."""
        return day_lo >= self.d0 and day_hi + 5 < self.d0 + len(self.is_work)

    def is_working(self, days: np.ndarray) -> np.ndarray:
        """Vectorised: is each day number a working day."""
        return self.is_work[np.asarray(days) - self.d0]

    def next_working(self, days: np.ndarray) -> np.ndarray:
        """The day itself when working, else the next working day."""
        return self.work_days[self.rank[np.asarray(days) - self.d0]]

    def add_working_days(self, days: np.ndarray, k: np.ndarray | int) -> np.ndarray:
        """Working day `k` working days after `days` (rolled forward to a working day first)."""
        return self.work_days[self.rank[np.asarray(days) - self.d0] + k]

    def to_work(self, ts: np.ndarray) -> np.ndarray:
        """Clock seconds -> work position (time outside office hours snaps to the next office second)."""
        ts = np.asarray(ts, dtype=np.int64)
        dn, tod = np.divmod(ts, DAY)
        idx = dn - self.d0
        off = np.where(
            tod < AM0, 0,
            np.where(tod < AM1, tod - AM0,
                     np.where(tod < PM0, MORNING,
                              np.where(tod < PM1, MORNING + tod - PM0, WORKDAY))))
        off = np.where(self.is_work[idx], off, 0)
        return self.rank[idx] * WORKDAY + off

    def from_work(self, w: np.ndarray, prefer_end: bool = True) -> np.ndarray:
        """Work position -> clock seconds.

        A position on a day boundary is 17:00 of the previous working day when `prefer_end`
        (a deadline), else 07:00 of the next one (an event).
        """
        r, off = np.divmod(np.asarray(w, dtype=np.int64), WORKDAY)
        if prefer_end:
            edge = (off == 0) & (r > 0)
            r = np.where(edge, r - 1, r)
            off = np.where(edge, WORKDAY, off)
        tod = np.where(off <= MORNING, AM0 + off, PM0 + off - MORNING)
        return self.work_days[r] * DAY + tod
