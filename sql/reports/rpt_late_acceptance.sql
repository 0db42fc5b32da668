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

-- the two office sessions of every working day the wait touches
sessions as (
    select
        s.source,
        s.ma_ho_so,
        c.day + interval '7 hours' as session_start,
        c.day + interval '690 minutes' as session_end
    from submitted as s
    inner join calendar as c
        on c.is_working_day
        and c.day between cast(s.ngay_nop_ho_so as date) and cast(s.waited_until as date)
    union all
    select
        s.source,
        s.ma_ho_so,
        c.day + interval '810 minutes',
        c.day + interval '17 hours'
    from submitted as s
    inner join calendar as c
        on c.is_working_day
        and c.day between cast(s.ngay_nop_ho_so as date) and cast(s.waited_until as date)
),

-- seconds of each session inside [NgayNopHoSo, waited_until]
session_overlaps as (
    select
        w.source,
        w.ma_ho_so,
        extract(epoch from (
            least(s.waited_until, w.session_end) - greatest(s.ngay_nop_ho_so, w.session_start)
        )) as seconds
    from sessions as w
    inner join submitted as s on s.source = w.source and s.ma_ho_so = w.ma_ho_so
    where least(s.waited_until, w.session_end) > greatest(s.ngay_nop_ho_so, w.session_start)
),

-- whole seconds, then hours to 2 decimals rounded half up: floor((s + 18) / 36) hundredths (a
-- single rounding; exact in floating point, as (s + 18) / 36 is an integer or k + r/36, r >= 1)
waited_seconds as (
    select
        source,
        ma_ho_so,
        round(sum(seconds)) as seconds
    from session_overlaps
    group by source, ma_ho_so
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
