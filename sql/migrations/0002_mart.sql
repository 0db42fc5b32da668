-- 0002: the report tables (the reports specification, reports.md, section 4). Portable SQL: DuckDB
-- and PostgreSQL.
--
-- Publication model: every `mart.rpt_X` holds the CURRENT publication of each period (a period is
-- [period_start, period_end]); `mart.rpt_X_history` keeps EVERY publication, same columns in the
-- same order, keyed by `publication_id` (-> mart.publications). tasks/reports.py::publish writes a
-- publication in one transaction: history rows appended, the period's current rows replaced,
-- mart.publications updated. Later columns must be added to both tables of a pair, at the end.
--
-- Units: a "unit" row is (ma_don_vi, cap_don_vi) where cap_don_vi is the unit's level as of each
-- dossier's receipt date; a unit whose level changed inside a period has one row per level.
-- Rates are fractions in [0, 1]; null when the denominator is 0.

-- ---------------------------------------------------------------------------------------------
-- Progress (form 06/VPCP/KSTT). One row per period x unit (x level).
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS mart.rpt_progress (
    period_start            DATE NOT NULL,
    period_end              DATE NOT NULL,
    ma_don_vi               VARCHAR,
    ten_don_vi              VARCHAR,
    cap_don_vi              BIGINT,             -- 1 province, 2 district, 3 commune (as of receipt)
    received_total          BIGINT NOT NULL,    -- received in the period (status not 1/3)
    received_online         BIGINT NOT NULL,    -- ... channel 2
    received_direct         BIGINT NOT NULL,    -- ... channel 1 or null
    received_postal         BIGINT NOT NULL,    -- ... channel 3
    carried_over            BIGINT NOT NULL,    -- received before, not resolved before period_start
    to_handle_total         BIGINT NOT NULL,    -- received_total + carried_over
    resolved_total          BIGINT NOT NULL,    -- status 7-10 ended in the period
    resolved_before_due     BIGINT NOT NULL,
    resolved_on_time        BIGINT NOT NULL,
    resolved_late           BIGINT NOT NULL,
    in_progress_total       BIGINT NOT NULL,    -- not resolved by period_end
    in_progress_in_time     BIGINT NOT NULL,
    in_progress_overdue     BIGINT NOT NULL,
    on_time_rate            DOUBLE PRECISION,   -- (before due + on time) / resolved
    as_of                   TIMESTAMP NOT NULL,
    publication_id          VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS mart.rpt_progress_history (
    period_start DATE NOT NULL, period_end DATE NOT NULL,
    ma_don_vi VARCHAR, ten_don_vi VARCHAR, cap_don_vi BIGINT,
    received_total BIGINT NOT NULL, received_online BIGINT NOT NULL, received_direct BIGINT NOT NULL,
    received_postal BIGINT NOT NULL, carried_over BIGINT NOT NULL, to_handle_total BIGINT NOT NULL,
    resolved_total BIGINT NOT NULL, resolved_before_due BIGINT NOT NULL, resolved_on_time BIGINT NOT NULL,
    resolved_late BIGINT NOT NULL, in_progress_total BIGINT NOT NULL, in_progress_in_time BIGINT NOT NULL,
    in_progress_overdue BIGINT NOT NULL, on_time_rate DOUBLE PRECISION,
    as_of TIMESTAMP NOT NULL, publication_id VARCHAR NOT NULL
);

-- ---------------------------------------------------------------------------------------------
-- Online payment, system vs paid-only. One row per period x unit x procedure, for procedures with
-- at least one dossier received in the period that carries a financial obligation.
-- with_obligation = obligation_completed + unpaid_result_issued + unpaid_in_progress.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS mart.rpt_online_payment (
    period_start            DATE NOT NULL,
    period_end              DATE NOT NULL,
    ma_don_vi               VARCHAR,
    ten_don_vi              VARCHAR,
    cap_don_vi              BIGINT,
    ma_tthc                 VARCHAR,
    ten_tthc                VARCHAR,
    with_obligation         BIGINT NOT NULL,    -- system denominator
    obligation_completed    BIGINT NOT NULL,    -- paid-only denominator
    paid_online             BIGINT NOT NULL,    -- system numerator
    paid_online_completed   BIGINT NOT NULL,    -- paid-only numerator
    paid_offline            BIGINT NOT NULL,    -- completed, not paid online
    unpaid_result_issued    BIGINT NOT NULL,
    unpaid_in_progress      BIGINT NOT NULL,
    excluded_unpaid         BIGINT NOT NULL,    -- with_obligation - obligation_completed
    amount_due              BIGINT NOT NULL,    -- VND still unpaid on the excluded dossiers
    rate_system             DOUBLE PRECISION,
    rate_paid_only          DOUBLE PRECISION,
    as_of                   TIMESTAMP NOT NULL,
    publication_id          VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS mart.rpt_online_payment_history (
    period_start DATE NOT NULL, period_end DATE NOT NULL,
    ma_don_vi VARCHAR, ten_don_vi VARCHAR, cap_don_vi BIGINT, ma_tthc VARCHAR, ten_tthc VARCHAR,
    with_obligation BIGINT NOT NULL, obligation_completed BIGINT NOT NULL, paid_online BIGINT NOT NULL,
    paid_online_completed BIGINT NOT NULL, paid_offline BIGINT NOT NULL,
    unpaid_result_issued BIGINT NOT NULL, unpaid_in_progress BIGINT NOT NULL,
    excluded_unpaid BIGINT NOT NULL, amount_due BIGINT NOT NULL,
    rate_system DOUBLE PRECISION, rate_paid_only DOUBLE PRECISION,
    as_of TIMESTAMP NOT NULL, publication_id VARCHAR NOT NULL
);

-- ---------------------------------------------------------------------------------------------
-- The seven service indicators, system vs paid-only. One row per period x unit x indicator;
-- ma_don_vi = '*' (cap_don_vi null) is the whole jurisdiction.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS mart.rpt_service_indicators (
    period_start            DATE NOT NULL,
    period_end              DATE NOT NULL,
    ma_don_vi               VARCHAR NOT NULL,
    ten_don_vi              VARCHAR,
    cap_don_vi              BIGINT,
    indicator               VARCHAR NOT NULL,   -- on_time, online_submission, online_payment, ...
    indicator_order         BIGINT NOT NULL,    -- 1..7, display order
    indicator_label         VARCHAR NOT NULL,   -- Vietnamese name
    numerator_system        BIGINT NOT NULL,
    denominator_system      BIGINT NOT NULL,
    rate_system             DOUBLE PRECISION,
    numerator_paid_only     BIGINT NOT NULL,
    denominator_paid_only   BIGINT NOT NULL,
    rate_paid_only          DOUBLE PRECISION,
    excluded_unpaid         BIGINT NOT NULL,    -- dossiers the paid-only restriction removed
    excluded_result_issued  BIGINT NOT NULL,    -- ... of which result issued, fees unpaid
    excluded_in_progress    BIGINT NOT NULL,    -- ... of which still in progress, fees unpaid
    as_of                   TIMESTAMP NOT NULL,
    publication_id          VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS mart.rpt_service_indicators_history (
    period_start DATE NOT NULL, period_end DATE NOT NULL,
    ma_don_vi VARCHAR NOT NULL, ten_don_vi VARCHAR, cap_don_vi BIGINT,
    indicator VARCHAR NOT NULL, indicator_order BIGINT NOT NULL, indicator_label VARCHAR NOT NULL,
    numerator_system BIGINT NOT NULL, denominator_system BIGINT NOT NULL, rate_system DOUBLE PRECISION,
    numerator_paid_only BIGINT NOT NULL, denominator_paid_only BIGINT NOT NULL,
    rate_paid_only DOUBLE PRECISION,
    excluded_unpaid BIGINT NOT NULL, excluded_result_issued BIGINT NOT NULL,
    excluded_in_progress BIGINT NOT NULL,
    as_of TIMESTAMP NOT NULL, publication_id VARCHAR NOT NULL
);

-- ---------------------------------------------------------------------------------------------
-- Simplified procedures (2024 report, table 2a). One row per period x row of simplifications.csv.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS mart.rpt_simplified_procedures (
    period_start            DATE NOT NULL,
    period_end              DATE NOT NULL,
    stt                     BIGINT NOT NULL,    -- row order of the reference file
    ma_tthc                 VARCHAR NOT NULL,
    ten_tthc                VARCHAR,
    quyet_dinh              VARCHAR,
    ngay_quyet_dinh         DATE,
    so_ngay_cat_giam        DOUBLE PRECISION,
    noi_dung_cat_giam       VARCHAR,
    resolved_on_time        BIGINT NOT NULL,    -- before due or on time
    resolved_late           BIGINT NOT NULL,
    danh_gia                VARCHAR,
    as_of                   TIMESTAMP NOT NULL,
    publication_id          VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS mart.rpt_simplified_procedures_history (
    period_start DATE NOT NULL, period_end DATE NOT NULL,
    stt BIGINT NOT NULL, ma_tthc VARCHAR NOT NULL, ten_tthc VARCHAR, quyet_dinh VARCHAR,
    ngay_quyet_dinh DATE, so_ngay_cat_giam DOUBLE PRECISION, noi_dung_cat_giam VARCHAR,
    resolved_on_time BIGINT NOT NULL, resolved_late BIGINT NOT NULL, danh_gia VARCHAR,
    as_of TIMESTAMP NOT NULL, publication_id VARCHAR NOT NULL
);

-- ---------------------------------------------------------------------------------------------
-- Delegated procedures (2024 report, table 2đ). One row per period x row of delegations.csv.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS mart.rpt_delegated_procedures (
    period_start            DATE NOT NULL,
    period_end              DATE NOT NULL,
    stt                     BIGINT NOT NULL,
    ma_tthc                 VARCHAR NOT NULL,
    ten_tthc                VARCHAR,
    van_ban                 VARCHAR,
    ngay_hieu_luc           DATE,
    resolved_on_time        BIGINT NOT NULL,
    resolved_late           BIGINT NOT NULL,
    danh_gia                VARCHAR,
    as_of                   TIMESTAMP NOT NULL,
    publication_id          VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS mart.rpt_delegated_procedures_history (
    period_start DATE NOT NULL, period_end DATE NOT NULL,
    stt BIGINT NOT NULL, ma_tthc VARCHAR NOT NULL, ten_tthc VARCHAR, van_ban VARCHAR,
    ngay_hieu_luc DATE, resolved_on_time BIGINT NOT NULL, resolved_late BIGINT NOT NULL,
    danh_gia VARCHAR,
    as_of TIMESTAMP NOT NULL, publication_id VARCHAR NOT NULL
);

-- ---------------------------------------------------------------------------------------------
-- Late dossiers by official. One row per period x month x official x unit (x level), only where
-- something is late. `month` is 'yyyy-mm'.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS mart.rpt_late_by_official (
    period_start            DATE NOT NULL,
    period_end              DATE NOT NULL,
    month                   VARCHAR NOT NULL,
    ma_can_bo               VARCHAR,
    can_bo                  VARCHAR,
    ma_don_vi               VARCHAR,
    ten_don_vi              VARCHAR,
    cap_don_vi              BIGINT,
    late_resolved           BIGINT NOT NULL,    -- resolved late in the month
    late_in_progress        BIGINT NOT NULL,    -- in progress and overdue at the month's end
    as_of                   TIMESTAMP NOT NULL,
    publication_id          VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS mart.rpt_late_by_official_history (
    period_start DATE NOT NULL, period_end DATE NOT NULL, month VARCHAR NOT NULL,
    ma_can_bo VARCHAR, can_bo VARCHAR, ma_don_vi VARCHAR, ten_don_vi VARCHAR, cap_don_vi BIGINT,
    late_resolved BIGINT NOT NULL, late_in_progress BIGINT NOT NULL,
    as_of TIMESTAMP NOT NULL, publication_id VARCHAR NOT NULL
);

-- ---------------------------------------------------------------------------------------------
-- Unpaid results: the current work list. One row per dossier whose result is issued and whose
-- fees are not paid, as of the latest publication. No period columns: every publication replaces
-- the whole list; the history keeps each publication's list.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS mart.rpt_unpaid_results (
    source                  VARCHAR NOT NULL,
    ma_ho_so                VARCHAR NOT NULL,
    ma_tthc                 VARCHAR,
    ten_tthc                VARCHAR,
    ma_don_vi               VARCHAR,
    ten_don_vi              VARCHAR,
    cap_don_vi              BIGINT,
    trang_thai              BIGINT,
    ngay_ket_thuc_xu_ly     TIMESTAMP,
    amount_due              BIGINT NOT NULL,    -- VND not yet paid
    days_outstanding        BIGINT,             -- date(as_of) - date(ngay_ket_thuc_xu_ly)
    threshold_days          BIGINT NOT NULL,
    over_threshold          BOOLEAN NOT NULL,   -- days_outstanding > threshold_days
    as_of                   TIMESTAMP NOT NULL,
    publication_id          VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS mart.rpt_unpaid_results_history (
    source VARCHAR NOT NULL, ma_ho_so VARCHAR NOT NULL, ma_tthc VARCHAR, ten_tthc VARCHAR,
    ma_don_vi VARCHAR, ten_don_vi VARCHAR, cap_don_vi BIGINT, trang_thai BIGINT,
    ngay_ket_thuc_xu_ly TIMESTAMP, amount_due BIGINT NOT NULL, days_outstanding BIGINT,
    threshold_days BIGINT NOT NULL, over_threshold BOOLEAN NOT NULL,
    as_of TIMESTAMP NOT NULL, publication_id VARCHAR NOT NULL
);

CREATE INDEX IF NOT EXISTS ix_rpt_progress_period ON mart.rpt_progress (period_start, period_end);
CREATE INDEX IF NOT EXISTS ix_rpt_online_payment_period ON mart.rpt_online_payment (period_start, period_end);
CREATE INDEX IF NOT EXISTS ix_rpt_service_indicators_period ON mart.rpt_service_indicators (period_start, period_end);
CREATE INDEX IF NOT EXISTS ix_rpt_simplified_procedures_period ON mart.rpt_simplified_procedures (period_start, period_end);
CREATE INDEX IF NOT EXISTS ix_rpt_delegated_procedures_period ON mart.rpt_delegated_procedures (period_start, period_end);
CREATE INDEX IF NOT EXISTS ix_rpt_late_by_official_period ON mart.rpt_late_by_official (period_start, period_end);
CREATE INDEX IF NOT EXISTS ix_rpt_progress_history_pub ON mart.rpt_progress_history (publication_id);
CREATE INDEX IF NOT EXISTS ix_rpt_online_payment_history_pub ON mart.rpt_online_payment_history (publication_id);
CREATE INDEX IF NOT EXISTS ix_rpt_service_indicators_history_pub ON mart.rpt_service_indicators_history (publication_id);
CREATE INDEX IF NOT EXISTS ix_rpt_simplified_procedures_history_pub ON mart.rpt_simplified_procedures_history (publication_id);
CREATE INDEX IF NOT EXISTS ix_rpt_delegated_procedures_history_pub ON mart.rpt_delegated_procedures_history (publication_id);
CREATE INDEX IF NOT EXISTS ix_rpt_late_by_official_history_pub ON mart.rpt_late_by_official_history (publication_id);
CREATE INDEX IF NOT EXISTS ix_rpt_unpaid_results_history_pub ON mart.rpt_unpaid_results_history (publication_id);
CREATE INDEX IF NOT EXISTS ix_publications_period ON mart.publications (period_start, period_end);
