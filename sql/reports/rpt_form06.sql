-- mart.rpt_form06: Biểu số 06/VPCP/KSTT (Circular 01/2020/TT-VPCP), the counts of
-- mart.rpt_progress regrouped by level and field (docs/official-figures.md section 3).
-- Grain: one row per period x level (cap_don_vi as of receipt) x field (ma_linh_vuc; the field of
-- the catalogue, else of the dossier), over the dossiers received in the period or carried over.
-- received_total = received_online + received_direct_postal + carried_over (the form's column 1
-- counts the dossiers carried over); received_online / received_direct_postal count only the
-- dossiers received in the period. stt numbers the fields within a level, by code.
-- Reads tmp_dossier_facts. Parameters: :period_start, :period_end, :as_of, :publication_id.

INSERT INTO mart.rpt_form06_history (
    period_start, period_end, cap_don_vi, stt, ma_linh_vuc, ten_linh_vuc,
    received_total, received_online, received_direct_postal, carried_over,
    resolved_total, resolved_before_due, resolved_on_time, resolved_late,
    in_progress_total, in_progress_in_time, in_progress_overdue,
    as_of, publication_id
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

-- named steps ---------------------------------------------------------------------------------
in_scope as (
    select * from facts
    where received_in_period or carried_over
),

by_field as (
    select
        cap_don_vi,
        ma_linh_vuc,
        max(ten_linh_vuc) as ten_linh_vuc,
        sum(case when received_in_period and channel = 2 then 1 else 0 end) as received_online,
        sum(case when received_in_period and channel <> 2 then 1 else 0 end) as received_direct_postal,
        sum(case when carried_over then 1 else 0 end) as carried_over,
        sum(case when resolved_in_period then 1 else 0 end) as resolved_total,
        sum(case when resolved_in_period and timeliness = 'before_due' then 1 else 0 end) as resolved_before_due,
        sum(case when resolved_in_period and timeliness = 'on_time' then 1 else 0 end) as resolved_on_time,
        sum(case when resolved_in_period and timeliness = 'late' then 1 else 0 end) as resolved_late,
        sum(case when in_progress_at_end then 1 else 0 end) as in_progress_total,
        sum(case when in_progress_at_end and not overdue then 1 else 0 end) as in_progress_in_time,
        sum(case when overdue then 1 else 0 end) as in_progress_overdue
    from in_scope
    group by cap_don_vi, ma_linh_vuc
),

final as (
    select
        p.period_start,
        p.period_end,
        b.cap_don_vi,
        row_number() over (
            partition by b.cap_don_vi
            order by b.ma_linh_vuc nulls last, b.ten_linh_vuc nulls last
        ) as stt,
        b.ma_linh_vuc,
        b.ten_linh_vuc,
        b.received_online + b.received_direct_postal + b.carried_over as received_total,
        b.received_online,
        b.received_direct_postal,
        b.carried_over,
        b.resolved_total,
        b.resolved_before_due,
        b.resolved_on_time,
        b.resolved_late,
        b.in_progress_total,
        b.in_progress_in_time,
        b.in_progress_overdue,
        p.as_of,
        p.publication_id
    from by_field as b
    cross join params as p
)

select * from final;
