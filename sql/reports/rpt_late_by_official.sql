-- mart.rpt_late_by_official: the monthly list of officials with late dossiers.
-- Grain: one row per period x month x official x unit (x level), only where something is late.
-- late_resolved: resolved late (by date) in the month. late_in_progress: not resolved by the
-- month's end (clipped to period_end) and overdue then, by the rule of section 1 applied at that
-- date (received on or before it; due date before it; status 5 counts as in time).
-- The official is MaCanBoXuLy, the one who holds or last held the dossier.
-- Reads tmp_dossier_facts, tmp_report_months. Parameters: :publication_id.

INSERT INTO mart.rpt_late_by_official_history (
    period_start, period_end, month, ma_can_bo, can_bo, ma_don_vi, ten_don_vi, cap_don_vi,
    late_resolved, late_in_progress, as_of, publication_id
)
with

facts as (
    select * from tmp_dossier_facts
),

months as (
    select * from tmp_report_months
),

late_resolved as (
    select
        m.month,
        f.ma_can_bo_xu_ly,
        f.can_bo_xu_ly,
        f.ma_don_vi,
        f.ten_don_vi,
        f.cap_don_vi,
        1 as is_late_resolved,
        0 as is_late_in_progress
    from facts as f
    inner join months as m
        on f.end_date between m.month_start and m.month_end
    where f.resolved_in_period and f.timeliness = 'late'
),

late_in_progress as (
    select
        m.month,
        f.ma_can_bo_xu_ly,
        f.can_bo_xu_ly,
        f.ma_don_vi,
        f.ten_don_vi,
        f.cap_don_vi,
        0 as is_late_resolved,
        1 as is_late_in_progress
    from facts as f
    inner join months as m
        on f.received_date <= m.month_end
    where f.is_received
        and not (f.is_resolved and (f.end_date is null or f.end_date <= m.month_end))
        and f.trang_thai <> 5
        and f.due_date < m.month_end
),

late_events as (
    select * from late_resolved
    union all
    select * from late_in_progress
),

by_official as (
    select
        month,
        ma_can_bo_xu_ly as ma_can_bo,
        max(can_bo_xu_ly) as can_bo,
        ma_don_vi,
        max(ten_don_vi) as ten_don_vi,
        cap_don_vi,
        sum(is_late_resolved) as late_resolved,
        sum(is_late_in_progress) as late_in_progress
    from late_events
    group by month, ma_can_bo_xu_ly, ma_don_vi, cap_don_vi
),

final as (
    select
        f.period_start,
        f.period_end,
        b.month,
        b.ma_can_bo,
        b.can_bo,
        b.ma_don_vi,
        b.ten_don_vi,
        b.cap_don_vi,
        b.late_resolved,
        b.late_in_progress,
        f.as_of,
        cast(:publication_id as varchar) as publication_id
    from by_official as b
    cross join (select distinct period_start, period_end, as_of from facts) as f
)

select * from final;
