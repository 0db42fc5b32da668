from datetime import date

from tasks.calendar import add_working_days, build_calendar
from tasks.settings import PROJECT_ROOT

REF = PROJECT_ROOT / "reference"


def test_holidays_and_makeup_saturdays():
    cal = build_calendar(date(2024, 1, 1), date(2026, 12, 31), REF).set_index("day")["is_working_day"]

    def working(d):
        return bool(cal[str(d)])

    assert not working(date(2024, 2, 12))  # Tết
    assert not working(date(2024, 4, 29))  # day off in lieu
    assert working(date(2024, 5, 4))  # make-up Saturday (override file)
    assert not working(date(2024, 5, 11))  # an ordinary Saturday
    assert working(date(2025, 4, 26)) and working(date(2026, 8, 22))
    assert not working(date(2026, 11, 24))  # Ngày Văn hóa Việt Nam, from 2026


def test_add_working_days_skips_holidays():
    cal = build_calendar(date(2024, 4, 1), date(2024, 5, 31), REF)
    # Fri 26/4 + 3 working days: Mon 29/4, Tue 30/4, Wed 1/5 are off -> Thu 2/5, Fri 3/5, Sat 4/5 (make-up)
    assert add_working_days(date(2024, 4, 26), 3, cal) == date(2024, 5, 4)
