-- 0006: the id of the hash key beside each applicant key (issue 14, docs/security.md "Rotating
-- DVC_HASH_KEY"). applicant_key_id = the first 8 hex digits of HMAC-SHA256(key, 'dvc-key-id')
-- (tasks.settings.hash_key_id): not secret, it names the key without revealing it. Rows hashed
-- before this migration keep null (their key is the one in use until then). Portable SQL.
ALTER TABLE core.dossiers ADD COLUMN applicant_key_id VARCHAR;
