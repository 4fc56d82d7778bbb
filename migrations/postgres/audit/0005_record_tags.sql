-- The writer tags each record it stores (HMAC under a key derived from the checkpoint signing
-- key, which the database never holds) and signs only a chain whose records carry its tags.
-- A tenant's retention lives in its chain (`audit.retention_changed` events, then its latest
-- anchor), not in a table anyone with the database could change.
ALTER TABLE audit_records ADD COLUMN mac TEXT;
DROP TABLE audit_retention;
