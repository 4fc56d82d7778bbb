-- Retention anchors are signed in their own domain over the last record removed (its event
-- time), the retention in force and the prune time. Anchors written before this migration
-- were signed as checkpoints and no longer verify: `routero audit verify` names them.
ALTER TABLE audit_anchors ADD COLUMN covered_until TEXT;
ALTER TABLE audit_anchors ADD COLUMN retention_days BIGINT;
