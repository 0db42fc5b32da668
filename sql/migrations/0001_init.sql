-- 0001: the warehouse's four layers. Portable SQL: runs unchanged on DuckDB and PostgreSQL.
-- Timestamps are naive local time (Asia/Ho_Chi_Minh), as the source exports them.
-- Column naming: snake_case of the source field (NgayTiepNhan -> ngay_tiep_nhan);
-- `is_`/`has_` booleans; `_run_id`, `_loaded_at` lineage columns.

CREATE SCHEMA IF NOT EXISTS raw;
CREATE SCHEMA IF NOT EXISTS core;
CREATE SCHEMA IF NOT EXISTS mart;
CREATE SCHEMA IF NOT EXISTS dq;

-- ---------------------------------------------------------------------------------------------
-- raw: every distinct version of every record as extracted (JSON text), append-only, idempotent.
-- One table per entity; `record_key` is MaHoSo / Ma / MaTTHC / MaDonVi.
-- `_source` says where the version came from: 'api' or 'file:<file name>'.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS raw.dossiers (
    source          VARCHAR NOT NULL,
    record_key      VARCHAR NOT NULL,
    record_hash     VARCHAR NOT NULL,      -- sha256 of the canonical JSON of the record
    ngay_cap_nhat   VARCHAR,               -- as extracted (yyyyMMddHHmmss)
    record          TEXT NOT NULL,         -- the record, canonical JSON
    _source         VARCHAR NOT NULL,
    _run_id         VARCHAR NOT NULL,
    _loaded_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (source, record_key, record_hash)
);
CREATE TABLE IF NOT EXISTS raw.payments (
    source VARCHAR NOT NULL, record_key VARCHAR NOT NULL, record_hash VARCHAR NOT NULL,
    ngay_cap_nhat VARCHAR, record TEXT NOT NULL,
    _source VARCHAR NOT NULL, _run_id VARCHAR NOT NULL, _loaded_at TIMESTAMP NOT NULL,
    PRIMARY KEY (source, record_key, record_hash)
);
CREATE TABLE IF NOT EXISTS raw.procedures (
    source VARCHAR NOT NULL, record_key VARCHAR NOT NULL, record_hash VARCHAR NOT NULL,
    ngay_cap_nhat VARCHAR, record TEXT NOT NULL,
    _source VARCHAR NOT NULL, _run_id VARCHAR NOT NULL, _loaded_at TIMESTAMP NOT NULL,
    PRIMARY KEY (source, record_key, record_hash)
);
CREATE TABLE IF NOT EXISTS raw.units (
    source VARCHAR NOT NULL, record_key VARCHAR NOT NULL, record_hash VARCHAR NOT NULL,
    ngay_cap_nhat VARCHAR, record TEXT NOT NULL,
    _source VARCHAR NOT NULL, _run_id VARCHAR NOT NULL, _loaded_at TIMESTAMP NOT NULL,
    PRIMARY KEY (source, record_key, record_hash)
);

