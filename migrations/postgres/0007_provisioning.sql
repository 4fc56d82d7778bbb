-- SCIM provisioning (issue 13). Users and teams keep their SCIM document (the canonical JSON
-- the identity provider wrote), a version for ETags, and whether SCIM owns them; deleting
-- one keeps its row (keys and audit still name it) with its name freed. userName is unique per
-- tenant case-insensitively. scim_values is the search index filters run on: one row per
-- filterable value, normalised for comparison.
ALTER TABLE users ADD COLUMN scim TEXT;
ALTER TABLE users ADD COLUMN scim_managed BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE users ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN deleted_at BIGINT;
ALTER TABLE users ADD COLUMN user_name_key TEXT;
UPDATE users SET user_name_key = LOWER(user_name), updated_at = created_at;
CREATE UNIQUE INDEX users_user_name_key ON users (tenant_id, user_name_key);

ALTER TABLE teams ADD COLUMN scim TEXT;
ALTER TABLE teams ADD COLUMN scim_managed BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE teams ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE teams ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE teams ADD COLUMN deleted_at BIGINT;
ALTER TABLE teams ADD COLUMN name_key TEXT;
UPDATE teams SET name_key = LOWER(name), updated_at = created_at;
CREATE UNIQUE INDEX teams_name_key ON teams (tenant_id, name_key);

CREATE TABLE scim_values (
    tenant_id   TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    attr        TEXT NOT NULL,
    idx         BIGINT NOT NULL,
    sub         TEXT NOT NULL,
    value       TEXT NOT NULL
);
CREATE INDEX scim_values_by_value ON scim_values (tenant_id, attr, sub, value);
CREATE INDEX scim_values_by_resource ON scim_values (resource_id, attr, idx);

-- Bearer tokens of a tenant's SCIM client, stored as HMAC-SHA256 under the pepper, like keys.
CREATE TABLE scim_tokens (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    token_hash  BYTEA NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

-- A tenant's rules from groups to roles: JSON [{"group", "roles"}] and the default roles.
CREATE TABLE role_mappings (
    tenant_id     TEXT PRIMARY KEY REFERENCES tenants(id),
    rules         TEXT NOT NULL,
    default_roles TEXT NOT NULL,
    updated_at    BIGINT NOT NULL
);
