-- mart.rpt_late_acceptance: online dossiers accepted (or rejected) late, 2024 report III.3.
-- Grain: one row per period x dossier (source, ma_ho_so) submitted online (KenhThucHien = 2) with
-- date(NgayNopHoSo) in the period, listed when more than 8 working hours passed between NgayNopHoSo
-- and its acceptance (coalesce(NgayTiepNhan, NgayTuChoi), shown as ngay_tiep_nhan) or, when it was
-- neither accepted nor rejected, the data cut. Working hours: 07:00-11:30 and 13:30-17:00 on the
-- working days of core.calendar (a day missing from core.calendar counts as not working), rounded
-- half up to 2 decimals.
-- Reads tmp_dossier_facts, core.calendar. Parameters: :period_start, :period_end, :as_of,
-- :publication_id.

INSERT INTO mart.rpt_late_acceptance_history (
    period_start, period_end, source, ma_ho_so, ma_tthc, ten_tthc, ma_don_vi, ten_don_vi, cap_don_vi,
    trang_thai, ngay_nop_ho_so, ngay_tiep_nhan, working_hours_waited, as_of, publication_id
)
with

-- import CTEs ---------------------------------------------------------------------------------
params as (
    select
        cast(:period_start as date) as period_start,
        cast(:period_end as date) as period_end,
        cast(:as_of as timestamp) as as_of,
        cast(:publication_id as varchar) as publication_id
),

facts as (
    select * from tmp_dossier_facts
),

calendar as (
    select * from core.calendar
),

-- named steps ---------------------------------------------------------------------------------
submitted as (
    select
        f.source,
        f.ma_ho_so,
        f.ma_tthc,
        f.ten_tthc,
        f.ma_don_vi,
        f.ten_don_vi,
        f.cap_don_vi,
        f.trang_thai,
        f.ngay_nop_ho_so,
        coalesce(f.ngay_tiep_nhan, f.ngay_tu_choi) as accepted_at,
        coalesce(f.ngay_tiep_nhan, f.ngay_tu_choi, p.as_of) as waited_until
    from facts as f
    cross join params as p
    where f.channel = 2
        and cast(f.ngay_nop_ho_so as date) between p.period_start and p.period_end
),

-- every day from the calendar's first to the day after its last (a day missing from core.calendar
-- is not working), with the working seconds of the days before it: the working time between two
-- instants is then a difference of two lookups, not a sum over the days in between
calendar_bounds as (
    select
        min(day) as first_day,
        max(day) as last_day
    from calendar
),

days as (
    select cast(g.d as date) as day
    from calendar_bounds as b
    cross join generate_series(
        cast(b.first_day as timestamp), cast(b.last_day as timestamp) + interval '1 day', interval '1 day'
    ) as g (d)
),

working_days as (
    select
        d.day,
        coalesce(c.is_working_day, false) as is_working_day
    from days as d
    left join calendar as c on c.day = d.day
),

-- 28800 s a working day: 07:00-11:30 and 13:30-17:00; seconds_before: the working seconds of the
-- days before; seconds_until(t) on that day is seconds_before plus the day's sessions before t
cumulative as (
    select
        day,
        is_working_day,
        coalesce(sum(case when is_working_day then 28800 else 0 end) over (
            order by day rows between unbounded preceding and 1 preceding
        ), 0) as seconds_before,
        day + interval '7 hours' as morning_start,
        day + interval '690 minutes' as morning_end,
        day + interval '810 minutes' as afternoon_start,
        day + interval '17 hours' as afternoon_end
    from working_days
),

-- the two ends of each wait, and the days that hold their place on the working clock (a day before
-- the calendar: its first day, whose sessions all come later; after it: the day after its last, not
-- working, whose seconds_before is the calendar's total)
wait_ends as (
    select
        s.source,
        s.ma_ho_so,
        s.ngay_nop_ho_so,
        s.waited_until,
        least(greatest(cast(s.ngay_nop_ho_so as date), b.first_day), b.day_after_last) as from_day,
        least(greatest(cast(s.waited_until as date), b.first_day), b.day_after_last) as until_day
    from submitted as s
    cross join (
        select first_day, cast(last_day + interval '1 day' as date) as day_after_last
        from calendar_bounds
    ) as b
),

-- working seconds inside [NgayNopHoSo, waited_until]: the difference of the two ends' places on
-- the working clock (not positive when it ends before it starts), rounded to whole seconds; then
-- hours to 2 decimals rounded half up: floor((s + 18) / 36) hundredths (a single rounding; exact
-- in floating point, as (s + 18) / 36 is an integer or k + r/36, r >= 1)
waited_seconds as (
    select
        e.source,
        e.ma_ho_so,
        round(
            (
                u.seconds_before + case when u.is_working_day then
                    greatest(0, extract(epoch from (least(e.waited_until, u.morning_end) - u.morning_start)))
                    + greatest(0, extract(epoch from (least(e.waited_until, u.afternoon_end) - u.afternoon_start)))
                else 0 end
            ) - (
                f.seconds_before + case when f.is_working_day then
                    greatest(0, extract(epoch from (least(e.ngay_nop_ho_so, f.morning_end) - f.morning_start)))
                    + greatest(0, extract(epoch from (least(e.ngay_nop_ho_so, f.afternoon_end) - f.afternoon_start)))
                else 0 end
            )
        ) as seconds
    from wait_ends as e
    inner join cumulative as f on f.day = e.from_day
    inner join cumulative as u on u.day = e.until_day
),

waited as (
    select
        source,
        ma_ho_so,
        cast(floor((seconds + 18) / 36.0) as double precision) / 100 as working_hours_waited
    from waited_seconds
),

final as (
    select
        p.period_start,
        p.period_end,
        s.source,
        s.ma_ho_so,
        s.ma_tthc,
        s.ten_tthc,
        s.ma_don_vi,
        s.ten_don_vi,
        s.cap_don_vi,
        s.trang_thai,
        s.ngay_nop_ho_so,
        s.accepted_at as ngay_tiep_nhan,
        w.working_hours_waited,
        p.as_of,
        p.publication_id
    from submitted as s
    inner join waited as w on w.source = s.source and w.ma_ho_so = s.ma_ho_so
    cross join params as p
    where w.working_hours_waited > 8
)

select * from final;
