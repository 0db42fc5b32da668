"""The working-day calendar: Vietnam's public holidays (the ``holidays`` package, Tết and days off
in lieu included) plus ``reference/calendar_overrides.csv`` for what the package does not know:
make-up working Saturdays and office decisions (``is_working_day`` true or false on a date).

:func:`build_calendar` is pure; :func:`load_calendar` writes it to ``core.calendar``.
"""

from __future__ import annotations

import csv
from datetime import date, timedelta
from pathlib import Path

import holidays
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tasks.clock import today_local

OVERRIDES_FILE = "calendar_overrides.csv"


class CalendarError(ValueError):
    """The overrides file is malformed."""


def read_overrides(reference_dir: Path) -> dict[date, tuple[bool, str]]:
    path = Path(reference_dir) / OVERRIDES_FILE
    if not path.exists():
        return {}
    out: dict[date, tuple[bool, str]] = {}
    with path.open(encoding="utf-8-sig", newline="") as fh:
        for n, row in enumerate(csv.DictReader(fh), start=2):
            try:
                day = date.fromisoformat(row["day"].strip())
                flag = row["is_working_day"].strip().lower()
                if flag not in ("true", "false", "1", "0"):
                    raise ValueError(f"is_working_day {flag!r} is not true/false")
            except (KeyError, ValueError, AttributeError) as exc:
                raise CalendarError(f"{path}:{n}: {exc}") from None
            out[day] = (flag in ("true", "1"), (row.get("note") or "").strip())
    return out


def build_calendar(start: date, end: date, reference_dir: Path) -> pd.DataFrame:
    """One row per day in [start, end]: day, is_working_day, holiday_name, note."""
    years = list(range(start.year, end.year + 1))
    vn = holidays.country_holidays("VN", years=years)
    overrides = read_overrides(reference_dir)
    rows = []
    d = start
    while d <= end:
        name = vn.get(d)
        working = d.weekday() < 5 and name is None
        note = None
        if d in overrides:
            working, note = overrides[d][0], overrides[d][1] or "override"
        rows.append((d, working, name, note))
        d += timedelta(days=1)
    frame = pd.DataFrame(rows, columns=["day", "is_working_day", "holiday_name", "note"])
    frame["day"] = pd.to_datetime(frame["day"]).astype("datetime64[us]")
    return frame


def calendar_span(today: date | None = None) -> tuple[date, date]:
    """The days every run keeps in ``core.calendar``: 2015-01-01 to the end of next year (the
    year of ``today``, by default the offices' today)."""
    today = today or today_local()
    return date(2015, 1, 1), date(today.year + 1, 12, 31)


def load_calendar(engine: Engine, start: date, end: date, reference_dir: Path) -> int:
    """Replace ``core.calendar`` rows in [start, end]; returns the number of days written."""
    from tasks.bulk import stage

    frame = build_calendar(start, end, reference_dir)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM core.calendar WHERE day BETWEEN :a AND :b"), {"a": start, "b": end})
        stage(conn, "stg_cal", frame, "core.calendar")
        conn.execute(
            sa.text(
                "INSERT INTO core.calendar (day, is_working_day, holiday_name, note) "
                "SELECT day, is_working_day, holiday_name, note FROM stg_cal"
            )
        )
    return len(frame)


def add_working_days(start: date, n: int, calendar: pd.DataFrame) -> date:
    """The date n working days after ``start`` (``start`` itself not counted)."""
    working = set(calendar.loc[calendar["is_working_day"], "day"].dt.date)
    d = start
    left = n
    while left > 0:
        d += timedelta(days=1)
        if d in working:
            left -= 1
    return d
