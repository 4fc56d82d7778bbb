-- How long each tenant keeps its audit trail; tenants without a row keep it 365 days.
CREATE TABLE audit_retention (
    tenant_id   TEXT PRIMARY KEY,
    days        BIGINT NOT NULL CHECK (days >= 1),
    updated_at  BIGINT NOT NULL
);
