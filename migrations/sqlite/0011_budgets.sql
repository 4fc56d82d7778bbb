-- Traffic governance (issue 15): what a model route's tokens cost (JSON, micro-dollars per
-- million tokens; none: nothing is charged), and the budgets and rate limits of a tenant
-- (scope `tenant`), its teams (`team:<id>`) and users (`user:<id>`), as JSON like a key's own.
ALTER TABLE model_routes ADD COLUMN pricing TEXT;
CREATE TABLE allowances (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    scope       TEXT NOT NULL,
    limits      TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, scope)
);
