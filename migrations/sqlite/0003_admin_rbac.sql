-- Role-based access to the admin API: admin keys act with roles (built-in ones or the tenant's
-- custom roles) and carry a name; a custom role is a set of "<kind>:<action>" permissions;
-- a virtual key remembers the principal that created it (developers manage their own keys).
ALTER TABLE admin_keys ADD COLUMN roles TEXT NOT NULL DEFAULT '[]';
ALTER TABLE admin_keys ADD COLUMN name TEXT NOT NULL DEFAULT '';
UPDATE admin_keys SET roles = '["' || role || '"]';
ALTER TABLE admin_keys DROP COLUMN role;
ALTER TABLE virtual_keys ADD COLUMN owner TEXT;

CREATE TABLE roles (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    -- JSON array of "<kind>:<action>"
    permissions TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
