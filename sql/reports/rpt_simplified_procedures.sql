-- mart.rpt_simplified_procedures: the 2024 report's table 2a.
-- Grain: one row per period x row of reference/simplifications.csv.
-- Counts the dossiers of the procedure (matched on the national base code, so short variants such
-- as '1.001653.H08' count too) resolved in the period and received on or after the decision date;
-- on time includes before due.
-- Reads tmp_dossier_facts, tmp_simplifications, core.procedures. Parameters: :period_start,
-- :period_end, :as_of, :publication_id.

INSERT INTO mart.rpt_simplified_procedures_history (
    period_start, period_end, stt, ma_tthc, ten_tthc, quyet_dinh, ngay_quyet_dinh,
    so_ngay_cat_giam, noi_dung_cat_giam, resolved_on_time, resolved_late, danh_gia,
    as_of, publication_id
)
with

facts as (
    select * from tmp_dossier_facts
),

simplifications as (
    select
        *,
        split_part(ma_tthc, '.', 1) || '.' || split_part(ma_tthc, '.', 2) as ma_tthc_base
    from tmp_simplifications
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

-- the name: the catalogue (exact code), else any dossier of the procedure
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
        s.stt,
        sum(case when f.is_on_time_or_before then 1 else 0 end) as resolved_on_time,
        sum(case when f.timeliness = 'late' then 1 else 0 end) as resolved_late
    from simplifications as s
    inner join facts as f
        on f.ma_tthc_base = s.ma_tthc_base
        and f.resolved_in_period
        and f.received_date >= s.ngay_quyet_dinh
    group by s.stt
),

final as (
    select
        p.period_start,
        p.period_end,
        s.stt,
        s.ma_tthc,
        coalesce(pn.ten_tthc, dn.ten_tthc) as ten_tthc,
        s.quyet_dinh,
        s.ngay_quyet_dinh,
        s.so_ngay_cat_giam,
        s.noi_dung_cat_giam,
        coalesce(c.resolved_on_time, 0) as resolved_on_time,
        coalesce(c.resolved_late, 0) as resolved_late,
        s.danh_gia,
        p.as_of,
        p.publication_id
    from simplifications as s
    cross join params as p
    left join counts as c on c.stt = s.stt
    left join procedure_names as pn on pn.ma_tthc = s.ma_tthc
    left join dossier_names as dn on dn.ma_tthc_base = s.ma_tthc_base
)

select * from final;