-- ---------------------------------------------------------------------------------------------
-- core: typed and cleaned, one row per entity key. No personal data (ChuHoSo, SoGiayToChuHoSo,
-- SoDienThoai never land here; applicant_key is an HMAC of the ID number).
-- ---------------------------------------------------------------------------------------------
-- One row per dossier.
CREATE TABLE IF NOT EXISTS core.dossiers (
    source                      VARCHAR NOT NULL,
    ma_ho_so                    VARCHAR NOT NULL,
    ma_tthc                     VARCHAR,
    ten_tthc                    VARCHAR,
    ma_linh_vuc                 VARCHAR,
    ten_linh_vuc                VARCHAR,
    ma_don_vi                   VARCHAR,
    ten_don_vi                  VARCHAR,
    kenh_thuc_hien              SMALLINT,   -- 1 in person, 2 online, 3 postal; null = unknown (counts as 1)
    loai_doi_tuong              SMALLINT,
    applicant_key               VARCHAR,    -- HMAC-SHA256(hash_key, SoGiayToChuHoSo), hex; null if none
    ngay_nop_ho_so              TIMESTAMP,
    ngay_tiep_nhan              TIMESTAMP,
    ngay_hen_tra                TIMESTAMP,
    ngay_ket_thuc_xu_ly         TIMESTAMP,
    ngay_tra                    TIMESTAMP,
    ngay_tu_choi                TIMESTAMP,
    trang_thai                  SMALLINT NOT NULL,  -- 1..10, the source contract 1.5
    hinh_thuc                   SMALLINT,
    duoc_thanh_toan_truc_tuyen  SMALLINT,   -- 0/1/2
    co_thanh_phan_so_hoa        SMALLINT,
    n_tai_lieu                  INTEGER,    -- submitted documents (null: unknown, e.g. from a file)
    n_tai_lieu_tai_su_dung      INTEGER,    -- of which DuocTaiSuDung = 1
    has_reuse                   BOOLEAN,    -- at least one reused document; null: unknown
    n_ket_qua                   INTEGER,    -- result documents
    has_e_result                BOOLEAN,    -- at least one result document with a non-empty link; null: unknown
    n_bo_sung                   INTEGER,    -- supplement rounds
    tong_le_phi_khai            BIGINT,     -- sum of DanhSachLePhi.Gia (declared fees), VND
    ma_can_bo_xu_ly             VARCHAR,
    can_bo_xu_ly                VARCHAR,
    ngay_cap_nhat               TIMESTAMP NOT NULL,
    _source                     VARCHAR NOT NULL,   -- 'api' or 'file:<name>' of the loaded version
    _run_id                     VARCHAR NOT NULL,
    _loaded_at                  TIMESTAMP NOT NULL,
    PRIMARY KEY (source, ma_ho_so)
);

-- One row per payment request (a fee obligation). Loaded even when its dossier has not arrived
-- yet: reports join through core.dossiers, so it counts once the dossier lands.
CREATE TABLE IF NOT EXISTS core.payments (
    source                  VARCHAR NOT NULL,
    ma                      VARCHAR NOT NULL,
    ma_ho_so                VARCHAR NOT NULL,
    so_tien                 BIGINT,
    phi                     BIGINT,
    le_phi                  BIGINT,
    trang_thai              VARCHAR NOT NULL,   -- 'Đã thanh toán', 'Chờ thanh toán', ...
    hinh_thuc_thanh_toan    VARCHAR,            -- 'truc-tuyen', 'tien-mat', 'chuyen-khoan' or null
    hinh_thuc_thu           VARCHAR,            -- 'Thu trước', 'Thu sau', 'Đối tượng miễn phí'
    kenh_thanh_toan         SMALLINT,
    ngay_yeu_cau            TIMESTAMP,
    ngay_thu_phi            TIMESTAMP,
    ngay_hoan_phi           TIMESTAMP,
    ngay_huy                TIMESTAMP,
    ma_giao_dich            VARCHAR,
    ngay_cap_nhat           TIMESTAMP NOT NULL,
    _source                 VARCHAR NOT NULL,
    _run_id                 VARCHAR NOT NULL,
    _loaded_at              TIMESTAMP NOT NULL,
    PRIMARY KEY (source, ma)
);

-- One row per procedure of the catalogue (current version).
CREATE TABLE IF NOT EXISTS core.procedures (
    source                      VARCHAR NOT NULL,
    ma_tthc                     VARCHAR NOT NULL,
    ten_tthc                    VARCHAR,
    ma_linh_vuc                 VARCHAR,
    ten_linh_vuc                VARCHAR,
    cap_thuc_hien               VARCHAR,    -- levels joined by ',' e.g. '2,3'
    thoi_han_giai_quyet         DOUBLE PRECISION,
    don_vi_thoi_han             VARCHAR,    -- 'ngay-lam-viec', 'ngay', 'gio'
    muc_do_dvc                  SMALLINT,   -- 4 full online, 3 partly online, 2 information
    co_phi_le_phi               SMALLINT,
    co_thanh_toan_truc_tuyen    SMALLINT,
    ket_qua_giay                SMALLINT,
    _source                     VARCHAR NOT NULL,
    _run_id                     VARCHAR NOT NULL,
    _loaded_at                  TIMESTAMP NOT NULL,
    PRIMARY KEY (source, ma_tthc)
);

