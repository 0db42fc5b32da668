-- mart.rpt_service_indicators: the seven service indicators ("07 chỉ tiêu"), each published as
-- system and paid_only side by side (reports.md sections 2 and 3).
-- Grain: one row per period x unit (x level) x indicator, for every unit with a dossier received
-- in the period or carried over; plus ma_don_vi = '*' (cap_don_vi null): the whole jurisdiction.
--
-- paid_only = the same formula over the dossiers with no financial obligation or a completed one
-- (fees_settled); excluded_* = dossiers of the system population the restriction removed.
-- Dossier indicators: population as in section 3 (on_time, e_result: resolved in the period;
-- online_submission, online_payment, reuse: received in the period).
-- Procedure indicators (online_service_uptake, online_payment_uptake): count procedures, each
-- once per unit and once for the jurisdiction, over the dossiers received in the period;
-- excluded_* count the dossiers removed from that population.
-- Reads tmp_dossier_facts. Parameters: :publication_id.

INSERT INTO mart.rpt_service_indicators_history (
    period_start, period_end, ma_don_vi, ten_don_vi, cap_don_vi,
    indicator, indicator_order, indicator_label,
    numerator_system, denominator_system, rate_system,
    numerator_paid_only, denominator_paid_only, rate_paid_only,
    excluded_unpaid, excluded_result_issued, excluded_in_progress,
    as_of, publication_id
)
with

facts as (
    select * from tmp_dossier_facts
),

indicators as (
    select * from (
        values
            ('on_time', 1, 'Tỷ lệ hồ sơ giải quyết đúng hạn'),
            ('online_submission', 2, 'Tỷ lệ hồ sơ nộp trực tuyến'),
            ('online_payment', 3, 'Tỷ lệ hồ sơ thanh toán trực tuyến'),
            ('e_result', 4, 'Tỷ lệ cấp kết quả điện tử'),
            ('reuse', 5, 'Tỷ lệ khai thác, sử dụng lại dữ liệu số hóa'),
            ('online_service_uptake', 6, 'DVC trực tuyến có phát sinh hồ sơ trực tuyến'),
            ('online_payment_uptake', 7, 'TTHC cung cấp thanh toán trực tuyến có phát sinh giao dịch')
    ) as t (indicator, indicator_order, indicator_label)
),

-- the units reported: those of mart.rpt_progress, plus the jurisdiction '*'
units as (
    select ma_don_vi, cap_don_vi, max(ten_don_vi) as ten_don_vi
    from facts
    where received_in_period or carried_over
    group by ma_don_vi, cap_don_vi
    union all
    select '*', null, 'Toàn địa bàn'
),

-- one row per dossier x dossier indicator whose system denominator holds the dossier
dossier_members as (
    select ma_don_vi, cap_don_vi, 'on_time' as indicator,
        is_on_time_or_before as is_hit, fees_settled, result_issued_fees_unpaid, in_progress_fees_unpaid
    from facts where resolved_in_period
    union all
    select ma_don_vi, cap_don_vi, 'online_submission',
        channel = 2, fees_settled, result_issued_fees_unpaid, in_progress_fees_unpaid
    from facts where received_in_period
    union all
    select ma_don_vi, cap_don_vi, 'online_payment',
        paid_online, fees_settled, result_issued_fees_unpaid, in_progress_fees_unpaid
    from facts where received_in_period and has_obligation
    union all
    select ma_don_vi, cap_don_vi, 'e_result',
        has_e_result, fees_settled, result_issued_fees_unpaid, in_progress_fees_unpaid
    from facts where resolved_in_period and ket_qua_giay = 1
    union all
    select ma_don_vi, cap_don_vi, 'reuse',
        has_reuse, fees_settled, result_issued_fees_unpaid, in_progress_fees_unpaid
    from facts where received_in_period
),

dossier_counts_by_unit as (
    select
        ma_don_vi,
        cap_don_vi,
        indicator,
        sum(case when is_hit then 1 else 0 end) as numerator_system,
        count(*) as denominator_system,
        sum(case when is_hit and fees_settled then 1 else 0 end) as numerator_paid_only,
        sum(case when fees_settled then 1 else 0 end) as denominator_paid_only,
        sum(case when result_issued_fees_unpaid then 1 else 0 end) as excluded_result_issued,
        sum(case when in_progress_fees_unpaid then 1 else 0 end) as excluded_in_progress
    from dossier_members
    group by ma_don_vi, cap_don_vi, indicator
),

