-- mart.rpt_delegated_procedures: the 2024 report's table 2đ.
-- Grain: one row per period x row of reference/delegations.csv.
-- The counts and names come from tmp_registry_outcomes (sql/reports/_registry_outcomes.sql):
-- dossiers resolved in the period and received on or after the delegation's effective date; on
-- time includes before due. Parameters: :period_start, :period_end, :as_of, :publication_id.

INSERT INTO mart.rpt_delegated_procedures_history (
    period_start, period_end, stt, ma_tthc, ten_tthc, van_ban, ngay_hieu_luc,
    resolved_on_time, resolved_late, danh_gia, as_of, publication_id
)
with

delegations as (
    select * from tmp_delegations
),

outcomes as (
    select * from tmp_registry_outcomes where registry = 'delegations'
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
        dl.stt,
        dl.ma_tthc,
        o.ten_tthc,
        dl.van_ban,
        dl.ngay_hieu_luc,
        o.resolved_on_time,
        o.resolved_late,
        dl.danh_gia,
        p.as_of,
        p.publication_id
    from delegations as dl
    cross join params as p
    inner join outcomes as o on o.stt = dl.stt
)

select * from final;
