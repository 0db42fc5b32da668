-- 0003: backfill partitions. A backfill over [from, to] is cut into calendar months; each month is
-- one extraction window on NgayCapNhat. A completed partition is skipped when the backfill reruns.
CREATE TABLE IF NOT EXISTS dq.backfill_partitions (
    backfill_id     VARCHAR NOT NULL,   -- '<source>:<from>:<to>'
    partition_start DATE NOT NULL,
    partition_end   DATE NOT NULL,      -- inclusive
    status          VARCHAR NOT NULL,   -- running, done, failed
    run_id          VARCHAR NOT NULL,
    started_at      TIMESTAMP NOT NULL,
    finished_at     TIMESTAMP,
    rows_read       BIGINT,
    rows_loaded     BIGINT,
    rows_quarantined BIGINT,
    message         TEXT,
    PRIMARY KEY (backfill_id, partition_start)
);