dossier_counts as (
    select * from dossier_counts_by_unit
    union all
    select
        '*', null, indicator,
        sum(numerator_system), sum(denominator_system),
        sum(numerator_paid_only), sum(denominator_paid_only),
        sum(excluded_result_issued), sum(excluded_in_progress)
    from dossier_counts_by_unit
    group by indicator
),

-- one row per received dossier x procedure indicator whose procedure is eligible
procedure_members as (
    select ma_don_vi, cap_don_vi, ma_tthc, 'online_service_uptake' as indicator,
        channel = 2 as is_hit, fees_settled, result_issued_fees_unpaid, in_progress_fees_unpaid
    from facts where received_in_period and muc_do_dvc in (3, 4)
    union all
    select ma_don_vi, cap_don_vi, ma_tthc, 'online_payment_uptake',
        paid_online, fees_settled, result_issued_fees_unpaid, in_progress_fees_unpaid
    from facts where received_in_period and co_thanh_toan_truc_tuyen = 1 and has_obligation
),

-- one row per (unit or '*') x indicator x procedure: does it count, system and paid-only?
procedure_flags as (
    select
        ma_don_vi,
        cap_don_vi,
        indicator,
        ma_tthc,
        max(case when is_hit then 1 else 0 end) as hit_system,
        1 as any_system,
        max(case when is_hit and fees_settled then 1 else 0 end) as hit_paid_only,
        max(case when fees_settled then 1 else 0 end) as any_paid_only,
        sum(case when result_issued_fees_unpaid then 1 else 0 end) as excluded_result_issued,
        sum(case when in_progress_fees_unpaid then 1 else 0 end) as excluded_in_progress
    from procedure_members
    group by ma_don_vi, cap_don_vi, indicator, ma_tthc
    union all
    select
        '*',
        null,
        indicator,
        ma_tthc,
        max(case when is_hit then 1 else 0 end),
        1,
        max(case when is_hit and fees_settled then 1 else 0 end),
        max(case when fees_settled then 1 else 0 end),
        sum(case when result_issued_fees_unpaid then 1 else 0 end),
        sum(case when in_progress_fees_unpaid then 1 else 0 end)
    from procedure_members
    group by indicator, ma_tthc
),

procedure_counts as (
    select
        ma_don_vi,
        cap_don_vi,
        indicator,
        sum(hit_system) as numerator_system,
        sum(any_system) as denominator_system,
        sum(hit_paid_only) as numerator_paid_only,
        sum(any_paid_only) as denominator_paid_only,
        sum(excluded_result_issued) as excluded_result_issued,
        sum(excluded_in_progress) as excluded_in_progress
    from procedure_flags
    group by ma_don_vi, cap_don_vi, indicator
),

counts as (
    select * from dossier_counts
    union all
    select * from procedure_counts
),

-- every unit gets every indicator (a zero denominator gives a null rate)
grid as (
    select
        u.ma_don_vi,
        u.ten_don_vi,
        u.cap_don_vi,
        i.indicator,
        i.indicator_order,
        i.indicator_label,
        coalesce(c.numerator_system, 0) as numerator_system,
        coalesce(c.denominator_system, 0) as denominator_system,
        coalesce(c.numerator_paid_only, 0) as numerator_paid_only,
        coalesce(c.denominator_paid_only, 0) as denominator_paid_only,
        coalesce(c.excluded_result_issued, 0) as excluded_result_issued,
        coalesce(c.excluded_in_progress, 0) as excluded_in_progress
    from units as u
    cross join indicators as i
    left join counts as c
        on c.ma_don_vi is not distinct from u.ma_don_vi
        and c.cap_don_vi is not distinct from u.cap_don_vi
        and c.indicator = i.indicator
),

params as (
    select
        cast(:period_start as date) as period_start,
        cast(:period_end as date) as period_end,
        cast(:as_of as timestamp) as as_of,
        cast(:publication_id as varchar) as publication_id
),

final as (
    select
        p.period_start,
        p.period_end,
        g.ma_don_vi,
        g.ten_don_vi,
        g.cap_don_vi,
        g.indicator,
        g.indicator_order,
        g.indicator_label,
        g.numerator_system,
        g.denominator_system,
        case
            when g.denominator_system = 0 then null
            else cast(g.numerator_system as double precision) / g.denominator_system
        end as rate_system,
        g.numerator_paid_only,
        g.denominator_paid_only,
        case
            when g.denominator_paid_only = 0 then null
            else cast(g.numerator_paid_only as double precision) / g.denominator_paid_only
        end as rate_paid_only,
        g.excluded_result_issued + g.excluded_in_progress as excluded_unpaid,
        g.excluded_result_issued,
        g.excluded_in_progress,
        p.as_of,
        p.publication_id
    from grid as g
    cross join params as p
)

select * from final;
