-- 0004: what the 766 indicators need from the dossiers (docs/official-figures.md section 1).
-- Portable SQL: runs unchanged on DuckDB and PostgreSQL. Core part only (the mart is 0005).
-- Every new value is nullable: null = unknown (no list in the record, e.g. a file export), never false.

-- ---------------------------------------------------------------------------------------------
-- core.dossiers: flags derived from the nested lists of the API record.
-- ---------------------------------------------------------------------------------------------
-- submitted documents with TaiLieuNop[].DuocSoHoa = 1 (null: no TaiLieuNop list)
ALTER TABLE core.dossiers ADD COLUMN IF NOT EXISTS n_tai_lieu_so_hoa INTEGER;
-- at least one digitised submitted document (n_tai_lieu_so_hoa > 0); null: no TaiLieuNop list
ALTER TABLE core.dossiers ADD COLUMN IF NOT EXISTS has_digitised BOOLEAN;
-- submitted documents with TaiLieuNop[].DuocLayTuKhoDMQG = 1, taken from the national store
-- (null: no TaiLieuNop list)
ALTER TABLE core.dossiers ADD COLUMN IF NOT EXISTS n_tai_lieu_kho_dmqg INTEGER;
-- at least one document taken from the national store; null: no TaiLieuNop list
ALTER TABLE core.dossiers ADD COLUMN IF NOT EXISTS has_from_national_store BOOLEAN;
-- fee lines declared in DanhSachLePhi (null: no list)
ALTER TABLE core.dossiers ADD COLUMN IF NOT EXISTS n_le_phi INTEGER;
-- fee lines with DanhSachLePhi[].Gia > 0 (a missing Gia counts as 0); null: no list
ALTER TABLE core.dossiers ADD COLUMN IF NOT EXISTS n_le_phi_co_gia INTEGER;

-- ---------------------------------------------------------------------------------------------
-- core.dossier_supplements: one row per supplement round (DanhSachHoSoBoSung) of a dossier version.
-- Inserted with ON CONFLICT DO NOTHING in the dossier's load transaction (order-independent and
-- idempotent, like core.dossier_versions); the rows of superseded versions are deleted in the same
-- transaction. The rounds of a dossier are the rows whose ngay_cap_nhat equals
-- core.dossiers.ngay_cap_nhat (their count is core.dossiers.n_bo_sung).
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS core.dossier_supplements (
    source                  VARCHAR NOT NULL,   -- the source system, as core.dossiers.source
    ma_ho_so                VARCHAR NOT NULL,   -- the dossier (MaHoSo)
    ngay_cap_nhat           TIMESTAMP NOT NULL, -- NgayCapNhat of the dossier version the round belongs to
    lan                     INTEGER NOT NULL,   -- round number: 1-based position in DanhSachHoSoBoSung
    ngay_bo_sung            TIMESTAMP,          -- NgayBoSung: supplement requested (the clock pauses)
    ngay_tiep_nhan_bo_sung  TIMESTAMP,          -- NgayTiepNhanBoSung: supplement received; null = still open
    ngay_hen_tra_truoc      TIMESTAMP,          -- NgayHenTraTruoc: due date before the round
    ngay_hen_tra_moi        TIMESTAMP,          -- NgayHenTraMoi: due date after the round
    _run_id                 VARCHAR NOT NULL,   -- run that first loaded the row
    PRIMARY KEY (source, ma_ho_so, ngay_cap_nhat, lan)
);
