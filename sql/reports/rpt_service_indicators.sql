-- mart.rpt_service_indicators: the dossier-based indicators of Decision 766/QĐ-TTg (the district's
-- "07 chỉ tiêu" screen is a selection of them), each published as system and paid_only side by
-- side (reports.md sections 2 and 3; every choice is fixed in docs/official-figures.md section 2).
-- Grain: one row per period x unit (x level as of receipt) x indicator, for every unit with a
-- dossier received in the period or carried over; plus ma_don_vi = '*' (cap_don_vi null): the
-- whole jurisdiction. Nine indicators.
--
-- Population P = dossiers received in the period (status not 1/3), at their handling unit.
-- Dossier indicators: a three-valued "member of the denominator" and a three-valued "hit" (SQL's
-- Kleene logic). unknown = member null, or member with a null hit: in no numerator or denominator.
-- paid_only = the same formula over the fees_settled dossiers; for reuse also without the dossiers
-- of reference/reuse_exclusions.csv (excluded_by_list, national base code).
-- Procedure indicators (online_service_uptake, online_payment_uptake): offered procedures (the
-- unit's level in CapThucHien, narrowed by reference/unit_procedures.csv), a hit when a dossier of
-- P at the unit (for '*': at any unit) is; '*' offers what any unit interval valid in the period
-- offers. Targets from reference/targets.csv (the unit's row, else the '*' row of the year).
-- Reads tmp_dossier_facts, tmp_unit_procedures, tmp_reuse_exclusions, tmp_targets, core.procedures,
-- core.units. Parameters: :period_start, :period_end, :as_of, :publication_id.

INSERT INTO mart.rpt_service_indicators_history (
    period_start, period_end, ma_don_vi, ten_don_vi, cap_don_vi,
    indicator, indicator_order, indicator_label,
    numerator_system, denominator_system, rate_system,
    numerator_paid_only, denominator_paid_only, rate_paid_only,
    excluded_unpaid, excluded_result_issued, excluded_in_progress,
    as_of, publication_id,
    code_766, unknown, excluded_by_list, full_score_at, target, meets_target
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

procedures as (
    select * from core.procedures
),

core_units as (
    select * from core.units
),

unit_procedures as (
    select * from tmp_unit_procedures
),

reuse_exclusions as (
    select * from tmp_reuse_exclusions
),

targets as (
    select * from tmp_targets
),

-- named steps ---------------------------------------------------------------------------------
indicators as (
    select * from (
        values
            ('on_time', 1, 'Tỷ lệ hồ sơ xử lý trước hạn, đúng hạn', '2.1', cast(null as double precision)),
            ('online_submission', 2, 'Tỷ lệ hồ sơ nộp trực tuyến', '3.3', 0.50),
            ('online_payment', 3, 'Tỷ lệ hồ sơ thanh toán trực tuyến', '3.6', null),
            ('e_result', 4, 'Tỷ lệ hồ sơ có cấp kết quả giải quyết điện tử', '4.1', null),
            ('digitised', 5, 'Tỷ lệ hồ sơ thực hiện số hóa hồ sơ', '4.2', 0.80),
            ('reuse', 6, 'Tỷ lệ hồ sơ khai thác, sử dụng lại thông tin, dữ liệu số hóa', '4.3', 0.80),
            ('from_national_store', 7, 'Tỷ lệ hồ sơ số hóa có kết nối, chia sẻ dữ liệu phục vụ tái sử dụng',
                '4.4', null),
            ('online_service_uptake', 8, 'Tỷ lệ dịch vụ công trực tuyến có phát sinh hồ sơ', '3.2', 0.80),
            ('online_payment_uptake', 9, 'Tỷ lệ TTHC cung cấp thanh toán trực tuyến có phát sinh giao dịch',
                null, null)
    ) as t (indicator, indicator_order, indicator_label, code_766, full_score_at)
),

-- P: the dossiers received in the period
population as (
    select * from facts
    where received_in_period
),

listed_for_reuse as (
    select distinct split_part(ma_tthc, '.', 1) || '.' || split_part(ma_tthc, '.', 2) as ma_tthc_base
    from reuse_exclusions
),

-- the units reported: those of mart.rpt_progress with a received or carried-over dossier
reported_units as (
    select ma_don_vi, cap_don_vi, max(ten_don_vi) as ten_don_vi
    from facts
    where received_in_period or carried_over
    group by ma_don_vi, cap_don_vi
),

units as (
    select ma_don_vi, cap_don_vi, ten_don_vi from reported_units
    union all
    select '*', cast(null as bigint), 'Toàn địa bàn'
),

-- dossier indicators: one row per dossier of P x indicator, membership and hit (three-valued)
dossier_flags as (
    select ma_don_vi, cap_don_vi, ma_tthc_base, 'on_time' as indicator,
        cast(true as boolean) as is_member,
        on_time_at_end as is_hit,
        fees_settled, result_issued_fees_unpaid, in_progress_fees_unpaid
    from population
    union all
    select ma_don_vi, cap_don_vi, ma_tthc_base, 'online_submission',
        true,
        channel = 2 and (ket_qua_giay <> 1 or has_e_result),
        fees_settled, result_issued_fees_unpaid, in_progress_fees_unpaid
    from population
    union all
    select ma_don_vi, cap_don_vi, ma_tthc_base, 'online_payment',
        co_phi_le_phi = 1 and not (n_le_phi > 0 and n_le_phi_co_gia = 0),
        duoc_thanh_toan_truc_tuyen in (1, 2),
        fees_settled, result_issued_fees_unpaid, in_progress_fees_unpaid
    from population
    union all
    select ma_don_vi, cap_don_vi, ma_tthc_base, 'e_result',
        ket_qua_giay = 1,
        has_e_result,
        fees_settled, result_issued_fees_unpaid, in_progress_fees_unpaid
    from population
    union all
    select ma_don_vi, cap_don_vi, ma_tthc_base, 'digitised',
        true,
        has_digitised and (ket_qua_giay <> 1 or has_e_result),
        fees_settled, result_issued_fees_unpaid, in_progress_fees_unpaid
    from population
    union all
    select ma_don_vi, cap_don_vi, ma_tthc_base, 'reuse',
        true,
        has_reuse,
        fees_settled, result_issued_fees_unpaid, in_progress_fees_unpaid
    from population
    union all
    select ma_don_vi, cap_don_vi, ma_tthc_base, 'from_national_store',
        true,
        has_from_national_store,
        fees_settled, result_issued_fees_unpaid, in_progress_fees_unpaid
    from population
),

-- outcome: 'hit' / 'miss' (in the system denominator), 'unknown', 'out' (not a member)
dossier_outcomes as (
    select
        f.ma_don_vi,
        f.cap_don_vi,
        f.indicator,
        case
            when f.is_member is null then 'unknown'
            when not f.is_member then 'out'
            when f.is_hit is null then 'unknown'
            when f.is_hit then 'hit'
            else 'miss'
        end as outcome,
        f.fees_settled,
        f.result_issued_fees_unpaid,
        f.in_progress_fees_unpaid,
        f.indicator = 'reuse' and l.ma_tthc_base is not null as is_listed
    from dossier_flags as f
    left join listed_for_reuse as l on l.ma_tthc_base = f.ma_tthc_base
),

dossier_counts_by_unit as (
    select
        ma_don_vi,
        cap_don_vi,
        indicator,
        sum(case when outcome = 'hit' then 1 else 0 end) as numerator_system,
        sum(case when outcome in ('hit', 'miss') then 1 else 0 end) as denominator_system,
        sum(case when outcome = 'hit' and fees_settled and not is_listed then 1 else 0 end)
            as numerator_paid_only,
        sum(case when outcome in ('hit', 'miss') and fees_settled and not is_listed then 1 else 0 end)
            as denominator_paid_only,
        sum(case when outcome in ('hit', 'miss') and result_issued_fees_unpaid then 1 else 0 end)
            as excluded_result_issued,
        sum(case when outcome in ('hit', 'miss') and in_progress_fees_unpaid then 1 else 0 end)
            as excluded_in_progress,
        sum(case when outcome in ('hit', 'miss') and fees_settled and is_listed then 1 else 0 end)
            as excluded_by_list,
        sum(case when outcome = 'unknown' then 1 else 0 end) as unknown
    from dossier_outcomes
    group by ma_don_vi, cap_don_vi, indicator
),

dossier_counts as (
    select * from dossier_counts_by_unit
    union all
    select
        '*', cast(null as bigint), indicator,
        sum(numerator_system), sum(denominator_system),
        sum(numerator_paid_only), sum(denominator_paid_only),
        sum(excluded_result_issued), sum(excluded_in_progress),
        sum(excluded_by_list), sum(unknown)
    from dossier_counts_by_unit
    group by indicator
),

-- procedure indicators: one catalogue row per procedure code (the first source's)
catalogue as (
    select
        ma_tthc,
        cap_thuc_hien,
        coalesce(muc_do_dvc, 0) as muc_do_dvc,
        coalesce(co_phi_le_phi, 0) as co_phi_le_phi,
        coalesce(co_thanh_toan_truc_tuyen, 0) as co_thanh_toan_truc_tuyen,
        row_number() over (partition by ma_tthc order by source) as rn
    from procedures
),

eligible as (
    select ma_tthc, cap_thuc_hien, 'online_service_uptake' as indicator
    from catalogue
    where rn = 1 and muc_do_dvc in (3, 4)
    union all
    select ma_tthc, cap_thuc_hien, 'online_payment_uptake'
    from catalogue
    where rn = 1 and co_phi_le_phi = 1 and co_thanh_toan_truc_tuyen = 1
),

-- who offers: the reported unit rows, and (for '*') every unit interval valid in the period
offer_candidates as (
    select 'unit' as scope, ma_don_vi, cap_don_vi
    from reported_units
    union all
    select '*', u.ma_don_vi, u.cap_don_vi
    from core_units as u
    cross join params as p
    where u.hieu_luc_tu <= p.period_end
        and (u.hieu_luc_den is null or u.hieu_luc_den >= p.period_start)
),

listed_units as (
    select distinct ma_don_vi from unit_procedures
),

-- offered: the unit's level is one of CapThucHien's, and the pair is listed when the unit is
offered as (
    select distinct
        o.scope,
        o.ma_don_vi,
        o.cap_don_vi,
        e.indicator,
        e.ma_tthc
    from offer_candidates as o
    inner join eligible as e
        on o.cap_don_vi is not null
        and ',' || replace(coalesce(e.cap_thuc_hien, ''), ' ', '') || ','
            like '%,' || cast(o.cap_don_vi as varchar) || ',%'
    where
        not exists (select 1 from listed_units as l where l.ma_don_vi = o.ma_don_vi)
        or exists (
            select 1 from unit_procedures as up
            where up.ma_don_vi = o.ma_don_vi and up.ma_tthc = e.ma_tthc
        )
),

-- one row per dossier of P x procedure indicator, with its (three-valued) hit
procedure_dossiers as (
    select ma_don_vi, cap_don_vi, ma_tthc, 'online_service_uptake' as indicator,
        channel = 2 as is_hit,
        fees_settled, result_issued_fees_unpaid, in_progress_fees_unpaid
    from population
    union all
    select ma_don_vi, cap_don_vi, ma_tthc, 'online_payment_uptake',
        duoc_thanh_toan_truc_tuyen in (1, 2),
        fees_settled, result_issued_fees_unpaid, in_progress_fees_unpaid
    from population
),

-- one row per (unit row or '*') x indicator x offered procedure
procedure_outcomes as (
    select
        o.ma_don_vi,
        o.cap_don_vi,
        o.indicator,
        o.ma_tthc,
        max(case when d.is_hit then 1 else 0 end) as hit_system,
        max(case when d.is_hit and d.fees_settled then 1 else 0 end) as hit_paid_only,
        sum(case when d.ma_tthc is not null and d.is_hit is null then 1 else 0 end) as unknown,
        sum(case when d.result_issued_fees_unpaid then 1 else 0 end) as excluded_result_issued,
        sum(case when d.in_progress_fees_unpaid then 1 else 0 end) as excluded_in_progress
    from offered as o
    left join procedure_dossiers as d
        on d.ma_don_vi = o.ma_don_vi
        and d.cap_don_vi = o.cap_don_vi
        and d.indicator = o.indicator
        and d.ma_tthc = o.ma_tthc
    where o.scope = 'unit'
    group by o.ma_don_vi, o.cap_don_vi, o.indicator, o.ma_tthc
    union all
    select
        '*',
        cast(null as bigint),
        s.indicator,
        s.ma_tthc,
        max(case when d.is_hit then 1 else 0 end),
        max(case when d.is_hit and d.fees_settled then 1 else 0 end),
        sum(case when d.ma_tthc is not null and d.is_hit is null then 1 else 0 end),
        sum(case when d.result_issued_fees_unpaid then 1 else 0 end),
        sum(case when d.in_progress_fees_unpaid then 1 else 0 end)
    from (select distinct indicator, ma_tthc from offered where scope = '*') as s
    left join procedure_dossiers as d
        on d.indicator = s.indicator
        and d.ma_tthc = s.ma_tthc
    group by s.indicator, s.ma_tthc
),

procedure_counts as (
    select
        ma_don_vi,
        cap_don_vi,
        indicator,
        sum(hit_system) as numerator_system,
        count(*) as denominator_system,
        sum(hit_paid_only) as numerator_paid_only,
        count(*) as denominator_paid_only,
        sum(excluded_result_issued) as excluded_result_issued,
        sum(excluded_in_progress) as excluded_in_progress,
        0 as excluded_by_list,
        sum(unknown) as unknown
    from procedure_outcomes
    group by ma_don_vi, cap_don_vi, indicator
),

counts as (
    select * from dossier_counts
    union all
    select * from procedure_counts
),

-- the targets of the year the period ends in
targets_of_year as (
    select t.ma_don_vi, t.indicator, t.target
    from targets as t
    cross join params as p
    where t.year = extract(year from p.period_end)
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
        i.code_766,
        i.full_score_at,
        coalesce(c.numerator_system, 0) as numerator_system,
        coalesce(c.denominator_system, 0) as denominator_system,
        coalesce(c.numerator_paid_only, 0) as numerator_paid_only,
        coalesce(c.denominator_paid_only, 0) as denominator_paid_only,
        coalesce(c.excluded_result_issued, 0) as excluded_result_issued,
        coalesce(c.excluded_in_progress, 0) as excluded_in_progress,
        coalesce(c.excluded_by_list, 0) as excluded_by_list,
        coalesce(c.unknown, 0) as unknown,
        coalesce(own.target, jurisdiction.target) as target
    from units as u
    cross join indicators as i
    left join counts as c
        on c.ma_don_vi is not distinct from u.ma_don_vi
        and c.cap_don_vi is not distinct from u.cap_don_vi
        and c.indicator = i.indicator
    left join targets_of_year as own
        on own.ma_don_vi = u.ma_don_vi
        and own.indicator = i.indicator
    left join targets_of_year as jurisdiction
        on jurisdiction.ma_don_vi = '*'
        and jurisdiction.indicator = i.indicator
),

rated as (
    select
        g.*,
        case
            when g.denominator_system = 0 then null
            else cast(g.numerator_system as double precision) / g.denominator_system
        end as rate_system,
        case
            when g.denominator_paid_only = 0 then null
            else cast(g.numerator_paid_only as double precision) / g.denominator_paid_only
        end as rate_paid_only
    from grid as g
),

final as (
    select
        p.period_start,
        p.period_end,
        r.ma_don_vi,
        r.ten_don_vi,
        r.cap_don_vi,
        r.indicator,
        r.indicator_order,
        r.indicator_label,
        r.numerator_system,
        r.denominator_system,
        r.rate_system,
        r.numerator_paid_only,
        r.denominator_paid_only,
        r.rate_paid_only,
        r.excluded_result_issued + r.excluded_in_progress as excluded_unpaid,
        r.excluded_result_issued,
        r.excluded_in_progress,
        p.as_of,
        p.publication_id,
        r.code_766,
        r.unknown,
        r.excluded_by_list,
        cast(r.full_score_at as double precision) as full_score_at,
        r.target,
        case
            when r.rate_system is null or r.target is null then null
            else r.rate_system >= r.target
        end as meets_target
    from rated as r
    cross join params as p
)

select * from final;
