-- mart.rpt_delegated_procedures: the 2024 report's table 2đ.
-- Grain: one row per period x row of reference/delegations.csv.
-- Counts the dossiers of the procedure (national base code) resolved in the period and received
-- on or after the delegation's effective date; on time includes before due.
-- Reads tmp_dossier_facts, tmp_delegations, core.procedures. Parameters: :period_start,
-- :period_end, :as_of, :publication_id.

INSERT INTO mart.rpt_delegated_procedures_history (
    period_start, period_end, stt, ma_tthc, ten_tthc, van_ban, ngay_hieu_luc,
    resolved_on_time, resolved_late, danh_gia, as_of, publication_id
)
with

facts as (
    select * from tmp_dossier_facts
),

delegations as (
    select
        *,
        split_part(ma_tthc, '.', 1) || '.' || split_part(ma_tthc, '.', 2) as ma_tthc_base
    from tmp_delegations
),

procedures as (
    select * from core.procedures
),

params as (
    select
        cast(:period_start as date) as period_start,
        cast(:period_end as date) as period_end,
        cast(:as_of as timestamp) as as_of,
        cast(:publication_id as varchar) as publication_id
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
        dl.stt,
        sum(case when f.is_on_time_or_before then 1 else 0 end) as resolved_on_time,
        sum(case when f.timeliness = 'late' then 1 else 0 end) as resolved_late
    from delegations as dl
    inner join facts as f
        on f.ma_tthc_base = dl.ma_tthc_base
        and f.resolved_in_period
        and f.received_date >= dl.ngay_hieu_luc
    group by dl.stt
),

final as (
    select
        p.period_start,
        p.period_end,
        dl.stt,
        dl.ma_tthc,
        coalesce(pn.ten_tthc, dn.ten_tthc) as ten_tthc,
        dl.van_ban,
        dl.ngay_hieu_luc,
        coalesce(c.resolved_on_time, 0) as resolved_on_time,
        coalesce(c.resolved_late, 0) as resolved_late,
        dl.danh_gia,
        p.as_of,
        p.publication_id
    from delegations as dl
    cross join params as p
    left join counts as c on c.stt = dl.stt
    left join procedure_names as pn on pn.ma_tthc = dl.ma_tthc
    left join dossier_names as dn on dn.ma_tthc_base = dl.ma_tthc_base
)

select * from final;
