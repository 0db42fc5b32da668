-- 0009 (DuckDB only): the core tables without key indexes (issue 17; bench/README.md, "Index-free
-- core tables"). DuckDB keeps a primary key's index (ART) in memory, outside what it can evict:
-- at 5M dossiers the indexes of core.dossiers and core.dossier_versions alone left no room in the
-- default DVC_DUCKDB_MEMORY_LIMIT (384MB) for a chunk's load or a report's query. Each table is
-- rebuilt with the same columns, types and NOT NULLs and no key. Uniqueness of each key is kept by
-- the loader (tasks/load.py: update the keys present, then insert the others by an anti-join),
-- which runs under the warehouse's writer lock, the only writer of these tables; a test loads
-- overlapping and repeated batches and counts the keys. PostgreSQL keeps its keys (ON CONFLICT).
-- Views over these tables (core.dossier_status_history, the analysts' views) bind by name and
-- read the rebuilt tables. The rows are copied in their order; a new warehouse copies none.
CREATE TABLE core._dossiers_0009 AS SELECT * FROM core.dossiers;
DROP TABLE core.dossiers;
ALTER TABLE core._dossiers_0009 RENAME TO dossiers;
ALTER TABLE core.dossiers ALTER COLUMN source SET NOT NULL;
ALTER TABLE core.dossiers ALTER COLUMN ma_ho_so SET NOT NULL;
ALTER TABLE core.dossiers ALTER COLUMN trang_thai SET NOT NULL;
ALTER TABLE core.dossiers ALTER COLUMN ngay_cap_nhat SET NOT NULL;
ALTER TABLE core.dossiers ALTER COLUMN _source SET NOT NULL;
ALTER TABLE core.dossiers ALTER COLUMN _run_id SET NOT NULL;
ALTER TABLE core.dossiers ALTER COLUMN _loaded_at SET NOT NULL;

CREATE TABLE core._payments_0009 AS SELECT * FROM core.payments;
DROP TABLE core.payments;
ALTER TABLE core._payments_0009 RENAME TO payments;
ALTER TABLE core.payments ALTER COLUMN source SET NOT NULL;
ALTER TABLE core.payments ALTER COLUMN ma SET NOT NULL;
ALTER TABLE core.payments ALTER COLUMN ma_ho_so SET NOT NULL;
ALTER TABLE core.payments ALTER COLUMN trang_thai SET NOT NULL;
ALTER TABLE core.payments ALTER COLUMN ngay_cap_nhat SET NOT NULL;
ALTER TABLE core.payments ALTER COLUMN _source SET NOT NULL;
ALTER TABLE core.payments ALTER COLUMN _run_id SET NOT NULL;
ALTER TABLE core.payments ALTER COLUMN _loaded_at SET NOT NULL;

CREATE TABLE core._procedures_0009 AS SELECT * FROM core.procedures;
DROP TABLE core.procedures;
ALTER TABLE core._procedures_0009 RENAME TO procedures;
ALTER TABLE core.procedures ALTER COLUMN source SET NOT NULL;
ALTER TABLE core.procedures ALTER COLUMN ma_tthc SET NOT NULL;
ALTER TABLE core.procedures ALTER COLUMN _source SET NOT NULL;
ALTER TABLE core.procedures ALTER COLUMN _run_id SET NOT NULL;
ALTER TABLE core.procedures ALTER COLUMN _loaded_at SET NOT NULL;

CREATE TABLE core._units_0009 AS SELECT * FROM core.units;
DROP TABLE core.units;
ALTER TABLE core._units_0009 RENAME TO units;
ALTER TABLE core.units ALTER COLUMN source SET NOT NULL;
ALTER TABLE core.units ALTER COLUMN ma_don_vi SET NOT NULL;
ALTER TABLE core.units ALTER COLUMN hieu_luc_tu SET NOT NULL;
ALTER TABLE core.units ALTER COLUMN _source SET NOT NULL;
ALTER TABLE core.units ALTER COLUMN _run_id SET NOT NULL;
ALTER TABLE core.units ALTER COLUMN _loaded_at SET NOT NULL;

CREATE TABLE core._dossier_versions_0009 AS SELECT * FROM core.dossier_versions;
DROP TABLE core.dossier_versions;
ALTER TABLE core._dossier_versions_0009 RENAME TO dossier_versions;
ALTER TABLE core.dossier_versions ALTER COLUMN source SET NOT NULL;
ALTER TABLE core.dossier_versions ALTER COLUMN ma_ho_so SET NOT NULL;
ALTER TABLE core.dossier_versions ALTER COLUMN ngay_cap_nhat SET NOT NULL;
ALTER TABLE core.dossier_versions ALTER COLUMN trang_thai SET NOT NULL;
ALTER TABLE core.dossier_versions ALTER COLUMN _run_id SET NOT NULL;

CREATE TABLE core._dossier_supplements_0009 AS SELECT * FROM core.dossier_supplements;
DROP TABLE core.dossier_supplements;
ALTER TABLE core._dossier_supplements_0009 RENAME TO dossier_supplements;
ALTER TABLE core.dossier_supplements ALTER COLUMN source SET NOT NULL;
ALTER TABLE core.dossier_supplements ALTER COLUMN ma_ho_so SET NOT NULL;
ALTER TABLE core.dossier_supplements ALTER COLUMN ngay_cap_nhat SET NOT NULL;
ALTER TABLE core.dossier_supplements ALTER COLUMN lan SET NOT NULL;
ALTER TABLE core.dossier_supplements ALTER COLUMN _run_id SET NOT NULL;
