-- The audit log: per-tenant hash-chained records, signed checkpoints, and the signed anchors
-- that pruning leaves. Append-only: UPDATE is always refused, and DELETE only below a tenant's
-- latest anchor (retention), both by trigger.

CREATE TABLE audit_records (
    tenant_id   TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    event_id    TEXT NOT NULL UNIQUE,
    time        TEXT NOT NULL,
    action      TEXT NOT NULL,
    actor_kind  TEXT NOT NULL,
    actor_id    TEXT,
    outcome     TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    -- canonical JSON of the event
    event       TEXT NOT NULL,
    written_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

CREATE INDEX audit_records_time ON audit_records (tenant_id, time);

CREATE TABLE audit_checkpoints (
    tenant_id  TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    hash       TEXT NOT NULL,
    time       TEXT NOT NULL,
    signature  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

CREATE TABLE audit_anchors (
    tenant_id  TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    hash       TEXT NOT NULL,
    time       TEXT NOT NULL,
    signature  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

CREATE FUNCTION routero_audit_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_records' AND OLD.seq <= COALESCE(
        (SELECT MAX(seq) FROM audit_anchors WHERE tenant_id = OLD.tenant_id), 0) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION routero_audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION routero_audit_append_only();
CREATE TRIGGER audit_anchors_append_only BEFORE UPDATE OR DELETE ON audit_anchors
    FOR EACH ROW EXECUTE FUNCTION routero_audit_append_only();
