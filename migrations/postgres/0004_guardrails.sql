-- Each tenant's guardrail pipeline (rules, custom detectors, route overrides), as JSON
-- validated by the admin API.
CREATE TABLE guardrails (
    tenant_id   TEXT PRIMARY KEY REFERENCES tenants(id),
    config      TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
