-- 0007 (PostgreSQL only, after 0007_analyst_views): the public core views are readable by every
-- role that may use schema core. The database is closed to PUBLIC (docs/security.md) and USAGE on
-- core goes to the pipeline's role and the analyst roles of `dvc-etl db grant-analyst` only, so
-- this reaches exactly them, and a public view added later needs no new grant: its migration
-- grants it the same way. The views hold no personal data (never the applicant key).
GRANT SELECT ON core.dossiers_public TO PUBLIC;
