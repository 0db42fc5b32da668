"""The one clock: local time, months, reporting periods and the data cut.

- :data:`TIMEZONE` and :func:`now_local`: the offices' wall clock (Asia/Ho_Chi_Minh), right on a
  machine set to UTC. Every timestamp the pipeline writes (``dq.runs``, ``mart.publications``,
  ``dq.schema_migrations``...) is this naive local time, as the source's own timestamps are.
- Month arithmetic: :func:`month_bounds`, :func:`month_before`, :func:`months` (a date range as
  calendar months, for reports and backfill partitions) and :func:`nightly_periods` (what a
  nightly run republishes).
- :func:`resolve_period` turns ``2024-06`` (month), ``2024-Q2`` (quarter), ``2024-H1`` / ``2024-H2``
  (half) or ``2024`` (year) into a :class:`Period` under a *cut* (``DVC_PERIOD_CUT``):

  - ``calendar``: the calendar month, quarter, half or year;
  - ``decree-09``: the data cut of Decree 09/2019/NĐ-CP for periodic reports: a month runs from the
    15th of the previous month to the 14th; a quarter from the 15th of the month before it to the
    14th of its last month; H1 from 15 December of the previous year to 14 June; H2 from 15 June
    to 14 December; a year from 15 December of the previous year to 14 December.

- :func:`closed_month`: the last month fully closed on a given day under a cut (what the scheduled
  monthly report publishes).
- :func:`data_cut`: how far the warehouse's data reaches, max(NgayCapNhat) of the dossiers and
  payments (the ``as_of`` of a publication). The one function here that reads the warehouse.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

TIMEZONE = "Asia/Ho_Chi_Minh"
#: :data:`TIMEZONE` as a tzinfo (the source's timestamps are in it too).
ZONE = ZoneInfo(TIMEZONE)

CALENDAR = "calendar"
DECREE_09 = "decree-09"
#: The cuts ``DVC_PERIOD_CUT`` accepts.
CUTS: tuple[str, ...] = (CALENDAR, DECREE_09)
#: The day of the month a decree-09 month ends on (it starts the day after, in the month before).
DECREE_09_LAST_DAY = 14

PERIOD_FORMS = "YYYY-MM (month, e.g. 2024-06), YYYY-Qn (quarter, 2024-Q2), YYYY-H1 or YYYY-H2 (half), YYYY (year, 2024)"

_MONTH = re.compile(r"(\d{4})-(\d{2})", re.ASCII)
_QUARTER = re.compile(r"(\d{4})-Q([1-4])", re.ASCII)
_HALF = re.compile(r"(\d{4})-H([12])", re.ASCII)
_YEAR = re.compile(r"(\d{4})", re.ASCII)


# ----------------------------------------------------------------------------------------------
# Local time
# ----------------------------------------------------------------------------------------------
def now_local() -> datetime:
    """Current wall time in Asia/Ho_Chi_Minh, naive, to the second (whatever the machine's zone)."""
    return datetime.now(ZONE).replace(tzinfo=None, microsecond=0)


def today_local() -> date:
    """Today's date in Asia/Ho_Chi_Minh."""
    return now_local().date()


# ----------------------------------------------------------------------------------------------
# Months
# ----------------------------------------------------------------------------------------------
def month_bounds(day: date) -> tuple[date, date]:
    """The first and last day of ``day``'s calendar month."""
    first = day.replace(day=1)
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first, following - timedelta(days=1)


def month_before(day: date) -> tuple[date, date]:
    """The first and last day of the calendar month before ``day``'s."""
    return month_bounds(day.replace(day=1) - timedelta(days=1))


def months(start: date, end: date, *, clip: bool = False) -> list[tuple[date, date]]:
    """The calendar months that intersect ``[start, end]``, as ``(first day, last day)``.

    With ``clip=True`` the first and last month are cut to ``start`` and ``end`` (a backfill's
    partitions, a report's month rows). ``months(date(2024, 1, 15), date(2024, 3, 2))`` ->
    ``[(2024-01-01, 2024-01-31), (2024-02-01, 2024-02-29), (2024-03-01, 2024-03-31)]``.
    """
    if end < start:
        raise ValueError(f"period end {end} is before its start {start}")
    out: list[tuple[date, date]] = []
    first, last = month_bounds(start)
    while first <= end:
        out.append((max(first, start), min(last, end)) if clip else (first, last))
        first, last = month_bounds(last + timedelta(days=1))
    return out


def nightly_periods(as_of: datetime | None) -> list[tuple[date, date]]:
    """What a nightly run republishes: the month before the data cut's (late payments restate it)
    and the data cut's month to date. None (an empty warehouse): nothing."""
    if as_of is None:
        return []
    day = as_of.date()
    return [month_before(day), (day.replace(day=1), day)]


# ----------------------------------------------------------------------------------------------
# Reporting periods
# ----------------------------------------------------------------------------------------------
class PeriodError(ValueError):
    """A period text or a cut that :func:`resolve_period` does not accept."""


@dataclass(frozen=True)
class Period:
    """A reporting period: the days ``start``..``end`` (both included), its ``label`` (``2024-06``,
    ``2024-Q2``, ``2024-H1``, ``2024``) and the ``cut`` it was resolved under.

    Unpacks as ``(start, end)``: ``start, end = resolve_period("2024-06", "calendar")``.
    """

    start: date
    end: date
    label: str
    cut: str

    def __iter__(self) -> Iterator[date]:
        return iter((self.start, self.end))

    @property
    def dates(self) -> tuple[date, date]:
        return self.start, self.end


def check_cut(cut: str) -> str:
    """``cut`` if it is one of :data:`CUTS`, else :class:`PeriodError`."""
    if cut not in CUTS:
        raise PeriodError(f"unknown period cut {cut!r}: use one of {', '.join(CUTS)}")
    return cut


def _months(year: int, first: int, last: int, cut: str) -> tuple[date, date]:
    """Months ``first``..``last`` of ``year`` (1-based, inclusive) under ``cut``."""
    if cut == CALENDAR:
        return date(year, first, 1), month_bounds(date(year, last, 1))[1]
    # decree-09: from the 15th of the month before ``first`` to the 14th of ``last``
    before = month_before(date(year, first, 1))[0]
    return before.replace(day=DECREE_09_LAST_DAY + 1), date(year, last, DECREE_09_LAST_DAY)


def resolve_period(text: str, cut: str) -> Period:
    """The period named by ``text`` under ``cut`` (``calendar`` | ``decree-09``).

    >>> resolve_period("2025-01", "decree-09")
    Period(start=datetime.date(2024, 12, 15), end=datetime.date(2025, 1, 14), label='2025-01', cut='decree-09')

    An unknown form or cut raises :class:`PeriodError` naming the accepted ones.
    """
    check_cut(cut)
    raw = text if isinstance(text, str) else str(text)
    t = raw.strip().upper()
    try:
        if m := _MONTH.fullmatch(t):
            year, month = int(m[1]), int(m[2])
            if not 1 <= month <= 12:
                raise PeriodError(f"period {raw!r}: month {m[2]} is not 01..12; accepted forms: {PERIOD_FORMS}")
            start, end = _months(year, month, month, cut)
            label = f"{year:04d}-{month:02d}"
        elif m := _QUARTER.fullmatch(t):
            year, q = int(m[1]), int(m[2])
            start, end = _months(year, 3 * q - 2, 3 * q, cut)
            label = f"{year:04d}-Q{q}"
        elif m := _HALF.fullmatch(t):
            year, h = int(m[1]), int(m[2])
            start, end = _months(year, 6 * h - 5, 6 * h, cut)
            label = f"{year:04d}-H{h}"
        elif m := _YEAR.fullmatch(t):
            year = int(m[1])
            start, end = _months(year, 1, 12, cut)
            label = f"{year:04d}"
        else:
            raise PeriodError(f"period {raw!r} is not one of: {PERIOD_FORMS}")
    except PeriodError:
        raise
    except (ValueError, OverflowError):  # year 0000; 0001 under decree-09; 9999 under calendar
        raise PeriodError(f"period {raw!r} is out of range; accepted forms: {PERIOD_FORMS}") from None
    return Period(start, end, label, cut)


def closed_month(today: date | datetime, cut: str) -> Period:
    """The last month fully closed on ``today`` under ``cut``.

    ``calendar``: the previous calendar month. ``decree-09``: the month whose 14th has passed,
    i.e. from the 15th on, the month of ``today``; before it, the previous month. On 2024-07-01
    and on 2024-06-15 it is ``2024-06`` (2024-05-15..2024-06-14); on 2024-06-14 it is ``2024-05``.
    """
    check_cut(cut)
    day = today.date() if isinstance(today, datetime) else today
    month = day if cut == DECREE_09 and day.day > DECREE_09_LAST_DAY else month_before(day)[0]
    return resolve_period(f"{month.year:04d}-{month.month:02d}", cut)


# ----------------------------------------------------------------------------------------------
# The data cut
# ----------------------------------------------------------------------------------------------
_DATA_CUT_SQL = (
    "SELECT max(t.ts) FROM ("
    " SELECT max(ngay_cap_nhat) AS ts FROM core.dossiers"
    " UNION ALL SELECT max(ngay_cap_nhat) AS ts FROM core.payments) AS t"
)


def data_cut(bind: Engine | Connection) -> datetime | None:
    """The data cut: max(NgayCapNhat) over ``core.dossiers`` and ``core.payments`` (the source's
    local time, as :func:`now_local`); None while both are empty. A publication stamps it on its
    rows as ``as_of``; a nightly run republishes the months around it (:func:`nightly_periods`)."""
    import sqlalchemy as sa

    if isinstance(bind, sa.engine.Connection):
        return bind.execute(sa.text(_DATA_CUT_SQL)).scalar()
    with bind.connect() as conn:
        return conn.execute(sa.text(_DATA_CUT_SQL)).scalar()
