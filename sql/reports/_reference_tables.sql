-- Session temp tables that carry the reference files and the month list into the report queries.
-- Created empty inside the publishing transaction; tasks/reports.py fills them with bound INSERTs.

DROP TABLE IF EXISTS tmp_simplifications;
DROP TABLE IF EXISTS tmp_delegations;
DROP TABLE IF EXISTS tmp_unpaid_thresholds;
DROP TABLE IF EXISTS tmp_report_months;
DROP TABLE IF EXISTS tmp_targets;
DROP TABLE IF EXISTS tmp_unit_procedures;
DROP TABLE IF EXISTS tmp_reuse_exclusions;
DROP TABLE IF EXISTS tmp_collection_windows;

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

-- One row per row of reference/targets.csv: the target of an indicator for a unit ('*': the
-- jurisdiction row, and the default of every unit) in the periods that end in `year`.
CREATE TEMP TABLE tmp_targets (
    ma_don_vi           VARCHAR NOT NULL,
    indicator           VARCHAR NOT NULL,
    year                BIGINT NOT NULL,
    target              DOUBLE PRECISION NOT NULL   -- a fraction in [0, 1]
);

-- One row per row of reference/unit_procedures.csv: the procedures a listed unit offers.
CREATE TEMP TABLE tmp_unit_procedures (
    ma_don_vi           VARCHAR NOT NULL,
    ma_tthc             VARCHAR NOT NULL
);

-- One row per row of reference/reuse_exclusions.csv (matched on the national base code).
CREATE TEMP TABLE tmp_reuse_exclusions (
    ma_tthc             VARCHAR NOT NULL,
    ten_tthc            VARCHAR
);

-- One row per row of reference/collection_windows.csv (matched on the national base code).
CREATE TEMP TABLE tmp_collection_windows (
    ma_tthc             VARCHAR NOT NULL,
    days                BIGINT NOT NULL,
    can_cu              VARCHAR
);