-- One row per unit validity interval [hieu_luc_tu, hieu_luc_den] (null end = still valid).
CREATE TABLE IF NOT EXISTS core.units (
    source              VARCHAR NOT NULL,
    ma_don_vi           VARCHAR NOT NULL,
    hieu_luc_tu         DATE NOT NULL,
    hieu_luc_den        DATE,
    ten_don_vi          VARCHAR,
    cap_don_vi          SMALLINT,   -- 1 province, 2 district, 3 commune
    ma_don_vi_cha       VARCHAR,
    ma_don_vi_ke_nhiem  VARCHAR,
    _source             VARCHAR NOT NULL,
    _run_id             VARCHAR NOT NULL,
    _loaded_at          TIMESTAMP NOT NULL,
    PRIMARY KEY (source, ma_don_vi, hieu_luc_tu)
);

-- One row per observed version of a dossier's status (every distinct NgayCapNhat seen, from the
-- API or files). Order-independent: loading versions in any order gives the same rows.
CREATE TABLE IF NOT EXISTS core.dossier_versions (
    source          VARCHAR NOT NULL,
    ma_ho_so        VARCHAR NOT NULL,
    ngay_cap_nhat   TIMESTAMP NOT NULL,
    trang_thai      SMALLINT NOT NULL,
    _run_id         VARCHAR NOT NULL,
    PRIMARY KEY (source, ma_ho_so, ngay_cap_nhat)
);

-- One row per observed status change: a version whose status differs from the previous one.
CREATE VIEW core.dossier_status_history AS
WITH ordered AS (
    SELECT source, ma_ho_so, ngay_cap_nhat, trang_thai,
           LAG(trang_thai) OVER (PARTITION BY source, ma_ho_so ORDER BY ngay_cap_nhat) AS trang_thai_truoc
    FROM core.dossier_versions
)
SELECT source, ma_ho_so, ngay_cap_nhat AS changed_at, trang_thai_truoc, trang_thai
FROM ordered
WHERE trang_thai_truoc IS NULL OR trang_thai_truoc <> trang_thai;

-- The working-day calendar (holidays package + reference/calendar_overrides.csv).
CREATE TABLE IF NOT EXISTS core.calendar (
    day             DATE NOT NULL PRIMARY KEY,
    is_working_day  BOOLEAN NOT NULL,
    holiday_name    VARCHAR,
    note            VARCHAR             -- e.g. 'make-up working Saturday (override)'
);

