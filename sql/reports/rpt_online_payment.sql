-- mart.rpt_online_payment: online payment, system vs paid-only (reports.md section 2).
-- Grain: one row per period x unit (x level) x procedure, for procedures with at least one dossier
-- received in the period that carries a financial obligation.
-- system     = paid online / with an obligation (paid or not)
-- paid_only  = paid online and obligation completed / obligation completed
-- Reads tmp_dossier_facts. Parameters: :publication_id.

INSERT INTO mart.rpt_online_payment_history (
    period_start, period_end, ma_don_vi, ten_don_vi, cap_don_vi, ma_tthc, ten_tthc,
    with_obligation, obligation_completed, paid_online, paid_online_completed, paid_offline,
    unpaid_result_issued, unpaid_in_progress, excluded_unpaid, amount_due,
    rate_system, rate_paid_only, as_of, publication_id
)
with

facts as (
    select * from tmp_dossier_facts
),

population as (
    select * from facts
    where received_in_period and has_obligation
),

by_unit_procedure as (
    select
        period_start,
        period_end,
        ma_don_vi,
        max(ten_don_vi) as ten_don_vi,
        cap_don_vi,
        ma_tthc,
        max(ten_tthc) as ten_tthc,
        count(*) as with_obligation,
        sum(case when obligation_completed then 1 else 0 end) as obligation_completed,
        sum(case when paid_online then 1 else 0 end) as paid_online,
        sum(case when paid_online and obligation_completed then 1 else 0 end) as paid_online_completed,
        sum(case when obligation_completed and not paid_online then 1 else 0 end) as paid_offline,
        sum(case when result_issued_fees_unpaid then 1 else 0 end) as unpaid_result_issued,
        sum(case when in_progress_fees_unpaid then 1 else 0 end) as unpaid_in_progress,
        sum(amount_due) as amount_due,
        max(as_of) as as_of
    from population
    group by period_start, period_end, ma_don_vi, cap_don_vi, ma_tthc
),

final as (
    select
        period_start,
        period_end,
        ma_don_vi,
        ten_don_vi,
        cap_don_vi,
        ma_tthc,
        ten_tthc,
        with_obligation,
        obligation_completed,
        paid_online,
        paid_online_completed,
        paid_offline,
        unpaid_result_issued,
        unpaid_in_progress,
        with_obligation - obligation_completed as excluded_unpaid,
        amount_due,
        case
            when with_obligation = 0 then null
            else cast(paid_online as double precision) / with_obligation
        end as rate_system,
        case
            when obligation_completed = 0 then null
            else cast(paid_online_completed as double precision) / obligation_completed
        end as rate_paid_only,
        as_of,
        cast(:publication_id as varchar) as publication_id
    from by_unit_procedure
)

select * from final;
