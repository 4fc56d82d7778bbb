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

CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN SELECT RAISE(ABORT, 'audit log is append-only: UPDATE on audit_records refused'); END;

CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
WHEN OLD.seq > COALESCE((SELECT MAX(seq) FROM audit_anchors WHERE tenant_id = OLD.tenant_id), 0)
BEGIN SELECT RAISE(ABORT, 'audit log is append-only: DELETE on audit_records refused'); END;

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit log is append-only: UPDATE on audit_checkpoints refused'); END;

CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit log is append-only: DELETE on audit_checkpoints refused'); END;

CREATE TRIGGER audit_anchors_no_update BEFORE UPDATE ON audit_anchors
BEGIN SELECT RAISE(ABORT, 'audit log is append-only: UPDATE on audit_anchors refused'); END;

CREATE TRIGGER audit_anchors_no_delete BEFORE DELETE ON audit_anchors
BEGIN SELECT RAISE(ABORT, 'audit log is append-only: DELETE on audit_anchors refused'); END;
