-- 0005: the official figures in the report tables (the reports specification, reports.md,
-- sections 3-5; docs/official-figures.md). Portable SQL: DuckDB and PostgreSQL.
--
-- New columns are appended at the END of both tables of a pair, in the same order (0002's rule:
-- mart.rpt_X and mart.rpt_X_history keep the same columns in the same order). They are nullable:
-- rows published before this migration keep null there.

-- ---------------------------------------------------------------------------------------------
-- The 766 indicators: nine codes; unknown flags, the reuse exclusion list, scores and targets.
-- ---------------------------------------------------------------------------------------------
ALTER TABLE mart.rpt_service_indicators ADD COLUMN code_766 VARCHAR;               -- '2.1', '3.3', ...; null: not a 766 index
ALTER TABLE mart.rpt_service_indicators ADD COLUMN unknown BIGINT;                 -- dossiers left out: flag unknown
ALTER TABLE mart.rpt_service_indicators ADD COLUMN excluded_by_list BIGINT;        -- reuse: paid-only dossiers of reuse_exclusions.csv
ALTER TABLE mart.rpt_service_indicators ADD COLUMN full_score_at DOUBLE PRECISION; -- 0.80 / 0.50: rate scored in full
ALTER TABLE mart.rpt_service_indicators ADD COLUMN target DOUBLE PRECISION;        -- reference/targets.csv
ALTER TABLE mart.rpt_service_indicators ADD COLUMN meets_target BOOLEAN;           -- rate_system >= target
ALTER TABLE mart.rpt_service_indicators_history ADD COLUMN code_766 VARCHAR;
ALTER TABLE mart.rpt_service_indicators_history ADD COLUMN unknown BIGINT;
ALTER TABLE mart.rpt_service_indicators_history ADD COLUMN excluded_by_list BIGINT;
ALTER TABLE mart.rpt_service_indicators_history ADD COLUMN full_score_at DOUBLE PRECISION;
ALTER TABLE mart.rpt_service_indicators_history ADD COLUMN target DOUBLE PRECISION;
ALTER TABLE mart.rpt_service_indicators_history ADD COLUMN meets_target BOOLEAN;

-- ---------------------------------------------------------------------------------------------
-- Progress: dossiers rejected at intake (status 3) in the period.
-- ---------------------------------------------------------------------------------------------
ALTER TABLE mart.rpt_progress ADD COLUMN rejected_at_intake BIGINT;
ALTER TABLE mart.rpt_progress_history ADD COLUMN rejected_at_intake BIGINT;

-- ---------------------------------------------------------------------------------------------
-- Publications: the period cut (calendar, decree-09) and the label ('2024-H1'; null for a range).
-- ---------------------------------------------------------------------------------------------
ALTER TABLE mart.publications ADD COLUMN period_cut VARCHAR;
ALTER TABLE mart.publications ADD COLUMN period_label VARCHAR;

