-- The outcome of every row of the district's two registries (the 2024 report's tables 2a and 2đ),
-- computed once for both mart.rpt_simplified_procedures and mart.rpt_delegated_procedures.
-- Grain: one row per registry x stt.
-- Counts the dossiers of the procedure (matched on the national base code, so short variants such
-- as '1.001653.H08' count too) resolved in the period and received on or after the registry's date
-- (the decision date of a simplification, the effective date of a delegation); on time includes
-- before due. The name comes from the catalogue (exact code), else from the procedure's dossiers.
-- Reads tmp_dossier_facts (already restricted to the period's flags), tmp_simplifications,
-- tmp_delegations, core.procedures.
DROP TABLE IF EXISTS tmp_registry_outcomes;
CREATE TEMP TABLE tmp_registry_outcomes AS
with

facts as (
    select * from tmp_dossier_facts
),

procedures as (
    select * from core.procedures
),

registry_rows as (
    select 'simplifications' as registry, stt, ma_tthc, ngay_quyet_dinh as since_date
    from tmp_simplifications
    union all
    select 'delegations' as registry, stt, ma_tthc, ngay_hieu_luc as since_date
    from tmp_delegations
),

registry as (
    select
        *,
        split_part(ma_tthc, '.', 1) || '.' || split_part(ma_tthc, '.', 2) as ma_tthc_base
    from registry_rows
),

procedure_names as (
    select ma_tthc, max(ten_tthc) as ten_tthc
    from procedures
    group by ma_tthc
),

dossier_names as (
    select ma_tthc_base, max(ten_tthc) as ten_tthc
    from facts
    group by ma_tthc_base
),

counts as (
    select
        r.registry,
        r.stt,
        sum(case when f.is_on_time_or_before then 1 else 0 end) as resolved_on_time,
        sum(case when f.timeliness = 'late' then 1 else 0 end) as resolved_late
    from registry as r
    inner join facts as f
        on f.ma_tthc_base = r.ma_tthc_base
        and f.resolved_in_period
        and f.received_date >= r.since_date
    group by r.registry, r.stt
),

final as (
    select
        r.registry,
        r.stt,
        coalesce(pn.ten_tthc, dn.ten_tthc) as ten_tthc,
        coalesce(c.resolved_on_time, 0) as resolved_on_time,
        coalesce(c.resolved_late, 0) as resolved_late
    from registry as r
    left join counts as c on c.registry = r.registry and c.stt = r.stt
    left join procedure_names as pn on pn.ma_tthc = r.ma_tthc
    left join dossier_names as dn on dn.ma_tthc_base = r.ma_tthc_base
)

select * from final;
