-- SIEM export progress: per sink and tenant, the last sequence number delivered; and the
-- records a sink gave up on after its retries (dead letters), kept for an operator.
CREATE TABLE audit_export_cursors (
    sink        TEXT NOT NULL,
    tenant_id   TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (sink, tenant_id)
);

CREATE TABLE audit_dead_letters (
    sink        TEXT NOT NULL,
    tenant_id   TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    attempts    BIGINT NOT NULL,
    last_error  TEXT NOT NULL,
    failed_at   BIGINT NOT NULL,
    PRIMARY KEY (sink, tenant_id, seq)
);
