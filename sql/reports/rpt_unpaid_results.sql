-- mart.rpt_unpaid_results: the work list of results issued with fees unpaid, as of the data cut.
-- Grain: one row per dossier (source, ma_ho_so) with result_issued_fees_unpaid, whatever its
-- period. days_outstanding = date(as_of) - date(NgayKetThucXuLy) (null when the result link came
-- before the end of processing); over_threshold when it exceeds the procedure's threshold
-- (reference/unpaid_thresholds.csv, national base code) or else :default_threshold_days.
-- Reads tmp_dossier_facts, tmp_unpaid_thresholds. Parameters: :as_of, :default_threshold_days,
-- :publication_id.

INSERT INTO mart.rpt_unpaid_results_history (
    source, ma_ho_so, ma_tthc, ten_tthc, ma_don_vi, ten_don_vi, cap_don_vi, trang_thai,
    ngay_ket_thuc_xu_ly, amount_due, days_outstanding, threshold_days, over_threshold,
    as_of, publication_id
)
with

facts as (
    select * from tmp_dossier_facts
),

thresholds as (
    select
        split_part(ma_tthc, '.', 1) || '.' || split_part(ma_tthc, '.', 2) as ma_tthc_base,
        max(threshold_days) as threshold_days
    from tmp_unpaid_thresholds
    group by split_part(ma_tthc, '.', 1) || '.' || split_part(ma_tthc, '.', 2)
),

params as (
    select
        cast(:as_of as timestamp) as as_of,
        cast(:default_threshold_days as bigint) as default_threshold_days,
        cast(:publication_id as varchar) as publication_id
),

work_list as (
    select
        f.source,
        f.ma_ho_so,
        f.ma_tthc,
        f.ten_tthc,
        f.ma_don_vi,
        f.ten_don_vi,
        f.cap_don_vi,
        f.trang_thai,
        f.ngay_ket_thuc_xu_ly,
        f.amount_due,
        cast(cast(p.as_of as date) - cast(f.ngay_ket_thuc_xu_ly as date) as bigint) as days_outstanding,
        coalesce(t.threshold_days, p.default_threshold_days) as threshold_days,
        p.as_of,
        p.publication_id
    from facts as f
    cross join params as p
    left join thresholds as t on t.ma_tthc_base = f.ma_tthc_base
    where f.result_issued_fees_unpaid
),

final as (
    select
        source,
        ma_ho_so,
        ma_tthc,
        ten_tthc,
        ma_don_vi,
        ten_don_vi,
        cap_don_vi,
        trang_thai,
        ngay_ket_thuc_xu_ly,
        amount_due,
        days_outstanding,
        threshold_days,
        coalesce(days_outstanding > threshold_days, false) as over_threshold,
        as_of,
        publication_id
    from work_list
)

select * from final;
