-- 0008: the raw layer of a DuckDB warehouse as landed files (issue 17; tasks/landing.py).
-- Each load batch's raw rows are one zstd Parquet file in the landing folder (DVC_LANDING_DIR,
-- default `<duckdb file stem>-landing/`); this manifest names the committed files, inserted in the
-- load's transaction. `raw.<entity>` becomes a view over them (tasks.landing.convert_raw_tables,
-- run by tasks.warehouse.upgrade after this migration, moves an existing table's rows into one
-- file). PostgreSQL keeps its `raw.<entity>` tables: the manifest exists there and stays empty.
-- Portable SQL.
CREATE TABLE IF NOT EXISTS dq.landed_files (
    path        VARCHAR NOT NULL PRIMARY KEY,  -- relative to the landing folder (POSIX)
    source      VARCHAR NOT NULL,
    entity      VARCHAR NOT NULL,
    run_id      VARCHAR NOT NULL,
    rows        BIGINT NOT NULL,               -- rows in the file
    bytes       BIGINT NOT NULL,               -- size of the file
    landed_at   TIMESTAMP NOT NULL,
    folder      VARCHAR                        -- the landing folder it was landed in (absolute): where a
                                               -- copy of the .duckdb file without its folder finds it
);
