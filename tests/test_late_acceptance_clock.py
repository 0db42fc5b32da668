"""mart.rpt_late_acceptance's working clock against the definition, at the calendar's edges.

The query reads the working seconds between two instants as the difference of two lookups in a
cumulative table over core.calendar. This test checks it against the definition itself (the
07:00-11:30 and 13:30-17:00 sessions of every working day between the two instants, summed) on
waits that start before the calendar, end after it, cross a day missing from it, start or end
inside a session, on a session's edge or at a weekend, end before they start, or reach the data cut.
"""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa

from tasks import reports
from tests.test_reports import (
    REFERENCE_DIR,
    fresh_warehouse,
    insert_dossier,
    insert_procedure,
    insert_unit,
    rows,
)

BIRTH = "1.001193.000.00.00.H08"
CAL_FIRST, CAL_LAST = date(2024, 2, 26), date(2024, 3, 22)
MISSING = {date(2024, 3, 6), date(2024, 3, 7)}  # not in core.calendar: not working
HOLIDAY = date(2024, 3, 12)  # in core.calendar, not a working day
AS_OF = datetime(2024, 3, 27, 9, 15, 30)
SESSIONS = ((time(7, 0), time(11, 30)), (time(13, 30), time(17, 0)))


def working(day: date) -> bool:
    return CAL_FIRST <= day <= CAL_LAST and day not in MISSING and day != HOLIDAY and day.weekday() < 5


def oracle_hours(start: datetime, end: datetime) -> float | None:
    """The definition: session overlaps over the working days touched, rounded half up to 2 decimals."""
    seconds = 0.0
    day = start.date()
    while day <= end.date():
        if working(day):
            for a, b in SESSIONS:
                lo, hi = max(start, datetime.combine(day, a)), min(end, datetime.combine(day, b))
                if hi > lo:
                    seconds += (hi - lo).total_seconds()
        day += timedelta(days=1)
    hundredths = (round(seconds) + 18) // 36
    return hundredths / 100 if hundredths > 800 else None


def test_late_acceptance_clock_matches_the_definition(warehouse_url: str) -> None:
    engine = fresh_warehouse(warehouse_url)
    rng = random.Random(17)
    edges = [datetime(2024, 2, 20, 9, 0), datetime(2024, 2, 26, 7, 0), datetime(2024, 2, 29, 11, 30),
             datetime(2024, 3, 1, 12, 0), datetime(2024, 3, 5, 16, 59, 59), datetime(2024, 3, 6, 10, 0),
             datetime(2024, 3, 9, 10, 0), datetime(2024, 3, 12, 8, 0), datetime(2024, 3, 13, 13, 30),
             datetime(2024, 3, 22, 17, 0), datetime(2024, 3, 25, 9, 0)]
    waits: list[tuple[datetime, datetime | None]] = [(a, b) for a in edges for b in edges] + [(e, None) for e in edges]
    for _ in range(120):
        a = datetime(2024, 2, 18) + timedelta(seconds=rng.randrange(40 * 86400))
        waits.append((a, a + timedelta(seconds=rng.randrange(12 * 86400)) if rng.random() < 0.9 else None))
    with engine.begin() as c:
        day = CAL_FIRST
        while day <= CAL_LAST:
            if day not in MISSING:
                c.execute(sa.text("INSERT INTO core.calendar (day, is_working_day) VALUES (:d, :w)"),
                          {"d": day, "w": working(day)})
            day += timedelta(days=1)
        insert_unit(c, "U3", "2020-01-01", None, "UBND xã U3", 3)
        insert_procedure(c, BIRTH, "Đăng ký khai sinh", muc_do=3, co_tttt=0, kqg=0, co_phi=0, cap="3")
        for i, (a, b) in enumerate(waits):
            fmt = "%Y-%m-%d %H:%M:%S"
            insert_dossier(c, f"W{i:03d}", tthc=BIRTH, don_vi="U3", status=4 if b else 1, channel=2,
                           submitted=a.strftime(fmt), received=b.strftime(fmt) if b else None)
    pub = reports.publish(engine, date(2024, 2, 1), date(2024, 3, 31), run_id="clock", as_of=AS_OF,
                          reference_dir=REFERENCE_DIR)
    got = {r["ma_ho_so"]: r["working_hours_waited"] for r in rows(
        engine, "SELECT * FROM mart.rpt_late_acceptance_history WHERE publication_id = :p", p=pub.publication_id)}
    want = {f"W{i:03d}": h for i, (a, b) in enumerate(waits) if (h := oracle_hours(a, b or AS_OF)) is not None}
    assert len(want) > 50 and len(waits) - len(want) > 50  # both sides of the 8 hours are exercised
    assert got == want
