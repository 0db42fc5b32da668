-- mart.rpt_simplified_procedures: the 2024 report's table 2a.
-- Grain: one row per period x row of reference/simplifications.csv.
-- The counts and names come from tmp_registry_outcomes (sql/reports/_registry_outcomes.sql):
-- dossiers resolved in the period and received on or after the decision date; on time includes
-- before due. Parameters: :period_start, :period_end, :as_of, :publication_id.

INSERT INTO mart.rpt_simplified_procedures_history (
    period_start, period_end, stt, ma_tthc, ten_tthc, quyet_dinh, ngay_quyet_dinh,
    so_ngay_cat_giam, noi_dung_cat_giam, resolved_on_time, resolved_late, danh_gia,
    as_of, publication_id
)
with

simplifications as (
    select * from tmp_simplifications
),

outcomes as (
    select * from tmp_registry_outcomes where registry = 'simplifications'
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
        s.stt,
        s.ma_tthc,
        o.ten_tthc,
        s.quyet_dinh,
        s.ngay_quyet_dinh,
        s.so_ngay_cat_giam,
        s.noi_dung_cat_giam,
        o.resolved_on_time,
        o.resolved_late,
        s.danh_gia,
        p.as_of,
        p.publication_id
    from simplifications as s
    cross join params as p
    inner join outcomes as o on o.stt = s.stt
)

select * from final;
