-- mart.rpt_progress: dossier-handling results, form 06/VPCP/KSTT.
-- Grain: one row per period x unit (x the unit's level as of receipt; normally one level), for
-- every unit with a dossier received in the period or carried over into it, or rejected at intake
-- in the period (rejected_at_intake: status 3 with date(coalesce(NgayTuChoi, NgayNopHoSo)) in the
-- period, at the unit's level as of coalesce(NgayTiepNhan, NgayNopHoSo); counted nowhere else).
-- Reads tmp_dossier_facts (sql/reports/_dossier_facts.sql). Parameters: :publication_id.

INSERT INTO mart.rpt_progress_history (
    period_start, period_end, ma_don_vi, ten_don_vi, cap_don_vi,
    received_total, received_online, received_direct, received_postal, carried_over, to_handle_total,
    resolved_total, resolved_before_due, resolved_on_time, resolved_late,
    in_progress_total, in_progress_in_time, in_progress_overdue, on_time_rate,
    as_of, publication_id, rejected_at_intake
)
with

facts as (
    select * from tmp_dossier_facts
),

in_scope as (
    select * from facts
    where received_in_period or carried_over or rejected_in_period
),

by_unit as (
    select
        period_start,
        period_end,
        ma_don_vi,
        max(ten_don_vi) as ten_don_vi,
        cap_don_vi,
        sum(case when received_in_period then 1 else 0 end) as received_total,
        sum(case when received_in_period and channel = 2 then 1 else 0 end) as received_online,
        sum(case when received_in_period and channel not in (2, 3) then 1 else 0 end) as received_direct,
        sum(case when received_in_period and channel = 3 then 1 else 0 end) as received_postal,
        sum(case when carried_over then 1 else 0 end) as carried_over,
        sum(case when resolved_in_period then 1 else 0 end) as resolved_total,
        sum(case when resolved_in_period and timeliness = 'before_due' then 1 else 0 end) as resolved_before_due,
        sum(case when resolved_in_period and timeliness = 'on_time' then 1 else 0 end) as resolved_on_time,
        sum(case when resolved_in_period and timeliness = 'late' then 1 else 0 end) as resolved_late,
        sum(case when in_progress_at_end then 1 else 0 end) as in_progress_total,
        sum(case when in_progress_at_end and not overdue then 1 else 0 end) as in_progress_in_time,
        sum(case when overdue then 1 else 0 end) as in_progress_overdue,
        sum(case when rejected_in_period then 1 else 0 end) as rejected_at_intake,
        max(as_of) as as_of
    from in_scope
    group by period_start, period_end, ma_don_vi, cap_don_vi
),

final as (
    select
        period_start,
        period_end,
        ma_don_vi,
        ten_don_vi,
        cap_don_vi,
        received_total,
        received_online,
        received_direct,
        received_postal,
        carried_over,
        received_total + carried_over as to_handle_total,
        resolved_total,
        resolved_before_due,
        resolved_on_time,
        resolved_late,
        in_progress_total,
        in_progress_in_time,
        in_progress_overdue,
        case
            when resolved_total = 0 then null
            else cast(resolved_before_due + resolved_on_time as double precision) / resolved_total
        end as on_time_rate,
        as_of,
        cast(:publication_id as varchar) as publication_id,
        rejected_at_intake
    from by_unit
)

select * from final;
