"""Reporting periods (``tasks.clock``): every form under both cuts, the month just closed, and the
monthly report flow's use of them. Local time and months: tests/test_clock.py."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from tasks.clock import (
    CUTS,
    Period,
    PeriodError,
    check_cut,
    closed_month,
    resolve_period,
)

D = date


# ----------------------------------------------------------------------------------------------
# resolve_period
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "cut", "start", "end", "label"), [
    # months
    ("2024-06", "calendar", D(2024, 6, 1), D(2024, 6, 30), "2024-06"),
    ("2024-06", "decree-09", D(2024, 5, 15), D(2024, 6, 14), "2024-06"),
    ("2025-01", "calendar", D(2025, 1, 1), D(2025, 1, 31), "2025-01"),
    ("2025-01", "decree-09", D(2024, 12, 15), D(2025, 1, 14), "2025-01"),  # crosses the year
    ("2024-12", "calendar", D(2024, 12, 1), D(2024, 12, 31), "2024-12"),
    ("2024-12", "decree-09", D(2024, 11, 15), D(2024, 12, 14), "2024-12"),
    ("2024-02", "calendar", D(2024, 2, 1), D(2024, 2, 29), "2024-02"),  # leap year
    ("2023-02", "calendar", D(2023, 2, 1), D(2023, 2, 28), "2023-02"),
    ("2100-02", "calendar", D(2100, 2, 1), D(2100, 2, 28), "2100-02"),  # not a leap year
    ("2000-02", "calendar", D(2000, 2, 1), D(2000, 2, 29), "2000-02"),  # a leap year
    ("2024-03", "decree-09", D(2024, 2, 15), D(2024, 3, 14), "2024-03"),  # through 29 February
    ("2024-02", "decree-09", D(2024, 1, 15), D(2024, 2, 14), "2024-02"),
    # quarters
    ("2024-Q1", "calendar", D(2024, 1, 1), D(2024, 3, 31), "2024-Q1"),
    ("2024-Q2", "calendar", D(2024, 4, 1), D(2024, 6, 30), "2024-Q2"),
    ("2024-Q3", "calendar", D(2024, 7, 1), D(2024, 9, 30), "2024-Q3"),
    ("2024-Q4", "calendar", D(2024, 10, 1), D(2024, 12, 31), "2024-Q4"),
    ("2024-Q1", "decree-09", D(2023, 12, 15), D(2024, 3, 14), "2024-Q1"),
    ("2024-Q2", "decree-09", D(2024, 3, 15), D(2024, 6, 14), "2024-Q2"),
    ("2024-Q3", "decree-09", D(2024, 6, 15), D(2024, 9, 14), "2024-Q3"),
    ("2024-Q4", "decree-09", D(2024, 9, 15), D(2024, 12, 14), "2024-Q4"),
    # halves
    ("2024-H1", "calendar", D(2024, 1, 1), D(2024, 6, 30), "2024-H1"),
    ("2024-H2", "calendar", D(2024, 7, 1), D(2024, 12, 31), "2024-H2"),
    ("2024-H1", "decree-09", D(2023, 12, 15), D(2024, 6, 14), "2024-H1"),
    ("2024-H2", "decree-09", D(2024, 6, 15), D(2024, 12, 14), "2024-H2"),
    # years
    ("2024", "calendar", D(2024, 1, 1), D(2024, 12, 31), "2024"),
    ("2024", "decree-09", D(2023, 12, 15), D(2024, 12, 14), "2024"),
    # case and spaces are forgiven; the label is canonical
    ("2024-q2", "calendar", D(2024, 4, 1), D(2024, 6, 30), "2024-Q2"),
    (" 2024-h2 ", "decree-09", D(2024, 6, 15), D(2024, 12, 14), "2024-H2"),
])
def test_resolve_period(text, cut, start, end, label):
    p = resolve_period(text, cut)
    assert p == Period(start, end, label, cut)
    assert (p.start, p.end, p.label, p.cut) == (start, end, label, cut)
    s, e = p  # unpacks as (start, end), as docs/official-figures.md section 5 has it
    assert (s, e) == p.dates == (start, end)


@pytest.mark.parametrize("cut", CUTS)
def test_periods_tile_the_year_without_gaps_or_overlaps(cut):
    for year in (2023, 2024, 2025):  # 2024 is a leap year
        for parts in ([f"{year}-{m:02d}" for m in range(1, 13)], [f"{year}-Q{q}" for q in range(1, 5)],
                      [f"{year}-H1", f"{year}-H2"]):
            periods = [resolve_period(t, cut) for t in parts]
            whole = resolve_period(str(year), cut)
            assert periods[0].start == whole.start and periods[-1].end == whole.end
            for a, b in zip(periods, periods[1:], strict=False):
                assert (b.start - a.end).days == 1, (a, b)
        # consecutive years too
        assert (resolve_period(str(year + 1), cut).start - resolve_period(str(year), cut).end).days == 1


def test_a_decree_09_year_has_the_days_of_its_calendar_span():
    assert (resolve_period("2024", "decree-09").end - resolve_period("2024", "decree-09").start).days + 1 == 366
    assert (resolve_period("2025", "decree-09").end - resolve_period("2025", "decree-09").start).days + 1 == 365
    assert (resolve_period("2024-03", "decree-09").end - resolve_period("2024-03", "decree-09").start).days + 1 == 29


@pytest.mark.parametrize("text", [
    "2024-13", "2024-00", "2024-6", "24-06", "2024/06", "06-2024", "2024-06-01", "2024-Q0", "2024-Q5",
    "2024-H0", "2024-H3", "2024-S1", "H1-2024", "Q2 2024", "20245", "", "   ", "june", "2024–06",  # en dash
    "0000", "٢٠٢٤",  # Arabic-Indic digits
])
@pytest.mark.parametrize("cut", CUTS)
def test_bad_period_text_raises_a_period_error_listing_the_forms(text, cut):
    with pytest.raises(PeriodError) as info:
        resolve_period(text, cut)
    msg = str(info.value)
    assert repr(text) in msg
    for form in ("YYYY-MM", "YYYY-Qn", "YYYY-H1", "YYYY"):
        assert form in msg
    assert isinstance(info.value, ValueError)


def test_year_one_has_no_decree_09_cut():
    assert resolve_period("0001", "calendar").start == D(1, 1, 1)
    with pytest.raises(PeriodError, match="out of range"):
        resolve_period("0001", "decree-09")  # no 15 December of year 0


@pytest.mark.parametrize("cut", ["", "Calendar", "decree09", "decree-9", "fiscal", "monthly"])
def test_unknown_cut_raises_a_period_error_naming_the_cuts(cut):
    with pytest.raises(PeriodError, match="calendar, decree-09"):
        resolve_period("2024-06", cut)
    with pytest.raises(PeriodError, match="calendar, decree-09"):
        closed_month(D(2024, 7, 1), cut)
    with pytest.raises(PeriodError):
        check_cut(cut)


def test_period_is_frozen():
    p = resolve_period("2024-06", "calendar")
    with pytest.raises(AttributeError):
        p.start = D(2024, 1, 1)  # type: ignore[misc]
    assert hash(p) == hash(resolve_period("2024-06", "calendar"))


# ----------------------------------------------------------------------------------------------
# closed_month
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("today", "cut", "label", "start", "end"), [
    (D(2024, 7, 1), "calendar", "2024-06", D(2024, 6, 1), D(2024, 6, 30)),
    (D(2024, 7, 31), "calendar", "2024-06", D(2024, 6, 1), D(2024, 6, 30)),
    (D(2024, 6, 15), "calendar", "2024-05", D(2024, 5, 1), D(2024, 5, 31)),
    (D(2025, 1, 1), "calendar", "2024-12", D(2024, 12, 1), D(2024, 12, 31)),
    (D(2024, 3, 1), "calendar", "2024-02", D(2024, 2, 1), D(2024, 2, 29)),
    (D(2024, 7, 1), "decree-09", "2024-06", D(2024, 5, 15), D(2024, 6, 14)),
    (D(2024, 6, 15), "decree-09", "2024-06", D(2024, 5, 15), D(2024, 6, 14)),  # the 14th has passed
    (D(2024, 6, 14), "decree-09", "2024-05", D(2024, 4, 15), D(2024, 5, 14)),  # not yet
    (D(2024, 6, 30), "decree-09", "2024-06", D(2024, 5, 15), D(2024, 6, 14)),
    (D(2025, 1, 10), "decree-09", "2024-12", D(2024, 11, 15), D(2024, 12, 14)),
    (D(2025, 1, 15), "decree-09", "2025-01", D(2024, 12, 15), D(2025, 1, 14)),
    (D(2024, 12, 20), "decree-09", "2024-12", D(2024, 11, 15), D(2024, 12, 14)),
])
def test_closed_month(today, cut, label, start, end):
    assert closed_month(today, cut) == Period(start, end, label, cut)
    assert closed_month(datetime.combine(today, datetime.min.time()).replace(hour=7), cut) == Period(
        start, end, label, cut)


@pytest.mark.parametrize("cut", CUTS)
def test_the_closed_month_has_ended_and_the_next_has_not(cut):
    d = D(2023, 12, 1)
    while d < D(2025, 3, 1):
        p = closed_month(d, cut)
        assert p.end < d, (d, p)
        following = resolve_period(f"{p.end.year + p.end.month // 12}-{p.end.month % 12 + 1:02d}", cut)
        assert following.end >= d, (d, p, following)
        d = D.fromordinal(d.toordinal() + 1)


# ----------------------------------------------------------------------------------------------
# the monthly report flow (prefect.yaml: one deployment per cut)
# ----------------------------------------------------------------------------------------------
def _deployments() -> dict[str, dict]:
    import yaml

    from tasks.settings import PROJECT_ROOT

    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    return {d["name"]: d for d in spec["deployments"]}


def test_prefect_yaml_has_one_monthly_deployment_per_cut():
    deps = _deployments()
    cal, dec = deps["monthly-report"], deps["monthly-report-decree-09"]
    for d, cut, cron in ((cal, "calendar", "0 7 1 * *"), (dec, "decree-09", "0 7 15 * *")):
        assert d["entrypoint"] == "flows/ops.py:monthly_report"
        assert d["parameters"]["only_for_cut"] == cut
        assert d["schedules"] == [{"cron": cron, "timezone": "Asia/Ho_Chi_Minh"}]
        assert d["concurrency_limit"] == 1
    assert {d["parameters"]["only_for_cut"] for d in (cal, dec)} == set(CUTS)


@pytest.fixture
def captured_publish(monkeypatch):
    """flows.ops.publish_task replaced by a recorder (the publication itself is tested elsewhere)."""
    import flows.ops

    calls: list[tuple] = []

    def fake(settings, run_id, period, period_cut=None, period_label=None):
        calls.append((tuple(period), period_cut, period_label))
        return {"period": [str(period[0]), str(period[1])], "period_cut": period_cut, "period_label": period_label}

    monkeypatch.setattr(flows.ops, "publish_task", fake)
    monkeypatch.setattr(flows.ops, "now_local", lambda: datetime(2024, 7, 1, 7, 0))
    return calls


@pytest.mark.parametrize(("cut", "schedule", "expected"), [
    ("calendar", "calendar", ((D(2024, 6, 1), D(2024, 6, 30)), "calendar", "2024-06")),
    ("decree-09", "decree-09", ((D(2024, 5, 15), D(2024, 6, 14)), "decree-09", "2024-06")),
    ("calendar", None, ((D(2024, 6, 1), D(2024, 6, 30)), "calendar", "2024-06")),  # a manual run
    ("decree-09", "calendar", None),  # the other cut's schedule: nothing
    ("calendar", "decree-09", None),
])
def test_monthly_report_publishes_the_closed_month_of_the_configured_cut(
    prefect_harness, dvc_env, tmp_path, captured_publish, cut, schedule, expected,
):
    from flows.ops import monthly_report

    dvc_env(DVC_WAREHOUSE_URL=f"duckdb:///{tmp_path / 'wh.duckdb'}", DVC_PERIOD_CUT=cut)
    out = monthly_report(only_for_cut=schedule)
    if expected is None:
        assert out["skipped"] is True and captured_publish == []
        assert "DVC_PERIOD_CUT" in out["message"]
        assert not (tmp_path / "wh.duckdb").exists()  # the warehouse was not even opened
    else:
        assert captured_publish == [expected]
        assert out["period_label"] == "2024-06" and out["period_cut"] == cut


def test_monthly_report_month_parameter_is_resolved_under_the_cut(prefect_harness, dvc_env, tmp_path, captured_publish):
    from flows.ops import monthly_report

    dvc_env(DVC_WAREHOUSE_URL=f"duckdb:///{tmp_path / 'wh.duckdb'}", DVC_PERIOD_CUT="decree-09")
    monthly_report(month="2025-01")
    assert captured_publish == [((D(2024, 12, 15), D(2025, 1, 14)), "decree-09", "2025-01")]


def test_nightly_wants_one_label_per_period():
    from flows.nightly import nightly

    with pytest.raises(ValueError, match="one label per period"):
        nightly.fn(periods=[(D(2024, 1, 1), D(2024, 6, 30))], period_labels=["2024-H1", "2024-H2"])
    with pytest.raises(ValueError, match="one label per period"):
        nightly.fn(period_labels=["2024-H1"])
    with pytest.raises(PeriodError):
        nightly.fn(periods=[(D(2024, 1, 1), D(2024, 6, 30))], period_cut="fiscal")