-- ---------------------------------------------------------------------------------------------
-- Form 06/VPCP/KSTT (Circular 01/2020/TT-VPCP). One row per period x level (as of receipt) x
-- field. The counts of mart.rpt_progress regrouped: received_total = received_online +
-- received_direct_postal + carried_over.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS mart.rpt_form06 (
    period_start            DATE NOT NULL,
    period_end              DATE NOT NULL,
    cap_don_vi              BIGINT,             -- 1 province, 2 district, 3 commune; null: unit unknown
    stt                     BIGINT NOT NULL,    -- row number of the field within its level
    ma_linh_vuc             VARCHAR,
    ten_linh_vuc            VARCHAR,
    received_total          BIGINT NOT NULL,    -- (1) received in the period + carried over
    received_online         BIGINT NOT NULL,    -- (2) received in the period, channel 2
    received_direct_postal  BIGINT NOT NULL,    -- (3) received in the period, other channels
    carried_over            BIGINT NOT NULL,    -- (4) from the previous period
    resolved_total          BIGINT NOT NULL,    -- (5)
    resolved_before_due     BIGINT NOT NULL,    -- (6)
    resolved_on_time        BIGINT NOT NULL,    -- (7)
    resolved_late           BIGINT NOT NULL,    -- (8)
    in_progress_total       BIGINT NOT NULL,    -- (9)
    in_progress_in_time     BIGINT NOT NULL,    -- (10)
    in_progress_overdue     BIGINT NOT NULL,    -- (11)
    as_of                   TIMESTAMP NOT NULL,
    publication_id          VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS mart.rpt_form06_history (
    period_start DATE NOT NULL, period_end DATE NOT NULL,
    cap_don_vi BIGINT, stt BIGINT NOT NULL, ma_linh_vuc VARCHAR, ten_linh_vuc VARCHAR,
    received_total BIGINT NOT NULL, received_online BIGINT NOT NULL, received_direct_postal BIGINT NOT NULL,
    carried_over BIGINT NOT NULL, resolved_total BIGINT NOT NULL, resolved_before_due BIGINT NOT NULL,
    resolved_on_time BIGINT NOT NULL, resolved_late BIGINT NOT NULL, in_progress_total BIGINT NOT NULL,
    in_progress_in_time BIGINT NOT NULL, in_progress_overdue BIGINT NOT NULL,
    as_of TIMESTAMP NOT NULL, publication_id VARCHAR NOT NULL
);

-- ---------------------------------------------------------------------------------------------
-- Uncollected results: the current work list (no period, like rpt_unpaid_results). One row per
-- dossier with status 9 (result ready) and no NgayTra, whatever its fee status.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS mart.rpt_uncollected_results (
    source                  VARCHAR NOT NULL,
    ma_ho_so                VARCHAR NOT NULL,
    ma_tthc                 VARCHAR,
    ten_tthc                VARCHAR,
    ma_don_vi               VARCHAR,
    ten_don_vi              VARCHAR,
    cap_don_vi              BIGINT,
    ngay_ket_thuc_xu_ly     TIMESTAMP,
    days_waiting            BIGINT,             -- date(as_of) - date(ngay_ket_thuc_xu_ly)
    window_days             BIGINT,             -- reference/collection_windows.csv; null: no window
    can_cu                  VARCHAR,            -- the window's legal basis
    over_window             BOOLEAN,            -- days_waiting > window_days; null without a window
    fees_unpaid             BOOLEAN NOT NULL,   -- a financial obligation not completed
    as_of                   TIMESTAMP NOT NULL,
    publication_id          VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS mart.rpt_uncollected_results_history (
    source VARCHAR NOT NULL, ma_ho_so VARCHAR NOT NULL, ma_tthc VARCHAR, ten_tthc VARCHAR,
    ma_don_vi VARCHAR, ten_don_vi VARCHAR, cap_don_vi BIGINT, ngay_ket_thuc_xu_ly TIMESTAMP,
    days_waiting BIGINT, window_days BIGINT, can_cu VARCHAR, over_window BOOLEAN,
    fees_unpaid BOOLEAN NOT NULL,
    as_of TIMESTAMP NOT NULL, publication_id VARCHAR NOT NULL
);

-- ---------------------------------------------------------------------------------------------
-- Late acceptance (2024 report III.3). One row per period x online dossier submitted in the
-- period and accepted or rejected more than 8 working hours later (or still waiting at the cut).
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS mart.rpt_late_acceptance (
    period_start            DATE NOT NULL,
    period_end              DATE NOT NULL,
    source                  VARCHAR NOT NULL,
    ma_ho_so                VARCHAR NOT NULL,
    ma_tthc                 VARCHAR,
    ten_tthc                VARCHAR,
    ma_don_vi               VARCHAR,
    ten_don_vi              VARCHAR,
    cap_don_vi              BIGINT,
    trang_thai              BIGINT,
    ngay_nop_ho_so          TIMESTAMP,
    ngay_tiep_nhan          TIMESTAMP,          -- coalesce(NgayTiepNhan, NgayTuChoi); null: not yet
    working_hours_waited    DOUBLE PRECISION NOT NULL,  -- 07:00-11:30, 13:30-17:00 on working days
    as_of                   TIMESTAMP NOT NULL,
    publication_id          VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS mart.rpt_late_acceptance_history (
    period_start DATE NOT NULL, period_end DATE NOT NULL,
    source VARCHAR NOT NULL, ma_ho_so VARCHAR NOT NULL, ma_tthc VARCHAR, ten_tthc VARCHAR,
    ma_don_vi VARCHAR, ten_don_vi VARCHAR, cap_don_vi BIGINT, trang_thai BIGINT,
    ngay_nop_ho_so TIMESTAMP, ngay_tiep_nhan TIMESTAMP, working_hours_waited DOUBLE PRECISION NOT NULL,
    as_of TIMESTAMP NOT NULL, publication_id VARCHAR NOT NULL
);

CREATE INDEX IF NOT EXISTS ix_rpt_form06_period ON mart.rpt_form06 (period_start, period_end);
CREATE INDEX IF NOT EXISTS ix_rpt_late_acceptance_period ON mart.rpt_late_acceptance (period_start, period_end);
CREATE INDEX IF NOT EXISTS ix_rpt_form06_history_pub ON mart.rpt_form06_history (publication_id);
CREATE INDEX IF NOT EXISTS ix_rpt_uncollected_results_history_pub ON mart.rpt_uncollected_results_history (publication_id);
CREATE INDEX IF NOT EXISTS ix_rpt_late_acceptance_history_pub ON mart.rpt_late_acceptance_history (publication_id);
