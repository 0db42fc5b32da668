-- mart.rpt_uncollected_results: the work list of results ready and not handed over, as of the
-- data cut (reports.md section 4, 2024 report III.5), whatever the fee status.
-- Grain: one row per dossier (source, ma_ho_so) with status 9 and no NgayTra, whatever its period.
-- days_waiting = date(as_of) - date(NgayKetThucXuLy); window_days and can_cu from
-- reference/collection_windows.csv (national base code); over_window = days_waiting > window_days,
-- null without a window; fees_unpaid = a financial obligation not completed.
-- Reads tmp_dossier_facts, tmp_collection_windows. Parameters: :as_of, :publication_id.

INSERT INTO mart.rpt_uncollected_results_history (
    source, ma_ho_so, ma_tthc, ten_tthc, ma_don_vi, ten_don_vi, cap_don_vi,
    ngay_ket_thuc_xu_ly, days_waiting, window_days, can_cu, over_window, fees_unpaid,
    as_of, publication_id
)
with

-- import CTEs ---------------------------------------------------------------------------------
params as (
    select
        cast(:as_of as timestamp) as as_of,
        cast(:publication_id as varchar) as publication_id
),

facts as (
    select * from tmp_dossier_facts
),

collection_windows as (
    select * from tmp_collection_windows
),

-- named steps ---------------------------------------------------------------------------------
-- one window per national base code (the shortest when the file lists a code twice)
windows as (
    select
        split_part(ma_tthc, '.', 1) || '.' || split_part(ma_tthc, '.', 2) as ma_tthc_base,
        min(days) as window_days,
        max(can_cu) as can_cu
    from collection_windows
    group by split_part(ma_tthc, '.', 1) || '.' || split_part(ma_tthc, '.', 2)
),

waiting as (
    select
        f.source,
        f.ma_ho_so,
        f.ma_tthc,
        f.ten_tthc,
        f.ma_don_vi,
        f.ten_don_vi,
        f.cap_don_vi,
        f.ngay_ket_thuc_xu_ly,
        cast(cast(p.as_of as date) - cast(f.ngay_ket_thuc_xu_ly as date) as bigint) as days_waiting,
        w.window_days,
        w.can_cu,
        f.has_obligation and not f.obligation_completed as fees_unpaid,
        p.as_of,
        p.publication_id
    from facts as f
    cross join params as p
    left join windows as w on w.ma_tthc_base = f.ma_tthc_base
    where f.trang_thai = 9 and f.ngay_tra is null
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
        ngay_ket_thuc_xu_ly,
        days_waiting,
        window_days,
        can_cu,
        days_waiting > window_days as over_window,
        fees_unpaid,
        as_of,
        publication_id
    from waiting
)

select * from final;
