-- Session temp tables that carry the reference files and the month list into the report queries.
-- Created empty inside the publishing transaction; tasks/reports.py fills them with bound INSERTs.

DROP TABLE IF EXISTS tmp_simplifications;
DROP TABLE IF EXISTS tmp_delegations;
DROP TABLE IF EXISTS tmp_unpaid_thresholds;
DROP TABLE IF EXISTS tmp_report_months;

-- One row per row of reference/simplifications.csv (stt = its order in the file).
CREATE TEMP TABLE tmp_simplifications (
    stt                 BIGINT NOT NULL,
    ma_tthc             VARCHAR NOT NULL,
    quyet_dinh          VARCHAR,
    ngay_quyet_dinh     DATE NOT NULL,
    so_ngay_cat_giam    DOUBLE PRECISION,
    noi_dung_cat_giam   VARCHAR,
    danh_gia            VARCHAR
);

-- One row per row of reference/delegations.csv.
CREATE TEMP TABLE tmp_delegations (
    stt                 BIGINT NOT NULL,
    ma_tthc             VARCHAR NOT NULL,
    van_ban             VARCHAR,
    ngay_hieu_luc       DATE NOT NULL,
    danh_gia            VARCHAR
);

-- One row per procedure of reference/unpaid_thresholds.csv.
CREATE TEMP TABLE tmp_unpaid_thresholds (
    ma_tthc             VARCHAR NOT NULL,
    threshold_days      BIGINT NOT NULL,
    note                VARCHAR
);

-- One row per calendar month touched by the period, clipped to the period.
CREATE TEMP TABLE tmp_report_months (
    month               VARCHAR NOT NULL,   -- 'yyyy-mm'
    month_start         DATE NOT NULL,
    month_end           DATE NOT NULL
);