-- ---------------------------------------------------------------------------------------------
-- dq: run bookkeeping, watermarks, quarantine, check results.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS dq.schema_migrations (
    version     VARCHAR NOT NULL PRIMARY KEY,
    applied_at  TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS dq.runs (
    run_id          VARCHAR NOT NULL PRIMARY KEY,
    flow            VARCHAR NOT NULL,
    source          VARCHAR NOT NULL,
    started_at      TIMESTAMP NOT NULL,
    finished_at     TIMESTAMP,
    status          VARCHAR NOT NULL,   -- running, success, blocked (not published), failed
    published       BOOLEAN,
    message         TEXT
);

-- The incremental watermark per source and entity: the highest NgayCapNhat loaded. Moved only in
-- the transaction that commits the rows.
CREATE TABLE IF NOT EXISTS dq.watermarks (
    source      VARCHAR NOT NULL,
    entity      VARCHAR NOT NULL,
    watermark   TIMESTAMP NOT NULL,
    run_id      VARCHAR NOT NULL,
    updated_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (source, entity)
);

-- Rows that failed a critical check, with the reason. Not loaded into core.
CREATE TABLE IF NOT EXISTS dq.quarantine (
    source          VARCHAR NOT NULL,
    entity          VARCHAR NOT NULL,   -- dossiers, payments, procedures, units
    record_key      VARCHAR NOT NULL,   -- the entity key, or '#<row>' when the key itself is missing
    rule            VARCHAR NOT NULL,   -- expectation name, e.g. 'dossier_status_in_code_list'
    severity        VARCHAR NOT NULL,   -- 'critical'
    detail          TEXT,               -- human reason, e.g. 'TrangThaiHoSo = 11 not in 1..10'
    raw_record      TEXT,               -- the record as read (JSON)
    run_id          VARCHAR NOT NULL,   -- last run that saw it
    first_seen_at   TIMESTAMP NOT NULL,
    last_seen_at    TIMESTAMP NOT NULL,
    resolved_at     TIMESTAMP,          -- set when a corrected version loads
    resolved_run_id VARCHAR,
    PRIMARY KEY (source, entity, record_key, rule)
);

-- Rows that failed a warning-level check: loaded all the same, recorded for the report.
CREATE TABLE IF NOT EXISTS dq.warnings (
    source          VARCHAR NOT NULL,
    entity          VARCHAR NOT NULL,
    record_key      VARCHAR NOT NULL,
    rule            VARCHAR NOT NULL,
    detail          TEXT,
    run_id          VARCHAR NOT NULL,
    first_seen_at   TIMESTAMP NOT NULL,
    last_seen_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (source, entity, record_key, rule)
);

-- Per run and entity: rows read = rows loaded + rows quarantined (checked, recorded here).
CREATE TABLE IF NOT EXISTS dq.run_summary (
    run_id              VARCHAR NOT NULL,
    source              VARCHAR NOT NULL,
    entity              VARCHAR NOT NULL,
    rows_received       BIGINT NOT NULL,    -- as delivered, duplicates included
    rows_duplicate      BIGINT NOT NULL,    -- older copies of a key dropped within the run
    rows_read           BIGINT NOT NULL,    -- distinct keys = rows_received - rows_duplicate
    rows_loaded         BIGINT NOT NULL,
    rows_quarantined    BIGINT NOT NULL,
    warnings            BIGINT NOT NULL,    -- warning-level failures (rows still loaded)
    reconciled          BOOLEAN NOT NULL,   -- rows_read = rows_loaded + rows_quarantined
    recorded_at         TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, source, entity)
);

-- Per run, entity and expectation: the outcome of the check (the GX result in figures).
CREATE TABLE IF NOT EXISTS dq.check_results (
    run_id          VARCHAR NOT NULL,
    source          VARCHAR NOT NULL,
    entity          VARCHAR NOT NULL,
    rule            VARCHAR NOT NULL,
    severity        VARCHAR NOT NULL,   -- critical / warning
    success         BOOLEAN NOT NULL,
    element_count   BIGINT,
    unexpected_count BIGINT,
    detail          TEXT,
    recorded_at     TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, source, entity, rule)
);

-- Files from the inbox already loaded (by content hash), so a file is never loaded twice.
CREATE TABLE IF NOT EXISTS dq.file_loads (
    content_hash    VARCHAR NOT NULL PRIMARY KEY,
    file_name       VARCHAR NOT NULL,
    entity          VARCHAR NOT NULL,
    source          VARCHAR NOT NULL,
    rows_read       BIGINT NOT NULL,
    rows_loaded     BIGINT NOT NULL,
    rows_quarantined BIGINT NOT NULL,
    run_id          VARCHAR NOT NULL,
    loaded_at       TIMESTAMP NOT NULL
);

-- ---------------------------------------------------------------------------------------------
-- mart: report tables (the reports specification, section 4). Each mart.rpt_X holds the current
-- publication of every period; mart.rpt_X_history keeps every publication (restatements).
-- A publication replaces a period's rows in mart.rpt_X and appends to history in ONE transaction.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS mart.publications (
    publication_id  VARCHAR NOT NULL PRIMARY KEY,
    period_start    DATE NOT NULL,
    period_end      DATE NOT NULL,
    as_of           TIMESTAMP NOT NULL,     -- the data cut: max NgayCapNhat loaded / run time
    published_at    TIMESTAMP NOT NULL,
    run_id          VARCHAR NOT NULL,
    workbook_path   VARCHAR,
    is_current      BOOLEAN NOT NULL
);
