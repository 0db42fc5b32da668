-- The definitions of the reports specification (reports.md), section 1, implemented ONCE.
-- Grain: one row per dossier (source, ma_ho_so) of core.dossiers that can count in the period
-- (see `dossiers` below), with the flags every report reads. Built as the session temp table
-- tmp_dossier_facts inside the publishing transaction; every sql/reports/rpt_*.sql reads it (and
-- nothing else from core.dossiers / core.payments).
-- Parameters: :period_start, :period_end (DATE, closed range), :as_of (TIMESTAMP, the data cut).
--
-- Flags about payments (has_obligation, obligation_completed, paid_online, *_fees_unpaid) describe
-- the state of the data at the cut, not at period_end: that is what makes a late payment restate
-- the paid-only figures of a past period.
--
-- The 766 flags (docs/official-figures.md section 2) stay three-valued: has_reuse, has_e_result,
-- has_digitised, has_from_national_store, duoc_thanh_toan_truc_tuyen, n_le_phi* and n_bo_sung keep
-- their null (unknown). on_time_at_end is the 2.1 judgement at period_end (supplement rounds from
-- core.dossier_supplements, the rounds of the dossier's current version).

DROP TABLE IF EXISTS tmp_dossier_facts;

CREATE TEMP TABLE tmp_dossier_facts AS
with

-- import CTEs ---------------------------------------------------------------------------------
params as (
    select
        cast(:period_start as date) as period_start,
        cast(:period_end as date) as period_end,
        cast(:as_of as timestamp) as as_of
),

payments as (
    select * from core.payments
),

procedures as (
    select * from core.procedures
),

units as (
    select * from core.units
),

supplements as (
    select * from core.dossier_supplements
),

-- named steps ---------------------------------------------------------------------------------
-- one row per payment request, classified
payment_requests as (
    select
        source,
        ma_ho_so,
        so_tien,
        trang_thai,
        -- a financial obligation: SoTien > 0, not exempt, not cancelled, not refunded
        (
            coalesce(so_tien, 0) > 0
            and hinh_thuc_thu is distinct from 'Đối tượng miễn phí'
            and trang_thai not in ('Hủy thanh toán', 'Đã hoàn phí')
        ) as is_obligation,
        trang_thai = 'Đã thanh toán' as is_paid,
        hinh_thuc_thanh_toan = 'truc-tuyen' as is_online
    from payments
),

-- one row per dossier that has at least one known payment request (joined on source, ma_ho_so)
payment_summary as (
    select
        source,
        ma_ho_so,
        count(*) as n_requests,
        sum(case when is_obligation then 1 else 0 end) as n_obligations,
        sum(case when is_obligation and not is_paid then 1 else 0 end) as n_open_obligations,
        sum(case when is_obligation and is_paid and is_online then 1 else 0 end) as n_paid_online,
        sum(case when is_obligation and not is_paid then coalesce(so_tien, 0) else 0 end) as amount_due
    from payment_requests
    group by source, ma_ho_so
),

-- the dossiers with a fee requested and not paid: listed by rpt_unpaid_results whatever the period
open_fee_dossiers as (
    select distinct source, ma_ho_so
    from payment_requests
    where is_obligation and not is_paid
),

-- the dossiers that can count in the period, and only they go through the joins below (a year of
-- a province is a million dossiers; a month's report needs a fraction). The period flags of
-- `final` depend on the dossier's own row, so this keeps every dossier that sets one of them:
-- received by the period's end and not resolved before its start (received in the period,
-- carried over, in progress at the end, overdue at a month's end), resolved in the period, or
-- owing a fee. The rows left out would have every flag false. Also kept: dossiers rejected at
-- intake in the period (rpt_progress.rejected_at_intake), results waiting to be collected
-- (rpt_uncollected_results, any period) and online dossiers submitted in the period
-- (rpt_late_acceptance, accepted or not).
-- every dossier with its receipt and end (section 1's definitions, stated once here)
dossier_dates as (
    select
        d.*,
        d.trang_thai not in (1, 3) and d.ngay_tiep_nhan is not null as is_received,
        d.trang_thai in (7, 8, 9, 10) as is_resolved,
        cast(d.ngay_tiep_nhan as date) as received_date,
        -- end of processing: NgayKetThucXuLy (NgayTra when a resolved dossier lacks it)
        case
            when d.trang_thai in (7, 8, 9, 10) then cast(coalesce(d.ngay_ket_thuc_xu_ly, d.ngay_tra) as date)
        end as end_date
    from core.dossiers as d
),

dossiers as (
    select d.*
    from dossier_dates as d
    cross join params as p
    where
        (
            d.is_received
            and d.received_date <= p.period_end
            and (
                d.received_date >= p.period_start
                or not (d.is_resolved and coalesce(d.end_date < p.period_start, true))
            )
        )
        or (d.is_resolved and d.end_date between p.period_start and p.period_end)
        or (
            d.trang_thai = 3
            and cast(coalesce(d.ngay_tu_choi, d.ngay_nop_ho_so) as date) between p.period_start and p.period_end
        )
        or (d.trang_thai = 9 and d.ngay_tra is null)
        or (d.kenh_thuc_hien = 2 and cast(d.ngay_nop_ho_so as date) between p.period_start and p.period_end)
        or exists (
            select 1 from open_fee_dossiers as o
            where o.source = d.source and o.ma_ho_so = d.ma_ho_so
        )
),

-- the unit's level as of the dossier's receipt date; a same-source catalogue row wins. It depends
-- on the dossier's source, unit and receipt date only: resolved once per distinct triple (a few
-- thousand), not per dossier (a window over a million rows, and a join back, spilled to disk
-- under the warehouse's memory limit)
unit_keys as (
    select distinct
        source,
        ma_don_vi,
        cast(coalesce(ngay_tiep_nhan, ngay_nop_ho_so) as date) as on_date
    from dossiers
),

unit_as_of_receipt as (
    select
        k.source,
        k.ma_don_vi,
        k.on_date,
        u.ten_don_vi,
        u.cap_don_vi,
        row_number() over (
            partition by k.source, k.ma_don_vi, k.on_date
            order by case when u.source = k.source then 0 else 1 end, u.hieu_luc_tu desc
        ) as rn
    from unit_keys as k
    inner join units as u
        on u.ma_don_vi = k.ma_don_vi
        and u.hieu_luc_tu <= k.on_date
        and (u.hieu_luc_den is null or u.hieu_luc_den >= k.on_date)
),

-- the procedure's attributes; a same-source catalogue row wins (once per source and procedure)
procedure_keys as (
    select distinct
        source,
        ma_tthc
    from dossiers
),

procedure_of_dossier as (
    select
        k.source,
        k.ma_tthc,
        p.ten_tthc,
        p.ma_linh_vuc,
        p.ten_linh_vuc,
        p.cap_thuc_hien,
        p.muc_do_dvc,
        p.co_phi_le_phi,
        p.co_thanh_toan_truc_tuyen,
        p.ket_qua_giay,
        row_number() over (
            partition by k.source, k.ma_tthc
            order by case when p.source = k.source then 0 else 1 end, p.source
        ) as rn
    from procedure_keys as k
    inner join procedures as p on p.ma_tthc = k.ma_tthc
),

-- the supplement rounds of each kept dossier's current version, by date
supplement_rounds as (
    select
        s.source,
        s.ma_ho_so,
        cast(s.ngay_bo_sung as date) as requested_date,
        cast(s.ngay_tiep_nhan_bo_sung as date) as answered_date
    from supplements as s
    inner join dossiers as d
        on d.source = s.source
        and d.ma_ho_so = s.ma_ho_so
        and d.ngay_cap_nhat = s.ngay_cap_nhat
    where s.ngay_bo_sung is not null
),

-- a supplement requested by period_end and not received back by then: the earliest request
open_supplement as (
    select
        r.source,
        r.ma_ho_so,
        min(r.requested_date) as open_request_date
    from supplement_rounds as r
    cross join params as p
    where r.requested_date <= p.period_end
        and (r.answered_date is null or r.answered_date > p.period_end)
    group by r.source, r.ma_ho_so
),

dossier_base as (
    select
        d.source,
        d.ma_ho_so,
        d.ma_tthc,
        -- national base code '1.001653' of '1.001653.000.00.00.H08' or of '1.001653.H08'
        split_part(d.ma_tthc, '.', 1) || '.' || split_part(d.ma_tthc, '.', 2) as ma_tthc_base,
        coalesce(pr.ten_tthc, d.ten_tthc) as ten_tthc,
        -- the field: from the catalogue, else from the dossier
        case when pr.ma_linh_vuc is not null then pr.ma_linh_vuc else d.ma_linh_vuc end as ma_linh_vuc,
        case when pr.ma_linh_vuc is not null then pr.ten_linh_vuc else d.ten_linh_vuc end as ten_linh_vuc,
        d.ma_don_vi,
        coalesce(u.ten_don_vi, d.ten_don_vi) as ten_don_vi,
        u.cap_don_vi,
        d.trang_thai,
        coalesce(d.kenh_thuc_hien, 1) as channel,
        d.ngay_nop_ho_so,
        d.ngay_tra,
        d.ngay_tu_choi,
        d.ma_can_bo_xu_ly,
        d.can_bo_xu_ly,
        d.ngay_tiep_nhan,
        d.ngay_hen_tra,
        d.ngay_ket_thuc_xu_ly,
        d.duoc_thanh_toan_truc_tuyen,
        d.has_reuse,
        d.has_e_result,
        d.has_digitised,
        d.has_from_national_store,
        d.n_le_phi,
        d.n_le_phi_co_gia,
        d.n_bo_sung,
        -- a procedure missing from the catalogue has every attribute 0
        pr.cap_thuc_hien,
        coalesce(pr.muc_do_dvc, 0) as muc_do_dvc,
        coalesce(pr.co_phi_le_phi, 0) as co_phi_le_phi,
        coalesce(pr.co_thanh_toan_truc_tuyen, 0) as co_thanh_toan_truc_tuyen,
        coalesce(pr.ket_qua_giay, 0) as ket_qua_giay,
        os.open_request_date,
        d.is_received,
        d.is_resolved,
        d.received_date,
        cast(d.ngay_hen_tra as date) as due_date,
        d.end_date,
        ps.n_requests,
        ps.n_obligations,
        ps.n_open_obligations,
        ps.n_paid_online,
        ps.amount_due
    from dossiers as d
    left join unit_as_of_receipt as u
        on u.source = d.source
        and u.ma_don_vi = d.ma_don_vi
        and u.on_date = cast(coalesce(d.ngay_tiep_nhan, d.ngay_nop_ho_so) as date)
        and u.rn = 1
    left join procedure_of_dossier as pr
        on pr.source = d.source and pr.ma_tthc = d.ma_tthc and pr.rn = 1
    left join payment_summary as ps
        on ps.source = d.source and ps.ma_ho_so = d.ma_ho_so
    left join open_supplement as os
        on os.source = d.source and os.ma_ho_so = d.ma_ho_so
),

-- E, the end of a dossier for the 766 on-time judgement at period_end (docs/official-figures.md
-- section 2): resolved by period_end -> its end; else an open supplement -> the earliest open
-- request; else period_end. A resolved dossier without an end date is judged at period_end.
dossier_end as (
    select
        b.*,
        case
            when b.is_resolved and coalesce(b.end_date <= p.period_end, true)
                then coalesce(b.end_date, p.period_end)
            when b.open_request_date is not null then b.open_request_date
            else p.period_end
        end as judged_end_date
    from dossier_base as b
    cross join params as p
),

-- supplement rounds requested by E (two or more: late)
rounds_by_end as (
    select
        e.source,
        e.ma_ho_so,
        count(*) as n_rounds
    from dossier_end as e
    inner join supplement_rounds as r
        on r.source = e.source
        and r.ma_ho_so = e.ma_ho_so
        and r.requested_date <= e.judged_end_date
    group by e.source, e.ma_ho_so
),

-- timeliness (resolved dossiers, by DATE) and the financial obligation (at the data cut)
dossier_judged as (
    select
        b.*,
        case
            when not b.is_resolved then null
            when b.trang_thai = 7 or b.due_date is null then 'on_time'
            when b.end_date is null then 'on_time'
            when b.end_date < b.due_date then 'before_due'
            when b.end_date = b.due_date then 'on_time'
            else 'late'
        end as timeliness,
        -- resolved with no known end time: treated as resolved before any period (counted nowhere)
        b.is_resolved and b.end_date is null as is_resolved_undated,
        -- no payment request known: fall back to DuocThanhToanTrucTuyen in (1, 2), which implies a
        -- settled obligation; otherwise the requests decide
        b.n_requests is null as is_payment_fallback,
        case
            when b.n_requests is null then coalesce(b.duoc_thanh_toan_truc_tuyen, 0) in (1, 2)
            else b.n_obligations > 0
        end as has_obligation,
        case
            when b.n_requests is null then coalesce(b.duoc_thanh_toan_truc_tuyen, 0) in (1, 2)
            else b.n_obligations > 0 and b.n_open_obligations = 0
        end as obligation_completed,
        case
            when b.n_requests is null then coalesce(b.duoc_thanh_toan_truc_tuyen, 0) in (1, 2)
            else b.n_paid_online > 0
        end as paid_online,
        -- 2.1 at period_end: late with two supplement rounds by E, or E after the due date;
        -- unknown when the supplement list is unknown
        case
            when b.n_bo_sung is null then null
            when coalesce(rb.n_rounds, 0) >= 2 then false
            when b.due_date is not null and b.judged_end_date > b.due_date then false
            else true
        end as on_time_at_end,
        coalesce(rb.n_rounds, 0) as n_rounds_by_end
    from dossier_end as b
    left join rounds_by_end as rb
        on rb.source = b.source and rb.ma_ho_so = b.ma_ho_so
),

final as (
    select
        j.source,
        j.ma_ho_so,
        j.ma_tthc,
        j.ma_tthc_base,
        j.ten_tthc,
        j.ma_linh_vuc,
        j.ten_linh_vuc,
        j.ma_don_vi,
        j.ten_don_vi,
        j.cap_don_vi,
        j.trang_thai,
        j.channel,
        j.ngay_nop_ho_so,
        j.ngay_tra,
        j.ngay_tu_choi,
        j.ma_can_bo_xu_ly,
        j.can_bo_xu_ly,
        j.ngay_tiep_nhan,
        j.ngay_hen_tra,
        j.ngay_ket_thuc_xu_ly,
        j.received_date,
        j.due_date,
        j.end_date,
        j.is_received,
        j.is_resolved,
        j.timeliness,
        coalesce(j.timeliness in ('before_due', 'on_time'), false) as is_on_time_or_before,
        -- the 766 flags (three-valued) and the procedure's attributes
        j.has_reuse,
        j.has_e_result,
        j.has_digitised,
        j.has_from_national_store,
        j.duoc_thanh_toan_truc_tuyen,
        j.n_le_phi,
        j.n_le_phi_co_gia,
        j.n_bo_sung,
        j.cap_thuc_hien,
        j.muc_do_dvc,
        j.co_phi_le_phi,
        j.co_thanh_toan_truc_tuyen,
        j.ket_qua_giay,
        j.open_request_date,
        j.judged_end_date,
        j.n_rounds_by_end,
        j.on_time_at_end,
        -- period flags
        j.is_received and j.received_date between p.period_start and p.period_end
            as received_in_period,
        j.is_received and j.received_date < p.period_start
            and not (j.is_resolved and (j.is_resolved_undated or j.end_date < p.period_start))
            as carried_over,
        coalesce(j.is_resolved and j.end_date between p.period_start and p.period_end, false)
            as resolved_in_period,
        j.is_received and j.received_date <= p.period_end
            and not (j.is_resolved and (j.is_resolved_undated or j.end_date <= p.period_end))
            as in_progress_at_end,
        j.is_received and j.received_date <= p.period_end
            and not (j.is_resolved and (j.is_resolved_undated or j.end_date <= p.period_end))
            and j.trang_thai <> 5
            and coalesce(j.due_date < p.period_end, false)
            as overdue,
        j.trang_thai = 3
            and cast(coalesce(j.ngay_tu_choi, j.ngay_nop_ho_so) as date) between p.period_start and p.period_end
            as rejected_in_period,
        -- the financial obligation
        j.is_payment_fallback,
        j.has_obligation,
        j.obligation_completed,
        j.paid_online,
        (j.trang_thai in (9, 10) or coalesce(j.has_e_result, false))
            and j.has_obligation and not j.obligation_completed
            as result_issued_fees_unpaid,
        not (j.trang_thai in (9, 10) or coalesce(j.has_e_result, false))
            and j.has_obligation and not j.obligation_completed
            as in_progress_fees_unpaid,
        -- the paid-only population: no obligation, or obligation completed
        not (j.has_obligation and not j.obligation_completed) as fees_settled,
        coalesce(j.amount_due, 0) as amount_due,
        p.period_start,
        p.period_end,
        p.as_of
    from dossier_judged as j
    cross join params as p
)

select * from final;
